package task

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// Runtime runs task containers with an OCI runtime (runc) whose state
// lives under Root, one per instance: the runtime's view of which
// containers exist is the instance's, whatever else runs on the machine.
type Runtime struct {
	Bin  string // the runtime's binary; default "runc"
	Root string // its state directory
	// Bundles holds one OCI bundle (config.json, an empty rootfs) per task.
	Bundles string
}

func (rt Runtime) bin() string {
	if rt.Bin != "" {
		return rt.Bin
	}
	return "runc"
}

func (rt Runtime) command(args ...string) *exec.Cmd {
	return exec.Command(rt.bin(), append([]string{"--root", rt.Root}, args...)...)
}

func (rt Runtime) bundle(r *Record) string { return filepath.Join(rt.Bundles, r.ID) }

// writeBundle writes the task's OCI bundle: its spec and an empty rootfs
// holding the host's top-level symlinks (the rest are mount points).
func (rt Runtime) writeBundle(r *Record, hidden []string) error {
	top, mounts, err := readHost()
	if err != nil {
		return err
	}
	held, err := heldCaps()
	if err != nil {
		return err
	}
	spec, err := ociSpec(sandboxInput{
		Record: r, Env: Env(r), Cwd: taskCwd(hidden), HeldCaps: held,
		Top: top, Mounts: mounts, Hidden: hidden,
		Tmp: existing(privateTmp), Secrets: existing(hostSecrets),
	})
	if err != nil {
		return err
	}
	dir := rt.bundle(r)
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o700); err != nil {
		return fmt.Errorf("create the task's bundle: %w", err)
	}
	// runc enters the rootfs as the container's root: it must be
	// searchable, whatever the bundle's own mode.
	if err := os.Chmod(rootfs, 0o755); err != nil {
		return err
	}
	for _, e := range top {
		if e.Symlink == "" {
			continue
		}
		link := filepath.Join(rootfs, e.Name)
		if cur, err := os.Readlink(link); err == nil && cur == e.Symlink {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(e.Symlink, link); err != nil {
			return fmt.Errorf("create /%s in the task's rootfs: %w", e.Name, err)
		}
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	return writePrivate(filepath.Join(dir, "config.json"), data)
}

// taskCwd is where a task's command starts: the launcher's working
// directory, as before sandboxes, unless the task does not see it as the
// host does (hidden, masked, a scratch or fresh directory of its own).
func taskCwd(hidden []string) string {
	wd, err := os.Getwd()
	if err != nil || !filepath.IsAbs(wd) {
		return "/"
	}
	first := strings.Split(strings.TrimPrefix(wd, "/"), "/")[0]
	if under(wd, hidden) || under(wd, privateTmp) || under(wd, hostSecrets) || slices.Contains(freshTop, first) {
		return "/"
	}
	return wd
}

// run starts the task's container (stdio passed through) and returns once
// the runtime has created it, having called started with the PID of its
// first process as the host sees it; done yields the runtime's exit (the
// command's status), at once when it ended before the PID was seen.
func (rt Runtime) run(r *Record, stdio IO, started func(pid int)) (<-chan error, error) {
	pidFile := filepath.Join(rt.bundle(r), "pid")
	_ = os.Remove(pidFile)
	cmd := rt.command("run", "--bundle", rt.bundle(r), "--pid-file", pidFile, containerID(r))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", rt.bin(), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// runc writes the PID file once the container exists, before its
	// command starts.
	for {
		if pid := readPID(pidFile); pid > 0 {
			started(pid)
			return done, nil
		}
		select {
		case err := <-done:
			ch := make(chan error, 1)
			ch <- err
			return ch, nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// containerState is what the runtime says about a container.
type containerState struct {
	Status string `json:"status"` // creating, created, running, stopped
	PID    int    `json:"pid"`
}

// state asks the runtime about the task's container; ok is false when it
// has none.
func (rt Runtime) state(r *Record) (containerState, bool) {
	out, err := rt.command("state", containerID(r)).Output()
	if err != nil {
		return containerState{}, false
	}
	var s containerState
	if json.Unmarshal(out, &s) != nil {
		return containerState{}, false
	}
	return s, true
}

// Running reports whether the task's container has a live process.
func (rt Runtime) Running(r *Record) bool {
	s, ok := rt.state(r)
	return ok && s.Status != "stopped" && proc.Alive(s.PID)
}

// stop stops the task's container: SIGTERM to its first process, SIGKILL
// after grace (a first process that set no handler ignores SIGTERM: it is
// the PID namespace's init), then removes the container.
func (rt Runtime) stop(r *Record, grace time.Duration) error {
	s, ok := rt.state(r)
	if ok && s.Status != "stopped" && proc.Alive(s.PID) {
		_ = rt.command("kill", containerID(r), "TERM").Run()
		if !proc.WaitGone(func() bool { return proc.Alive(s.PID) }, grace) {
			_ = rt.command("kill", "--all", containerID(r), "KILL").Run()
			proc.WaitGone(func() bool { return proc.Alive(s.PID) }, 10*time.Second)
		}
	}
	return rt.remove(r)
}

// remove deletes the container (if the runtime still has it) and its
// bundle.
func (rt Runtime) remove(r *Record) error {
	if _, ok := rt.state(r); ok {
		if out, err := rt.command("delete", "--force", containerID(r)).CombinedOutput(); err != nil {
			if _, still := rt.state(r); still {
				return fmt.Errorf("%s delete %s: %v: %s", rt.bin(), containerID(r), err, strings.TrimSpace(string(out)))
			}
		}
	}
	if err := os.RemoveAll(rt.bundle(r)); err != nil {
		return fmt.Errorf("remove the task's bundle: %w", err)
	}
	return nil
}

// ExecArgv is the command line that runs argv inside the task's running
// container: its namespaces, capabilities and no_new_privs.
func (rt Runtime) ExecArgv(r *Record, argv []string) ([]string, error) {
	path, err := exec.LookPath(rt.bin())
	if err != nil {
		return nil, fmt.Errorf("find the container runtime: %w", err)
	}
	return append([]string{path, "--root", rt.Root, "exec", containerID(r)}, argv...), nil
}

// writePrivate writes a file only root can read (the state's mode).
func writePrivate(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600, 0o700)
}
