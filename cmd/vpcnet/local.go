package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/task"
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
	var vpcCIDR, faults, throttle string
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
			c, resumed, err := localvpc.Up(cmd.Context(), cfg, serveArgs(*name))
			if err != nil {
				return err
			}
			printControl(os.Stdout, c)
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

func printControl(w io.Writer, c *localvpc.Control) {
	fmt.Fprintf(w, "local VPC %s (%s) in %s, control plane pid %d\n", c.Name, c.VPCID, c.Region, c.PID)
	fmt.Fprintf(w, "EC2 API: %s (root namespace), %s (inside the VPC)\n", c.Endpoint, c.VPCEndpoint)
	fmt.Fprintf(w, "default security group: %s\n", c.DefaultGroup)
	if c.ExternalHost != "" {
		fmt.Fprintf(w, "external host: %s (namespace %s), outside the VPC\n", c.ExternalHost, c.ExternalNamespace)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tCIDR\tZONE")
	for _, s := range c.Subnets {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.ID, s.CIDR, s.Zone)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tINSTANCE\tTYPE\tSUBNET\tZONE\tADDRESS\tNAMESPACE")
	for i, in := range c.Instances {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, in.ID, in.Type, in.SubnetID, in.Zone, in.PrivateIP, in.Namespace)
	}
	tw.Flush()
}

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
			c := exec.Command(exe, "task", "gc", "--stop-all", "--local", ctl.Name, "--instance", in.ID)
			c.Env = ctl.InstanceEnv(os.Environ(), in.ID)
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			return c
		}
		if c := gc(); netops.StartIn(netops.NamedNSPath(in.Namespace), c) == nil {
			_ = c.Wait()
		}
		// Quiet unless the instance's own view held tasks.
		var out bytes.Buffer
		if c := gc(); ctl.StartOnInstance(in.ID, withOutput(c, &out)) == nil {
			if err := c.Wait(); err != nil || !strings.Contains(out.String(), "finished 0 task(s) [], deleted 0 orphan ENI(s) [], removed 0 orphan namespace(s) []") {
				os.Stderr.Write(out.Bytes())
			}
		}
	}
}

func withOutput(c *exec.Cmd, w io.Writer) *exec.Cmd {
	c.Stdout, c.Stderr = w, w
	return c
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
			if err := adminCall(cmd.Context(), c, http.MethodGet, "/vpcnet/status", nil, &st); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printControl(os.Stdout, c)
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
			// group); those sent to this process alone are passed on.
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigs)
			if err := c.StartOnInstance(args[0], child); err != nil {
				return err
			}
			done := make(chan struct{})
			go func() {
				for {
					select {
					case s := <-sigs:
						if s == syscall.SIGTERM || s == syscall.SIGHUP {
							_ = child.Process.Signal(s)
						}
					case <-done:
						return
					}
				}
			}()
			err = child.Wait()
			close(done)
			return exitStatus(err)
		},
	}
}

// exitStatus turns the end of a child into this process's exit status: its
// code, or 128 + the signal that killed it, as a shell reports it.
func exitStatus(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return task.ExitError{Code: 128 + int(ws.Signal())}
	}
	return task.ExitError{Code: ee.ExitCode()}
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
				err = adminCall(cmd.Context(), c, http.MethodPut, "/vpcnet/faults", ec2api.Faults{}, &f)
			case len(args) == 1:
				if f, err = ec2api.ParseFaults([]byte(args[0])); err != nil {
					return err
				}
				err = adminCall(cmd.Context(), c, http.MethodPut, "/vpcnet/faults", f, &f)
			default:
				err = adminCall(cmd.Context(), c, http.MethodGet, "/vpcnet/faults", nil, &f)
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

// adminCall talks to the control plane's admin API on the root loopback.
func adminCall(ctx context.Context, c *localvpc.Control, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, body)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the control plane does not answer: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(data)))
	}
	return json.Unmarshal(data, out)
}
