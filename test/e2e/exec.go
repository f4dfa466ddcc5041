package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// CommandTimeout bounds every command the harness runs, so that a hung
// runtime fails the test with its output instead of eating the go test
// timeout. It is a safety net, not an assertion about speed.
const CommandTimeout = 2 * time.Minute

// Command is one program to run, optionally inside a network namespace.
type Command struct {
	// NSPath is the network namespace to run in ("" for the caller's).
	// Only the network namespace changes: the mount namespace stays the
	// host's, so bind mounts the program makes under /run/netns and in its
	// state directories are visible to every later command.
	NSPath string
	Name   string
	Args   []string
	Env    []string // added to os.Environ(), unless OwnEnv
	// OwnEnv: Env is the whole environment (a process on an instance must
	// not inherit the operator's AWS settings).
	OwnEnv bool
	Stdin  []byte
	Dir    string
	// KillWithTest sends SIGKILL to the process if the test binary dies
	// before it (for daemons; see Start).
	KillWithTest bool
}

// String renders the command as a person could paste it into a shell.
func (c Command) String() string {
	var b strings.Builder
	if c.NSPath != "" {
		fmt.Fprintf(&b, "nsenter --net=%s ", c.NSPath)
	}
	for _, e := range c.Env {
		b.WriteString(e + " ")
	}
	b.WriteString(c.Name)
	for _, a := range c.Args {
		b.WriteString(" " + a)
	}
	return b.String()
}

// Result is what a finished command produced.
type Result struct {
	Stdout, Stderr string
	Elapsed        time.Duration // from fork to exit
	Err            error         // nil for exit status 0
}

// Output returns stdout and stderr together, for error messages.
func (r Result) Output() string {
	if r.Stderr == "" {
		return r.Stdout
	}
	return r.Stdout + "\nstderr:\n" + r.Stderr
}

// Run runs c to completion (bounded by CommandTimeout).
func (c Command) Run() Result {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := c.cmd(ctx)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var start time.Time
	err := c.inNS(func() error {
		start = time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		return cmd.Wait()
	})
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start), Err: err}
	if ctx.Err() != nil {
		r.Err = fmt.Errorf("%w (killed after %v)", err, CommandTimeout)
	}
	return r
}

// MustRun runs c and fails the test if it fails; it returns stdout.
func (c Command) MustRun(t testing.TB) string {
	t.Helper()
	r := c.Run()
	if r.Err != nil {
		t.Fatalf("%s: %v\n%s", c, r.Err, r.Output())
	}
	return r.Stdout
}

// Process is a command started in the background by Start.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts c in the background; stdout and stderr go to logFile. The
// process keeps the namespace it was started in. With KillWithTest, the
// kernel kills it when the thread that started it ends, and that thread
// lives exactly as long as the process: it waits for it.
func (c Command) Start(logFile string) (*Process, error) {
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := c.cmd(context.Background())
	cmd.Stdout, cmd.Stderr = log, log
	if c.KillWithTest {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the thread that forked the process
		// must outlive it for Pdeathsig, and ends with this goroutine.
		runtime.LockOSThread()
		defer close(p.done)
		defer log.Close()
		p.err = c.inNS(func() error {
			if err := cmd.Start(); err != nil {
				started <- err
				return err
			}
			started <- nil
			return cmd.Wait()
		})
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", c, err)
	}
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error, valid after Done is closed.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.Cmd.Process.Pid, grace)
}

func (c Command) cmd(ctx context.Context) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	if c.OwnEnv {
		cmd.Env = c.Env
	}
	cmd.Dir = c.Dir
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// inNS runs fn on a thread that is in c.NSPath. A child forked by fn
// inherits that thread's network namespace (and nothing else changes).
func (c Command) inNS(fn func() error) error {
	if c.NSPath == "" {
		return fn()
	}
	target, err := ns.GetNS(c.NSPath)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", c.NSPath, err)
	}
	defer target.Close()
	return target.Do(func(ns.NetNS) error { return fn() })
}

// tail returns the last n lines of s, for failure messages.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
