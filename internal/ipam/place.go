package ipam

import (
	"fmt"
	"net/netip"
)

// PlaceError says why an explicitly requested address cannot be given.
// Index is its position in the list passed to Place, so that the caller can
// name where the request came from.
type PlaceError struct {
	Index int
	Addr  netip.Addr
	Msg   string
}

func (e *PlaceError) Error() string { return fmt.Sprintf("%s %s", e.Addr, e.Msg) }

// Place matches explicitly requested addresses to the range sets they belong
// to. The result has one entry per set: the requested address, or the zero
// Addr where the set's address is to be chosen by next-fit. A request that
// repeats an earlier one is ignored; two different addresses for one set,
// an address outside every range, or a gateway are errors.
func Place(sets []RangeSet, want []netip.Addr) ([]netip.Addr, error) {
	placed := make([]netip.Addr, len(sets))
	for i, a := range want {
		si, msg := placeOne(sets, a)
		if msg != "" {
			return nil, &PlaceError{Index: i, Addr: a, Msg: msg}
		}
		switch placed[si] {
		case netip.Addr{}:
			placed[si] = a
		case a:
		default:
			return nil, &PlaceError{Index: i, Addr: a,
				Msg: fmt.Sprintf("and %s are both requested from range set %s, which gives one address", placed[si], sets[si])}
		}
	}
	return placed, nil
}

// placeOne returns the index of the set that can give a, or why none can.
func placeOne(sets []RangeSet, a netip.Addr) (int, string) {
	for si, set := range sets {
		if r, ok := set.Find(a); ok {
			if a == r.Gateway {
				return 0, fmt.Sprintf("is the gateway of %s", r.Subnet)
			}
			return si, ""
		}
	}
	for _, set := range sets {
		for _, r := range set {
			if r.Subnet.Contains(a) {
				if msg := checkInSubnet(r.Subnet, a); msg != "" {
					return 0, msg
				}
				return 0, fmt.Sprintf("is outside range %s-%s of subnet %s", r.Start, r.End, r.Subnet)
			}
		}
	}
	return 0, fmt.Sprintf("is outside every subnet of the network (%s)", subnets(sets))
}

func subnets(sets []RangeSet) string {
	s := ""
	for _, set := range sets {
		for _, r := range set {
			if s != "" {
				s += ", "
			}
			s += r.Subnet.String()
		}
	}
	return s
}
