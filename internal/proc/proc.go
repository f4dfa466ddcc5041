// Package proc is vpcnet's one view of processes: whether a PID is alive
// and still the process we started (its start time from /proc/PID/stat,
// so a recycled PID is never taken for ours), whether it runs our binary,
// starting a detached process with its log, and stopping one with a grace
// period.
//
// When /proc cannot tell (the file cannot be read), a process that signal
// 0 reaches counts as alive: the callers use "alive" to decide what not to
// tear down, and a wrong "dead" would remove a running task's resources.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Alive reports whether pid is a running process. A zombie is not: a
// process killed after its parent exited stays one until init reaps it,
// and a parent that released its child keeps it as one for as long as it
// lives.
func Alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st, ok := readStat(pid)
	return !ok || st.state != 'Z' && st.state != 'X'
}

// StartTime returns when pid started, in clock ticks after boot, or 0 when
// /proc cannot tell.
func StartTime(pid int) uint64 {
	st, _ := readStat(pid)
	return st.start
}

// Same reports whether pid is alive and is the process that started at
// start (from StartTime). A start of 0 (not recorded) trusts the PID.
func Same(pid int, start uint64) bool {
	if !Alive(pid) {
		return false
	}
	if start == 0 {
		return true
	}
	now := StartTime(pid)
	return now == 0 || now == start
}

// RunsBinary reports whether pid executes a file whose name starts with
// prefix (e.g. "vpcnet"): a guard before signalling a PID read from a file.
func RunsBinary(pid int, prefix string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasPrefix(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), prefix)
}

// StartDetached starts argv as a daemon in a session of its own, with
// stdout and stderr appended to logPath (created 0600, its directory
// 0700), and returns its PID. The child is released: it outlives the
// caller, and init reaps it.
func StartDetached(logPath string, argv, env []string) (int, error) {
	if len(argv) == 0 {
		return 0, errors.New("start a detached process: no command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	if err := StartDetachedWith(cmd, logPath, nil); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

// StartDetachedWith starts cmd as StartDetached does (a session of its
// own, stdout and stderr appended to logPath), through start when it is
// not nil (to start it inside other namespaces, say), and leaves cmd to
// the caller: to Wait for it while it watches the start-up, or to Release
// it.
func StartDetachedWith(cmd *exec.Cmd, logPath string, start func(*exec.Cmd) error) error {
	name := filepath.Base(cmd.Path)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return fmt.Errorf("create the log directory of %s: %w", name, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open the log of %s: %w", name, err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: it outlives the shell that started it, and a
	// Ctrl-C there does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// Stop sends SIGTERM to pid, waits up to grace for it to exit, then sends
// SIGKILL and waits (a bounded while) for it to go. It returns whether the
// process had to be killed.
func Stop(pid int, grace time.Duration) (killed bool) {
	return stop(pid, grace, func(sig syscall.Signal) { _ = syscall.Kill(pid, sig) }, func() bool { return Alive(pid) })
}

// StopGroup is Stop for the process group pgid: every process the group's
// leader started is signalled too.
func StopGroup(pgid int, grace time.Duration) (killed bool) {
	return stop(pgid, grace, func(sig syscall.Signal) { _ = syscall.Kill(-pgid, sig) }, func() bool { return syscall.Kill(-pgid, 0) == nil })
}

func stop(pid int, grace time.Duration, signal func(syscall.Signal), alive func() bool) bool {
	if pid <= 0 {
		return false
	}
	signal(syscall.SIGTERM)
	if WaitGone(alive, grace) {
		return false
	}
	signal(syscall.SIGKILL)
	WaitGone(alive, 5*time.Second)
	return true
}

// WaitGone polls alive until it is false or limit passes, and reports
// whether it went.
func WaitGone(alive func() bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// stat is what vpcnet reads of /proc/PID/stat.
type stat struct {
	state byte   // field 3: R, S, D, Z, X ...
	start uint64 // field 22: start time, clock ticks after boot
}

func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	return parseStat(string(b))
}

// parseStat parses a /proc/PID/stat line. The command name, in
// parentheses, may hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseStat(line string) (stat, bool) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return stat{}, false
	}
	fields := strings.Fields(line[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return stat{}, false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return stat{}, false
	}
	return stat{state: fields[0][0], start: start}, true
}

// InNamespace reports whether pid's network namespace is the one mounted
// at nsPath.
func InNamespace(pid int, nsPath string) bool {
	var want, got syscall.Stat_t
	if syscall.Stat(nsPath, &want) != nil {
		return false
	}
	if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) != nil {
		return false
	}
	return want.Ino == got.Ino && want.Dev == got.Dev
}

// AnyInNamespace reports whether a live process is in the network
// namespace mounted at nsPath (false when nothing is mounted there). When
// /proc cannot be listed it says yes: a caller deciding whether to remove
// the namespace must not guess.
func AnyInNamespace(nsPath string) bool {
	var want syscall.Stat_t
	if syscall.Stat(nsPath, &want) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var got syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) == nil && got.Ino == want.Ino && got.Dev == want.Dev && Alive(pid) {
			return true
		}
	}
	return false
}
