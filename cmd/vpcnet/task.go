package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/task"
)

// taskOptions are the flags every task command shares.
type taskOptions struct {
	stateDir     string // root of vpcnet's state on the instance
	local        string // local VPC name, when running against one
	cniPath      string
	runtime      string
	endpointIdle time.Duration // how long the metadata endpoint outlives the last task
}

func (o *taskOptions) bind(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&o.stateDir, "state-dir", task.DefaultStateDir, "vpcnet's state directory on the instance")
	cmd.PersistentFlags().StringVar(&o.local, "local", localvpc.DefaultName, "name of the local VPC to use when one is running")
	cmd.PersistentFlags().StringVar(&o.cniPath, "cni-path", defaultCNIPath(), "directories holding vpc-eni, vpc-bridge and vpc-ipam (colon-separated)")
	cmd.PersistentFlags().StringVar(&o.runtime, "runtime", "runc", "the OCI runtime that runs tasks' sandboxes")
	cmd.PersistentFlags().DurationVar(&o.endpointIdle, "endpoint-idle", 30*time.Second, "how long the instance's task metadata endpoint stays up once no task runs")
}

// defaultCNIPath looks next to the vpcnet binary first (bin/ of a build),
// then where CNI plugins usually live.
func defaultCNIPath() string {
	dirs := []string{}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	return strings.Join(append(dirs, "/opt/cni/bin", "/usr/lib/cni"), ":")
}

// runner is the task lifecycle with these flags.
func (o *taskOptions) runner() task.Runner {
	exe, _ := os.Executable()
	return task.Runner{StateDir: o.stateDir, CNIPath: filepath.SplitList(o.cniPath), EndpointIdle: o.endpointIdle,
		Runtime: o.runtime, Self: []string{exe, "task"}}
}

// onLocalInstance runs this very command again on a local VPC instance,
// when it runs in the root namespace with a local VPC up, and returns its
// outcome (the child's exit status is this command's). It returns (false, nil) when the command should run here: on an
// instance already (EC2, or a local instance through `vpcnet local exec`).
func (o *taskOptions) onLocalInstance(instanceRef string, args []string) (bool, error) {
	if os.Getenv(localvpc.EnvInstance) != "" {
		return false, nil
	}
	ctl, err := localvpc.FindForInstance(o.local, instanceRef)
	if err != nil {
		// A local VPC whose control plane is down says so (and how to
		// restart it) rather than be taken for EC2.
		if errors.Is(err, localvpc.ErrDown) || instanceRef != "" && !strings.HasPrefix(instanceRef, "i-") {
			return false, err
		}
		return false, nil // no local VPC: assume a real instance
	}
	if instanceRef == "" {
		return false, fmt.Errorf("a local VPC (%q) is running: say on which instance with --instance (one of %s)", ctl.Name, ctl.InstanceIDs())
	}
	inst, err := ctl.Instance(instanceRef)
	if err != nil {
		return false, err
	}
	exe, err := os.Executable()
	if err != nil {
		return false, err
	}
	argv := append([]string{exe}, replaceInstance(args, instanceRef, inst.ID)...)
	return true, inInstance(ctl, inst.ID, argv, os.Stdout)
}

// inInstance runs argv on a local VPC instance as task commands run there
// (localvpc's RunInNetwork), with this process's stdin and stderr and
// stdout as given; its exit is this command's.
func inInstance(ctl *localvpc.Control, instanceID string, argv []string, stdout io.Writer) error {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, os.Stderr
	return ctl.RunInNetwork(instanceID, c)
}

// replaceInstance swaps a positional instance reference ("1") for its ID
// in the arguments handed to the re-executed command.
func replaceInstance(args []string, ref, id string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(out, args[i:]...)
		case a == "--instance" && i+1 < len(args):
			out = append(out, a, id)
			i++
		case a == "--instance="+ref:
			out = append(out, "--instance="+id)
		default:
			out = append(out, a)
		}
	}
	return out
}

func taskCommand() *cobra.Command {
	o := &taskOptions{}
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Run tasks with their own ENI (the ECS awsvpc flow)",
		Long: `A task gets its own elastic network interface: vpcnet creates it in the
subnet with the security groups you name, attaches it to the instance, moves
it into the task's network namespace with the vpc-eni CNI plugin (instance
metadata blocked), adds a private bridge to the task metadata endpoint at
169.254.170.2 (vpc-bridge + vpc-ipam), runs the command there in a sandbox
(runc: its own mount, PID, UTS and IPC namespaces, a container's default
capabilities), and undoes it all when the command exits.

On EC2, run it on the instance. With a local VPC up (vpcnet local up), run it
from the host: --instance says which local instance the task runs on.`,
	}
	o.bind(cmd)
	cmd.AddCommand(taskRunCommand(o), taskExecCommand(o), taskLsCommand(o), taskStopCommand(o), taskGCCommand(o),
		taskSuperviseCommand(), taskEndpointCommand(o))
	return cmd
}

func taskRunCommand(o *taskOptions) *cobra.Command {
	var opts task.RunOptions
	var detach bool
	cmd := &cobra.Command{
		Use:   "run --subnet SUBNET [--security-group SG]... [--instance I] [--name N] [--cap-add CAP]... [--privileged] [--detach] -- COMMAND [ARG...]",
		Short: "Run a command as a task with its own ENI",
		Long: `Run COMMAND in a new network namespace with its own ENI, in a sandbox. The
steps and their timings are printed on stderr; the command's output is
streamed. The exit status is the command's. With --detach, the task runs in
the background and its ID is printed once it runs; stop it with 'vpcnet task
stop ID'.

The command runs as root in a container: the host's files read-only (/tmp
writable), its own /proc, /dev and /run, vpcnet's state hidden, the default
capabilities of a container runtime (no NET_ADMIN: it cannot unblock
instance metadata), no_new_privs. --cap-add and --privileged give more.

Every step is recorded before it is taken: if vpcnet is killed, 'vpcnet task
gc' (or the next run) finishes the teardown.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Spec.Command = args
			// Bad input is refused here, before anything is created.
			if err := opts.Spec.Validate(); err != nil {
				return err
			}
			if handled, err := o.onLocalInstance(opts.Instance, os.Args[1:]); handled || err != nil {
				return err
			}
			if detach {
				id, err := o.runner().Detach(cmd.Context(), opts)
				if err == nil {
					fmt.Println(id)
				}
				return err
			}
			return o.runner().Run(cmd.Context(), task.NewID(), opts, task.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Instance, "instance", "", "instance to run on (ID, or 1, 2, ... on a local VPC); default: this instance")
	f.StringVar(&opts.Spec.SubnetID, "subnet", "", "subnet of the task's ENI (required)")
	f.StringSliceVar(&opts.Spec.Groups, "security-group", nil, "security group of the task's ENI (repeatable; default: the VPC's default group)")
	f.StringVar(&opts.Spec.Name, "name", "", "a name for the task (the ENI's Name tag), unique among the instance's running tasks")
	f.StringSliceVar(&opts.Spec.Sandbox.CapAdd, "cap-add", nil, "add a capability to the task's default set (repeatable, e.g. NET_ADMIN)")
	f.BoolVar(&opts.Spec.Sandbox.Privileged, "privileged", false, "give the task every capability vpcnet has and lift the sandbox's other limits (see README)")
	f.DurationVar(&opts.Timeout, "timeout", 2*time.Minute, "deadline for setting the task up (EC2 retries included)")
	f.BoolVarP(&opts.Quiet, "quiet", "q", false, "do not print the steps")
	f.BoolVarP(&detach, "detach", "d", false, "run in the background and print the task ID")
	_ = cmd.MarkFlagRequired("subnet")
	return cmd
}

func taskSuperviseCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "supervise SUPERVISION",
		Short:  "Run one detached task (used by run --detach)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return task.Supervise(cmd.Context(), args[0])
		},
	}
}

func taskEndpointCommand(o *taskOptions) *cobra.Command {
	var instanceID, region, zone string
	cmd := &cobra.Command{
		Use:    "endpoint",
		Short:  "Serve task metadata at 169.254.170.2 on this instance",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runner().ServeEndpoint(cmd.Context(), instanceID, region, zone)
		},
	}
	cmd.Flags().StringVar(&instanceID, "instance-id", "", "this instance's ID")
	cmd.Flags().StringVar(&region, "region", "", "this instance's region")
	cmd.Flags().StringVar(&zone, "zone", "", "this instance's availability zone")
	return cmd
}
