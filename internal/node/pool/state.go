package pool

import (
	"net/netip"
	"slices"
	"time"
)

// State is what the agent knows of its node when it asks for a decision:
// the ENIs as EC2 reports them, which addresses pods hold (from the agent's
// assignment store), which are in cooldown, and what EC2 said recently.
type State struct {
	// ENIs are all ENIs attached to the instance (on the default network
	// card), in any order.
	ENIs []ENI
	// Zone is the node's availability zone, the key of Config.ENIConfigs.
	Zone string
	// CustomNetworking is Config.CustomNetworking: the primary ENI then
	// carries no pods. It is part of the state so that Pick needs nothing
	// else.
	CustomNetworking bool
	// Subnets holds what EC2 said recently about a subnet's space, by subnet
	// ID (the agent clears an entry after its backoff, e.g. 2 minutes).
	Subnets map[string]SubnetState
	// Throttled: EC2 answered RequestLimitExceeded recently; the agent is
	// backing off. Decide still decides; Exhausted names it as the cause.
	Throttled bool
	// Waiting is how many ADDs are waiting for an address now. They are
	// demand beyond the targets: the pool grows as if those pods already
	// held addresses, so that a burst on an empty pool is met in one EC2
	// call (with WARM_IP_TARGET or prefixes) rather than one target's worth
	// per round trip.
	Waiting int
}

// SubnetState is what EC2 said recently about a subnet.
type SubnetState struct {
	// NoFreePrefixes: InsufficientCidrBlocks, no free /28 left. With prefix
	// delegation the pool falls back to single addresses in this subnet.
	NoFreePrefixes bool
	// NoFreeAddresses: InsufficientFreeAddressesInSubnet.
	NoFreeAddresses bool
}

// ENI is one attached network interface.
type ENI struct {
	ID string
	// DeviceIndex is the attachment's device index, 0 for the primary ENI.
	DeviceIndex int
	// Primary: the instance's primary ENI, never detached.
	Primary bool
	// AttachedAt is when the ENI was attached (or created, if later); an ENI
	// younger than Config.MinENIAge is not deleted.
	AttachedAt time.Time
	// Ours: vpcnetd created it (it carries the vpcnet:node tag). Only such
	// ENIs are ever deleted.
	Ours bool
	// Arriving: attached in EC2, its device not up yet (EC2 attaches
	// asynchronously, in seconds). Its addresses are coming: they count
	// toward the targets, so that the pool does not grow again for the
	// same demand, but nothing is handed out, released or deleted from it
	// before it arrives. It still takes a slot and its device index.
	Arriving bool
	// Unmanaged: the pool must not touch it (tagged
	// node.k8s.amazonaws.com/no_manage=true, a trunk, another agent's). It
	// still takes one of the instance's ENI slots.
	Unmanaged bool
	// SubnetID is the ENI's subnet.
	SubnetID string
	// Addresses are the ENI's secondary addresses (not its primary one).
	Addresses []Address
	// Prefixes are the /28 prefixes delegated to the ENI.
	Prefixes []Prefix
}

// Address is one pod address and its use.
type Address struct {
	IP netip.Addr
	// Assigned: a pod holds it.
	Assigned bool
	// CooldownUntil: released by a pod, not to be handed out or unassigned
	// before this time. Zero or past: not in cooldown.
	CooldownUntil time.Time
}

// Prefix is one delegated /28.
type Prefix struct {
	Prefix netip.Prefix
	// Addresses lists the prefix's addresses that are assigned or in
	// cooldown; the prefix's other addresses are free.
	Addresses []Address
}

// Stats counts a state's pod addresses, for decisions, logs and metrics.
// Addresses of prefixes count one by one; the primary ENI's addresses are
// left out under custom networking, unmanaged ENIs always.
type Stats struct {
	// ENIs attached, of any kind (what the ENI limit counts).
	ENIs int
	// Total addresses that can carry pods: secondary addresses plus 16 per
	// prefix.
	Total int
	// Assigned to pods.
	Assigned int
	// Cooling: released, in cooldown.
	Cooling int
	// Free: neither assigned nor in cooldown; what a new pod can get now.
	Free int
	// Prefixes delegated, and how many of them have no address in use.
	Prefixes, FreePrefixes int
	// Waiting: ADDs waiting for an address (State.Waiting). Free less
	// Waiting is what is left once they are served, below zero when they
	// outnumber the free addresses.
	Waiting int
	// Arriving: the free addresses of arriving ENIs (ENI.Arriving),
	// counted in Total but not in Free.
	Arriving int
}

func (a Address) cooling(now time.Time) bool { return !a.Assigned && a.CooldownUntil.After(now) }
func (a Address) free(now time.Time) bool    { return !a.Assigned && !a.CooldownUntil.After(now) }

// inUse counts the prefix's assigned and cooling addresses.
func (p Prefix) inUse(now time.Time) (assigned, cooling int) {
	for _, a := range p.Addresses {
		if a.Assigned {
			assigned++
		} else if a.cooling(now) {
			cooling++
		}
	}
	return assigned, cooling
}

// isFree: no address of the prefix is assigned or cooling.
func (p Prefix) isFree(now time.Time) bool {
	a, c := p.inUse(now)
	return a+c == 0
}

// carriesPods says whether the pool may use the ENI's addresses for pods.
func (s State) carriesPods(e ENI) bool { return !e.Unmanaged && !(s.CustomNetworking && e.Primary) }

// eniStats counts one ENI's addresses.
func eniStats(e ENI, now time.Time) Stats {
	var st Stats
	for _, a := range e.Addresses {
		st.Total++
		switch {
		case a.Assigned:
			st.Assigned++
		case a.cooling(now):
			st.Cooling++
		}
	}
	for _, p := range e.Prefixes {
		st.Prefixes++
		st.Total += AddressesPerPrefix
		a, c := p.inUse(now)
		st.Assigned += a
		st.Cooling += c
		if a+c == 0 {
			st.FreePrefixes++
		}
	}
	st.Free = st.Total - st.Assigned - st.Cooling
	return st
}

// Stats counts the addresses that can carry pods at time now.
func (s State) Stats(now time.Time) Stats {
	st := Stats{ENIs: len(s.ENIs), Waiting: max(s.Waiting, 0)}
	for _, e := range s.ENIs {
		if !s.carriesPods(e) {
			continue
		}
		es := eniStats(e, now)
		if e.Arriving {
			// Its free addresses are coming; pods kept across a restart
			// may hold some already.
			st.Arriving += es.Free
			es.Free, es.FreePrefixes = 0, 0
		}
		st.Total += es.Total
		st.Assigned += es.Assigned
		st.Cooling += es.Cooling
		st.Free += es.Free
		st.Prefixes += es.Prefixes
		st.FreePrefixes += es.FreePrefixes
	}
	return st
}

// podENIs returns the ENIs that carry pods now (arriving ones not yet),
// lowest device index first.
func (s State) podENIs() []ENI {
	var out []ENI
	for _, e := range s.ENIs {
		if s.carriesPods(e) && !e.Arriving {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b ENI) int { return a.DeviceIndex - b.DeviceIndex })
	return out
}

// growableENIs returns the ENIs growth may add addresses to: those that
// carry pods and those arriving, lowest device index first.
func (s State) growableENIs() []ENI {
	var out []ENI
	for _, e := range s.ENIs {
		if s.carriesPods(e) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b ENI) int { return a.DeviceIndex - b.DeviceIndex })
	return out
}

// primary returns the primary ENI, if the state has one.
func (s State) primary() (ENI, bool) {
	i := slices.IndexFunc(s.ENIs, func(e ENI) bool { return e.Primary })
	if i < 0 {
		return ENI{}, false
	}
	return s.ENIs[i], true
}
