package vpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// stateFile keeps the state as one JSON document, replaced atomically: a
// crash leaves either the old or the new state, never a torn one.
type stateFile struct {
	dir  string
	lock *os.File
}

const (
	stateFileName = "ec2-state.json"
	lockFileName  = "ec2-state.lock"
)

func openStateFile(dir string) (*stateFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state lock in %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock state directory %s (is another local VPC running?): %w", dir, err)
	}
	return &stateFile{dir: dir, lock: lock}, nil
}

func (f *stateFile) path() string { return filepath.Join(f.dir, stateFileName) }

// load returns nil, nil when there is no state yet.
func (f *stateFile) load() (*State, error) {
	b, err := os.ReadFile(f.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read local VPC state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode local VPC state %s: %w", f.path(), err)
	}
	st.ensureMaps()
	return &st, nil
}

// save writes a temporary file, syncs it, renames it over the state and
// syncs the directory so that the rename itself is durable.
func (f *stateFile) save(st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(f.dir, stateFileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path()); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	d, err := os.Open(f.dir)
	if err != nil {
		return fmt.Errorf("open state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}

func (f *stateFile) close() error {
	if f.lock == nil {
		return nil
	}
	err := f.lock.Close() // closing the descriptor releases the flock
	f.lock = nil
	return err
}

func (st *State) ensureMaps() {
	if st.Counters == nil {
		st.Counters = map[string]uint64{}
	}
	if st.VPCs == nil {
		st.VPCs = map[string]*VPC{}
	}
	if st.Subnets == nil {
		st.Subnets = map[string]*Subnet{}
	}
	if st.SecurityGroups == nil {
		st.SecurityGroups = map[string]*SecurityGroup{}
	}
	if st.Instances == nil {
		st.Instances = map[string]*Instance{}
	}
	if st.NetworkInterfaces == nil {
		st.NetworkInterfaces = map[string]*NetworkInterface{}
	}
	if st.AccessKeys == nil {
		st.AccessKeys = map[string]*AccessKey{}
	}
}
