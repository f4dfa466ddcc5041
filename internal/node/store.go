package node

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
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// The agent's store is one bbolt file (crash-safe: every change is one
// synced transaction, written before the reply that depends on it):
//
//	assignments/   attachment key -> Assignment (JSON)
//	addresses/     address -> attachment key (index: one address, one owner)
//	cooldown/      address -> release time (RFC3339Nano)
var (
	bucketAssignments = []byte("assignments")
	bucketAddresses   = []byte("addresses")
	bucketCooldown    = []byte("cooldown")
)

// ErrAddressTaken means the address is already assigned to another
// attachment; the caller picked from a stale view.
var ErrAddressTaken = errors.New("address already assigned")

// Key identifies a CNI attachment: network, container ID and interface.
type Key struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// KeyOf returns the key of an API attachment.
func KeyOf(a *nodeapi.Attachment) Key {
	return Key{Network: a.GetNetwork(), ContainerID: a.GetContainerId(), IfName: a.GetIfName()}
}

// Attachment returns the API form of the key.
func (k Key) Attachment() *nodeapi.Attachment {
	return &nodeapi.Attachment{Network: k.Network, ContainerId: k.ContainerID, IfName: k.IfName}
}

func (k Key) bytes() []byte { return []byte(k.Network + "\x00" + k.ContainerID + "\x00" + k.IfName) }

func (k Key) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

// Assignment is an address given to a pod's attachment.
type Assignment struct {
	Key
	Address      netip.Addr `json:"address"`
	ENI          string     `json:"eni"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	PodUID       string     `json:"podUID,omitempty"`
	AssignedAt   time.Time  `json:"assignedAt"`
}

// Store keeps the node's assignments and cooldowns across restarts.
type Store struct {
	db *bolt.DB
}

// OpenStore opens (creating it if needed) the store at path. Only one agent
// may hold it: a second one waits up to lockTimeout and then fails.
func OpenStore(path string, lockTimeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create the directory of the agent store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open agent store %s: held by another vpcnetd (waited %s)", path, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open agent store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAssignments, bucketAddresses, bucketCooldown} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise agent store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close releases the store's file lock.
func (s *Store) Close() error { return s.db.Close() }

// Get returns the attachment's assignment, if any.
func (s *Store) Get(k Key) (Assignment, bool, error) {
	var a Assignment
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAssignments).Get(k.bytes())
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &a)
	})
	if err != nil {
		return Assignment{}, false, fmt.Errorf("read assignment of %s: %w", k, err)
	}
	return a, found, nil
}

// Put records an assignment. It refuses an address that another attachment
// holds or that is in cooldown, so a stale pick can never hand one address
// out twice.
func (s *Store) Put(a Assignment) error {
	addr := []byte(a.Address.String())
	err := s.db.Update(func(tx *bolt.Tx) error {
		if owner := tx.Bucket(bucketAddresses).Get(addr); owner != nil && string(owner) != string(a.Key.bytes()) {
			return fmt.Errorf("%w: %s", ErrAddressTaken, a.Address)
		}
		if tx.Bucket(bucketCooldown).Get(addr) != nil {
			return fmt.Errorf("%w: %s is in cooldown", ErrAddressTaken, a.Address)
		}
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketAssignments).Put(a.Key.bytes(), v); err != nil {
			return err
		}
		return tx.Bucket(bucketAddresses).Put(addr, a.Key.bytes())
	})
	if err != nil {
		return fmt.Errorf("record assignment of %s to %s: %w", a.Address, a.Key, err)
	}
	return nil
}

// Release removes the attachment's assignment and puts its address in
// cooldown from now. It returns the released assignment (found=false when
// there was none: DEL is idempotent).
func (s *Store) Release(k Key, now time.Time) (Assignment, bool, error) {
	var a Assignment
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAssignments).Get(k.bytes())
		if v == nil {
			return nil
		}
		found = true
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		addr := []byte(a.Address.String())
		if err := tx.Bucket(bucketAssignments).Delete(k.bytes()); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAddresses).Delete(addr); err != nil {
			return err
		}
		return tx.Bucket(bucketCooldown).Put(addr, []byte(now.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return Assignment{}, false, fmt.Errorf("release assignment of %s: %w", k, err)
	}
	return a, found, nil
}

// Drop removes an assignment without a cooldown: its address is no longer
// on any of the node's ENIs, so there is nothing to protect.
func (s *Store) Drop(k Key) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAssignments).Get(k.bytes())
		if v == nil {
			return nil
		}
		var a Assignment
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAddresses).Delete([]byte(a.Address.String())); err != nil {
			return err
		}
		return tx.Bucket(bucketAssignments).Delete(k.bytes())
	})
}

// Assignments returns every assignment, ordered by address.
func (s *Store) Assignments() ([]Assignment, error) {
	var out []Assignment
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAssignments).ForEach(func(_, v []byte) error {
			var a Assignment
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list assignments: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out, nil
}

// Cooldowns returns each address in cooldown with the time it was released.
func (s *Store) Cooldowns() (map[netip.Addr]time.Time, error) {
	out := map[netip.Addr]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCooldown).ForEach(func(k, v []byte) error {
			addr, err := netip.ParseAddr(string(k))
			if err != nil {
				return err
			}
			t, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return err
			}
			out[addr] = t
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list cooldowns: %w", err)
	}
	return out, nil
}

// EndCooldown forgets addresses whose cooldown is over or that left the node.
func (s *Store) EndCooldown(addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, a := range addrs {
			if err := tx.Bucket(bucketCooldown).Delete([]byte(a.String())); err != nil {
				return err
			}
		}
		return nil
	})
}
