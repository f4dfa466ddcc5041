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

// Find looks a task up by ID, unique ID prefix or name, across instances.
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
	switch len(found) {
	case 0:
		return Record{}, fmt.Errorf("no task %q", ref)
	case 1:
		return found[0], nil
	}
	return Record{}, fmt.Errorf("%q matches %d tasks; give more of the ID", ref, len(found))
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
