// Package crashpoint lets crash-safety tests stop a process at a named
// point of its work. A test learns the points a run passes by setting
// EnvStepLog, then SIGKILLs the process at each one with EnvKillAt and checks
// that whatever cleans up (a CNI DEL or GC, the task launcher's GC) leaves the
// host as it was. Without either variable set, At does nothing.
package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// The variables a test sets.
const (
	// EnvStepLog names a file to which each step reached is appended.
	EnvStepLog = "VPCNET_TEST_STEP_LOG"
	// EnvKillAt is a step name, or a number N meaning the N-th step
	// reached (1-based); the process SIGKILLs itself on reaching it.
	EnvKillAt = "VPCNET_TEST_KILL_AT"
)

var stepCount atomic.Int64

// At marks a point after which a crash leaves partial state. It does
// nothing unless a test set one of the variables above.
func At(name string) {
	logPath, killAt := os.Getenv(EnvStepLog), os.Getenv(EnvKillAt)
	if logPath == "" && killAt == "" {
		return
	}
	n := stepCount.Add(1)
	if logPath != "" {
		if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintln(f, name)
			f.Close()
		}
	}
	if killAt == name || killAt == strconv.FormatInt(n, 10) {
		// SIGKILL: no deferred cleanup runs, exactly as when a runtime
		// times the plugin out or the node loses power.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
