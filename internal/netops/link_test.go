package netops_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestRenameAndAlias: a link is found by name, renamed (a name another
// link holds is refused with ErrNameTaken, the link keeping its own), and
// its alias set and cleared.
func TestRenameAndAlias(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	upVeth(t, n, "eni0") // eni0 and eni0p
	err := n.Do(func(ns.NetNS) error {
		if _, err := netops.LinkByName("absent0"); !errors.Is(err, netops.ErrLinkNotFound) {
			t.Errorf("LinkByName of a missing link: %v, want ErrLinkNotFound", err)
		}
		l, err := netops.LinkByName("eni0")
		if err != nil {
			return err
		}
		if _, err := netops.RenameLink(l, "eni0p"); !errors.Is(err, netops.ErrNameTaken) {
			t.Errorf("rename onto a taken name: %v, want ErrNameTaken", err)
		}
		if _, err := netops.LinkByName("eni0"); err != nil {
			t.Errorf("the refused rename lost the link's name: %v", err)
		}
		renamed, err := netops.RenameLink(l, "ctr0")
		if err != nil {
			return err
		}
		if renamed.Attrs().Name != "ctr0" || renamed.Attrs().Index != l.Attrs().Index {
			t.Errorf("renamed link: %+v", renamed.Attrs())
		}
		if err := netops.SetAlias(renamed, "owner x"); err != nil {
			return err
		}
		if got, _ := netops.LinkByIndex(l.Attrs().Index); got.Attrs().Alias != "owner x" {
			t.Errorf("alias %q, want %q", got.Attrs().Alias, "owner x")
		}
		if err := netops.SetAlias(renamed, ""); err != nil {
			return err
		}
		if got, _ := netops.LinkByIndex(l.Attrs().Index); got.Attrs().Alias != "" {
			t.Errorf("alias %q after clearing it", got.Attrs().Alias)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAddressWithoutPrefixRouteAndAddRoute: an address added without its
// prefix route leaves the prefix unrouted; AddRoute adds routes with their
// options and refuses, with ErrRouteExists, a destination already routed.
func TestAddressWithoutPrefixRouteAndAddRoute(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "ctr0")
	err := n.Do(func(ns.NetNS) error {
		for _, a := range []string{"169.254.172.5/22", "fd00:172::5/64"} {
			for range 2 { // a second call changes nothing
				if err := netops.AddAddressWithoutPrefixRoute(link, netip.MustParsePrefix(a)); err != nil {
					return err
				}
			}
		}
		addrs, err := netops.Addresses(link)
		if err != nil {
			return err
		}
		if got := prefixStrings(addrs); !slices.Equal(got, []string{"169.254.172.5/22", "fd00:172::5/64"}) {
			t.Errorf("addresses %v", got)
		}
		gw := netip.MustParseAddr("169.254.172.1")
		if err := netops.AddRoute(link, netops.HostPrefix(gw), netip.Addr{}, netops.RouteOptions{Scope: int(netlink.SCOPE_LINK)}); err != nil {
			return err
		}
		endpoint := netip.MustParsePrefix("169.254.170.2/32")
		if err := netops.AddRoute(link, endpoint, gw, netops.RouteOptions{MTU: 1300}); err != nil {
			return err
		}
		if err := netops.AddRoute(link, endpoint, gw, netops.RouteOptions{}); !errors.Is(err, netops.ErrRouteExists) {
			t.Errorf("second route to %s: %v, want ErrRouteExists", endpoint, err)
		}
		routes, err := netops.Routes(link)
		if err != nil {
			return err
		}
		var v4 []string
		for _, r := range routes {
			if r.Dst.Addr().Is4() {
				v4 = append(v4, r.String())
			}
		}
		slices.Sort(v4)
		// No route to 169.254.172.0/22: the prefix is not on-link.
		if want := []string{"169.254.170.2/32 via 169.254.172.1 dev ctr0", "169.254.172.1/32 dev ctr0"}; !slices.Equal(v4, want) {
			t.Errorf("IPv4 routes %v, want %v", v4, want)
		}
		kernel, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: netops.IPNet(endpoint)}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		if len(kernel) != 1 || kernel[0].MTU != 1300 {
			t.Errorf("route to %s in the kernel: %+v, want one with MTU 1300", endpoint, kernel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
