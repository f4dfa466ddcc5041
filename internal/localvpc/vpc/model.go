// Package vpc is the local VPC's control-plane model: what EC2 knows about
// the VPCs, subnets, security groups, instances and network interfaces of
// one account in one region, with EC2's rules, limits and error codes.
//
// The model only records state: every change is saved to the state
// directory before it is acknowledged, and then announced to subscribers,
// which drive the datapath and the metadata service from a Snapshot. It
// never touches the kernel. Attachments are asynchronous as on AWS: an
// attach or detach is recorded as "attaching"/"detaching" and completed by
// the control plane (CompleteAttach, CompleteDetach) once the device exists
// or is gone.
package vpc

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Model is the local VPC's EC2 state. It is safe for concurrent use.
type Model struct {
	mu    sync.Mutex
	st    State
	store *stateFile // nil: kept in memory only

	now                func() time.Time
	credentialLifetime time.Duration
	rotateBefore       time.Duration
	log                *slog.Logger

	subsMu sync.Mutex
	subs   map[int]chan struct{}
	nextID int
}

// Option adjusts a Model at Open.
type Option func(*Model)

// WithClock sets the clock, for tests of expiry and attach times.
func WithClock(now func() time.Time) Option { return func(m *Model) { m.now = now } }

// WithCredentialLifetime sets how long instance role credentials are valid
// (6 hours by default, as EC2's) and how long before expiry they are
// replaced (1 hour by default; IMDS rotates them well before expiry).
func WithCredentialLifetime(lifetime, rotateBefore time.Duration) Option {
	return func(m *Model) { m.credentialLifetime, m.rotateBefore = lifetime, rotateBefore }
}

// WithRegion sets the region of a new state (us-east-1 by default).
func WithRegion(region string) Option { return func(m *Model) { m.st.Region = region } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(m *Model) { m.log = l } }

// Open loads the state kept in dir, or starts an empty one there (with a
// new account, seed and root credentials). The directory is locked until
// Close, so that two control planes never share it. An empty dir keeps the
// state in memory only.
func Open(dir string, opts ...Option) (*Model, error) {
	m := &Model{
		now:                time.Now,
		credentialLifetime: 6 * time.Hour,
		rotateBefore:       time.Hour,
		log:                slog.Default(),
		subs:               map[int]chan struct{}{},
	}
	for _, o := range opts {
		o(m)
	}
	region := m.st.Region
	if dir != "" {
		f, err := openStateFile(dir)
		if err != nil {
			return nil, err
		}
		m.store = f
		loaded, err := f.load()
		if err != nil {
			f.close()
			return nil, err
		}
		if loaded != nil {
			m.st = *loaded
			return m, nil
		}
	}
	if err := m.initialise(region); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// initialise creates a fresh state and saves it.
func (m *Model) initialise(region string) error {
	if region == "" {
		region = "us-east-1"
	}
	st, err := newState(region, m.now())
	if err != nil {
		return err
	}
	m.st = st
	if m.store != nil {
		if err := m.store.save(&m.st); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the state directory.
func (m *Model) Close() error {
	if m.store == nil {
		return nil
	}
	return m.store.close()
}

// Snapshot returns a deep copy of the whole state.
func (m *Model) Snapshot() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Clone()
}

// Subscribe returns a channel that receives a value after changes. Changes
// are coalesced (the channel holds at most one pending value) and never
// block the mutator, so a subscriber reads a Snapshot when woken. cancel
// stops the subscription.
func (m *Model) Subscribe() (changes <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	m.subsMu.Lock()
	id := m.nextID
	m.nextID++
	m.subs[id] = ch
	m.subsMu.Unlock()
	return ch, func() {
		m.subsMu.Lock()
		delete(m.subs, id)
		m.subsMu.Unlock()
	}
}

func (m *Model) notify() {
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// read runs fn under the lock on the live state; fn must not change it.
func (m *Model) read(fn func(st *State) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(&m.st)
}

// update runs fn on a copy of the state and, if fn succeeds, saves the
// copy and makes it current. A failed fn or a failed save leaves the
// state as it was, so no half-applied change is ever visible or kept.
func (m *Model) update(fn func(st *State) error) error {
	m.mu.Lock()
	next := m.st.Clone()
	if err := fn(&next); err != nil {
		m.mu.Unlock()
		return err
	}
	next.Revision++
	if m.store != nil {
		if err := m.store.save(&next); err != nil {
			m.mu.Unlock()
			return fmt.Errorf("save local VPC state: %w", err)
		}
	}
	m.st = next
	m.mu.Unlock()
	m.notify()
	return nil
}

// NetworkInterfaceByAddress returns the ENI that owns an address, IPv4 or
// IPv6, assigned directly or inside a delegated prefix. The metadata
// service finds the caller's instance this way.
func (m *Model) NetworkInterfaceByAddress(a netip.Addr) (NetworkInterface, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a = a.Unmap()
	for _, n := range m.st.NetworkInterfaces {
		if eniOwns(n, a) {
			return *n.clone(), true
		}
	}
	return NetworkInterface{}, false
}

func eniOwns(n *NetworkInterface, a netip.Addr) bool {
	for _, p := range n.PrivateIPs {
		if p.Address == a {
			return true
		}
	}
	for _, a6 := range n.IPv6Addresses {
		if a6 == a {
			return true
		}
	}
	for _, p := range n.IPv4Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	for _, p := range n.IPv6Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Instance returns an instance by ID.
func (m *Model) Instance(id string) (Instance, error) {
	var out Instance
	err := m.read(func(st *State) error {
		i, ok := st.Instances[id]
		if !ok {
			return instanceNotFound(id)
		}
		out = *i
		out.Tags = cloneTags(i.Tags)
		return nil
	})
	return out, err
}

// NetworkInterface returns an ENI by ID.
func (m *Model) NetworkInterface(id string) (NetworkInterface, error) {
	var out NetworkInterface
	err := m.read(func(st *State) error {
		n, ok := st.NetworkInterfaces[id]
		if !ok {
			return eniNotFound(id)
		}
		out = *n.clone()
		return nil
	})
	return out, err
}

// AccountID is the 12-digit account the local VPC plays.
func (m *Model) AccountID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.AccountID
}

// Region is the region the local VPC plays.
func (m *Model) Region() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Region
}

// IsError reports whether err is an EC2 refusal with the given code.
func IsError(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
