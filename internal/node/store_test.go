package node

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func openTestStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStoreAssignReleaseCooldown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openTestStore(t, path)
	k1 := Key{Network: "pods", ContainerID: "c1", IfName: "eth0"}
	k2 := Key{Network: "pods", ContainerID: "c2", IfName: "eth0"}
	addr := netip.MustParseAddr("10.0.0.10")
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

	if err := s.Put(Assignment{Key: k1, Address: addr, ENI: "eni-1", PodName: "a", AssignedAt: now}); err != nil {
		t.Fatal(err)
	}
	// The same address for another attachment is refused: one address, one pod.
	if err := s.Put(Assignment{Key: k2, Address: addr, ENI: "eni-1"}); !errors.Is(err, ErrAddressTaken) {
		t.Fatalf("second owner of %s: got %v, want ErrAddressTaken", addr, err)
	}
	// The same attachment again converges.
	if err := s.Put(Assignment{Key: k1, Address: addr, ENI: "eni-1", PodName: "a", AssignedAt: now}); err != nil {
		t.Fatalf("re-put of the same assignment: %v", err)
	}
	got, ok, err := s.Get(k1)
	if err != nil || !ok || got.Address != addr || got.PodName != "a" {
		t.Fatalf("Get(k1) = %+v, %v, %v", got, ok, err)
	}

	rel, found, err := s.Release(k1, now)
	if err != nil || !found || rel.Address != addr {
		t.Fatalf("Release = %+v, %v, %v", rel, found, err)
	}
	if _, found, err := s.Release(k1, now); err != nil || found {
		t.Fatalf("second Release: found=%v err=%v, want idempotent", found, err)
	}
	// In cooldown: nobody gets it.
	if err := s.Put(Assignment{Key: k2, Address: addr, ENI: "eni-1"}); !errors.Is(err, ErrAddressTaken) {
		t.Fatalf("put of an address in cooldown: %v", err)
	}
	// A restart keeps the cooldown.
	s.Close()
	s = openTestStore(t, path)
	cd, err := s.Cooldowns()
	if err != nil || !cd[addr].Equal(now) {
		t.Fatalf("cooldowns after reopen = %v, %v", cd, err)
	}
	if err := s.EndCooldown(addr); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Assignment{Key: k2, Address: addr, ENI: "eni-1"}); err != nil {
		t.Fatalf("put after the cooldown ended: %v", err)
	}
	if err := s.Drop(k2); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Assignments(); len(all) != 0 {
		t.Fatalf("after Drop: %v", all)
	}
	if cd, _ := s.Cooldowns(); len(cd) != 0 {
		t.Fatalf("Drop put %v in cooldown; it must not (its address left the node)", cd)
	}
}

func TestStoreOneAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	openTestStore(t, path)
	if _, err := OpenStore(path, 100*time.Millisecond); err == nil {
		t.Fatal("a second agent opened the same store")
	}
}
