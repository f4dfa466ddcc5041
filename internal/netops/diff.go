package netops

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Desired-state diffs. A component that owns part of the kernel's state
// (the local VPC's fabric, a node agent's routes to its pods) computes what
// it wants as plain values, reads back what is there in the same form, and
// applies the difference: converging from any state, an interrupted run
// included. The diffs are pure, so they are table-tested without a kernel.

// PermanentNeighbor is a permanent neighbour (ARP or NDP) entry for Addr on
// the device called Dev, resolving to MAC. It is identified by Dev and
// Addr; MAC is what it resolves to.
type PermanentNeighbor struct {
	Dev  string
	Addr netip.Addr
	MAC  string // as net.HardwareAddr.String writes it
}

// DiffRoutes compares the routes wanted (one per destination) with those
// present, and returns the routes to install, replacing whatever route
// their destination has (so a moved address switches devices in one
// step), and the routes to delete afterwards. Both are sorted by
// destination.
func DiffRoutes(want map[netip.Prefix]Route, have []Route) (replace, remove []Route) {
	ok := map[netip.Prefix]bool{}
	for _, r := range have {
		if want[r.Dst] == r {
			ok[r.Dst] = true
		} else {
			remove = append(remove, r)
		}
	}
	for dst, r := range want {
		if !ok[dst] {
			replace = append(replace, r)
		}
	}
	byDst := func(a, b Route) int { return cmp.Or(comparePrefix(a.Dst, b.Dst), strings.Compare(a.Dev, b.Dev)) }
	slices.SortFunc(replace, byDst)
	slices.SortFunc(remove, byDst)
	return replace, remove
}

// DiffPermanentNeighbors returns the entries to set (add, or change the
// MAC of) and those to delete. An entry whose MAC changed is overwritten,
// never deleted: deleting after setting would remove the new entry.
func DiffPermanentNeighbors(want, have []PermanentNeighbor) (set, remove []PermanentNeighbor) {
	type key struct {
		dev  string
		addr netip.Addr
	}
	wanted := map[key]PermanentNeighbor{}
	for _, n := range want {
		wanted[key{n.Dev, n.Addr}] = n
	}
	present := map[key]bool{}
	for _, n := range have {
		k := key{n.Dev, n.Addr}
		w, ok := wanted[k]
		switch {
		case ok && w == n:
			present[k] = true
		case !ok:
			remove = append(remove, n)
		}
	}
	for _, n := range want {
		if !present[key{n.Dev, n.Addr}] {
			set = append(set, n)
		}
	}
	return set, remove
}

// comparePrefix orders prefixes by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
