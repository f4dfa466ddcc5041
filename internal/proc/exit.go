package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// ExitError is a child's non-zero exit status, for this process to exit
// with (main turns it into os.Exit(Code)).
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the status a shell reports for a child that ended with err
// (what exec.Cmd.Wait returned): its exit code, or 128 + the signal that
// killed it. ok is false when err is not the child's end but a failure to
// wait for it.
func ExitCode(err error) (code int, ok bool) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, true
	case errors.As(err, &ee):
		if ws, isWS := ee.Sys().(syscall.WaitStatus); isWS && ws.Signaled() {
			return 128 + int(ws.Signal()), true
		}
		return ee.ExitCode(), true
	}
	return 0, false
}

// Exit turns the end of a child into an ExitError (nil for status 0) and
// leaves any other error as it is.
func Exit(err error) error {
	code, ok := ExitCode(err)
	switch {
	case !ok:
		return err
	case code == 0:
		return nil
	}
	return ExitError{Code: code}
}

// RunForwarding starts cmd with start (cmd.Start when nil), passes the
// signals given on to it while it runs, waits for it and returns Exit of
// its end: a command that runs another (on an instance, in a task) ends
// as that one does.
func RunForwarding(cmd *exec.Cmd, start func(*exec.Cmd) error, forward ...os.Signal) error {
	if start == nil {
		start = (*exec.Cmd).Start
	}
	sigs := make(chan os.Signal, 2)
	if len(forward) > 0 {
		signal.Notify(sigs, forward...)
		defer signal.Stop(sigs)
	}
	if err := start(cmd); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			return Exit(err)
		}
	}
}
