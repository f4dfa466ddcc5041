// Command vpcnetd is the node agent of the pod model: a warm pool of the
// node's ENI addresses, served to the vpc-pod CNI plugin over a unix socket;
// see internal/node.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/version"
)

func main() {
	logger, closeLog := logging.New("vpcnetd")
	slog.SetDefault(logger)
	err := command(logger).Execute()
	closeLog()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vpcnetd:", err)
		os.Exit(1)
	}
}

func command(log *slog.Logger) *cobra.Command {
	cfg := node.DefaultConfig()
	var configFile string
	var showVersion, cleanup bool
	cmd := &cobra.Command{
		Use:   "vpcnetd",
		Short: "The vpcnet node agent: VPC addresses for pods from a warm pool of ENI addresses",
		Long: `vpcnetd runs on every node (as a DaemonSet on Kubernetes, as aws-node does). It
keeps a warm pool of secondary addresses or /28 prefixes on the node's ENIs and
hands them to pods through the vpc-pod CNI plugin, over a gRPC API on a unix
socket (with grpc.health.v1). Pool targets use aws-node's environment variables
(WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET, WARM_PREFIX_TARGET,
ENABLE_PREFIX_DELEGATION, MAX_ENI, IP_COOLDOWN_PERIOD, ...; see README), which
override the same settings in the --config file.

It finds its instance, subnet, groups and VPC in instance metadata and calls
EC2 through the AWS SDK's ordinary configuration (default credential chain,
AWS_ENDPOINT_URL_EC2, region from metadata), so the same binary runs on EC2 and
on a local VPC instance.

Introspection (JSON) is served on --introspection-addr (vpcnet node status
reads it), Prometheus metrics on --metrics-addr. SIGTERM stops it gracefully:
in-flight calls finish, pods keep their addresses, the pool stays.

Logs go to stderr (warnings and errors) and, when VPCNET_LOG_FILE is set, to
that file as JSON lines (level from VPCNET_LOG_LEVEL).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				return version.Print(os.Stdout)
			}
			if cleanup {
				return node.Cleanup()
			}
			if err := node.LoadPoolConfig(&cfg, configFile); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				// A stop that hangs is a bug: show where, then go.
				<-ctx.Done()
				time.Sleep(cfg.Pool.AddWait + 15*time.Second)
				fmt.Fprintln(os.Stderr, "vpcnetd: graceful stop still not done; goroutines:")
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
				os.Exit(2)
			}()
			return node.Start(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&showVersion, "version", false, "print the build stamp as JSON and exit")
	f.BoolVar(&cleanup, "cleanup", false, "remove the node networking vpcnetd made (rules, route tables, nftables table) and exit")
	f.StringVar(&configFile, "config", "", "JSON config file (camelCase names of the pool settings; environment variables override it)")
	f.StringVar(&cfg.StatePath, "state", cfg.StatePath, "the assignment store (bbolt)")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket of the CNI backend API")
	f.StringVar(&cfg.IntrospectionAddr, "introspection-addr", cfg.IntrospectionAddr, "address of the introspection endpoint (/v1/status); empty turns it off")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "address of the Prometheus endpoint (/metrics); empty turns it off")
	f.StringVar(&cfg.CNIConfPath, "cni-conf", "", "write the node's CNI conflist here once serving (e.g. /etc/cni/net.d/"+node.DefaultCNIConfName+"); empty: none")
	f.StringVar(&cfg.CNIConfTemplate, "cni-conf-template", "", "conflist to write at --cni-conf instead of the default (vpc-pod alone); must chain vpc-pod")
	cmd.AddCommand(probeCommand(), installCNICommand())
	return cmd
}

func probeCommand() *cobra.Command {
	socket := node.DefaultConfig().Socket
	timeout := 3 * time.Second
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Exit 0 if the vpcnetd at --socket serves (grpc.health.v1), else say why and exit 1",
		Long: `probe asks a running vpcnetd over its unix socket whether it serves ADDs:
SERVING once its first reconcile has read EC2 (and the conflist is written).
It is the DaemonSet's readiness and liveness check (Kubernetes' own grpc
probe speaks TCP only, and vpcnetd's API is a unix socket).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return nodeapi.Probe(ctx, socket)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", socket, "unix socket of vpcnetd")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "give up after this long")
	return cmd
}

func installCNICommand() *cobra.Command {
	from, to := "", "/host/opt/cni/bin"
	cmd := &cobra.Command{
		Use:   "install-cni [PLUGIN...]",
		Short: "Copy the CNI plugins into the node's plugin directory (the DaemonSet's init step)",
		Long: `install-cni copies CNI plugin binaries from --from (default: the directory of
this binary) into --to, each replaced whole, so that a kubelet never runs half
a file. With no PLUGIN named it copies vpc-pod (required) and, where present
beside it, portmap, bandwidth and loopback. It prints what it installed.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, names []string) error {
			if from == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this binary's directory (give --from): %w", err)
				}
				from = filepath.Dir(exe)
			}
			done, err := node.InstallCNI(from, to, names)
			for _, n := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "installed %s\n", filepath.Join(to, n))
			}
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", from, "directory holding the plugins (default: this binary's)")
	cmd.Flags().StringVar(&to, "to", to, "the node's CNI plugin directory, as mounted here")
	return cmd
}
