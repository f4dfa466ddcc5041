package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// IO is where a task's command reads and writes.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Exec runs the task's command in its namespace, streaming its output, and
// waits for it. It returns the command's exit code. Cancelling ctx stops
// the command (SIGTERM, then SIGKILL after a grace period).
func (l *Launcher) Exec(ctx context.Context, r *Record, stdio IO) (int, error) {
	if len(r.Command) == 0 {
		return 0, errors.New("no command to run")
	}
	cmd := exec.Command(r.Command[0], r.Command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	cmd.Env = Env(r)
	// Its own process group, so stopping the task stops everything it
	// started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Fork on a thread that is inside the task namespace: the child
	// inherits the namespace of the thread that forked it.
	err := ns.WithNetNSPath(r.Netns, func(ns.NetNS) error { return cmd.Start() })
	if err != nil {
		return 0, fmt.Errorf("failed to start %q in %s: %w", r.Command[0], r.Netns, err)
	}
	r.PID, r.State = cmd.Process.Pid, StateRunning
	if err := l.Store.Put(r); err != nil {
		stopGroup(cmd.Process.Pid)
		_ = cmd.Wait()
		return 0, err
	}
	l.Progress.step("running", fmt.Sprintf("pid %d: %s", r.PID, strings.Join(r.Command, " ")), 0, nil)

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		stopGroup(cmd.Process.Pid)
		err = <-done
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if code < 0 { // killed by a signal
			code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
	case err != nil:
		return 0, fmt.Errorf("waiting for the task's command: %w", err)
	}
	r.ExitCode, r.PID = &code, 0
	return code, l.Store.Put(r)
}

// Env is the environment of a task's processes: the launcher's, without its cloud
// credentials and endpoints (a task has its own identity), plus the task
// metadata endpoint as ECS sets it.
func Env(r *Record) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "VPCNET_") {
			continue
		}
		env = append(env, kv)
	}
	base := fmt.Sprintf("http://%s/v4/%s", EndpointAddr, r.ID)
	return append(env,
		"ECS_CONTAINER_METADATA_URI_V4="+base,
		"ECS_CONTAINER_METADATA_URI="+base,
		"VPCNET_TASK_ID="+r.ID,
	)
}

// killTask stops a task's command left running by a launcher that died.
// It only signals a process that is still inside the task's namespace, so
// a recycled PID is never hit.
func killTask(r *Record) error {
	if r.PID <= 0 || !inNamespace(r.PID, r.Netns) {
		return nil
	}
	stopGroup(r.PID)
	return nil
}

func inNamespace(pid int, nsPath string) bool {
	var want, got syscall.Stat_t
	if syscall.Stat(nsPath, &want) != nil {
		return false
	}
	if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) != nil {
		return false
	}
	return want.Ino == got.Ino && want.Dev == got.Dev
}

// stopGroup sends SIGTERM to a process group, then SIGKILL if it has not
// gone within the grace period.
func stopGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(-pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Alive reports whether a process runs. A zombie does not: a supervisor
// killed after its parent exited stays one until init reaps it, and a
// launcher that released its child keeps it as one for as long as it lives.
func Alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	state, _, ok := procStat(pid)
	return !ok || state != 'Z' && state != 'X'
}

// processStart returns when pid started, in clock ticks after boot (0 if
// it cannot tell).
func processStart(pid int) uint64 {
	_, start, _ := procStat(pid)
	return start
}

// procStat reads the state and start time of a process from
// /proc/PID/stat. The command name, in parentheses, may hold spaces, so the
// fields are counted from the last ')'.
func procStat(pid int) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	return parseProcStat(string(b))
}

func parseProcStat(stat string) (state byte, start uint64, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	// After ") ": state is field 3 of stat(5), starttime field 22.
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], start, true
}
