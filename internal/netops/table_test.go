package netops_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func tableRouteStrings(routes []netops.TableRoute) []string {
	out := make([]string, len(routes))
	for i, r := range routes {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}

// TestTableRoutes installs a per-ENI table (an on-link route to the
// gateway and a default through it) and a host route in main, twice, reads
// each table back, and removes them twice.
func TestTableRoutes(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eni1")
	idx := link.Attrs().Index
	gw := netip.MustParseAddr("10.8.0.1")
	eniTable := []netops.TableRoute{
		{Table: 2, Dst: netip.PrefixFrom(gw, 32), LinkIndex: idx},
		{Table: 2, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: gw, LinkIndex: idx},
		{Table: 2, Dst: netip.MustParsePrefix("fd00:8::/64"), LinkIndex: idx},
	}
	host := netops.TableRoute{Dst: netip.MustParsePrefix("10.8.0.9/32"), LinkIndex: idx}
	err := n.Do(func(ns.NetNS) error {
		for range 2 {
			for _, r := range append(slices.Clone(eniTable), host) {
				if err := netops.ReplaceTableRoute(r); err != nil {
					return err
				}
			}
		}
		got, err := netops.TableRoutes(2, 0)
		if err != nil {
			return err
		}
		if !slices.Equal(tableRouteStrings(got), tableRouteStrings(eniTable)) {
			t.Errorf("table 2 = %v\nwant %v", tableRouteStrings(got), tableRouteStrings(eniTable))
		}
		main, err := netops.TableRoutes(0, idx)
		if err != nil {
			return err
		}
		if !slices.Contains(tableRouteStrings(main), host.String()) {
			t.Errorf("main out of eni1 = %v, want %s among them", tableRouteStrings(main), host)
		}
		if slices.ContainsFunc(main, func(r netops.TableRoute) bool { return r.Table == 2 }) {
			t.Errorf("main lists table 2's routes: %v", tableRouteStrings(main))
		}
		for range 2 {
			for _, r := range append(slices.Clone(eniTable), host) {
				if err := netops.DeleteTableRoute(r); err != nil {
					return err
				}
			}
		}
		if got, _ := netops.TableRoutes(2, 0); len(got) != 0 {
			t.Errorf("table 2 after deleting: %v", tableRouteStrings(got))
		}
		if main, _ := netops.TableRoutes(0, idx); slices.Contains(tableRouteStrings(main), host.String()) {
			t.Errorf("host route still there: %v", tableRouteStrings(main))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
