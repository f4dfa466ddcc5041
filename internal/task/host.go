package task

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Host is where a machine keeps the state of its tasks: one directory per
// instance under StateDir/tasks (one on EC2; one per instance on a local
// VPC, whose instances share the machine's files), holding the task store,
// the CNI result cache, vpc-ipam's store, logs and the metadata endpoint's
// files.
type Host struct {
	StateDir string
}

// Dir is the state directory of an instance.
func (h Host) Dir(instanceID string) string {
	return filepath.Join(h.StateDir, "tasks", instanceID)
}

// Store is the task store of an instance.
func (h Host) Store(instanceID string) Store {
	return Store{Path: filepath.Join(h.Dir(instanceID), "tasks.db")}
}

// Stores returns the task store of every instance this machine knows.
func (h Host) Stores() []Store {
	paths, _ := filepath.Glob(filepath.Join(h.StateDir, "tasks", "*", "tasks.db"))
	stores := make([]Store, len(paths))
	for i, p := range paths {
		stores[i] = Store{Path: p}
	}
	return stores
}

// DefaultStateDir is vpcnet's state directory unless --state-dir says
// otherwise.
const DefaultStateDir = "/var/lib/vpcnet"

// Find looks a task up by ID, unique ID prefix or name, across instances.
// A name that an old, finished record shares with a live task is the live
// task's.
func (h Host) Find(ref string) (Record, error) {
	var found []Record
	for _, s := range h.Stores() {
		rs, err := s.List()
		if err != nil {
			return Record{}, err
		}
		for _, r := range rs {
			if strings.HasPrefix(r.ID, ref) || r.Name == ref {
				found = append(found, r)
			}
		}
	}
	return pick(ref, found)
}

// pick chooses the task ref means among the records that match it: the
// only one, or the only live one (unfinished, its supervisor running).
func pick(ref string, found []Record) (Record, error) {
	switch len(found) {
	case 0:
		return Record{}, fmt.Errorf("no task %q", ref)
	case 1:
		return found[0], nil
	}
	var live []Record
	for _, r := range found {
		if !r.State.Done() && r.SupervisorAlive() {
			live = append(live, r)
		}
	}
	if len(live) == 1 {
		return live[0], nil
	}
	return Record{}, fmt.Errorf("%q matches %d tasks; give more of the ID", ref, len(found))
}

// Ensure creates the state directory of an instance, only root can read
// it (0700, as every directory of the state), and returns it.
func (h Host) Ensure(instanceID string) (string, error) {
	dir := h.Dir(instanceID)
	for i, d := range []string{h.StateDir, filepath.Join(h.StateDir, "tasks"), dir, filepath.Join(dir, "ipam"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("create the task state directory %s: %w", d, err)
		}
		// Below the state directory (which may be the operator's own),
		// everything is vpcnet's: made by hand or by an older vpcnet with
		// a wider mode, it is narrowed.
		if i > 0 {
			if err := os.Chmod(d, 0o700); err != nil {
				return "", fmt.Errorf("restrict the task state directory %s to root: %w", d, err)
			}
		}
	}
	return dir, nil
}

// StoreID is the identity of an instance's task store, made once: ENIs are
// tagged with it, so that GC tells its own orphans from the ENIs of tasks
// that another state directory records.
func (h Host) StoreID(instanceID string) (string, error) {
	path := filepath.Join(h.Dir(instanceID), "store-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	id := NewID()[:16]
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		b, rerr := os.ReadFile(path) // another launcher made it first
		return strings.TrimSpace(string(b)), rerr
	}
	if err != nil {
		return "", fmt.Errorf("create the task store's identity: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(id + "\n"); err != nil {
		return "", err
	}
	return id, nil
}

// Hidden are the directories a task must not see: vpcnet's state (this
// one and the default, which holds local VPCs' too) and the named
// network namespaces.
func (h Host) Hidden() []string {
	out := []string{DefaultStateDir, "/var/run/netns"}
	if abs, err := filepath.Abs(h.StateDir); err == nil && abs != DefaultStateDir {
		out = append(out, abs)
	}
	return out
}

// ErrOwnerGone means the process that owned a task died before finishing
// its teardown: whoever waited must finish it.
var ErrOwnerGone = errors.New("the task's supervisor exited before finishing the teardown")

// WaitDone waits until the task's record is finished, its supervisor dies
// (ErrOwnerGone), or the timeout passes.
func WaitDone(s Store, r Record, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		cur, err := s.Get(r.ID)
		if err != nil || cur.State.Done() {
			return nil
		}
		if !r.SupervisorAlive() {
			if cur, err := s.Get(r.ID); err == nil && !cur.State.Done() {
				return ErrOwnerGone
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("task %s is still stopping after %s; `vpcnet task gc` finishes it", r.ID, timeout)
}

// StopSupervisors asks every live task owner in the store to stop its task
// and waits for them, so that GC then finds only finished or orphaned tasks.
func StopSupervisors(s Store) {
	records, err := s.List()
	if err != nil {
		return
	}
	for _, r := range records {
		if !r.State.Done() && r.SupervisorAlive() && r.Supervisor != os.Getpid() {
			_ = syscall.Kill(r.Supervisor, syscall.SIGTERM)
			_ = WaitDone(s, r, 30*time.Second)
		}
	}
}

// askStop asks the task's supervisor to stop it (SIGTERM) and waits for
// the teardown. It reports whether the teardown is done; ErrOwnerGone
// (done false, nil error) means whoever asked must finish it.
func askStop(s Store, r Record, timeout time.Duration) (bool, error) {
	if !r.SupervisorAlive() {
		return false, nil
	}
	_ = syscall.Kill(r.Supervisor, syscall.SIGTERM)
	err := WaitDone(s, r, timeout)
	if errors.Is(err, ErrOwnerGone) {
		return false, nil
	}
	return err == nil, err
}

// Launched says from its record whether a detached task's launch is over
// and whether the command got to run. A short command may already be
// stopping or stopped when someone looks: it ran all the same.
func (r Record) Launched() (started, done bool) {
	switch {
	case r.State == StateStarting:
		return false, false
	case r.State == StateFailed, r.Error != "" && r.State != StateRunning:
		return false, true
	}
	return true, true
}
