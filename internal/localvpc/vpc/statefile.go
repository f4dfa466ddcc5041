package vpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
)

// stateFile keeps the state as one JSON document, replaced atomically: a
// crash leaves either the old or the new state, never a torn one.
type stateFile struct {
	dir  string
	lock *os.File
}

const (
	// StateFileName is the EC2 state's file in a VPC's state directory.
	StateFileName = "ec2-state.json"
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

func (f *stateFile) path() string { return filepath.Join(f.dir, StateFileName) }

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

// save replaces the state file as a whole (see atomicfile), so that a
// crash leaves the old state or the new. The directory is not recreated:
// its removal means the VPC was deleted.
func (f *stateFile) save(st *State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := atomicfile.Write(f.path(), b, 0o600, 0); err != nil {
		return fmt.Errorf("save state: %w", err)
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
