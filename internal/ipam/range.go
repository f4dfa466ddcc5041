// Package ipam is the allocator behind the vpc-ipam plugin: address ranges
// and next-fit arithmetic as plain values (this file and place.go), and a
// bbolt store (store.go) that keeps every network's allocations so that many
// plugin processes running at once never hand out one address twice.
package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// Range is a block of one subnet that addresses are handed out from. Start,
// End and Gateway are always set once NewRange has returned it.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr // first address handed out
	End     netip.Addr // last address handed out, inclusive
	Gateway netip.Addr // never handed out
}

// RangeError says which part of a range is wrong. Part is the config field
// name ("subnet", "rangeStart", "rangeEnd", "gateway"), so that the caller
// can name the field as the user wrote it.
type RangeError struct {
	Part string
	Msg  string
}

func (e *RangeError) Error() string { return e.Part + ": " + e.Msg }

func rangeErr(part, format string, args ...any) *RangeError {
	return &RangeError{Part: part, Msg: fmt.Sprintf(format, args...)}
}

// NewRange validates a range and fills in what was left out (zero values):
// Start defaults to the first address after the network address, End to the
// last before the IPv4 broadcast address (IPv6 has none, so the last address
// of the subnet), Gateway to the first address after the network address.
func NewRange(subnet netip.Prefix, start, end, gateway netip.Addr) (Range, error) {
	if !subnet.IsValid() {
		return Range{}, rangeErr("subnet", "missing")
	}
	if subnet.Masked() != subnet {
		return Range{}, rangeErr("subnet", "%s has host bits set (the network is %s)", subnet, subnet.Masked())
	}
	first, last, ok := usableBounds(subnet)
	if !ok {
		return Range{}, rangeErr("subnet", "%s has no address to hand out", subnet)
	}
	r := Range{Subnet: subnet, Start: first, End: last, Gateway: first}
	for _, p := range []struct {
		part string
		val  netip.Addr
		dst  *netip.Addr
	}{{"rangeStart", start, &r.Start}, {"rangeEnd", end, &r.End}, {"gateway", gateway, &r.Gateway}} {
		if !p.val.IsValid() {
			continue
		}
		if err := checkInSubnet(subnet, p.val); err != "" {
			return Range{}, rangeErr(p.part, "%s %s", p.val, err)
		}
		*p.dst = p.val
	}
	if r.Start.Compare(r.End) > 0 {
		return Range{}, rangeErr("rangeEnd", "%s is before rangeStart %s", r.End, r.Start)
	}
	return r, nil
}

// checkInSubnet says why a is not a host address of subnet, or "" if it is.
func checkInSubnet(subnet netip.Prefix, a netip.Addr) string {
	switch {
	case !subnet.Contains(a):
		return fmt.Sprintf("is outside subnet %s", subnet)
	case a == subnet.Addr():
		return fmt.Sprintf("is the network address of %s", subnet)
	case a.Is4() && a == lastAddr(subnet):
		return fmt.Sprintf("is the broadcast address of %s", subnet)
	}
	return ""
}

// usableBounds returns the first and last host addresses of a subnet.
func usableBounds(p netip.Prefix) (first, last netip.Addr, ok bool) {
	first = p.Addr().Next()
	last = lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	if !first.IsValid() || !last.IsValid() || !p.Contains(first) || first.Compare(last) > 0 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return first, last, true
}

// lastAddr is the highest address of p: all host bits set.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := len(b)*8 - p.Bits() - (len(b)-1-i)*8
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits - 1)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a lies between Start and End.
func (r Range) Contains(a netip.Addr) bool {
	return r.Subnet.Contains(a) && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Overlaps reports whether two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	if r.Start.Is4() != o.Start.Is4() {
		return false
	}
	return r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// Prefix is a as an address with the subnet's length, as a CNI result
// carries it.
func (r Range) Prefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, r.Subnet.Bits()) }

func (r Range) String() string {
	return fmt.Sprintf("%s[%s-%s gw %s]", r.Subnet, r.Start, r.End, r.Gateway)
}

// RangeSet is the ranges one address of an attachment may come from: an
// attachment gets one address per range set (host-local's "ranges").
type RangeSet []Range

// Find returns the range holding a.
func (s RangeSet) Find(a netip.Addr) (Range, bool) {
	for _, r := range s {
		if r.Contains(a) {
			return r, true
		}
	}
	return Range{}, false
}

// InSubnet reports whether a lies in the subnet of one of the ranges.
func (s RangeSet) InSubnet(a netip.Addr) bool {
	for _, r := range s {
		if r.Subnet.Contains(a) {
			return true
		}
	}
	return false
}

// Is4 reports the address family of the set (all ranges share one).
func (s RangeSet) Is4() bool { return len(s) > 0 && s[0].Start.Is4() }

// String names the set in messages and keys its next-fit position in the
// store, so a position is forgotten when the ranges change.
func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// NextFree returns the address of the set that comes first after last in
// next-fit order and that held reports free: the search starts after the
// address reserved last, runs to the end of the set and wraps around, so a
// released address is reused as late as possible. Gateways are skipped. If
// last is not in the set, the search starts at the first range. ok is false
// when every address is held.
func (s RangeSet) NextFree(last netip.Addr, held func(netip.Addr) bool) (a netip.Addr, ok bool) {
	if len(s) == 0 {
		return netip.Addr{}, false
	}
	ri, cur := 0, s[0].Start
	for i, r := range s {
		if last.IsValid() && r.Contains(last) {
			ri, cur = s.after(i, last)
			break
		}
	}
	startRange, start := ri, cur
	for {
		if cur != s[ri].Gateway && !held(cur) {
			return cur, true
		}
		ri, cur = s.after(ri, cur)
		if ri == startRange && cur == start {
			return netip.Addr{}, false
		}
	}
}

// after steps from address a of range i to the next address of the set,
// wrapping from the end of the last range to the start of the first.
func (s RangeSet) after(i int, a netip.Addr) (int, netip.Addr) {
	if a != s[i].End {
		return i, a.Next()
	}
	i = (i + 1) % len(s)
	return i, s[i].Start
}

// SetsError says which range of which set is wrong, for ValidateSets.
type SetsError struct {
	Set, Range int
	Part       string
	Msg        string
}

func (e *SetsError) Error() string {
	return fmt.Sprintf("ranges[%d][%d].%s: %s", e.Set, e.Range, e.Part, e.Msg)
}

// ValidateSets checks what no single range can: that each set is one address
// family and that no two ranges anywhere overlap (an address must belong to
// exactly one set, or two attachments could be given it through different
// sets).
func ValidateSets(sets []RangeSet) error {
	type at struct{ set, rng int }
	var seen []at
	for si, set := range sets {
		if len(set) == 0 {
			return &SetsError{Set: si, Part: "subnet", Msg: "a range set needs at least one range"}
		}
		for ri, r := range set {
			if r.Start.Is4() != set[0].Start.Is4() {
				return &SetsError{Set: si, Range: ri, Part: "subnet", Msg: fmt.Sprintf("%s mixes address families with %s in one range set", r.Subnet, set[0].Subnet)}
			}
			for _, o := range seen {
				if other := sets[o.set][o.rng]; r.Overlaps(other) {
					return &SetsError{Set: si, Range: ri, Part: "subnet",
						Msg: fmt.Sprintf("%s overlaps ranges[%d][%d] %s", r, o.set, o.rng, other)}
				}
			}
			seen = append(seen, at{si, ri})
		}
	}
	return nil
}
