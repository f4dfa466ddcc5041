package main

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
)

func localDownCommand(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop a local VPC and remove everything it made",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ctl, err := localvpc.Find(*name); err == nil {
				stopLocalTasks(ctl)
			}
			if err := localvpc.Down(*name); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "local VPC %s is down\n", *name)
			return nil
		},
	}
}

// stopLocalTasks tears down the tasks running on a local VPC's instances
// while its EC2 API still answers, so their ENIs are released properly.
// Tasks keep their state where the launcher that started them saw
// /var/lib: the instance's own (started through `vpcnet local exec`), or
// the machine's (`vpcnet task run` in the root namespace re-executes
// itself in the instance's network namespace only), so both are asked, the
// machine's first: GC in one view takes the other's tasks for orphans.
func stopLocalTasks(ctl *localvpc.Control) {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	for _, in := range ctl.Instances {
		gc := func() *exec.Cmd {
			c := exec.Command(exe, "task", "gc", "--stop-all", "--quiet", "--local", ctl.Name, "--instance", in.ID)
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			return c
		}
		// What fails is reported by gc itself; down goes on regardless.
		_ = ctl.RunInNetwork(in.ID, gc())
		_ = ctl.RunOnInstance(in.ID, gc())
	}
}
