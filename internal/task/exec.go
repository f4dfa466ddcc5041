package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/proc"
)

// IO is where a task's command reads and writes.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// stopGrace is how long a task's command has to exit after SIGTERM.
const stopGrace = 5 * time.Second

// Exec runs the task's command in its sandbox (see sandbox.go), streaming
// its output, and waits for it. It returns the command's exit code.
// Cancelling ctx stops the command (SIGTERM, then SIGKILL after a grace
// period).
func (l *Launcher) Exec(ctx context.Context, r *Record, stdio IO) (int, error) {
	if len(r.Command) == 0 {
		return 0, errors.New("no command to run")
	}
	// The task's files are the host's: a command the host cannot find,
	// the task cannot either. Say so as before sandboxes, not as the
	// runtime's failure.
	if _, err := exec.LookPath(r.Command[0]); err != nil {
		return 0, fmt.Errorf("failed to start %q: %w", r.Command[0], err)
	}
	if err := l.Runtime.writeBundle(r, l.Hidden); err != nil {
		return 0, fmt.Errorf("prepare the task's sandbox: %w", err)
	}
	var saveErr error
	done, err := l.Runtime.run(r, stdio, func(pid int) {
		r.PID, r.State = pid, StateRunning
		saveErr = l.Store.Put(r)
	})
	if err != nil {
		return 0, fmt.Errorf("failed to start %q in its sandbox: %w", r.Command[0], err)
	}
	if saveErr != nil {
		_ = l.Runtime.stop(r, 0)
		<-done
		return 0, saveErr
	}
	if r.PID > 0 {
		l.Progress.step("running", fmt.Sprintf("pid %d: %s", r.PID, strings.Join(r.Command, " ")), 0, nil)
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = l.Runtime.stop(r, stopGrace)
		err = <-done
	}
	code, ok := proc.ExitCode(err)
	if !ok {
		return 0, fmt.Errorf("waiting for the task's container: %w", err)
	}
	if rerr := l.Runtime.remove(r); rerr != nil {
		l.Progress.step("remove-sandbox", "", 0, rerr)
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

// killTask stops a task's command left running by a launcher that died,
// through the runtime that knows its container by name, so a recycled PID
// is never hit.
func (l *Launcher) killTask(r *Record) error {
	return l.Runtime.stop(r, stopGrace)
}
