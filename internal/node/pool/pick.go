package pool

import (
	"net/netip"
	"slices"
	"time"
)

// Pick chooses the address for a new pod: never one that is assigned or in
// cooldown, never one of an unmanaged ENI or (under custom networking) of
// the primary ENI. ok is false when no address is free.
//
// The order packs pods onto as few ENIs and prefixes as possible, so that the
// rest empty out and can be given back: the lowest device index first (the
// primary ENI, then the ENIs in the order they were added; the highest ones
// are the ones Decide frees first); on an ENI, its single secondary
// addresses before its prefixes (with prefix delegation, single addresses
// are fallback ones that only leave with their ENI, while a wholly free /28
// can be unassigned); among prefixes, the fullest first, so that free /28s
// stay whole; within an ENI's addresses or a prefix, the lowest address, so
// that the choice is the same on every run.
func Pick(s State, now time.Time) (eni string, addr netip.Addr, ok bool) {
	for _, e := range s.podENIs() {
		var best netip.Addr
		for _, a := range e.Addresses {
			if a.free(now) && (!best.IsValid() || a.IP.Less(best)) {
				best = a.IP
			}
		}
		if best.IsValid() {
			return e.ID, best, true
		}
		prefixes := slices.Clone(e.Prefixes)
		slices.SortStableFunc(prefixes, func(a, b Prefix) int {
			ua, ca := a.inUse(now)
			ub, cb := b.inUse(now)
			if ua+ca != ub+cb {
				return (ub + cb) - (ua + ca) // fullest first
			}
			return a.Prefix.Addr().Compare(b.Prefix.Addr())
		})
		for _, p := range prefixes {
			if a, ok := firstFree(p, now); ok {
				return e.ID, a, true
			}
		}
	}
	return "", netip.Addr{}, false
}

// firstFree is the prefix's lowest address that is neither assigned nor in
// cooldown. All 16 addresses of a delegated /28 are usable by pods.
func firstFree(p Prefix, now time.Time) (netip.Addr, bool) {
	a := p.Prefix.Masked().Addr()
	for range 1 << (32 - p.Prefix.Bits()) {
		busy := slices.ContainsFunc(p.Addresses, func(u Address) bool { return u.IP == a && !u.free(now) })
		if !busy {
			return a, true
		}
		a = a.Next()
	}
	return netip.Addr{}, false
}
