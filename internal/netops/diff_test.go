package netops_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vpcnet/vpcnet/internal/netops"
)

func TestDiffRoutes(t *testing.T) {
	r := func(dst, dev, via string) netops.Route {
		rt := netops.Route{Dst: netip.MustParsePrefix(dst), Dev: dev}
		if via != "" {
			rt.Via = netip.MustParseAddr(via)
		}
		return rt
	}
	want := map[netip.Prefix]netops.Route{}
	for _, rt := range []netops.Route{r("10.0.0.10/32", "e01", ""), r("10.0.0.50/32", "e02", ""), r("10.0.0.64/28", "e01", "10.0.0.10")} {
		want[rt.Dst] = rt
	}
	tests := []struct {
		name            string
		have            []netops.Route
		replace, remove []netops.Route
	}{
		{"nothing yet", nil, []netops.Route{r("10.0.0.10/32", "e01", ""), r("10.0.0.50/32", "e02", ""), r("10.0.0.64/28", "e01", "10.0.0.10")}, nil},
		{"all there", []netops.Route{r("10.0.0.10/32", "e01", ""), r("10.0.0.50/32", "e02", ""), r("10.0.0.64/28", "e01", "10.0.0.10")}, nil, nil},
		{"moved address", []netops.Route{r("10.0.0.10/32", "e01", ""), r("10.0.0.50/32", "e01", ""), r("10.0.0.64/28", "e01", "10.0.0.10")},
			[]netops.Route{r("10.0.0.50/32", "e02", "")}, []netops.Route{r("10.0.0.50/32", "e01", "")}},
		{"unassigned address", []netops.Route{r("10.0.0.10/32", "e01", ""), r("10.0.0.50/32", "e02", ""), r("10.0.0.64/28", "e01", "10.0.0.10"), r("10.0.0.99/32", "e02", "")},
			nil, []netops.Route{r("10.0.0.99/32", "e02", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replace, remove := netops.DiffRoutes(want, tt.have)
			if !slices.Equal(replace, tt.replace) || !slices.Equal(remove, tt.remove) {
				t.Fatalf("DiffRoutes: replace %v remove %v; want %v %v", replace, remove, tt.replace, tt.remove)
			}
		})
	}
}

func TestDiffPermanentNeighbors(t *testing.T) {
	n := func(dev, addr, mac string) netops.PermanentNeighbor {
		return netops.PermanentNeighbor{Dev: dev, Addr: netip.MustParseAddr(addr), MAC: mac}
	}
	want := []netops.PermanentNeighbor{n("e01", "10.0.0.10", "m1"), n("e02", "10.0.0.50", "m2")}
	have := []netops.PermanentNeighbor{n("e01", "10.0.0.10", "old"), n("e01", "10.0.0.50", "m1"), n("e02", "10.0.0.50", "m2")}
	set, remove := netops.DiffPermanentNeighbors(want, have)
	// A changed MAC is overwritten, not deleted (deleting after setting
	// would remove the new entry); an address that moved away is deleted.
	if !slices.Equal(set, []netops.PermanentNeighbor{n("e01", "10.0.0.10", "m1")}) || !slices.Equal(remove, []netops.PermanentNeighbor{n("e01", "10.0.0.50", "m1")}) {
		t.Fatalf("DiffPermanentNeighbors: set %v remove %v", set, remove)
	}
}
