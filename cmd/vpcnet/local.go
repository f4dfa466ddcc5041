package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
)

func localCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run a VPC on this machine: EC2 API, instance metadata and a routed datapath",
		Long: `A local VPC is an EC2 API, an instance metadata service and a VPC datapath built
from real kernel objects (network namespaces, veths, routes, nftables), so that
vpcnet and anything using the AWS SDK or CLI runs on one machine with no cloud
account. Instances are network namespaces with a primary ENI; attached ENIs
appear in them as devices; the VPC routes each address to the ENI that owns it
and enforces source/destination checks and security groups.

The control plane runs in the background; its state is kept under
` + localvpc.BaseStateDir + `/NAME, so restarting it loses nothing.`,
	}
	cmd.PersistentFlags().StringVar(&name, "name", localvpc.DefaultName, "name of the local VPC (prefixes its namespaces)")
	cmd.AddCommand(localUpCommand(&name), localDownCommand(&name), localStatusCommand(&name),
		localEnvCommand(&name), localExecCommand(&name), localFaultsCommand(&name),
		localRestartCommand(&name), localServeCommand(&name))
	return cmd
}

// serveArgs is the command line of the background control plane.
func serveArgs(name string) func(dir string) []string {
	return func(dir string) []string {
		exe, err := os.Executable()
		if err != nil {
			exe = os.Args[0]
		}
		return []string{exe, "local", "serve", "--name", name, "--state-dir", dir}
	}
}

func localUpCommand(name *string) *cobra.Command {
	var cfg localvpc.Config
	var vpcCIDR, faults, throttle, kubeBin string
	var subnets []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a local VPC (default: 10.0.0.0/16, two subnets, two m5.large instances)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Name = *name
			// Zero in Config means "the default": refuse it here, where
			// it can only have been asked for.
			if cfg.Instances < 1 {
				return fmt.Errorf("--instances %d: between 1 and 64", cfg.Instances)
			}
			// What was not asked for stays zero, so that `up` on a VPC
			// that exists resumes it unless a flag asks for something
			// else than it has.
			flags := cmd.Flags()
			for flag, field := range map[string]any{"instances": &cfg.Instances, "instance-type": &cfg.InstanceType, "region": &cfg.Region, "listen": &cfg.Listen} {
				if !flags.Changed(flag) {
					switch f := field.(type) {
					case *int:
						*f = 0
					case *string:
						*f = ""
					}
				}
			}
			if vpcCIDR != "" {
				p, err := netip.ParsePrefix(vpcCIDR)
				if err != nil {
					return fmt.Errorf("--vpc-cidr: %w", err)
				}
				cfg.VPCCIDR = p
			}
			for _, s := range subnets {
				sc, err := parseSubnet(s)
				if err != nil {
					return err
				}
				cfg.Subnets = append(cfg.Subnets, sc)
			}
			if faults != "" {
				f, err := ec2api.ParseFaults([]byte(faults))
				if err != nil {
					return fmt.Errorf("--faults: %w", err)
				}
				cfg.Faults = f
			}
			if throttle != "" {
				if err := json.Unmarshal([]byte(throttle), &cfg.Throttle); err != nil {
					return fmt.Errorf("--throttle: %w", err)
				}
			}
			start := time.Now()
			if cfg.Kubernetes {
				if err := ensureKubernetesBinaries(kubeBin); err != nil {
					return err
				}
				// Up again on a running cluster VPC completes the
				// cluster (a node that failed to start, say).
				if c, err := localvpc.Find(*name); err == nil && c.KubernetesAPI != "" {
					return startCluster(cmd, c, kubeBin)
				}
			}
			c, resumed, err := localvpc.Up(cmd.Context(), cfg, serveArgs(*name))
			if err != nil {
				return err
			}
			if cfg.Kubernetes {
				if err := startCluster(cmd, c, kubeBin); err != nil {
					return err
				}
				if c, err = localvpc.Find(*name); err != nil {
					return err
				}
			}
			c.Render(os.Stdout)
			verb := "up"
			if resumed {
				verb = "resumed (its control plane was down; state and datapath kept)"
			}
			n := localvpc.NameFlag(*name)
			fmt.Printf("\n%s in %s. Next: eval \"$(vpcnet local env%s)\"; vpcnet local exec%s 1 -- ip addr\n", verb, time.Since(start).Round(time.Millisecond), n, n)
			return nil
		},
	}
	cmd.Flags().IntVar(&cfg.Instances, "instances", localvpc.DefaultInstances, "number of instances")
	cmd.Flags().BoolVar(&cfg.ExternalHost, "external-host", false, "add a host outside the VPC, "+localvpc.ExternalHostAddr.String()+" in namespace NAME-ext, reached from instances as through an internet gateway")
	cmd.Flags().BoolVar(&cfg.KubernetesNode, "kubernetes-node", false, "prepare every instance as an EKS node: net.ipv4.ip_forward=1, rp_filter loose (2)")
	cmd.Flags().BoolVar(&cfg.Kubernetes, "kubernetes", false, "run a Kubernetes cluster on the VPC: the control plane on an ENI inside it, every instance a node (implies --kubernetes-node); then kubectl apply -k deploy/ installs vpcnetd")
	cmd.Flags().StringVar(&kubeBin, "kubernetes-bin", defaultKubeBin(), "where the Kubernetes binaries are (built there by scripts/install-kubernetes.sh when missing; env VPCNET_K8S_BIN)")
	cmd.Flags().StringVar(&cfg.InstanceType, "instance-type", localvpc.DefaultInstanceType, "instance type (limits ENIs and addresses per ENI as on EC2)")
	cmd.Flags().StringVar(&vpcCIDR, "vpc-cidr", "", "the VPC's IPv4 block (default 10.0.0.0/16)")
	cmd.Flags().StringSliceVar(&subnets, "subnets", nil, "subnets as CIDR[@zone], e.g. 10.0.0.0/20@us-east-1a (default: two /20s in two zones)")
	cmd.Flags().StringVar(&cfg.Region, "region", localvpc.DefaultRegion, "region")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "the EC2 API's address in the root namespace")
	cmd.Flags().StringVar(&faults, "faults", "", `fault injection as JSON, e.g. '{"attachDelay":"3s","actions":{"*":{"throttleRate":0.2}}}'`)
	cmd.Flags().StringVar(&throttle, "throttle", "", `EC2 request token buckets as JSON (default: EC2's own), e.g. '{"disabled":true}'`)
	return cmd
}

func parseSubnet(s string) (localvpc.SubnetConfig, error) {
	cidr, zone, _ := strings.Cut(s, "@")
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return localvpc.SubnetConfig{}, fmt.Errorf("--subnets %q: %w", s, err)
	}
	return localvpc.SubnetConfig{CIDR: p.Masked(), Zone: zone}, nil
}

func localRestartCommand(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart the control plane, keeping its state and the datapath",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := localvpc.Restart(cmd.Context(), *name, serveArgs(*name))
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "control plane of %s restarted (pid %d)\n", c.Name, c.PID)
			if c.KubernetesAPI != "" {
				// The cluster's processes outlive the control plane;
				// whatever of them died (a reboot) starts again.
				return startCluster(cmd, c, defaultKubeBin())
			}
			return nil
		},
	}
}

func localServeCommand(name *string) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "serve",
		Short:  "Run the control plane in the foreground (vpcnet local up starts it in the background)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if dir == "" {
				dir = localvpc.StateDir(*name)
			}
			return localvpc.Serve(ctx, dir, slogDefault())
		},
	}
	cmd.Flags().StringVar(&dir, "state-dir", "", "state directory (default "+localvpc.BaseStateDir+"/NAME)")
	return cmd
}
