package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/task"
)

// taskOptions are the flags every task command shares.
type taskOptions struct {
	stateDir     string // root of vpcnet's state on the instance
	local        string // local VPC name, when running against one
	cniPath      string
	endpointIdle time.Duration // how long the metadata endpoint outlives the last task
}

func (o *taskOptions) bind(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&o.stateDir, "state-dir", "/var/lib/vpcnet", "vpcnet's state directory on the instance")
	cmd.PersistentFlags().StringVar(&o.local, "local", localvpc.DefaultName, "name of the local VPC to use when one is running")
	cmd.PersistentFlags().StringVar(&o.cniPath, "cni-path", defaultCNIPath(), "directories holding vpc-eni, vpc-bridge and vpc-ipam (colon-separated)")
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

// host is the layout of task state on this machine.
func (o *taskOptions) host() task.Host { return task.Host{StateDir: o.stateDir} }

// onLocalInstance re-executes this very command inside a local VPC
// instance's namespace, with the environment of a process on that instance,
// when it runs in the root namespace with a local VPC up. It returns
// (false, nil) when the command should run here: on an instance already
// (EC2, or a local instance through `vpcnet local exec`).
func (o *taskOptions) onLocalInstance(instanceRef string, args []string) (bool, error) {
	if os.Getenv(localvpc.EnvInstance) != "" {
		return false, nil
	}
	ctl, err := localvpc.FindForInstance(o.local, instanceRef)
	if err != nil {
		if instanceRef != "" && !strings.HasPrefix(instanceRef, "i-") {
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
	return true, netops.ExecIn(netops.NamedNSPath(inst.Namespace), argv, ctl.InstanceEnv(os.Environ(), inst.ID))
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

// taskRetry is the launcher's retry policy: a launch has a deadline
// (--timeout) and a teardown its own, and those, not a count of attempts,
// should decide when to give up on a throttling or failing EC2. With ten
// attempts, one call in a thousand fails outright when half of the calls
// are throttled.
var taskRetry = cloud.RetryPolicy{MaxAttempts: 25, MaxBackoff: cloud.DefaultRetry.MaxBackoff}

// launcher builds the task launcher of the instance this process runs on.
func (o *taskOptions) launcher(ctx context.Context, progress io.Writer) (*task.Launcher, error) {
	cfg, err := cloud.LoadConfig(ctx, taskRetry)
	if err != nil {
		return nil, err
	}
	apiErrors := &cloud.APIErrors{}
	apiErrors.Watch(&cfg)
	c := cloud.New(cfg)
	id, err := c.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("not on an instance? %w", err)
	}
	dir := o.host().Dir(id.InstanceID)
	l := &task.Launcher{
		Cloud:     c,
		Identity:  id,
		Store:     o.host().Store(id.InstanceID),
		APIErrors: apiErrors,
		Net: task.Networks{
			CNIPath:  filepath.SplitList(o.cniPath),
			CacheDir: filepath.Join(dir, "cni-cache"),
			IPAMDir:  filepath.Join(dir, "ipam"),
		},
		EnsureEndpoint: func() error {
			return task.EnsureEndpoint(dir, func() (int, error) {
				return spawnDetached(filepath.Join(dir, "endpoint.log"), "task", "endpoint", "--state-dir", o.stateDir,
					"--instance-id", id.InstanceID, "--region", id.Region, "--zone", id.Zone, "--endpoint-idle", o.endpointIdle.String())
			})
		},
	}
	if progress != nil {
		l.Progress = &task.Progress{W: progress}
	}
	return l, nil
}

// spawnDetached starts vpcnet with args as a daemon of its own session, its
// output appended to logPath.
func spawnDetached(logPath string, args ...string) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
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
169.254.170.2 (vpc-bridge + vpc-ipam), runs the command there, and undoes it
all when the command exits.

On EC2, run it on the instance. With a local VPC up (vpcnet local up), run it
from the host: --instance says which local instance the task runs on.`,
	}
	o.bind(cmd)
	cmd.AddCommand(taskRunCommand(o), taskExecCommand(o), taskLsCommand(o), taskStopCommand(o), taskGCCommand(o),
		taskSuperviseCommand(o), taskEndpointCommand(o))
	return cmd
}

type runFlags struct {
	instance, subnet, name string
	groups                 []string
	detach, quiet          bool
	timeout                time.Duration
}

func (f *runFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.instance, "instance", "", "instance to run on (ID, or 1, 2, ... on a local VPC); default: this instance")
	cmd.Flags().StringVar(&f.subnet, "subnet", "", "subnet of the task's ENI (required)")
	cmd.Flags().StringSliceVar(&f.groups, "security-group", nil, "security group of the task's ENI (repeatable; default: the VPC's default group)")
	cmd.Flags().StringVar(&f.name, "name", "", "a name for the task (the ENI's Name tag)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "deadline for setting the task up (EC2 retries included)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "do not print the steps")
	_ = cmd.MarkFlagRequired("subnet")
}

func taskRunCommand(o *taskOptions) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run --subnet SUBNET [--security-group SG]... [--instance I] [--name N] [--detach] -- COMMAND [ARG...]",
		Short: "Run a command as a task with its own ENI",
		Long: `Run COMMAND in a new network namespace with its own ENI. The steps and their
timings are printed on stderr; the command's output is streamed. The exit
status is the command's. With --detach, the task runs in the background and
its ID is printed once it runs; stop it with 'vpcnet task stop ID'.

Every step is recorded before it is taken: if vpcnet is killed, 'vpcnet task
gc' (or the next run) finishes the teardown.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if handled, err := o.onLocalInstance(f.instance, os.Args[1:]); handled || err != nil {
				return err
			}
			spec := task.Spec{Name: f.name, SubnetID: f.subnet, Groups: f.groups, Command: args}
			if f.detach {
				return runDetached(cmd.Context(), o, f, spec)
			}
			return runForeground(cmd.Context(), o, f, spec, task.NewID(), os.Stdin, os.Stdout, os.Stderr)
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the task ID")
	return cmd
}

// runForeground sets the task up, runs it, and tears it down, whatever
// happens in between (the command exits, a signal arrives).
func runForeground(ctx context.Context, o *taskOptions, f *runFlags, spec task.Spec, id string, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = stderr
	if f.quiet {
		progress = nil
	}
	l, err := o.launcher(ctx, progress)
	if err != nil {
		return err
	}
	if l.Progress != nil {
		l.Progress.Task = id[:12]
	}
	if f.instance != "" && f.instance != l.Identity.InstanceID {
		return fmt.Errorf("--instance %s, but this is instance %s: run it there (or from the host of a local VPC)", f.instance, l.Identity.InstanceID)
	}
	if len(spec.Groups) == 0 {
		spec.Groups = nil // EC2 applies the VPC's default group
	}
	setupCtx, cancel := context.WithTimeout(ctx, f.timeout)
	r, err := l.Start(setupCtx, id, spec, os.Getpid())
	timedOut := errors.Is(setupCtx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil && timedOut {
		return fmt.Errorf("task %s failed to start within --timeout %s: %w", id, f.timeout, err)
	}
	if err != nil {
		return fmt.Errorf("task %s failed to start: %w", id, err)
	}
	code, execErr := l.Exec(ctx, r, task.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := l.Teardown(tctx, r, task.StateStopped); err != nil {
		return fmt.Errorf("task %s: teardown incomplete (vpcnet task gc retries): %w", id, errors.Join(execErr, err))
	}
	if execErr != nil {
		return execErr
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// runDetached hands the task to a supervisor process and returns once the
// task runs (or failed to start).
func runDetached(ctx context.Context, o *taskOptions, f *runFlags, spec task.Spec) error {
	id := task.NewID()
	args := []string{"task", "supervise", "--id", id, "--subnet", spec.SubnetID, "--state-dir", o.stateDir, "--cni-path", o.cniPath,
		"--timeout", f.timeout.String(), "--endpoint-idle", o.endpointIdle.String()}
	if f.name != "" {
		args = append(args, "--name", f.name)
	}
	for _, g := range spec.Groups {
		args = append(args, "--security-group", g)
	}
	args = append(append(args, "--"), spec.Command...)
	// The supervisor needs our identity to find the store; a short
	// metadata read is cheaper than guessing.
	cfg, err := cloud.LoadConfig(ctx, cloud.DefaultRetry)
	if err != nil {
		return err
	}
	ident, err := cloud.New(cfg).Identity(ctx)
	if err != nil {
		return err
	}
	logPath := filepath.Join(o.host().Dir(ident.InstanceID), "logs", id+".log")
	pid, err := spawnDetached(logPath, args...)
	if err != nil {
		return fmt.Errorf("failed to start the task's supervisor: %w", err)
	}
	store := o.host().Store(ident.InstanceID)
	deadline := time.Now().Add(f.timeout + 10*time.Second)
	for time.Now().Before(deadline) {
		r, err := store.Get(id)
		if err == nil {
			if started, done := r.Launched(); done {
				if !started {
					return fmt.Errorf("task %s failed to start: %s (log: %s)", id, r.Error, logPath)
				}
				fmt.Println(id)
				return nil
			}
		}
		if !task.Alive(pid) {
			if r, err := store.Get(id); err == nil {
				if started, done := r.Launched(); done && started {
					fmt.Println(id)
					return nil
				}
			}
			return fmt.Errorf("task %s: its supervisor (pid %d) exited before the task ran (log: %s)", id, pid, logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("task %s did not start within %s (log: %s)", id, f.timeout, logPath)
}

func taskSuperviseCommand(o *taskOptions) *cobra.Command {
	f := &runFlags{}
	var id string
	cmd := &cobra.Command{
		Use:    "supervise --id ID --subnet S -- COMMAND",
		Short:  "Run one detached task (used by run --detach)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := task.Spec{Name: f.name, SubnetID: f.subnet, Groups: f.groups, Command: args}
			devnull, _ := os.Open(os.DevNull)
			err := runForeground(cmd.Context(), o, f, spec, id, devnull, os.Stdout, os.Stderr)
			var ee exitError
			if errors.As(err, &ee) {
				return nil // the command's status is in the record
			}
			return err
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&id, "id", "", "task ID")
	return cmd
}

func taskEndpointCommand(o *taskOptions) *cobra.Command {
	var instanceID, region, zone string
	cmd := &cobra.Command{
		Use:    "endpoint",
		Short:  "Serve task metadata at 169.254.170.2 on this instance",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.endpointIdle <= 0 {
				return fmt.Errorf("--endpoint-idle must be positive")
			}
			e := task.Endpoint{Store: o.host().Store(instanceID), Region: region, Zone: zone, Dir: o.host().Dir(instanceID)}
			return task.ServeEndpoint(ctx, e, o.endpointIdle)
		},
	}
	cmd.Flags().StringVar(&instanceID, "instance-id", "", "this instance's ID")
	cmd.Flags().StringVar(&region, "region", "", "this instance's region")
	cmd.Flags().StringVar(&zone, "zone", "", "this instance's availability zone")
	return cmd
}

func taskExecCommand(o *taskOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "exec TASK -- COMMAND [ARG...]",
		Short: "Run a command inside a running task's network namespace",
		Long: `Run COMMAND in the network namespace of a running task (its ID, an ID prefix or
its name), as the task's own processes run: same addresses, routes and
blocked instance metadata, and the task metadata endpoint variables set.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := o.host().Find(args[0])
			if err != nil {
				return err
			}
			if r.State != task.StateRunning {
				return fmt.Errorf("task %s is %s, not running", r.ID[:12], r.State)
			}
			return netops.ExecIn(r.Netns, args[1:], task.Env(&r))
		},
	}
}

func taskLsCommand(o *taskOptions) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List tasks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var records []task.Record
			for _, s := range o.host().Stores() {
				rs, err := s.List()
				if err != nil {
					return err
				}
				for _, r := range rs {
					if all || !r.State.Done() {
						records = append(records, r)
					}
				}
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if records == nil {
					records = []task.Record{}
				}
				return enc.Encode(records)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TASK\tNAME\tINSTANCE\tENI\tADDRESS\tSTATE\tAGE")
			for _, r := range records {
				addr := ""
				if len(r.Addresses) > 0 {
					addr = r.Addresses[0].String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID[:12], r.Name, r.InstanceID, r.ENIID, addr, r.State, time.Since(r.Created).Round(time.Second))
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
			r, err := o.host().Find(args[0])
			if err != nil {
				return err
			}
			if r.State.Done() {
				fmt.Fprintf(os.Stderr, "task %s is already %s\n", r.ID[:12], r.State)
				return nil
			}
			if r.SupervisorAlive() {
				// Its owner tears it down; wait for that, unless the owner
				// dies first.
				_ = syscall.Kill(r.Supervisor, syscall.SIGTERM)
				err := task.WaitDone(o.host().Store(r.InstanceID), r, timeout)
				if !errors.Is(err, task.ErrOwnerGone) {
					return err
				}
				if r, err = o.host().Store(r.InstanceID).Get(r.ID); err != nil {
					return err
				}
			}
			// The owner is gone: finish the teardown on the task's instance.
			if handled, err := o.onLocalInstance(r.InstanceID, os.Args[1:]); handled || err != nil {
				return err
			}
			l, err := o.launcher(cmd.Context(), os.Stderr)
			if err != nil {
				return err
			}
			l.Progress.Task = r.ID[:12]
			return l.Teardown(cmd.Context(), &r, task.StateStopped)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the teardown")
	return cmd
}

func taskGCCommand(o *taskOptions) *cobra.Command {
	var instance string
	var stopAll bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Finish interrupted launches and teardowns; delete ENIs of tasks that are gone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv(localvpc.EnvInstance) == "" && instance == "" {
				if ctl, err := localvpc.Find(o.local); err == nil {
					return gcEveryLocalInstance(ctl)
				}
			}
			if handled, err := o.onLocalInstance(instance, os.Args[1:]); handled || err != nil {
				return err
			}
			l, err := o.launcher(cmd.Context(), os.Stderr)
			if err != nil {
				return err
			}
			l.Progress.Task = "gc"
			if stopAll {
				task.StopSupervisors(l.Store)
			}
			rep, err := l.GC(cmd.Context())
			fmt.Fprintf(os.Stderr, "%s: %s\n", l.Identity.InstanceID, rep)
			if stopAll {
				dir := o.host().Dir(l.Identity.InstanceID)
				task.StopEndpoint(dir)
				// A local instance goes away with its VPC, and its ID is
				// never used again: so does its state, once nothing is left.
				if err == nil && os.Getenv(localvpc.EnvInstance) != "" {
					if rs, lerr := l.Store.List(); lerr == nil && len(rs) == 0 {
						_ = os.RemoveAll(dir)
					}
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "only this instance (default: this one, or every instance of the local VPC)")
	cmd.Flags().BoolVar(&stopAll, "stop-all", false, "first stop every running task (used before a local VPC goes down)")
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
		c := exec.Command(exe, os.Args[1:]...)
		c.Env = ctl.InstanceEnv(os.Environ(), in.ID)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		err := netops.StartIn(netops.NamedNSPath(in.Namespace), c)
		if err == nil {
			err = c.Wait()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gc on %s: %w", in.ID, err))
		}
	}
	return errors.Join(errs...)
}
