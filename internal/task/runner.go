package task

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// Runner is the task lifecycle as the vpcnet command drives it on an
// instance: foreground and detached runs (a detached task is owned by a
// supervisor process, a re-run of this binary), stop (ask the owner, wait,
// or tear down when the owner is gone), GC, exec into a task, the list of
// tasks, and the instance's metadata endpoint. The command decides where
// it runs (on which instance); the Runner runs there.
type Runner struct {
	StateDir     string        `json:"stateDir"`
	CNIPath      []string      `json:"cniPath"`
	EndpointIdle time.Duration `json:"endpointIdle"`
	// Runtime is the OCI runtime's binary (default "runc").
	Runtime string `json:"runtime,omitempty"`
	// Self runs this binary's task commands: the executable and "task".
	// The supervisor and the endpoint are started with it.
	Self []string `json:"self"`
}

// RunOptions are a run's flags besides the spec.
type RunOptions struct {
	Spec    Spec          `json:"spec"`
	Timeout time.Duration `json:"timeout"` // deadline of the set-up
	Quiet   bool          `json:"quiet"`   // no progress lines
	// Instance, when set, is the instance the user named: running
	// elsewhere is an error.
	Instance string `json:"instance,omitempty"`
}

// Host is the layout of the runner's state.
func (rn Runner) Host() Host { return Host{StateDir: rn.StateDir} }

// Launcher builds the task launcher of the instance this process runs on.
func (rn Runner) Launcher(ctx context.Context, progress io.Writer) (*Launcher, error) {
	cfg, err := cloud.LoadConfig(ctx, cloud.TaskRetryPolicy)
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
	h := rn.Host()
	dir, err := h.Ensure(id.InstanceID)
	if err != nil {
		return nil, err
	}
	storeID, err := h.StoreID(id.InstanceID)
	if err != nil {
		return nil, err
	}
	stateDir, _ := filepath.Abs(rn.StateDir)
	l := &Launcher{
		Cloud:     c,
		Identity:  id,
		Store:     h.Store(id.InstanceID),
		APIErrors: apiErrors,
		Net: Networks{
			CNIPath:  rn.CNIPath,
			CacheDir: filepath.Join(dir, "cni-cache"),
			IPAMDir:  filepath.Join(dir, "ipam"),
		},
		Runtime:  Runtime{Bin: rn.Runtime, Root: filepath.Join(dir, "runtime"), Bundles: filepath.Join(dir, "bundles")},
		Hidden:   append(h.Hidden(), operatorAWSDir()...),
		StoreID:  storeID,
		StateDir: stateDir,
		EnsureEndpoint: func() error {
			return EnsureEndpoint(dir, func() (int, error) {
				return proc.StartDetached(filepath.Join(dir, "endpoint.log"), rn.self("endpoint", "--state-dir", rn.StateDir,
					"--instance-id", id.InstanceID, "--region", id.Region, "--zone", id.Zone, "--endpoint-idle", rn.EndpointIdle.String()), os.Environ())
			})
		},
	}
	if progress != nil {
		l.Progress = &Progress{W: progress}
	}
	return l, nil
}

// operatorAWSDir is the operator's shared AWS configuration (~/.aws), when
// there is one: a task must not take the operator's credentials from it.
func operatorAWSDir() []string {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	dir := filepath.Join(home, ".aws")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil
	}
	return []string{dir}
}

func (rn Runner) self(args ...string) []string {
	return append(append([]string{}, rn.Self...), args...)
}

// Run sets a task up, runs it in the foreground and tears it down,
// whatever happens in between (the command exits, a signal arrives). A
// non-zero exit of the command is a proc.ExitError.
func (rn Runner) Run(ctx context.Context, id string, o RunOptions, stdio IO) error {
	if err := o.Spec.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = stdio.Stderr
	if o.Quiet {
		progress = nil
	}
	l, err := rn.Launcher(ctx, progress)
	if err != nil {
		return err
	}
	if l.Progress != nil {
		l.Progress.Task = (&Record{ID: id}).ShortID()
	}
	if o.Instance != "" && o.Instance != l.Identity.InstanceID {
		return fmt.Errorf("--instance %s, but this is instance %s: run it there (or from the host of a local VPC)", o.Instance, l.Identity.InstanceID)
	}
	spec := o.Spec
	if len(spec.Groups) == 0 {
		spec.Groups = nil // EC2 applies the VPC's default group
	}
	setupCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	r, err := l.Start(setupCtx, id, spec, os.Getpid())
	timedOut := errors.Is(setupCtx.Err(), context.DeadlineExceeded)
	cancel()
	if err != nil && timedOut {
		return fmt.Errorf("task %s failed to start within --timeout %s: %w", id, o.Timeout, err)
	}
	if err != nil {
		return fmt.Errorf("task %s failed to start: %w", id, err)
	}
	code, execErr := l.Exec(ctx, r, stdio)
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := l.Teardown(tctx, r, StateStopped); err != nil {
		return fmt.Errorf("task %s: teardown incomplete (vpcnet task gc retries): %w", id, errors.Join(execErr, err))
	}
	if execErr != nil {
		return execErr
	}
	if code != 0 {
		return proc.ExitError{Code: code}
	}
	return nil
}

// supervision is what a supervisor is told, as one argument.
type supervision struct {
	Runner  Runner     `json:"runner"`
	ID      string     `json:"id"`
	Options RunOptions `json:"options"`
}

// Detach hands a new task to a supervisor process and returns its ID once
// the task runs, or an error when it failed to start.
func (rn Runner) Detach(ctx context.Context, o RunOptions) (string, error) {
	if err := o.Spec.Validate(); err != nil {
		return "", err
	}
	id := NewID()
	arg, err := json.Marshal(supervision{Runner: rn, ID: id, Options: o})
	if err != nil {
		return "", err
	}
	// The supervisor's log and store are the instance's: a short metadata
	// read is cheaper than guessing.
	cfg, err := cloud.LoadConfig(ctx, cloud.DefaultRetry)
	if err != nil {
		return "", err
	}
	ident, err := cloud.New(cfg).Identity(ctx)
	if err != nil {
		return "", err
	}
	dir, err := rn.Host().Ensure(ident.InstanceID)
	if err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "logs", id+".log")
	pid, err := proc.StartDetached(logPath, rn.self("supervise", string(arg)), os.Environ())
	if err != nil {
		return "", fmt.Errorf("failed to start the task's supervisor: %w", err)
	}
	store := rn.Host().Store(ident.InstanceID)
	deadline := time.Now().Add(o.Timeout + 10*time.Second)
	for time.Now().Before(deadline) {
		r, err := store.Get(id)
		if err == nil {
			if started, done := r.Launched(); done {
				if !started {
					return "", fmt.Errorf("task %s failed to start: %s (log: %s)", id, r.Error, logPath)
				}
				return id, nil
			}
		}
		if !proc.Alive(pid) {
			if r, err := store.Get(id); err == nil {
				if started, done := r.Launched(); done && started {
					return id, nil
				}
			}
			return "", fmt.Errorf("task %s: its supervisor (pid %d) exited before the task ran (log: %s)", id, pid, logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("task %s did not start within %s (log: %s)", id, o.Timeout, logPath)
}

// Supervise is the supervisor of one detached task: arg is what Detach
// passed. The command's exit status is in the task's record.
func Supervise(ctx context.Context, arg string) error {
	var s supervision
	if err := json.Unmarshal([]byte(arg), &s); err != nil {
		return fmt.Errorf("decode the supervisor's argument: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	err = s.Runner.Run(ctx, s.ID, s.Options, IO{Stdin: devnull, Stdout: os.Stdout, Stderr: os.Stderr})
	var ee proc.ExitError
	if errors.As(err, &ee) {
		return nil
	}
	return err
}

// StopOutcome says how far Stop got.
type StopOutcome int

const (
	Stopped        StopOutcome = iota // the task is finished
	AlreadyStopped                    // it was finished before
	OwnerGone                         // its supervisor is gone: FinishStop must run on its instance
)

// Stop asks the owner of the task ref names to stop it and waits up to
// timeout for the teardown. With OwnerGone, the caller finishes the
// teardown on the task's instance (FinishStop).
func (rn Runner) Stop(ref string, timeout time.Duration) (Record, StopOutcome, error) {
	r, err := rn.Host().Find(ref)
	if err != nil {
		return Record{}, 0, err
	}
	if r.State.Done() {
		return r, AlreadyStopped, nil
	}
	store := rn.Host().Store(r.InstanceID)
	done, err := askStop(store, r, timeout)
	if err != nil || done {
		return r, Stopped, err
	}
	if r, err = store.Get(r.ID); err != nil {
		return r, 0, err
	}
	if r.State.Done() {
		return r, Stopped, nil
	}
	return r, OwnerGone, nil
}

// FinishStop tears down a task whose owner is gone, on its instance (this
// one).
func (rn Runner) FinishStop(ctx context.Context, r Record, progress io.Writer) error {
	l, err := rn.Launcher(ctx, progress)
	if err != nil {
		return err
	}
	if l.Progress != nil {
		l.Progress.Task = r.ShortID()
	}
	return l.Teardown(ctx, &r, StateStopped)
}

// GCOptions are the flags of `vpcnet task gc`.
type GCOptions struct {
	// StopAll first stops every running task and the metadata endpoint.
	StopAll bool
	// Forget, with StopAll, removes the instance's state once nothing is
	// left: the instance will never be seen again (a local VPC's, going
	// down).
	Forget bool
	// Quiet reports only when GC found something to do, spared something
	// or failed; a clean instance says nothing.
	Quiet bool
}

// GC collects this instance's tasks (see Launcher.GC), reporting its
// progress and what it did to report.
func (rn Runner) GC(ctx context.Context, o GCOptions, report io.Writer) error {
	out := report
	held := &lockedBuffer{}
	if o.Quiet {
		out = held
	}
	rep, err := rn.gc(ctx, o, out)
	if o.Quiet && (err != nil || !rep.Empty()) {
		_, _ = report.Write(held.Bytes())
	}
	return err
}

func (rn Runner) gc(ctx context.Context, o GCOptions, report io.Writer) (GCReport, error) {
	l, err := rn.Launcher(ctx, report)
	if err != nil {
		return GCReport{}, err
	}
	l.Progress.Task = "gc"
	if o.StopAll {
		StopSupervisors(l.Store)
	}
	rep, err := l.GC(ctx)
	fmt.Fprintf(report, "%s: %s\n", l.Identity.InstanceID, rep)
	if o.StopAll {
		dir := rn.Host().Dir(l.Identity.InstanceID)
		StopEndpoint(dir)
		if err == nil && o.Forget {
			if rs, lerr := l.Store.List(); lerr == nil && len(rs) == 0 {
				_ = os.RemoveAll(dir)
			}
		}
	}
	return rep, err
}

// lockedBuffer is a buffer that progress from several goroutines may
// write to.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf.Bytes())
}

// ExecArgv is the command line that runs argv inside the running task ref
// names, with the task's namespaces and restrictions.
func (rn Runner) ExecArgv(ref string, argv []string) ([]string, error) {
	r, err := rn.Host().Find(ref)
	if err != nil {
		return nil, err
	}
	if r.State != StateRunning {
		return nil, fmt.Errorf("task %s is %s, not running", r.ShortID(), r.State)
	}
	dir := rn.Host().Dir(r.InstanceID)
	rt := Runtime{Bin: rn.Runtime, Root: filepath.Join(dir, "runtime"), Bundles: filepath.Join(dir, "bundles")}
	return rt.ExecArgv(&r, argv)
}

// Listed is a record as `task ls` shows it.
type Listed struct {
	Record
	// Orphaned: unfinished, and its supervisor is gone.
	Orphaned bool `json:"orphaned,omitempty"`
}

// Status is the state column of `task ls`.
func (l Listed) Status() string {
	if l.Orphaned {
		return "orphaned"
	}
	return string(l.State)
}

// List returns the tasks of the given instances (all the machine knows
// when instances is nil), unfinished ones only unless all.
func (rn Runner) List(instances []string, all bool) ([]Listed, error) {
	out := []Listed{}
	for _, s := range rn.Host().Stores() {
		rs, err := s.List()
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if instances != nil && !contains(instances, r.InstanceID) {
				continue
			}
			if all || !r.State.Done() {
				out = append(out, Listed{Record: r, Orphaned: r.Orphaned()})
			}
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ServeEndpoint serves the instance's task metadata until ctx ends or it
// has been idle for EndpointIdle.
func (rn Runner) ServeEndpoint(ctx context.Context, instanceID, region, zone string) error {
	if rn.EndpointIdle <= 0 {
		return fmt.Errorf("--endpoint-idle must be positive")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h := rn.Host()
	e := Endpoint{Store: h.Store(instanceID), Region: region, Zone: zone, Dir: h.Dir(instanceID), CheckPort: true}
	return ServeEndpoint(ctx, e, rn.EndpointIdle)
}
