package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Instance types as DescribeInstanceTypes reports them.
var (
	t3small    = InstanceType{Name: "t3.small", ENIs: 3, IPv4PerENI: 4, PrefixDelegation: true, VCPUs: 2}
	m5large    = InstanceType{Name: "m5.large", ENIs: 3, IPv4PerENI: 10, PrefixDelegation: true, VCPUs: 2}
	m5xlarge   = InstanceType{Name: "m5.xlarge", ENIs: 4, IPv4PerENI: 15, PrefixDelegation: true, VCPUs: 4}
	c54xlarge  = InstanceType{Name: "c5.4xlarge", ENIs: 8, IPv4PerENI: 30, PrefixDelegation: true, VCPUs: 16}
	m524xlarge = InstanceType{Name: "m5.24xlarge", ENIs: 15, IPv4PerENI: 50, PrefixDelegation: true, VCPUs: 96}
	p3dn24x    = InstanceType{Name: "p3dn.24xlarge", ENIs: 15, IPv4PerENI: 50, PrefixDelegation: true, VCPUs: 96}
	m4large    = InstanceType{Name: "m4.large", ENIs: 2, IPv4PerENI: 10, PrefixDelegation: false, VCPUs: 2}
)

// t0 is when the simulated node boots.
var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

// node is a simulated node: the pool state, and what EC2 would do with each
// decision. Every effect checks the invariants the policy promises, so a
// decision that breaks one fails the test where it is made.
type node struct {
	t     *testing.T
	s     State
	cfg   Config
	lim   Limits
	now   time.Time
	next  int       // next address or prefix number to hand out
	log   []Action  // every decision applied
	freed []int     // for each, the addresses it took from the pool
	pods  []podAddr // pods in the order they started
	steps int
}

type podAddr struct {
	eni  string
	addr netip.Addr
}

// newNode boots a node of type it: the primary ENI in subnet-a, no
// secondary address yet.
func newNode(t *testing.T, it InstanceType, cfg Config) *node {
	t.Helper()
	lim, err := NewLimits(it, cfg)
	if err != nil {
		t.Fatalf("NewLimits(%s): %v", it.Name, err)
	}
	return &node{t: t, cfg: cfg, lim: lim, now: t0, s: State{
		Zone: "us-east-1a", CustomNetworking: cfg.CustomNetworking,
		ENIs: []ENI{{ID: "eni-primary", DeviceIndex: 0, Primary: true, AttachedAt: t0.Add(-time.Hour), SubnetID: "subnet-a"}},
	}}
}

func (n *node) eni(id string) *ENI {
	n.t.Helper()
	i := slices.IndexFunc(n.s.ENIs, func(e ENI) bool { return e.ID == id })
	if i < 0 {
		n.t.Fatalf("decision names ENI %s, which is not attached", id)
	}
	return &n.s.ENIs[i]
}

func (n *node) newAddr() netip.Addr {
	n.next++
	return netip.AddrFrom4([4]byte{10, 0, byte(n.next >> 8), byte(n.next)})
}

func (n *node) newPrefix() netip.Prefix {
	n.next++
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(n.next >> 4), byte(n.next << 4)}), 28)
}

// apply does what EC2 would do with d, after checking that d keeps the
// policy's promises.
func (n *node) apply(d Decision) {
	t := n.t
	t.Helper()
	n.log = append(n.log, d.Action)
	before := n.s.Stats(n.now).Total
	defer func() { n.freed = append(n.freed, max(before-n.s.Stats(n.now).Total, 0)) }()
	slots := n.lim.SlotsPerENI
	switch d.Action {
	case CreateENI:
		if len(n.s.ENIs) >= n.lim.ENIs {
			t.Fatalf("%s: an ENI beyond the limit of %d: %s", d.Action, n.lim.ENIs, d.Reason)
		}
		if d.Count < 1 || d.Count > slots {
			t.Fatalf("%s with %d, want 1..%d: %s", d.Action, d.Count, slots, d.Reason)
		}
		if slices.ContainsFunc(n.s.ENIs, func(e ENI) bool { return e.DeviceIndex == d.DeviceIndex }) || d.DeviceIndex < 1 {
			t.Fatalf("%s at device index %d, which is taken", d.Action, d.DeviceIndex)
		}
		if d.SubnetID == "" {
			t.Fatalf("%s without a subnet: %s", d.Action, d.Reason)
		}
		e := ENI{ID: fmt.Sprintf("eni-%d", d.DeviceIndex), DeviceIndex: d.DeviceIndex, AttachedAt: n.now, Ours: true, SubnetID: d.SubnetID}
		for range d.Count {
			if d.WithPrefixes {
				e.Prefixes = append(e.Prefixes, Prefix{Prefix: n.newPrefix()})
			} else {
				e.Addresses = append(e.Addresses, Address{IP: n.newAddr()})
			}
		}
		n.s.ENIs = append(n.s.ENIs, e)
	case AssignAddresses, AssignPrefixes:
		e := n.eni(d.ENI)
		if !n.s.carriesPods(*e) {
			t.Fatalf("%s to %s, which carries no pods: %s", d.Action, e.ID, d.Reason)
		}
		if d.Count < 1 || len(e.Addresses)+len(e.Prefixes)+d.Count > slots {
			t.Fatalf("%s %d to %s holding %d+%d of %d slots: %s", d.Action, d.Count, e.ID, len(e.Addresses), len(e.Prefixes), slots, d.Reason)
		}
		for range d.Count {
			if d.Action == AssignPrefixes {
				e.Prefixes = append(e.Prefixes, Prefix{Prefix: n.newPrefix()})
			} else {
				e.Addresses = append(e.Addresses, Address{IP: n.newAddr()})
			}
		}
	case UnassignAddresses:
		e := n.eni(d.ENI)
		if len(d.Addresses) == 0 {
			t.Fatalf("%s of nothing: %s", d.Action, d.Reason)
		}
		for _, ip := range d.Addresses {
			i := slices.IndexFunc(e.Addresses, func(a Address) bool { return a.IP == ip })
			if i < 0 || !e.Addresses[i].free(n.now) {
				t.Fatalf("%s of %s on %s, which is not a free address there: %+v", d.Action, ip, e.ID, e.Addresses)
			}
			e.Addresses = slices.Delete(e.Addresses, i, i+1)
		}
	case UnassignPrefixes:
		e := n.eni(d.ENI)
		if len(d.Prefixes) == 0 {
			t.Fatalf("%s of nothing: %s", d.Action, d.Reason)
		}
		for _, p := range d.Prefixes {
			i := slices.IndexFunc(e.Prefixes, func(q Prefix) bool { return q.Prefix == p })
			if i < 0 || !e.Prefixes[i].isFree(n.now) {
				t.Fatalf("%s of %s on %s, which is not a wholly free prefix there", d.Action, p, e.ID)
			}
			e.Prefixes = slices.Delete(e.Prefixes, i, i+1)
		}
	case DeleteENI:
		e := n.eni(d.ENI)
		es := eniStats(*e, n.now)
		if e.Primary || !e.Ours || es.Assigned > 0 || es.Cooling > 0 || n.now.Sub(e.AttachedAt) < n.cfg.MinENIAge {
			t.Fatalf("%s of %s (primary %v, ours %v, %d assigned, %d cooling, age %s): %s",
				d.Action, e.ID, e.Primary, e.Ours, es.Assigned, es.Cooling, n.now.Sub(e.AttachedAt), d.Reason)
		}
		n.s.ENIs = slices.DeleteFunc(n.s.ENIs, func(x ENI) bool { return x.ID == d.ENI })
	default:
		t.Fatalf("apply %s", d.Action)
	}
}

// converge applies decisions until Decide answers Nothing, and returns that
// last answer.
func (n *node) converge() Decision {
	n.t.Helper()
	for range 100 {
		d := Decide(n.s, n.cfg, n.lim, n.now)
		if d.Action == Nothing {
			return d
		}
		if d.Reason == "" {
			n.t.Fatalf("%s without a reason", d.Action)
		}
		n.apply(d)
		n.steps++
	}
	n.t.Fatalf("no fixed point after 100 decisions; last ones: %v", n.log[max(0, len(n.log)-6):])
	return Decision{}
}

// addPods starts k pods one by one, the pool converging after each as the
// agent's reconciler would.
func (n *node) addPods(k int) {
	n.t.Helper()
	for range k {
		eni, addr, ok := Pick(n.s, n.now)
		if !ok {
			n.converge()
			if eni, addr, ok = Pick(n.s, n.now); !ok {
				n.t.Fatalf("pod %d: no address after the pool converged: %s", len(n.pods)+1, Exhausted(n.s, n.cfg, n.lim, n.now).Message)
			}
		}
		n.hold(eni, addr)
		n.pods = append(n.pods, podAddr{eni, addr})
		n.converge()
	}
}

// startPods starts k pods without letting the pool converge in between, as
// when pods arrive faster than the agent acts.
func (n *node) startPods(k int) {
	n.t.Helper()
	for range k {
		eni, addr, ok := Pick(n.s, n.now)
		if !ok {
			n.t.Fatalf("pod %d: no free address", len(n.pods)+1)
		}
		n.hold(eni, addr)
		n.pods = append(n.pods, podAddr{eni, addr})
	}
}

// hold marks addr as assigned to a pod.
func (n *node) hold(eni string, addr netip.Addr) {
	n.t.Helper()
	e := n.eni(eni)
	if i := slices.IndexFunc(e.Addresses, func(a Address) bool { return a.IP == addr }); i >= 0 {
		if !e.Addresses[i].free(n.now) {
			n.t.Fatalf("Pick returned %s on %s, which is not free", addr, eni)
		}
		e.Addresses[i] = Address{IP: addr, Assigned: true}
		return
	}
	for i := range e.Prefixes {
		p := &e.Prefixes[i]
		if !p.Prefix.Contains(addr) {
			continue
		}
		if slices.ContainsFunc(p.Addresses, func(a Address) bool { return a.IP == addr && !a.free(n.now) }) {
			n.t.Fatalf("Pick returned %s on %s, which is not free", addr, eni)
		}
		p.Addresses = slices.DeleteFunc(p.Addresses, func(a Address) bool { return a.IP == addr })
		p.Addresses = append(p.Addresses, Address{IP: addr, Assigned: true})
		return
	}
	n.t.Fatalf("Pick returned %s, which %s does not hold", addr, eni)
}

// removePods stops the k most recent pods; their addresses go into cooldown.
func (n *node) removePods(k int) {
	n.t.Helper()
	until := n.now.Add(n.cfg.IPCooldown)
	for range k {
		p := n.pods[len(n.pods)-1]
		n.pods = n.pods[:len(n.pods)-1]
		e := n.eni(p.eni)
		if i := slices.IndexFunc(e.Addresses, func(a Address) bool { return a.IP == p.addr }); i >= 0 {
			e.Addresses[i] = Address{IP: p.addr, CooldownUntil: until}
			continue
		}
		for j := range e.Prefixes {
			for i, a := range e.Prefixes[j].Addresses {
				if a.IP == p.addr {
					e.Prefixes[j].Addresses[i] = Address{IP: p.addr, CooldownUntil: until}
				}
			}
		}
	}
}

// shape is what the docs' tables report of a node.
type shape struct {
	ENIs       int
	Addresses  int   // secondary addresses (or prefix addresses) in all
	PerENI     []int // addresses per ENI (prefixes per ENI in prefix mode), sorted
	Prefixes   int
	FreePrefix int // prefixes with no pod
	Unused     int // addresses without a pod
	PodsPerENI []int
}

func (n *node) shape() shape {
	st := n.s.Stats(n.now)
	sh := shape{ENIs: len(n.s.ENIs), Addresses: st.Total, Prefixes: st.Prefixes, FreePrefix: st.FreePrefixes, Unused: st.Total - st.Assigned}
	for _, e := range n.s.ENIs {
		es := eniStats(e, n.now)
		if n.lim.Prefixes {
			sh.PerENI = append(sh.PerENI, es.Prefixes)
		} else {
			sh.PerENI = append(sh.PerENI, es.Total)
		}
		sh.PodsPerENI = append(sh.PodsPerENI, es.Assigned)
	}
	slices.Sort(sh.PerENI)
	slices.Sort(sh.PodsPerENI)
	return sh
}

// with returns the default configuration changed by set.
func with(set func(*Config)) Config {
	c := DefaultConfig()
	if set != nil {
		set(&c)
	}
	return c
}
