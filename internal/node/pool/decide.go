package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Action is the kind of one pool decision.
type Action int

const (
	// Nothing: the pool is at its targets, or cannot change (the reason says
	// which).
	Nothing Action = iota
	// CreateENI: create an ENI in SubnetID with SecurityGroups and Count
	// secondary addresses (or, with WithPrefixes, Count /28 prefixes), and
	// attach it at DeviceIndex.
	CreateENI
	// AssignAddresses: assign Count secondary addresses to ENI.
	AssignAddresses
	// AssignPrefixes: assign Count /28 prefixes to ENI.
	AssignPrefixes
	// UnassignAddresses: unassign Addresses (all free) from ENI.
	UnassignAddresses
	// UnassignPrefixes: unassign Prefixes (all wholly free) from ENI.
	UnassignPrefixes
	// DeleteENI: detach ENI and delete it (it holds no pod and no address
	// in cooldown).
	DeleteENI
)

var actionNames = [...]string{"nothing", "create-eni", "assign-addresses", "assign-prefixes", "unassign-addresses", "unassign-prefixes", "delete-eni"}

// String is the action's name in logs and metrics labels, e.g. "create-eni".
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return fmt.Sprintf("Action(%d)", int(a))
	}
	return actionNames[a]
}

// Grows says whether the action adds addresses to the pool.
func (a Action) Grows() bool { return a == CreateENI || a == AssignAddresses || a == AssignPrefixes }

// Decision is one step for the agent to carry out, and why.
type Decision struct {
	Action Action
	// ENI is the ENI acted on (all actions but CreateENI and Nothing).
	ENI string
	// Count is how many addresses or prefixes to assign (AssignAddresses,
	// AssignPrefixes) or to create the new ENI with (CreateENI).
	Count int
	// WithPrefixes: CreateENI's Count counts /28 prefixes, not addresses.
	WithPrefixes bool
	// DeviceIndex is where to attach the new ENI: the lowest free index.
	DeviceIndex int
	// SubnetID and SecurityGroups place the new ENI. No groups means the
	// groups of the node's primary ENI.
	SubnetID       string
	SecurityGroups []string
	// Addresses to unassign (UnassignAddresses).
	Addresses []netip.Addr
	// Prefixes to unassign (UnassignPrefixes).
	Prefixes []netip.Prefix
	// Reason says in a sentence why, with the counts behind it; for
	// `vpcnet node status` and the log.
	Reason string
}

// Decide returns the one action that brings the pool closest to its
// targets, or Nothing. It never exceeds the limits, grows an existing ENI
// before creating another, and releases only what the targets do not need:
//
//   - Growth. With WARM_IP_TARGET or MINIMUM_IP_TARGET set, the pool needs
//     max(WARM_IP_TARGET - free, MINIMUM_IP_TARGET - total) more addresses
//     (in /28s with prefix delegation, rounded up). Otherwise, with prefix
//     delegation, it keeps WARM_PREFIX_TARGET x 16 addresses free; without,
//     WARM_ENI_TARGET x (addresses per ENI) free, filling a whole ENI at a
//     time. Unlike aws-node, "free" leaves out addresses in cooldown.
//   - Fallback. A subnet without free /28s gets single addresses instead.
//   - Shrink. An ENI is deleted if vpcnetd created it, it is not primary, it
//     is older than MinENIAge, no address of it is assigned or in cooldown,
//     and the pool would still meet its targets without it. Single free
//     addresses are released only when WARM_IP_TARGET or MINIMUM_IP_TARGET
//     is set (as in aws-node), whole free /28s with prefix delegation; never
//     an assigned address or one in cooldown, and never below the targets.
//
// The agent carries the action out, observes the node again and calls
// Decide again, until Nothing. l must come from NewLimits (a zero Limits
// allows nothing).
func Decide(s State, cfg Config, l Limits, now time.Time) Decision {
	d, _ := decide(s, cfg, l, now)
	return d
}

// decide is Decide, also saying what keeps the pool from growing when it is
// short and cannot grow (CauseNone otherwise).
func decide(s State, cfg Config, l Limits, now time.Time) (Decision, Cause) {
	s.CustomNetworking = s.CustomNetworking || cfg.CustomNetworking
	t := targetsOf(cfg, l)
	st := s.Stats(now)
	if short := t.shortfall(st); short > 0 {
		return grow(s, cfg, l, t, st, short)
	}
	if d, ok := deleteENI(s, cfg, t, st, now); ok {
		return d, CauseNone
	}
	if d, ok := release(s, l, t, st, now); ok {
		return d, CauseNone
	}
	return Decision{Action: Nothing, Reason: "pool meets " + t.String() + ": " + st.String()}, CauseNone
}

// targets is the configuration's targets as they apply on this node.
type targets struct {
	// ip: WARM_IP_TARGET or MINIMUM_IP_TARGET is set and overrides the others.
	ip            bool
	warmIP, minIP int
	// prefixes: prefix delegation; warmPrefix applies unless ip.
	prefixes   bool
	warmPrefix int
	// warmENI and perENI apply without either.
	warmENI, perENI int
}

func targetsOf(cfg Config, l Limits) targets {
	return targets{
		ip:     cfg.WarmIPTarget > 0 || cfg.MinimumIPTarget > 0,
		warmIP: cfg.WarmIPTarget, minIP: cfg.MinimumIPTarget,
		prefixes: l.Prefixes, warmPrefix: cfg.WarmPrefixTarget,
		warmENI: cfg.WarmENITarget, perENI: l.SlotsPerENI,
	}
}

// shortfall is how many addresses the pool lacks to meet the targets. It is
// the one test of "enough": growth happens when it is above zero, and
// nothing is released that would make it so.
//
// Waiting ADDs count as pods, and the addresses of arriving ENIs as free:
// free is what is left once both are done.
func (t targets) shortfall(st Stats) int {
	free := st.Free + st.Arriving - st.Waiting
	switch {
	case t.ip:
		short := t.minIP - st.Total
		if t.warmIP > 0 {
			// WARM_IP_TARGET=0 with MINIMUM_IP_TARGET caps the node on
			// purpose: waiting ADDs do not lift the cap.
			short = max(short, t.warmIP-free)
		}
		return max(short, 0)
	case t.prefixes:
		return max(t.warmPrefix*AddressesPerPrefix-free, 0)
	case t.warmENI == 0:
		// Keep nothing in reserve, but grow when a pod would find nothing.
		return max(-free, min(1, 1-free), 0)
	default:
		return max(t.warmENI*t.perENI-free, 0)
	}
}

func (t targets) String() string {
	switch {
	case t.ip:
		return fmt.Sprintf("WARM_IP_TARGET=%d MINIMUM_IP_TARGET=%d", t.warmIP, t.minIP)
	case t.prefixes:
		return fmt.Sprintf("WARM_PREFIX_TARGET=%d", t.warmPrefix)
	default:
		return fmt.Sprintf("WARM_ENI_TARGET=%d (%d addresses per ENI)", t.warmENI, t.perENI)
	}
}

// String is the counts in a phrase for reasons and logs.
func (st Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d free, %d assigned, %d in cooldown, of %d addresses", st.Free, st.Assigned, st.Cooling, st.Total)
	if st.Prefixes > 0 {
		fmt.Fprintf(&b, " (%d /28 prefixes, %d wholly free)", st.Prefixes, st.FreePrefixes)
	}
	fmt.Fprintf(&b, " on %d ENIs", st.ENIs)
	if st.Arriving > 0 {
		fmt.Fprintf(&b, ", %d arriving on attaching ENIs", st.Arriving)
	}
	if st.Waiting > 0 {
		fmt.Fprintf(&b, ", %d ADDs waiting", st.Waiting)
	}
	return b.String()
}

// grow adds addresses: to the lowest-numbered ENI with room (an arriving
// one included: EC2 assigns to an ENI while it attaches), else on a new
// ENI. short is the shortfall in addresses.
func grow(s State, cfg Config, l Limits, t targets, st Stats, short int) (Decision, Cause) {
	why := fmt.Sprintf("short of %s by %s (%s)", t, units(short, false), st)
	if st.Total >= l.MaxPods {
		return Decision{Action: Nothing, Reason: fmt.Sprintf("%s, but the node has addresses for its max pods (%d)", why, l.MaxPods)}, CauseMaxPods
	}
	var subnetFull []string
	for _, e := range s.growableENIs() {
		room := l.SlotsPerENI - len(e.Addresses) - len(e.Prefixes)
		if room <= 0 {
			continue
		}
		prefixes, n := amount(s, l, t, st, e.SubnetID, short, room)
		if n == 0 {
			subnetFull = append(subnetFull, e.SubnetID)
			continue
		}
		d := Decision{Action: AssignAddresses, ENI: e.ID, Count: n}
		if prefixes {
			d.Action = AssignPrefixes
		}
		d.Reason = fmt.Sprintf("%s: assign %s to %s (device %d)%s", why, units(n, prefixes), e.ID, e.DeviceIndex, fallbackNote(l, e.SubnetID, prefixes))
		return d, CauseNone
	}

	if len(s.ENIs) >= l.ENIs {
		if l.ENIs < l.TypeENIs {
			return Decision{Action: Nothing, Reason: fmt.Sprintf("%s, but the %d ENIs MAX_ENI=%d allows are attached and full", why, l.ENIs, l.ENIs)}, CauseMaxENI
		}
		if len(subnetFull) > 0 {
			return Decision{Action: Nothing, Reason: fmt.Sprintf("%s, but subnet %s has no free addresses and every ENI the instance type allows (%d) is attached", why, subnetFull[0], l.TypeENIs)}, CauseSubnetFull
		}
		return Decision{Action: Nothing, Reason: fmt.Sprintf("%s, but all %d ENIs the instance type allows are attached and full", why, l.TypeENIs)}, CauseInstanceLimit
	}
	subnet, groups, problem := placement(s, cfg)
	if problem != "" {
		return Decision{Action: Nothing, Reason: why + ", but " + problem}, CauseNoENIConfig
	}
	prefixes, n := amount(s, l, t, st, subnet, short, l.SlotsPerENI)
	if n == 0 {
		return Decision{Action: Nothing, Reason: fmt.Sprintf("%s, but subnet %s has no free addresses", why, subnet)}, CauseSubnetFull
	}
	d := Decision{Action: CreateENI, Count: n, WithPrefixes: prefixes, DeviceIndex: freeDeviceIndex(s),
		SubnetID: subnet, SecurityGroups: slices.Clone(groups)}
	d.Reason = fmt.Sprintf("%s and no ENI has room: create an ENI in %s with %s, attach at device %d%s",
		why, subnet, units(n, prefixes), d.DeviceIndex, fallbackNote(l, subnet, prefixes))
	return d, CauseNone
}

// amount is what to assign to an ENI in subnet with room free slots: /28s
// (prefixes true) or single addresses, and how many; 0 if the subnet is out
// of both.
func amount(s State, l Limits, t targets, st Stats, subnet string, short, room int) (prefixes bool, n int) {
	sub := s.Subnets[subnet]
	left := l.MaxPods - st.Total // what max pods still allows, in addresses
	if l.Prefixes && !sub.NoFreePrefixes {
		n = ceilDiv(short, AddressesPerPrefix)
		return true, max(min(n, room, ceilDiv(left, AddressesPerPrefix)), 1)
	}
	if sub.NoFreeAddresses {
		return false, 0
	}
	n = short
	if !t.ip && !t.prefixes {
		// WARM_ENI_TARGET works in whole ENIs: fill this one up.
		n = room
	}
	return false, max(min(n, room, left), 1)
}

func fallbackNote(l Limits, subnet string, prefixes bool) string {
	if l.Prefixes && !prefixes {
		return fmt.Sprintf(" (single addresses: subnet %s has no free /28, InsufficientCidrBlocks)", subnet)
	}
	return ""
}

// placement is where a new ENI goes: under custom networking the zone's
// ENIConfig, else the primary ENI's subnet and groups.
func placement(s State, cfg Config) (subnet string, groups []string, problem string) {
	if s.CustomNetworking {
		ec, ok := cfg.ENIConfigs[s.Zone]
		if !ok {
			return "", nil, fmt.Sprintf("custom networking is on and no ENI config names a subnet for zone %q", s.Zone)
		}
		return ec.Subnet, ec.SecurityGroups, ""
	}
	p, ok := s.primary()
	if !ok {
		return "", nil, "the primary ENI is not known yet"
	}
	return p.SubnetID, nil, ""
}

// freeDeviceIndex is the lowest device index no attached ENI uses, above 0.
func freeDeviceIndex(s State) int {
	for i := 1; ; i++ {
		if !slices.ContainsFunc(s.ENIs, func(e ENI) bool { return e.DeviceIndex == i }) {
			return i
		}
	}
}

// deleteENI finds the highest-numbered ENI that may go: ours, not primary,
// old enough, nothing assigned or cooling, and not needed by the targets.
func deleteENI(s State, cfg Config, t targets, st Stats, now time.Time) (Decision, bool) {
	enis := s.podENIs()
	for i := len(enis) - 1; i >= 0; i-- {
		e := enis[i]
		if !e.Ours || e.Primary || now.Sub(e.AttachedAt) < cfg.MinENIAge {
			continue
		}
		es := eniStats(e, now)
		if es.Assigned > 0 || es.Cooling > 0 {
			continue
		}
		if t.shortfall(st.without(es)) > 0 {
			continue
		}
		return Decision{Action: DeleteENI, ENI: e.ID, Reason: fmt.Sprintf(
			"%s (device %d) holds no pod and %s is met without its %d free addresses (%s): detach and delete it",
			e.ID, e.DeviceIndex, t, es.Free, st)}, true
	}
	return Decision{}, false
}

// release gives back free addresses or whole free /28s beyond the targets,
// from the highest-numbered ENI that has some, so that it empties first.
func release(s State, l Limits, t targets, st Stats, now time.Time) (Decision, bool) {
	enis := s.podENIs()
	if l.Prefixes {
		// Prefix mode releases whole free /28s only, as many as the targets
		// can spare.
		k := 0
		for k < st.FreePrefixes && t.shortfall(st.without(Stats{Total: (k + 1) * AddressesPerPrefix, Free: (k + 1) * AddressesPerPrefix})) == 0 {
			k++
		}
		if k == 0 {
			return Decision{}, false
		}
		for i := len(enis) - 1; i >= 0; i-- {
			var free []netip.Prefix
			for _, p := range enis[i].Prefixes {
				if p.isFree(now) && len(free) < k {
					free = append(free, p.Prefix)
				}
			}
			if len(free) > 0 {
				return Decision{Action: UnassignPrefixes, ENI: enis[i].ID, Prefixes: free, Reason: fmt.Sprintf(
					"%s needs fewer addresses than %s: unassign %s (wholly free) from %s", t, st, units(len(free), true), enis[i].ID)}, true
			}
		}
		return Decision{}, false
	}
	if !t.ip {
		// aws-node semantics: under WARM_ENI_TARGET addresses go only with
		// their ENI.
		return Decision{}, false
	}
	over := 0
	for over < st.Free && t.shortfall(st.without(Stats{Total: over + 1, Free: over + 1})) == 0 {
		over++
	}
	if over == 0 {
		return Decision{}, false
	}
	for i := len(enis) - 1; i >= 0; i-- {
		var free []netip.Addr
		for _, a := range enis[i].Addresses {
			if a.free(now) && len(free) < over {
				free = append(free, a.IP)
			}
		}
		if len(free) > 0 {
			return Decision{Action: UnassignAddresses, ENI: enis[i].ID, Addresses: free, Reason: fmt.Sprintf(
				"%s needs %d fewer addresses than %s: unassign %s (free) from %s", t, over, st, units(len(free), false), enis[i].ID)}, true
		}
	}
	return Decision{}, false
}

// without is st less the addresses counted in o.
func (st Stats) without(o Stats) Stats {
	st.Total -= o.Total
	st.Assigned -= o.Assigned
	st.Cooling -= o.Cooling
	st.Free -= o.Free
	st.Prefixes -= o.Prefixes
	st.FreePrefixes -= o.FreePrefixes
	return st
}

// units says "1 address", "3 addresses", "1 /28 prefix", "2 /28 prefixes".
func units(n int, prefixes bool) string {
	switch {
	case prefixes && n == 1:
		return "1 /28 prefix"
	case prefixes:
		return fmt.Sprintf("%d /28 prefixes", n)
	case n == 1:
		return "1 address"
	default:
		return fmt.Sprintf("%d addresses", n)
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
