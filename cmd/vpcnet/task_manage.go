package main

// vpcnet task exec, ls, stop and gc: the tasks that run.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/task"
)

func taskExecCommand(o *taskOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "exec TASK -- COMMAND [ARG...]",
		Short: "Run a command inside a running task",
		Long: `Run COMMAND inside a running task (its ID, an ID prefix or its name), as the
task's own processes run: the same namespaces (network, mount, PID, UTS,
IPC), capabilities and environment (the task metadata endpoint variables).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			argv, err := o.runner().ExecArgv(args[0], args[1:])
			if err != nil {
				return err
			}
			return syscall.Exec(argv[0], argv, os.Environ())
		},
	}
}

// localInstances are the instances whose tasks `task ls` shows: this
// instance's on one; the chosen local VPC's from the host of one, even with
// its control plane down (which it says, naming the restart); all the
// machine knows when no local VPC of that name exists (nil).
func (o *taskOptions) localInstances(cmd *cobra.Command) ([]string, error) {
	if id := os.Getenv(localvpc.EnvInstance); id != "" {
		return []string{id}, nil
	}
	ctl, err := localvpc.Find(o.local)
	switch {
	case ctl == nil && errors.Is(err, localvpc.ErrDown):
		return nil, err // exists, but has no record of its instances
	case ctl == nil && cmd.Flags().Changed("local"):
		return nil, err // a VPC asked for by name and not there
	case ctl == nil:
		return nil, nil
	case err != nil:
		fmt.Fprintf(os.Stderr, "vpcnet: %v\n", err)
	}
	ids := []string{}
	for _, in := range ctl.Instances {
		ids = append(ids, in.ID)
	}
	return ids, nil
}

func taskLsCommand(o *taskOptions) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List tasks",
		Long: `List the tasks of this instance, or, from the host of a local VPC, of its
instances (--local). A task whose supervisor died is "orphaned": 'vpcnet task
gc' or 'vpcnet task stop' finishes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			instances, err := o.localInstances(cmd)
			if err != nil {
				return err
			}
			tasks, err := o.runner().List(instances, all)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(tasks)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TASK\tNAME\tINSTANCE\tENI\tADDRESS\tSTATE\tAGE")
			for _, t := range tasks {
				addr := ""
				if len(t.Addresses) > 0 {
					addr = t.Addresses[0].String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ShortID(), t.Name, t.InstanceID, t.ENIID, addr, t.Status(), time.Since(t.Created).Round(time.Second))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include stopped and failed tasks not yet collected")
	return cmd
}

func taskStopCommand(o *taskOptions) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop TASK",
		Short: "Stop a task and release its ENI",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.teardownPossible(args[0]); err != nil {
				return err
			}
			r, outcome, err := o.runner().Stop(args[0], timeout)
			switch {
			case err != nil:
				return err
			case outcome == task.AlreadyStopped:
				fmt.Fprintf(os.Stderr, "task %s is already %s\n", r.ShortID(), r.State)
				return nil
			case outcome == task.Stopped:
				return nil
			}
			// The owner is gone: finish the teardown on the task's instance.
			if handled, err := o.onLocalInstance(r.InstanceID, os.Args[1:]); handled || err != nil {
				return err
			}
			return o.runner().FinishStop(cmd.Context(), r, os.Stderr)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the teardown")
	return cmd
}

// teardownPossible refuses to stop a task of a local VPC whose control
// plane is down: its teardown needs EC2 to take the ENI back, and a task
// signalled now would be left half torn down. The error names the restart.
func (o *taskOptions) teardownPossible(ref string) error {
	if os.Getenv(localvpc.EnvInstance) != "" {
		return nil
	}
	r, err := o.runner().Host().Find(ref)
	if err != nil || r.State.Done() {
		return nil // Stop says what is wrong, or that it is done
	}
	if _, err := localvpc.FindForInstance(o.local, r.InstanceID); errors.Is(err, localvpc.ErrDown) {
		return fmt.Errorf("task %s was not stopped: %w", r.ShortID(), err)
	}
	return nil
}

func taskGCCommand(o *taskOptions) *cobra.Command {
	var instance string
	var stopAll, quiet bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Finish interrupted launches and teardowns; delete ENIs of tasks that are gone",
		Long: `Finish the tasks of this state directory whose supervisor is gone, and delete
the ENIs tagged for this instance whose task is provably gone: no record here
and no process in its namespace, or recorded by another state directory and
older than a grace period (5 minutes) without a live owner there. Nothing of
a task whose supervisor or process runs is touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv(localvpc.EnvInstance) == "" && instance == "" {
				if ctl, err := localvpc.Find(o.local); err == nil {
					return gcEveryLocalInstance(ctl)
				}
			}
			if handled, err := o.onLocalInstance(instance, os.Args[1:]); handled || err != nil {
				return err
			}
			// A local instance goes away with its VPC, and its ID is never
			// used again: so may its state, once nothing is left.
			forget := os.Getenv(localvpc.EnvInstance) != ""
			return o.runner().GC(cmd.Context(), task.GCOptions{StopAll: stopAll, Forget: forget, Quiet: quiet}, os.Stderr)
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "only this instance (default: this one, or every instance of the local VPC)")
	cmd.Flags().BoolVar(&stopAll, "stop-all", false, "first stop every running task (used before a local VPC goes down)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "say nothing unless something was collected, left alone or failed")
	return cmd
}

// gcEveryLocalInstance runs `task gc` on each instance of a local VPC.
func gcEveryLocalInstance(ctl *localvpc.Control) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var errs []error
	for _, in := range ctl.Instances {
		if err := inInstance(ctl, in.ID, append([]string{exe}, os.Args[1:]...), os.Stdout); err != nil {
			errs = append(errs, fmt.Errorf("gc on %s: %w", in.ID, err))
		}
	}
	return errors.Join(errs...)
}
