// Package task runs tasks the way the ECS agent does in awsvpc mode: each
// task gets its own ENI, created and attached for it, moved into the task's
// network namespace by the vpc-eni plugin, plus a private bridge (vpc-bridge,
// vpc-ipam) to the task metadata endpoint at 169.254.170.2. Every step is
// recorded before it is taken, so a launch or teardown that was interrupted
// is finished by the next run or by GC, and nothing (ENI, attachment,
// namespace, address, veth) is left behind.
package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vpcnet/vpcnet/internal/proc"
)

// State is where a task is in its life.
type State string

const (
	StateStarting State = "starting" // set-up steps under way
	StateRunning  State = "running"  // the command runs in its namespace
	StateStopping State = "stopping" // teardown under way
	StateStopped  State = "stopped"  // everything released
	StateFailed   State = "failed"   // set-up failed; everything released
)

// Done reports whether nothing of the task remains to be released.
func (s State) Done() bool { return s == StateStopped || s == StateFailed }

// Record is everything known about one task, kept in the store and updated
// before each step is taken.
type Record struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	InstanceID string    `json:"instanceID"`
	SubnetID   string    `json:"subnetID"`
	Groups     []string  `json:"securityGroups"`
	Command    []string  `json:"command"`
	Sandbox    Sandbox   `json:"sandbox"`
	State      State     `json:"state"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`

	// Cloud side.
	ENIID        string       `json:"eniID,omitempty"`
	MAC          string       `json:"mac,omitempty"`
	AttachmentID string       `json:"attachmentID,omitempty"`
	DeviceIndex  int          `json:"deviceIndex,omitempty"`
	Addresses    []netip.Addr `json:"addresses,omitempty"`
	SubnetCIDR   netip.Prefix `json:"subnetCIDR,omitempty"`
	Gateway      netip.Addr   `json:"gateway,omitempty"`
	IPv6         []netip.Addr `json:"ipv6,omitempty"`
	SubnetIPv6   netip.Prefix `json:"subnetIPv6,omitempty"`

	// Host side.
	Netns      string     `json:"netns,omitempty"`
	BridgeAddr netip.Addr `json:"bridgeAddr,omitempty"` // the task's address on the metadata bridge
	BridgePort string     `json:"bridgePort,omitempty"` // the host end of its veth: the port it is on
	PID        int        `json:"pid,omitempty"`        // the task's command
	Supervisor int        `json:"supervisor,omitempty"` // the vpcnet process that owns the task
	// SupervisorStart is when the supervisor started (clock ticks after
	// boot, from /proc), so that a recycled PID is never taken for it.
	SupervisorStart uint64   `json:"supervisorStart,omitempty"`
	ExitCode        *int     `json:"exitCode,omitempty"`
	Error           string   `json:"error,omitempty"`
	StepTimings     []Timing `json:"steps,omitempty"`

	// unrecorded marks a record rebuilt from an orphan ENI's tags: it is
	// torn down but never written to the store.
	unrecorded bool
}

// SupervisorAlive reports whether the process that owns the task still
// runs: its PID is alive and, when the start time was recorded, belongs to
// the same process.
func (r *Record) SupervisorAlive() bool {
	return proc.Same(r.Supervisor, r.SupervisorStart)
}

// ShortID is the task's ID as people see it (see ShortID).
func (r *Record) ShortID() string { return ShortID(r.ID) }

// ShortID shortens a task ID as people see it: its first 12 digits, as
// Docker shortens container IDs.
func ShortID(id string) string {
	if len(id) < 12 {
		return id
	}
	return id[:12]
}

// Orphaned reports whether the task is unfinished and its supervisor is
// gone: nobody will tear it down but `vpcnet task gc` (or `task stop`).
func (r *Record) Orphaned() bool {
	return !r.State.Done() && !r.SupervisorAlive()
}

// Timing is how long one step took.
type Timing struct {
	Step     string        `json:"step"`
	Duration time.Duration `json:"duration"`
}

// Store keeps task records in a bbolt file. Each call opens the file, runs
// one transaction and closes it again: bbolt holds its file lock for as
// long as the file is open, and several processes (launchers, supervisors,
// the metadata endpoint, `task ls`) share the store.
type Store struct {
	Path    string
	Timeout time.Duration // how long to wait for another process's lock
}

var bucketTasks = []byte("tasks")

// ErrNotFound is returned for an unknown task ID.
var ErrNotFound = errors.New("no such task")

func (s Store) update(fn func(b *bolt.Bucket) error) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("failed to create the task store directory: %w", err)
	}
	db, err := bolt.Open(s.Path, 0o600, &bolt.Options{Timeout: s.timeout()})
	if err != nil {
		return fmt.Errorf("failed to open the task store %s: %w", s.Path, err)
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketTasks)
		if err != nil {
			return err
		}
		return fn(b)
	})
}

func (s Store) view(fn func(b *bolt.Bucket) error) error {
	if _, err := os.Stat(s.Path); errors.Is(err, os.ErrNotExist) {
		return fn(nil)
	}
	db, err := bolt.Open(s.Path, 0o600, &bolt.Options{Timeout: s.timeout(), ReadOnly: true})
	if err != nil {
		return fmt.Errorf("failed to open the task store %s: %w", s.Path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketTasks)) })
}

func (s Store) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return 10 * time.Second
}

// Put writes a record (stamping Updated).
func (s Store) Put(r *Record) error {
	r.Updated = time.Now().UTC()
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("failed to encode task %s: %w", r.ID, err)
	}
	return s.update(func(b *bolt.Bucket) error { return b.Put([]byte(r.ID), data) })
}

// ErrNameTaken is returned when a live task already has the name.
var ErrNameTaken = errors.New("a running task already has that name")

// Create records a new task unless a live task (unfinished, its
// supervisor running) already has its name: a check and a write in one
// transaction.
func (s Store) Create(r *Record) error {
	r.Updated = time.Now().UTC()
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("failed to encode task %s: %w", r.ID, err)
	}
	return s.update(func(b *bolt.Bucket) error {
		if r.Name != "" {
			err := b.ForEach(func(_, v []byte) error {
				var o Record
				if json.Unmarshal(v, &o) == nil && o.ID != r.ID && o.Name == r.Name && !o.State.Done() && o.SupervisorAlive() {
					return fmt.Errorf("--name %q: task %s: %w", r.Name, o.ShortID(), ErrNameTaken)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return b.Put([]byte(r.ID), data)
	})
}

// Get reads one record.
func (s Store) Get(id string) (Record, error) {
	var r Record
	err := s.view(func(b *bolt.Bucket) error {
		if b == nil {
			return ErrNotFound
		}
		data := b.Get([]byte(id))
		if data == nil {
			return ErrNotFound
		}
		return json.Unmarshal(data, &r)
	})
	if errors.Is(err, ErrNotFound) {
		return Record{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	return r, err
}

// List returns every record, oldest first.
func (s Store) List() ([]Record, error) {
	var out []Record
	err := s.view(func(b *bolt.Bucket) error {
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// Delete forgets a record.
func (s Store) Delete(id string) error {
	return s.update(func(b *bolt.Bucket) error { return b.Delete([]byte(id)) })
}
