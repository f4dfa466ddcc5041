// Command vpcnet is the command people type: `vpcnet local` runs a local VPC
// (an EC2 API, instance metadata and a routed VPC datapath on this machine),
// `vpcnet task` runs a task with its own ENI (the ECS awsvpc flow), and
// `vpcnet version` prints the build stamp.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/version"
)

func main() {
	logger, closeLog := logging.New("vpcnet")
	slog.SetDefault(logger)
	err := rootCommand().Execute()
	closeLog()
	// A task's own exit status is vpcnet's.
	var te proc.ExitError
	switch {
	case errors.As(err, &te):
		os.Exit(te.Code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "vpcnet:", err)
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "vpcnet",
		Short: "First-class VPC addresses for containers",
		Long: `vpcnet gives every container its own address in a cloud VPC: a whole ENI per
task (the ECS awsvpc model), and runs all of it on a local VPC on this machine
when there is no cloud account.

Logs go to stderr (warnings and errors) and, when VPCNET_LOG_FILE is set, to
that file as JSON lines (level from VPCNET_LOG_LEVEL).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				return version.Print(os.Stdout)
			}
			return cmd.Help()
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the build stamp as JSON and exit")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the build stamp as JSON",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return version.Print(os.Stdout) },
	})
	root.AddCommand(localCommand(), taskCommand(), nodeCommand())
	return root
}

func slogDefault() *slog.Logger { return slog.Default() }
