package ipam

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "sub", "dir", "ipam.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pool(t testing.TB, network string, subnets ...string) Pool {
	t.Helper()
	p := Pool{Network: network}
	for _, s := range subnets {
		p.Sets = append(p.Sets, RangeSet{mustRange(t, s, "", "", "")})
	}
	return p
}

func ctr(id string) Owner { return Owner{ContainerID: id, IfName: "eth0"} }

func ips(a Allocation) []string {
	var out []string
	for _, ip := range a.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

func mustAllocate(t *testing.T, s *Store, p Pool, o Owner, want ...string) Allocation {
	t.Helper()
	var w []netip.Addr
	for _, a := range want {
		w = append(w, addr(a))
	}
	a, err := s.Allocate(p, o, w)
	if err != nil {
		t.Fatalf("allocate for %s: %v", o, err)
	}
	return a
}

// holdings is the network's allocations as "owner=ip,ip" strings, sorted.
func holdings(t *testing.T, s *Store, network string) []string {
	t.Helper()
	all, err := s.Allocations(network)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range all {
		out = append(out, a.Owner.String()+"="+strings.Join(ips(a), ","))
	}
	slices.Sort(out)
	return out
}

func TestAllocateNextFitAcrossReleases(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "net1", "10.0.0.0/29") // .2-.6 free, .1 gateway
	var got []string
	for _, c := range []string{"a", "b", "c"} {
		got = append(got, ips(mustAllocate(t, s, p, ctr(c)))...)
	}
	if _, _, err := s.Release("net1", ctr("a")); err != nil {
		t.Fatal(err)
	}
	// a's 10.0.0.2 is free again but next-fit hands out .5 and .6 first.
	for _, c := range []string{"d", "e", "f"} {
		got = append(got, ips(mustAllocate(t, s, p, ctr(c)))...)
	}
	want := []string{"10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29", "10.0.0.2/29"}
	if !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	a, _, err := s.Holder("net1", addr("10.0.0.2"))
	if err != nil || a != ctr("f") {
		t.Fatalf("holder of 10.0.0.2 = %v, %v; want f/eth0", a, err)
	}
}

func TestAllocateIsIdempotent(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "net1", "10.0.0.0/24", "fd00::/64")
	first := mustAllocate(t, s, p, ctr("a"))
	again := mustAllocate(t, s, p, ctr("a"))
	asked := mustAllocate(t, s, p, ctr("a"), "", first.IPs[1].Address.Addr().String())
	for _, a := range []Allocation{again, asked} {
		if !slices.Equal(ips(a), ips(first)) {
			t.Fatalf("repeated allocation %v, first %v", ips(a), ips(first))
		}
	}
	if want := []string{"10.0.0.2/24", "fd00::2/64"}; !slices.Equal(ips(first), want) {
		t.Fatalf("dual-stack allocation %v, want %v", ips(first), want)
	}
	if first.IPs[0].Gateway != addr("10.0.0.1") || first.IPs[1].Gateway != addr("fd00::1") {
		t.Fatalf("gateways %v", first.IPs)
	}
	if h := holdings(t, s, "net1"); len(h) != 1 {
		t.Fatalf("store holds %v, want one allocation", h)
	}
}

func TestAllocateExplicit(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "net1", "10.0.0.0/24")
	a := mustAllocate(t, s, p, ctr("a"), "10.0.0.77")
	if got := ips(a); !slices.Equal(got, []string{"10.0.0.77/24"}) {
		t.Fatalf("got %v", got)
	}

	_, err := s.Allocate(p, ctr("b"), []netip.Addr{addr("10.0.0.77")})
	var taken *TakenError
	if !errors.As(err, &taken) || taken.Holder != ctr("a") {
		t.Fatalf("taking a held address: got %v, want TakenError naming a/eth0", err)
	}
	if want := `10.0.0.77 is already held by a/eth0 in network "net1"`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}

	_, err = s.Allocate(p, ctr("a"), []netip.Addr{addr("10.0.0.78")})
	var conflict *ConflictError
	if !errors.As(err, &conflict) || conflict.Held != addr("10.0.0.77") {
		t.Fatalf("asking for a second address: got %v, want ConflictError", err)
	}
	// Explicit requests do not move next-fit: the next free one is .2.
	if got := ips(mustAllocate(t, s, p, ctr("c"))); !slices.Equal(got, []string{"10.0.0.2/24"}) {
		t.Fatalf("next-fit after an explicit request: %v", got)
	}
	want := []string{"a/eth0=10.0.0.77/24", "c/eth0=10.0.0.2/24"}
	if h := holdings(t, s, "net1"); !slices.Equal(h, want) {
		t.Fatalf("store holds %v, want %v", h, want)
	}
}

func TestAllocateExhausted(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "small", "10.0.0.0/29")
	for i := range 5 {
		mustAllocate(t, s, p, ctr(string(rune('a'+i))))
	}
	_, err := s.Allocate(p, ctr("x"), nil)
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("sixth allocation in a /29: got %v, want ExhaustedError", err)
	}
	if want := `no free address in network "small", range 10.0.0.0/29[10.0.0.1-10.0.0.6 gw 10.0.0.1]`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if _, found, err := s.Release("small", ctr("c")); !found || err != nil {
		t.Fatalf("release c: found=%v err=%v", found, err)
	}
	if got := ips(mustAllocate(t, s, p, ctr("x"))); !slices.Equal(got, []string{"10.0.0.4/29"}) {
		t.Fatalf("after freeing c's address: %v", got)
	}
}

// A failure in the second range set must leave nothing of the first.
func TestAllocateIsAllOrNothing(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "dual", "10.0.0.0/24", "fd00::/127") // the /127 has only its gateway
	if _, err := s.Allocate(p, ctr("a"), nil); err == nil {
		t.Fatal("allocation from an empty IPv6 range succeeded")
	}
	if h := holdings(t, s, "dual"); len(h) != 0 {
		t.Fatalf("failed allocation left %v", h)
	}
	if _, found, _ := s.Holder("dual", addr("10.0.0.2")); found {
		t.Fatal("failed allocation left 10.0.0.2 in the address index")
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "net1", "10.0.0.0/24")
	mustAllocate(t, s, p, ctr("a"))
	for i, wantFound := range []bool{true, false} {
		_, found, err := s.Release("net1", ctr("a"))
		if err != nil || found != wantFound {
			t.Fatalf("release #%d: found=%v err=%v, want found=%v", i+1, found, err, wantFound)
		}
	}
	if _, found, err := s.Release("no-such-network", ctr("a")); found || err != nil {
		t.Fatalf("release in an unknown network: found=%v err=%v", found, err)
	}
	if _, found, _ := s.Holder("net1", addr("10.0.0.2")); found {
		t.Fatal("10.0.0.2 still indexed after release")
	}
}

func TestNetworksAreSeparate(t *testing.T) {
	s := openTemp(t)
	a := mustAllocate(t, s, pool(t, "net1", "10.0.0.0/24"), ctr("a"))
	b := mustAllocate(t, s, pool(t, "net2", "10.0.0.0/24"), ctr("a"))
	if !slices.Equal(ips(a), ips(b)) {
		t.Fatalf("same subnet in two networks: %v and %v, want the same first address", ips(a), ips(b))
	}
	s.Release("net1", ctr("a"))
	if h := holdings(t, s, "net2"); len(h) != 1 {
		t.Fatalf("release in net1 touched net2: %v", h)
	}
}

func TestGC(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "net1", "10.0.0.0/24")
	for _, c := range []string{"keep1", "drop1", "keep2", "drop2"} {
		mustAllocate(t, s, p, ctr(c))
	}
	mustAllocate(t, s, pool(t, "other", "10.0.0.0/24"), ctr("drop1"))
	gone, err := s.GC("net1", func(o Owner) bool { return strings.HasPrefix(o.ContainerID, "keep") })
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 2 {
		t.Fatalf("GC released %d allocations, want 2", len(gone))
	}
	if h, want := holdings(t, s, "net1"), []string{"keep1/eth0=10.0.0.2/24", "keep2/eth0=10.0.0.4/24"}; !slices.Equal(h, want) {
		t.Fatalf("after GC: %v, want %v", h, want)
	}
	if h := holdings(t, s, "other"); len(h) != 1 {
		t.Fatalf("GC of net1 touched network other: %v", h)
	}
}

// ecs-ipam keys allocations by "id", and the ECS agent releases through a
// network named "ecs-ipam" what it allocated through its bridge network.
func TestECSIDFollowsAcrossNetworks(t *testing.T) {
	s := openTemp(t)
	p := pool(t, "ecs-bridge", "169.254.172.0/22")
	add := Owner{ContainerID: "pause1", IfName: "ecs-eth0", ID: "0a:1b:2c:3d:4e:5f"}
	a := mustAllocate(t, s, p, add)
	// A retried ADD from another container with the same id converges.
	again := mustAllocate(t, s, p, Owner{ContainerID: "pause2", IfName: "ecs-eth0", ID: add.ID})
	if !slices.Equal(ips(a), ips(again)) {
		t.Fatalf("same id, two addresses: %v, %v", ips(a), ips(again))
	}
	if h, want := holdings(t, s, "ecs-bridge"), `id "0a:1b:2c:3d:4e:5f" (container pause2, interface ecs-eth0)=169.254.172.2/22`; len(h) != 1 || h[0] != want {
		t.Fatalf("after the retried ADD the store holds %q, want %q", h, want)
	}
	rel, found, err := s.Release("ecs-ipam", Owner{ContainerID: "x", IfName: "ecs-eth0", ID: add.ID})
	if err != nil || !found || !slices.Equal(ips(rel), ips(a)) {
		t.Fatalf("release by id through another network: %v found=%v err=%v", ips(rel), found, err)
	}
	if h := holdings(t, s, "ecs-bridge"); len(h) != 0 {
		t.Fatalf("left %v", h)
	}
}

func TestLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.db")
	holder, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	_, err = Open(path, 200*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("open of a locked store: %v, want ErrLocked", err)
	}
	holder.Close()
	s, err := Open(path, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("open after the holder let go: %v", err)
	}
	s.Close()
}

// An ecs-ipam store may share the file; its bucket is not a network.
func TestForeignBucketIsAnError(t *testing.T) {
	s := openTemp(t)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("IPAM"))
		if err != nil {
			return err
		}
		return b.Put([]byte("lastKnownIP"), []byte("169.254.172.3"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Allocate(pool(t, "IPAM", "10.0.0.0/24"), ctr("a"), nil)
	if err == nil || !strings.Contains(err.Error(), `bucket "IPAM"`) {
		t.Fatalf("allocate in a foreign bucket: %v", err)
	}
}
