package main

// vpcnet local status, env, exec and faults: looking into a running local VPC.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
)

func localStatusCommand(name *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a local VPC: endpoint, subnets, instances, interfaces, faults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localvpc.Find(*name)
			if err != nil {
				return err
			}
			var st localvpc.Status
			if err := c.Admin(cmd.Context(), http.MethodGet, "/vpcnet/status", nil, &st); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			c.Render(os.Stdout)
			fmt.Printf("\nnetwork interfaces: %d (%d attached), security groups: %d, state revision %d\n",
				st.NetworkInterfaces, st.Attached, st.SecurityGroups, st.Revision)
			if f, _ := json.Marshal(st.Faults); string(f) != "{}" {
				fmt.Printf("faults: %s\n", f)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func localEnvCommand(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: `Print shell exports for the AWS CLI and SDK: eval "$(vpcnet local env)"`,
		Long: `Print shell exports that point the AWS SDK and CLI in the root namespace at the
local VPC's EC2 API, with the operator's credentials. Debian's AWS CLI v2 (2.9)
predates AWS_ENDPOINT_URL_EC2: give it --endpoint-url "$AWS_ENDPOINT_URL_EC2".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localvpc.Find(*name)
			if err != nil {
				return err
			}
			for _, kv := range c.RootEnv() {
				fmt.Printf("export %s=%q\n", kv[0], kv[1])
			}
			return nil
		},
	}
}

func localExecCommand(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "exec INSTANCE -- COMMAND [ARG...]",
		Short: "Run a command on an instance (its namespaces, an instance's environment)",
		Long: `Run COMMAND on INSTANCE (its ID, or 1, 2, ... in the order of 'vpcnet local
status'): in its network namespace and its mount namespace, where ` + strings.Join(localvpc.PrivateDirs, ", ") + `
are the instance's own (named network namespaces, ` + localvpc.SharedDirs[0] + `, stay the
machine's), with the environment a process on an EC2 instance has: no AWS
credentials or region (the SDK and CLI get them from instance metadata at
169.254.169.254), and AWS_ENDPOINT_URL_EC2 pointing at the EC2 API inside the
VPC. The exit status is COMMAND's.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localvpc.Find(*name)
			if err != nil {
				return err
			}
			child := exec.Command(args[1], args[2:]...)
			child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
			// Signals from the terminal reach COMMAND (same process
			// group) and must not end this one first; those sent to
			// this process alone are passed on.
			terminal := make(chan os.Signal, 4)
			signal.Notify(terminal, syscall.SIGINT, syscall.SIGQUIT)
			defer signal.Stop(terminal)
			return c.RunOnInstance(args[0], child, syscall.SIGTERM, syscall.SIGHUP)
		},
	}
}

func localFaultsCommand(name *string) *cobra.Command {
	var clear bool
	cmd := &cobra.Command{
		Use:   "faults [JSON]",
		Short: "Show or set fault injection (latency, errors, throttling, attach delay, metadata lag)",
		Long: `With no argument, print the fault configuration. With a JSON argument, replace it:

  {"actions": {"AttachNetworkInterface": {"latency": "200ms", "latencyMax": "1s",
                                           "errorRate": 0.1, "errorCode": "InternalError"},
               "*": {"throttleRate": 0.05}},
   "attachDelay": "2s", "attachDelayMax": "5s", "metadataLag": "500ms"}

An action's own entry replaces "*" for that action. attachDelay is the time from
AttachNetworkInterface to the device appearing on the instance (with
attachDelayMax, each attachment draws a time between the two, as on AWS); metadataLag
delays what instance metadata shows after a change.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localvpc.Find(*name)
			if err != nil {
				return err
			}
			var f ec2api.Faults
			switch {
			case clear:
				err = c.Admin(cmd.Context(), http.MethodPut, "/vpcnet/faults", ec2api.Faults{}, &f)
			case len(args) == 1:
				if f, err = ec2api.ParseFaults([]byte(args[0])); err != nil {
					return err
				}
				err = c.Admin(cmd.Context(), http.MethodPut, "/vpcnet/faults", f, &f)
			default:
				err = c.Admin(cmd.Context(), http.MethodGet, "/vpcnet/faults", nil, &f)
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(f)
		},
	}
	cmd.Flags().BoolVar(&clear, "clear", false, "remove every fault")
	return cmd
}
