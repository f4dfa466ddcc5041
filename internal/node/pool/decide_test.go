package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// awsNodeShort is ipamd's shortfall with WARM_IP_TARGET/MINIMUM_IP_TARGET
// (datastoreTargetState): available = total - assigned, cooldown included.
func awsNodeShort(warm, min int, st Stats) int {
	available := st.Total - st.Assigned
	return max(warm-available, min-st.Total, 0)
}

// addrs returns n addresses starting at 10.9.dev.1, the first assigned of
// them assigned and the next cooling of them in cooldown until until.
func addrs(dev, n, assigned, cooling int, until time.Time) []Address {
	var out []Address
	for i := range n {
		a := Address{IP: netip.AddrFrom4([4]byte{10, 9, byte(dev), byte(i + 1)})}
		switch {
		case i < assigned:
			a.Assigned = true
		case i < assigned+cooling:
			a.CooldownUntil = until
		}
		out = append(out, a)
	}
	return out
}

// TestCooldownIsNotAvailable is amazon-vpc-cni-k8s #2896: WARM_IP_TARGET=2,
// MINIMUM_IP_TARGET=23, 23 addresses, 21 pods, and the two addresses left
// are in cooldown because two pods just went. aws-node counts them as
// available, sees no shortfall and does not grow, while new pods find no
// address. vpcnetd grows.
func TestCooldownIsNotAvailable(t *testing.T) {
	cfg := with(func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 2, 23 })
	n := newNode(t, m5large, cfg)
	until := n.now.Add(cfg.IPCooldown)
	n.s.ENIs[0].Addresses = addrs(0, 9, 9, 0, until)
	n.s.ENIs = append(n.s.ENIs,
		ENI{ID: "eni-1", DeviceIndex: 1, Ours: true, AttachedAt: t0, SubnetID: "subnet-a", Addresses: addrs(1, 9, 9, 0, until)},
		ENI{ID: "eni-2", DeviceIndex: 2, Ours: true, AttachedAt: t0, SubnetID: "subnet-a", Addresses: addrs(2, 5, 3, 2, until)})
	st := n.s.Stats(n.now)
	if st.Total != 23 || st.Assigned != 21 || st.Cooling != 2 || st.Free != 0 {
		t.Fatalf("setup: %s", st)
	}
	if short := awsNodeShort(2, 23, st); short != 0 {
		t.Fatalf("aws-node's arithmetic gives %d, the issue says 0 (it stalls)", short)
	}
	if _, _, ok := Pick(n.s, n.now); ok {
		t.Fatal("Pick found an address although all are assigned or cooling")
	}

	d := Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != AssignAddresses || d.ENI != "eni-2" || d.Count != 2 {
		t.Fatalf("Decide = %s %s %d (%s), want assign-addresses eni-2 2", d.Action, d.ENI, d.Count, d.Reason)
	}
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseGrowing || !x.CooldownEnds.Equal(until) {
		t.Errorf("Exhausted = %s, %s (cooldown ends %s), want growing, cooldown ending %s", x.Cause, x.Message, x.CooldownEnds, until)
	}
	// The pods keep coming: every one gets an address without waiting for
	// the cooldown to end.
	n.converge()
	n.addPods(4)
	if st := n.s.Stats(n.now); st.Total != 27 || st.Assigned != 25 || st.Cooling != 2 {
		t.Errorf("after 4 more pods: %s, want the node's 27 addresses, 25 assigned, the 2 cooling untouched", st)
	}
}

// TestPrefixFallback: with prefix delegation and InsufficientCidrBlocks in
// the subnet, the pool grows by single addresses instead of stopping (aws-node
// has no fallback); with the subnet out of addresses too, it says so.
func TestPrefixFallback(t *testing.T) {
	cfg := with(func(c *Config) { c.PrefixDelegation = true })
	n := newNode(t, t3small, cfg)
	n.converge()
	n.addPods(16) // the first /28 is full, a second one is free
	n.s.Subnets = map[string]SubnetState{"subnet-a": {NoFreePrefixes: true}}
	n.startPods(1)

	d := Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != AssignAddresses || d.ENI != "eni-primary" || d.Count != 1 {
		t.Fatalf("Decide = %s %s %d (%s), want 1 single address on the primary ENI", d.Action, d.ENI, d.Count, d.Reason)
	}
	if !strings.Contains(d.Reason, "InsufficientCidrBlocks") {
		t.Errorf("reason %q does not say why single addresses", d.Reason)
	}
	n.converge()
	// The primary ENI is full (2 prefixes and 1 address); the new ENIs get
	// single addresses too, and pods land on them.
	n.addPods(20)
	for _, e := range n.s.ENIs[1:] {
		if len(e.Prefixes) != 0 || len(e.Addresses) == 0 {
			t.Errorf("%s: %d prefixes, %d addresses; want single addresses only", e.ID, len(e.Prefixes), len(e.Addresses))
		}
	}

	// Out of addresses as well: nothing to do, and the pod is told why.
	n.s.Subnets["subnet-a"] = SubnetState{NoFreePrefixes: true, NoFreeAddresses: true}
	n.addPods(n.s.Stats(n.now).Free)
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != Nothing {
		t.Fatalf("Decide = %s (%s), want nothing", d.Action, d.Reason)
	}
	x := Exhausted(n.s, n.cfg, n.lim, n.now)
	if x.Cause != CauseSubnetFull && x.Cause != CauseInstanceLimit {
		t.Errorf("Exhausted = %s: %s", x.Cause, x.Message)
	}
}

// TestSubnetFullStopsCreation: a new ENI is not attempted in a subnet that
// has no free addresses.
func TestSubnetFullStopsCreation(t *testing.T) {
	n := newNode(t, t3small, DefaultConfig())
	n.converge()
	n.s.Subnets = map[string]SubnetState{"subnet-a": {NoFreeAddresses: true}}
	n.startPods(3)
	d := Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != Nothing || !strings.Contains(d.Reason, "subnet-a has no free addresses") {
		t.Fatalf("Decide = %s (%s), want nothing because subnet-a is full", d.Action, d.Reason)
	}
	x := Exhausted(n.s, n.cfg, n.lim, n.now)
	if x.Cause != CauseSubnetFull || !strings.Contains(x.Message, "subnet-a") {
		t.Errorf("Exhausted = %s: %s", x.Cause, x.Message)
	}
}

// TestLimits: the pool stops at the instance type's ENIs, at MAX_ENI, and at
// max pods, never beyond, and Exhausted names which.
func TestGrowthLimits(t *testing.T) {
	tests := []struct {
		name      string
		it        InstanceType
		set       func(*Config)
		maxPods   int // 0: NewLimits's value
		pods      int
		wantENIs  int
		wantTotal int
		cause     Cause
		say       string
	}{
		{"t3.small at its 3 ENIs", t3small, nil, 0, 9, 3, 9, CauseInstanceLimit, "all 3 ENIs the instance type allows"},
		{"t3.small with MAX_ENI=2", t3small, func(c *Config) { c.MaxENI = 2 }, 0, 6, 2, 6, CauseMaxENI, "MAX_ENI=2"},
		{"MAX_ENI above the type's limit is the type's limit", t3small, func(c *Config) { c.MaxENI = 8 }, 0, 9, 3, 9, CauseInstanceLimit, "all 3 ENIs"},
		{"m5.large, WARM_IP_TARGET=5, kubelet max pods 12", m5large, func(c *Config) { c.WarmIPTarget = 5 }, 12, 12, 2, 12, CauseMaxPods, "max pods (12)"},
		{"t3.small prefixes at 3 ENIs x 3 /28s", t3small, func(c *Config) { c.PrefixDelegation = true }, 0, 144, 3, 144, CauseInstanceLimit, "all 3 ENIs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.it, with(tt.set))
			if tt.maxPods > 0 {
				n.lim.MaxPods = tt.maxPods
			}
			n.converge()
			n.addPods(tt.pods)
			st := n.s.Stats(n.now)
			if st.ENIs != tt.wantENIs || st.Total != tt.wantTotal || st.Free != 0 {
				t.Fatalf("%s, want %d addresses on %d ENIs, none free", st, tt.wantTotal, tt.wantENIs)
			}
			if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != Nothing {
				t.Fatalf("Decide = %s (%s), want nothing", d.Action, d.Reason)
			}
			x := Exhausted(n.s, n.cfg, n.lim, n.now)
			if x.Cause != tt.cause || !strings.Contains(x.Message, tt.say) {
				t.Errorf("Exhausted = %s: %q, want %s saying %q", x.Cause, x.Message, tt.cause, tt.say)
			}
		})
	}
}

// TestShrink: after the pods go and their cooldown ends, the pool gives back
// what its targets do not need: whole ENIs once they are old enough, single
// addresses only with WARM_IP_TARGET/MINIMUM_IP_TARGET, whole /28s with
// prefix delegation. Nothing in cooldown is touched (apply checks each
// decision).
func TestShrink(t *testing.T) {
	tests := []struct {
		name string
		it   InstanceType
		set  func(*Config)
		pods int
		// after the pods go: while in cooldown, once out of it while the
		// ENIs are young, and once they are old.
		cooling, young, old shape
		neverUnassign       bool
	}{
		{
			name: "WARM_ENI_TARGET=1: whole ENIs only", it: t3small, pods: 9,
			cooling:       shape{ENIs: 3, Addresses: 9},
			young:         shape{ENIs: 3, Addresses: 9},
			old:           shape{ENIs: 1, Addresses: 3},
			neverUnassign: true,
		},
		{
			name: "WARM_IP_TARGET=1 MINIMUM_IP_TARGET=1: addresses first, empty ENIs later", it: t3small, pods: 9,
			set:     func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 1, 1 },
			cooling: shape{ENIs: 3, Addresses: 9},
			young:   shape{ENIs: 3, Addresses: 1},
			old:     shape{ENIs: 1, Addresses: 1},
		},
		{
			name: "WARM_IP_TARGET=2 MINIMUM_IP_TARGET=10 on m5.large: down to the minimum", it: m5large, pods: 20,
			set:     func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 2, 10 },
			cooling: shape{ENIs: 3, Addresses: 22},
			young:   shape{ENIs: 3, Addresses: 10},
			old:     shape{ENIs: 2, Addresses: 10},
		},
		{
			name: "prefixes, WARM_PREFIX_TARGET=1: whole /28s", it: t3small, pods: 58,
			set:     func(c *Config) { c.PrefixDelegation = true },
			cooling: shape{ENIs: 2, Addresses: 80},
			young:   shape{ENIs: 2, Addresses: 16},
			old:     shape{ENIs: 1, Addresses: 16},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.it, with(tt.set))
			n.converge()
			n.addPods(tt.pods)
			n.removePods(tt.pods)
			check := func(when string, want shape) {
				t.Helper()
				n.converge()
				if got := n.shape(); got.ENIs != want.ENIs || got.Addresses != want.Addresses {
					t.Errorf("%s: %d addresses on %d ENIs, want %d on %d", when, got.Addresses, got.ENIs, want.Addresses, want.ENIs)
				}
			}
			n.now = n.now.Add(time.Second)
			check("in cooldown", tt.cooling)
			n.now = n.now.Add(n.cfg.IPCooldown)
			check("out of cooldown, ENIs younger than MinENIAge", tt.young)
			n.now = n.now.Add(n.cfg.MinENIAge)
			check("ENIs old enough", tt.old)
			if tt.neverUnassign && slices.Contains(n.log, UnassignAddresses) {
				t.Errorf("single addresses released under WARM_ENI_TARGET: %v", n.log)
			}
		})
	}
}

// TestShrinkPartialCooldown: an ENI with one address in cooldown stays, and
// a /28 with one address in cooldown stays, until that cooldown ends.
func TestShrinkPartialCooldown(t *testing.T) {
	n := newNode(t, t3small, DefaultConfig())
	n.converge()
	n.addPods(9)
	n.removePods(9)
	n.now = n.now.Add(n.cfg.IPCooldown + n.cfg.MinENIAge)
	// A pod on eni-2 started and went again just now.
	e := n.eni("eni-2")
	e.Addresses[0].CooldownUntil = n.now.Add(10 * time.Second)
	n.converge()
	if got := n.shape(); got.ENIs != 2 || !slices.ContainsFunc(n.s.ENIs, func(e ENI) bool { return e.ID == "eni-2" }) {
		t.Fatalf("%d ENIs %v, want the primary and eni-2 (which has an address in cooldown)", got.ENIs, n.s.ENIs)
	}
	n.now = n.now.Add(10 * time.Second)
	n.converge()
	if got := n.shape(); got.ENIs != 1 {
		t.Errorf("%d ENIs after the cooldown, want 1", got.ENIs)
	}

	p := newNode(t, t3small, with(func(c *Config) { c.PrefixDelegation = true }))
	p.converge()
	p.addPods(17) // 3 prefixes: 16, 1, 0
	p.removePods(1)
	p.now = p.now.Add(time.Second)
	if d := Decide(p.s, p.cfg, p.lim, p.now); d.Action != Nothing {
		t.Fatalf("Decide = %s (%s), want nothing while the /28 has an address in cooldown", d.Action, d.Reason)
	}
	p.now = p.now.Add(p.cfg.IPCooldown)
	d := Decide(p.s, p.cfg, p.lim, p.now)
	if d.Action != UnassignPrefixes || len(d.Prefixes) != 1 {
		t.Fatalf("Decide = %s %v (%s), want one prefix unassigned", d.Action, d.Prefixes, d.Reason)
	}
}

// TestOnlyOurENIsAreDeleted: an empty, old ENI that vpcnetd did not create,
// or that is unmanaged, is left alone.
func TestOnlyOurENIsAreDeleted(t *testing.T) {
	n := newNode(t, m5large, DefaultConfig())
	n.s.ENIs[0].Addresses = addrs(0, 9, 0, 0, time.Time{})
	n.s.ENIs = append(n.s.ENIs,
		ENI{ID: "eni-theirs", DeviceIndex: 1, AttachedAt: t0.Add(-time.Hour), SubnetID: "subnet-a", Addresses: addrs(1, 9, 0, 0, time.Time{})},
		ENI{ID: "eni-trunk", DeviceIndex: 2, Ours: true, Unmanaged: true, AttachedAt: t0.Add(-time.Hour), SubnetID: "subnet-a"})
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != Nothing {
		t.Fatalf("Decide = %s %s (%s), want nothing", d.Action, d.ENI, d.Reason)
	}
	// The unmanaged ENI's addresses are no pod's, and it takes a slot.
	n.s.ENIs[2].Addresses = addrs(2, 9, 0, 0, time.Time{})
	if st := n.s.Stats(n.now); st.Total != 18 || st.ENIs != 3 {
		t.Errorf("Stats = %s, want 18 addresses on 3 ENIs", st)
	}
	n.addPods(18)
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseInstanceLimit {
		t.Errorf("Exhausted = %s: %s, want instance-limit", x.Cause, x.Message)
	}
}

// TestCustomNetworking: new ENIs go into the zone's ENIConfig subnet with its
// groups, the primary ENI carries no pods, and a zone without a config is
// said to be the problem.
func TestCustomNetworking(t *testing.T) {
	cfg := with(func(c *Config) {
		c.CustomNetworking = true
		c.ENIConfigs = map[string]ENIConfig{"us-east-1a": {Subnet: "subnet-pods", SecurityGroups: []string{"sg-1", "sg-2"}}}
	})
	n := newNode(t, m5large, cfg)
	if n.lim.MaxPods != 20 {
		t.Errorf("max pods %d, want 20 (2 ENIs x 9 + 2)", n.lim.MaxPods)
	}
	// Left from before custom networking: free addresses on the primary.
	n.s.ENIs[0].Addresses = addrs(0, 3, 0, 0, time.Time{})

	d := Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != CreateENI || d.SubnetID != "subnet-pods" || !slices.Equal(d.SecurityGroups, []string{"sg-1", "sg-2"}) || d.Count != 9 || d.DeviceIndex != 1 {
		t.Fatalf("Decide = %+v, want an ENI in subnet-pods with sg-1, sg-2 and 9 addresses at device 1", d)
	}
	n.converge()
	n.addPods(18)
	for _, p := range n.pods {
		if p.eni == "eni-primary" {
			t.Fatalf("a pod got %s of the primary ENI", p.addr)
		}
	}
	if got := len(n.s.ENIs[0].Addresses); got != 3 {
		t.Errorf("primary ENI has %d addresses, want its 3 untouched", got)
	}
	if _, _, ok := Pick(n.s, n.now); ok {
		t.Error("Pick found an address, but only the primary's are free")
	}

	n.cfg.ENIConfigs = nil
	n.s = State{Zone: "us-east-1b", CustomNetworking: true, ENIs: n.s.ENIs[:1]}
	d = Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != Nothing || !strings.Contains(d.Reason, `zone "us-east-1b"`) {
		t.Fatalf("Decide = %s (%s), want nothing for lack of an ENI config", d.Action, d.Reason)
	}
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseNoENIConfig {
		t.Errorf("Exhausted = %s: %s", x.Cause, x.Message)
	}
}

// TestCreateENICarriesItsAddresses: a new ENI is created with what the
// targets ask for, so that one EC2 call (CreateNetworkInterface with
// SecondaryPrivateIpAddressCount or Ipv4PrefixCount) fills it.
func TestCreateENICarriesItsAddresses(t *testing.T) {
	tests := []struct {
		name    string
		set     func(*Config)
		count   int
		pfx     bool
		primary []Address
	}{
		{"WARM_ENI_TARGET: a whole ENI", nil, 9, false, nil},
		{"WARM_IP_TARGET=4: four", func(c *Config) { c.WarmIPTarget = 4 }, 4, false, nil},
		{"MINIMUM_IP_TARGET=30 is capped by the ENI's 9 slots", func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 1, 30 }, 9, false, nil},
		{"prefixes, WARM_PREFIX_TARGET=2: two /28s", func(c *Config) { c.PrefixDelegation, c.WarmPrefixTarget = true, 2 }, 2, true, nil},
		{"prefixes, WARM_IP_TARGET=40: three /28s", func(c *Config) { c.PrefixDelegation, c.WarmIPTarget = true, 40 }, 3, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, m5large, with(tt.set))
			// The primary ENI is full and every address on it assigned.
			for i := range 9 {
				if n.lim.Prefixes {
					n.s.ENIs[0].Prefixes = append(n.s.ENIs[0].Prefixes, Prefix{
						Prefix: netip.MustParsePrefix(fmt.Sprintf("10.2.%d.0/28", i)), Addresses: fullPrefix(i)})
				} else {
					n.s.ENIs[0].Addresses = append(n.s.ENIs[0].Addresses, Address{IP: netip.AddrFrom4([4]byte{10, 2, 0, byte(i + 1)}), Assigned: true})
				}
			}
			d := Decide(n.s, n.cfg, n.lim, n.now)
			if d.Action != CreateENI || d.Count != tt.count || d.WithPrefixes != tt.pfx || d.SubnetID != "subnet-a" || len(d.SecurityGroups) != 0 {
				t.Fatalf("Decide = %s count %d prefixes %v subnet %q groups %v (%s), want create-eni with %d (prefixes %v) in subnet-a with the primary's groups",
					d.Action, d.Count, d.WithPrefixes, d.SubnetID, d.SecurityGroups, d.Reason, tt.count, tt.pfx)
			}
		})
	}
}

// fullPrefix is every address of 10.2.i.0/28, assigned.
func fullPrefix(i int) []Address {
	var out []Address
	for j := range 16 {
		out = append(out, Address{IP: netip.AddrFrom4([4]byte{10, 2, byte(i), byte(j)}), Assigned: true})
	}
	return out
}

// TestFillBeforeCreate: an ENI with room is filled before another is
// created, the lowest device index first.
func TestFillBeforeCreate(t *testing.T) {
	n := newNode(t, m5large, with(func(c *Config) { c.WarmIPTarget = 3 }))
	n.s.ENIs[0].Addresses = addrs(0, 9, 9, 0, time.Time{})
	n.s.ENIs = append(n.s.ENIs,
		ENI{ID: "eni-b", DeviceIndex: 2, Ours: true, AttachedAt: t0, SubnetID: "subnet-a", Addresses: addrs(2, 4, 4, 0, time.Time{})},
		ENI{ID: "eni-a", DeviceIndex: 1, Ours: true, AttachedAt: t0, SubnetID: "subnet-a", Addresses: addrs(1, 8, 8, 0, time.Time{})})
	d := Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != AssignAddresses || d.ENI != "eni-a" || d.Count != 1 {
		t.Fatalf("Decide = %s %s %d (%s), want 1 address on eni-a (device 1, one slot left)", d.Action, d.ENI, d.Count, d.Reason)
	}
	n.apply(d)
	d = Decide(n.s, n.cfg, n.lim, n.now)
	if d.Action != AssignAddresses || d.ENI != "eni-b" || d.Count != 2 {
		t.Fatalf("Decide = %s %s %d (%s), want the 2 still short on eni-b", d.Action, d.ENI, d.Count, d.Reason)
	}
}

// TestMinimumCapWithWarmZero: WARM_IP_TARGET=0 with MINIMUM_IP_TARGET keeps
// the node at that many addresses on purpose (aws-node allows it to stop ENI
// allocation); Exhausted says it is the configuration.
func TestMinimumCapWithWarmZero(t *testing.T) {
	n := newNode(t, m5large, with(func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 0, 4 }))
	n.converge()
	n.addPods(4)
	if st := n.s.Stats(n.now); st.Total != 4 {
		t.Fatalf("%s, want 4 addresses", st)
	}
	x := Exhausted(n.s, n.cfg, n.lim, n.now)
	if x.Cause != CauseTargets || !strings.Contains(x.Message, "MINIMUM_IP_TARGET") {
		t.Errorf("Exhausted = %s: %s", x.Cause, x.Message)
	}
}

// TestWarmENITargetZero grows only when no address is free, one ENI's worth
// at a time.
func TestWarmENITargetZero(t *testing.T) {
	n := newNode(t, t3small, with(func(c *Config) { c.WarmENITarget = 0 }))
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != AssignAddresses || d.Count != 3 {
		t.Fatalf("empty pool: %s %d (%s), want 3 addresses", d.Action, d.Count, d.Reason)
	}
	n.converge()
	n.addPods(2)
	if st := n.s.Stats(n.now); st.Total != 3 {
		t.Errorf("%s, want no growth while an address is free", st)
	}
	n.addPods(1)
	if st := n.s.Stats(n.now); st.Total != 6 {
		t.Errorf("%s, want one more ENI's worth once none is free", st)
	}
}

func TestExhausted(t *testing.T) {
	n := newNode(t, t3small, DefaultConfig())
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseGrowing || !strings.Contains(x.Message, "growing") {
		t.Errorf("empty new node: %s: %s, want growing", x.Cause, x.Message)
	}
	n.s.Throttled = true
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseThrottled || !strings.Contains(x.Message, "RequestLimitExceeded") {
		t.Errorf("throttled: %s: %s", x.Cause, x.Message)
	}
	n.s.Throttled = false
	n.converge()
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseNone {
		t.Errorf("3 free: %s: %s, want none", x.Cause, x.Message)
	}
	n.addPods(9)
	n.removePods(2)
	x := Exhausted(n.s, n.cfg, n.lim, n.now)
	if x.Cause != CauseInstanceLimit || !x.CooldownEnds.Equal(n.now.Add(n.cfg.IPCooldown)) || !strings.Contains(x.Message, "2 released addresses leave their cooldown") {
		t.Errorf("full node with 2 cooling: %s (%s): %s", x.Cause, x.CooldownEnds, x.Message)
	}
}

func TestActionAndCauseNames(t *testing.T) {
	for a := Nothing; a <= DeleteENI; a++ {
		if strings.HasPrefix(a.String(), "Action(") {
			t.Errorf("action %d has no name", a)
		}
	}
	for c := CauseNone; c <= CauseTargets; c++ {
		if strings.HasPrefix(c.String(), "Cause(") {
			t.Errorf("cause %d has no name", c)
		}
	}
	if Action(99).String() != "Action(99)" || Cause(99).String() != "Cause(99)" {
		t.Error("unknown values are not shown as numbers")
	}
}

// TestWaitingAddsAreDemand: ADDs waiting on an empty pool count as pods, so
// that one decision covers the burst instead of one target's worth per EC2
// round trip; a configuration that caps the node stays a cap, and nothing
// is released or deleted while ADDs wait.
func TestWaitingAddsAreDemand(t *testing.T) {
	full := func(n *node) { n.s.ENIs[0].Addresses = addrs(0, 14, 14, 0, time.Time{}) } // m5.xlarge
	for _, tc := range []struct {
		name    string
		it      InstanceType
		cfg     func(*Config)
		setup   func(*node)
		waiting int
		action  Action
		count   int
	}{
		{"WARM_IP_TARGET=2, 7 waiting on a full primary", m5xlarge, func(c *Config) { c.WarmIPTarget = 2 }, full, 7, CreateENI, 9},
		{"WARM_IP_TARGET=2, nobody waiting", m5xlarge, func(c *Config) { c.WarmIPTarget = 2 }, full, 0, CreateENI, 2},
		{"WARM_IP_TARGET=2, more waiting than an ENI holds", m5xlarge, func(c *Config) { c.WarmIPTarget = 2 }, full, 20, CreateENI, 14},
		{"prefixes, 40 waiting", m5xlarge, func(c *Config) { c.PrefixDelegation = true }, nil, 40, AssignPrefixes, 4},
		{"prefixes, nobody waiting", m5xlarge, func(c *Config) { c.PrefixDelegation = true }, nil, 0, AssignPrefixes, 1},
		{"WARM_ENI_TARGET=0, 2 waiting", t3small, func(c *Config) { c.WarmENITarget = 0 }, nil, 2, AssignAddresses, 3},
		{"MINIMUM_IP_TARGET=4 WARM_IP_TARGET=0 caps the node", m5large, func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 0, 4 },
			func(n *node) { n.s.ENIs[0].Addresses = addrs(0, 4, 4, 0, time.Time{}) }, 5, Nothing, 0},
		{"WARM_IP_TARGET=1: a free address beyond it is kept while 1 waits", m5large, func(c *Config) { c.WarmIPTarget = 1 },
			func(n *node) { n.s.ENIs[0].Addresses = addrs(0, 4, 2, 0, time.Time{}) }, 1, Nothing, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			n := newNode(t, tc.it, cfg)
			if tc.setup != nil {
				tc.setup(n)
			}
			n.s.Waiting = tc.waiting
			d := Decide(n.s, n.cfg, n.lim, n.now)
			if d.Action != tc.action || d.Count != tc.count {
				t.Fatalf("Decide = %s %d (%s), want %s %d", d.Action, d.Count, d.Reason, tc.action, tc.count)
			}
			if tc.waiting > 0 && d.Action != Nothing && !strings.Contains(d.Reason, fmt.Sprintf("%d ADDs waiting", tc.waiting)) {
				t.Errorf("reason %q does not say %d ADDs wait", d.Reason, tc.waiting)
			}
		})
	}
}

// TestArrivingENIs: the addresses of an ENI still attaching count toward
// the demand (no second ENI for the same pods), but none is handed out,
// and it is neither released nor deleted; demand beyond it creates the
// next ENI at once, so that ENIs attach side by side in a burst.
func TestArrivingENIs(t *testing.T) {
	node := func(waiting int) *node {
		n := newNode(t, m5xlarge, DefaultConfig())
		n.s.ENIs[0].Addresses = addrs(0, 14, 14, 0, time.Time{})
		n.s.ENIs = append(n.s.ENIs, ENI{ID: "eni-new", DeviceIndex: 1, Ours: true, Arriving: true, AttachedAt: t0.Add(-time.Hour),
			SubnetID: "subnet-a", Addresses: addrs(1, 14, 0, 0, time.Time{})})
		n.s.Waiting = waiting
		return n
	}
	n := node(10)
	if st := n.s.Stats(n.now); st.Free != 0 || st.Arriving != 14 || st.Total != 28 || st.ENIs != 2 {
		t.Fatalf("stats %s, want 0 free, 14 arriving, 28 in all on 2 ENIs", st)
	}
	if e, a, ok := Pick(n.s, n.now); ok {
		t.Fatalf("Pick = %s %s from an ENI still attaching", e, a)
	}
	// 10 waiting, 14 arriving: met with 4 to spare, short of the warm ENI.
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != CreateENI || d.DeviceIndex != 2 {
		t.Fatalf("10 waiting: %s at %d (%s), want the warm ENI at device 2", d.Action, d.DeviceIndex, d.Reason)
	}
	x := Exhausted(n.s, n.cfg, n.lim, n.now)
	if x.Cause != CauseGrowing {
		t.Errorf("Exhausted = %s (%s), want growing", x.Cause, x.Message)
	}
	// WARM_ENI_TARGET=0: the arriving ENI covers the 10 waiting; nothing
	// more, and an ADD is told to wait for it.
	n.cfg.WarmENITarget = 0
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != Nothing {
		t.Fatalf("WARM_ENI_TARGET=0, 10 waiting, 14 arriving: %s (%s), want nothing", d.Action, d.Reason)
	}
	if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause != CauseGrowing || !strings.Contains(x.Message, "14 addresses are on ENIs still attaching") {
		t.Errorf("Exhausted = %s (%s), want growing, naming the attaching ENI", x.Cause, x.Message)
	}
	// 20 waiting: 6 beyond the arriving ENI, so the next ENI now.
	n = node(20)
	n.cfg.WarmENITarget = 0
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != CreateENI || d.DeviceIndex != 2 {
		t.Fatalf("WARM_ENI_TARGET=0, 20 waiting: %s at %d (%s), want a second ENI at device 2", d.Action, d.DeviceIndex, d.Reason)
	}
	// WARM_IP_TARGET=2, the arriving ENI carries 2, 3 ADDs wait: the
	// shortfall goes onto the arriving ENI, not onto a third.
	n = node(3)
	n.cfg.WarmIPTarget = 2
	n.s.ENIs[1].Addresses = addrs(1, 2, 0, 0, time.Time{})
	if d := Decide(n.s, n.cfg, n.lim, n.now); d.Action != AssignAddresses || d.ENI != "eni-new" || d.Count != 3 {
		t.Fatalf("WARM_IP_TARGET=2, 3 waiting, 2 arriving: %s %s %d (%s), want 3 more on the arriving ENI", d.Action, d.ENI, d.Count, d.Reason)
	}
	// Nobody waiting, far over target: the arriving ENI is not deleted.
	n = node(0)
	n.s.ENIs[0].Addresses = addrs(0, 14, 0, 0, time.Time{})
	n.cfg.WarmIPTarget = 1
	for i := 0; i < 5; i++ {
		d := Decide(n.s, n.cfg, n.lim, n.now)
		if d.ENI == "eni-new" {
			t.Fatalf("%s on the arriving ENI (%s)", d.Action, d.Reason)
		}
		if d.Action == Nothing {
			break
		}
		n.apply(d)
	}
}
