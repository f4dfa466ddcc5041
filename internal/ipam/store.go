package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vpcnet/vpcnet/internal/crashpoint"
)

// The store is one bbolt file:
//
//	<network>/            one bucket per CNI network, named as the network
//	  owners/             owner key -> Allocation (JSON)
//	  addresses/          16-byte address -> owner key (the index by address)
//	  nextfit/            RangeSet.String() -> 16-byte address reserved last
//	vpc-ipam/ecs-ids/     ecs-ipam id -> network name (see ecsid.go)
//
// Every operation is one transaction, so a process killed at any point
// leaves either nothing or a whole allocation behind.
var (
	bucketOwners    = []byte("owners")
	bucketAddresses = []byte("addresses")
	bucketNextFit   = []byte("nextfit")
)

// ErrLocked means another process held the store for longer than the lock
// timeout. Retrying later is the fix.
var ErrLocked = errors.New("store is locked by another process")

// Store holds the allocations of every network on this host.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating it and its directory if needed) the store at path,
// waiting up to lockTimeout for other processes to let go of it.
func Open(path string, lockTimeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the directory of IPAM store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open IPAM store %s: %w (waited %s)", path, ErrLocked, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open IPAM store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close releases the file lock.
func (s *Store) Close() error { return s.db.Close() }

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Probe proves the store can be written now: a write transaction commits
// (bbolt writes and syncs its meta page even when nothing changed).
func (s *Store) Probe() error {
	return s.db.Update(func(*bolt.Tx) error { return nil })
}

// Verify runs bbolt's consistency check over the whole file: every page
// reachable once, free pages not in use. It is for tests and operators.
func (s *Store) Verify() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Owner is who holds an allocation: a CNI attachment, or for configs in the
// ECS agent's format that carry an "id", that id (ecs-ipam keys allocations
// by it; the agent passes the task ENI's MAC). The attachment is recorded
// either way, for GC.
type Owner struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	ID          string `json:"id,omitempty"`
}

// key is the owner's key in the owners bucket. Container IDs and interface
// names cannot contain ':', so the two kinds of key never collide.
func (o Owner) key() []byte {
	if o.ID != "" {
		return []byte("ecs-id:" + o.ID)
	}
	return []byte(o.ContainerID + "/" + o.IfName)
}

func (o Owner) String() string {
	if o.ID != "" {
		return fmt.Sprintf("id %q (container %s, interface %s)", o.ID, o.ContainerID, o.IfName)
	}
	return o.ContainerID + "/" + o.IfName
}

// Allocation is what one owner holds in one network.
type Allocation struct {
	Network string    `json:"-"` // the bucket it was read from
	Owner   Owner     `json:"owner"`
	IPs     []Address `json:"ips"`
}

// Address is one allocated address with its subnet length and gateway.
type Address struct {
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway"`
}

// Pool is the ranges of one network.
type Pool struct {
	Network string
	Sets    []RangeSet
}

// ExhaustedError means a range set has no free address left.
type ExhaustedError struct {
	Network string
	Set     RangeSet
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("no free address in network %q, range %s", e.Network, e.Set)
}

// TakenError means an explicitly requested address is held by someone else.
type TakenError struct {
	Network string
	Addr    netip.Addr
	Holder  Owner
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("%s is already held by %s in network %q", e.Addr, e.Holder, e.Network)
}

// ConflictError means the owner already holds an address of a range set and
// asks for a different one: a retried ADD must not quietly move it.
type ConflictError struct {
	Network string
	Owner   Owner
	Held    netip.Addr
	Want    netip.Addr
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s already holds %s in network %q and cannot also take %s (DEL it first)",
		e.Owner, e.Held, e.Network, e.Want)
}

// Allocate gives the owner one address from every range set of the pool:
// want[i] if it is valid (the owner asked for it), else the next free one.
// An owner that already holds an address in a set keeps it, so a repeated
// ADD returns the same allocation. It is one write transaction.
func (s *Store) Allocate(p Pool, o Owner, want []netip.Addr) (Allocation, error) {
	var out Allocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		nb, err := networkBucket(tx, p.Network)
		if err != nil {
			return err
		}
		out, err = allocate(nb, p, o, want)
		if err != nil {
			return err
		}
		if err := rememberECSID(tx, o, p.Network); err != nil {
			return err
		}
		crashpoint.At("ipam-add-written")
		return nil
	})
	return out, err
}

func allocate(nb *bolt.Bucket, p Pool, o Owner, want []netip.Addr) (Allocation, error) {
	owners, addrs, nextFit := nb.Bucket(bucketOwners), nb.Bucket(bucketAddresses), nb.Bucket(bucketNextFit)
	key := o.key()
	alloc, found, err := getAllocation(owners, key)
	if err != nil {
		return Allocation{}, err
	}
	// An ECS id may come back from another container (a retried task
	// start): the allocation follows it, so that GC judges the live one.
	changed := !found || alloc.Owner != o
	alloc.Owner, alloc.Network = o, p.Network
	for i, set := range p.Sets {
		held, holds := heldIn(alloc, set)
		var w netip.Addr
		if i < len(want) {
			w = want[i]
		}
		switch {
		case holds && (!w.IsValid() || w == held):
			continue
		case holds:
			return Allocation{}, &ConflictError{Network: p.Network, Owner: alloc.Owner, Held: held, Want: w}
		case w.IsValid():
			if holder := addrs.Get(addrKey(w)); holder != nil {
				return Allocation{}, takenError(owners, p.Network, w, holder)
			}
		default:
			last := decodeAddr(nextFit.Get([]byte(set.String())))
			a, ok := set.NextFree(last, func(a netip.Addr) bool { return addrs.Get(addrKey(a)) != nil })
			if !ok {
				return Allocation{}, &ExhaustedError{Network: p.Network, Set: set}
			}
			if err := nextFit.Put([]byte(set.String()), addrKey(a)); err != nil {
				return Allocation{}, err
			}
			w = a
		}
		if err := addrs.Put(addrKey(w), key); err != nil {
			return Allocation{}, err
		}
		r, _ := set.Find(w)
		alloc.IPs = append(alloc.IPs, Address{Address: r.Prefix(w), Gateway: r.Gateway})
		changed = true
	}
	if !changed {
		return alloc, nil
	}
	return alloc, putAllocation(owners, key, alloc)
}

// heldIn returns the address the allocation holds in the set, if any.
func heldIn(a Allocation, set RangeSet) (netip.Addr, bool) {
	for _, ip := range a.IPs {
		if _, ok := set.Find(ip.Address.Addr()); ok {
			return ip.Address.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func takenError(owners *bolt.Bucket, network string, a netip.Addr, holderKey []byte) error {
	holder, found, err := getAllocation(owners, holderKey)
	if err != nil {
		return err
	}
	if !found {
		// The index names an owner with no record: say what the key says.
		holder.Owner = Owner{ContainerID: string(holderKey)}
	}
	return &TakenError{Network: network, Addr: a, Holder: holder.Owner}
}

// Release frees what the owner holds in the network and returns it. An
// owner with an ECS id is also looked for in the network it was allocated
// in, which may differ (see ecsNetwork). found is false when the owner
// holds nothing, which is not an error: DEL is idempotent.
func (s *Store) Release(network string, o Owner) (released Allocation, found bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		network = ecsNetwork(tx, o, network)
		nb, err := existingNetwork(tx, network)
		if nb == nil || err != nil {
			return err
		}
		released, found, err = release(tx, nb, network, o.key())
		if err == nil && found {
			crashpoint.At("ipam-del-written")
		}
		return err
	})
	return released, found, err
}

func release(tx *bolt.Tx, nb *bolt.Bucket, network string, key []byte) (Allocation, bool, error) {
	owners, addrs := nb.Bucket(bucketOwners), nb.Bucket(bucketAddresses)
	alloc, found, err := getAllocation(owners, key)
	if !found || err != nil {
		return Allocation{}, false, err
	}
	alloc.Network = network
	for _, ip := range alloc.IPs {
		k := addrKey(ip.Address.Addr())
		// Only the index entries that point back at this owner go.
		if bytes.Equal(addrs.Get(k), key) {
			if err := addrs.Delete(k); err != nil {
				return Allocation{}, false, err
			}
		}
	}
	if err := owners.Delete(key); err != nil {
		return Allocation{}, false, err
	}
	if err := forgetECSID(tx, alloc.Owner, network); err != nil {
		return Allocation{}, false, err
	}
	return alloc, true, nil
}

// Lookup returns what the owner holds in the network.
func (s *Store) Lookup(network string, o Owner) (alloc Allocation, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		nb, err := existingNetwork(tx, network)
		if nb == nil || err != nil {
			return err
		}
		alloc, found, err = getAllocation(nb.Bucket(bucketOwners), o.key())
		alloc.Network = network
		return err
	})
	return alloc, found, err
}

// GC releases every allocation of the network whose owner keep rejects, in
// one transaction, and returns them. It reads every allocation of the
// network: that is what a GC is.
func (s *Store) GC(network string, keep func(Owner) bool) ([]Allocation, error) {
	var gone []Allocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		nb, err := existingNetwork(tx, network)
		if nb == nil || err != nil {
			return err
		}
		var keys [][]byte
		err = nb.Bucket(bucketOwners).ForEach(func(k, v []byte) error {
			var a Allocation
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decode allocation %q: %w", k, err)
			}
			if !keep(a.Owner) {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			a, _, err := release(tx, nb, network, k)
			if err != nil {
				return err
			}
			gone = append(gone, a)
		}
		if len(gone) > 0 {
			crashpoint.At("ipam-gc-written")
		}
		return nil
	})
	return gone, err
}

// Allocations lists every allocation of the network, in key order. It reads
// them all; the verbs never call it.
func (s *Store) Allocations(network string) ([]Allocation, error) {
	var all []Allocation
	err := s.db.View(func(tx *bolt.Tx) error {
		nb, err := existingNetwork(tx, network)
		if nb == nil || err != nil {
			return err
		}
		return nb.Bucket(bucketOwners).ForEach(func(k, v []byte) error {
			var a Allocation
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decode allocation %q: %w", k, err)
			}
			a.Network = network
			all = append(all, a)
			return nil
		})
	})
	return all, err
}

// Holder returns who holds address a in the network: one index lookup.
func (s *Store) Holder(network string, a netip.Addr) (o Owner, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		nb, err := existingNetwork(tx, network)
		if nb == nil || err != nil {
			return err
		}
		k := nb.Bucket(bucketAddresses).Get(addrKey(a))
		if k == nil {
			return nil
		}
		alloc, ok, err := getAllocation(nb.Bucket(bucketOwners), k)
		o, found = alloc.Owner, ok
		return err
	})
	return o, found, err
}

// networkBucket returns the network's bucket, creating it and its inner
// buckets on first use.
func networkBucket(tx *bolt.Tx, network string) (*bolt.Bucket, error) {
	if network == "" {
		return nil, errors.New("network name is empty")
	}
	nb, err := existingNetwork(tx, network)
	if nb != nil || err != nil {
		return nb, err
	}
	nb, err = tx.CreateBucket([]byte(network))
	if err != nil {
		return nil, fmt.Errorf("create bucket for network %q: %w", network, err)
	}
	for _, name := range [][]byte{bucketOwners, bucketAddresses, bucketNextFit} {
		if _, err := nb.CreateBucket(name); err != nil {
			return nil, fmt.Errorf("create bucket %s of network %q: %w", name, network, err)
		}
	}
	return nb, nil
}

// existingNetwork returns the network's bucket, nil if there is none, or an
// error if a bucket of that name holds something other than allocations
// (an ecs-ipam store shares the file and keeps its own bucket, "IPAM").
func existingNetwork(tx *bolt.Tx, network string) (*bolt.Bucket, error) {
	nb := tx.Bucket([]byte(network))
	if nb == nil {
		return nil, nil
	}
	if nb.Bucket(bucketOwners) == nil || nb.Bucket(bucketAddresses) == nil || nb.Bucket(bucketNextFit) == nil {
		return nil, fmt.Errorf("bucket %q of %s is not a vpc-ipam network (written by another program?)", network, tx.DB().Path())
	}
	return nb, nil
}

func getAllocation(owners *bolt.Bucket, key []byte) (Allocation, bool, error) {
	v := owners.Get(key)
	if v == nil {
		return Allocation{}, false, nil
	}
	var a Allocation
	if err := json.Unmarshal(v, &a); err != nil {
		return Allocation{}, false, fmt.Errorf("decode allocation %q: %w", key, err)
	}
	return a, true, nil
}

func putAllocation(owners *bolt.Bucket, key []byte, a Allocation) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return owners.Put(key, v)
}

// addrKey is the index key of an address: 16 bytes, so that keys sort in
// address order and IPv4 and IPv6 never collide.
func addrKey(a netip.Addr) []byte {
	b := a.As16()
	return b[:]
}

func decodeAddr(k []byte) netip.Addr {
	if len(k) != 16 {
		return netip.Addr{}
	}
	return netip.AddrFrom16([16]byte(k)).Unmap()
}
