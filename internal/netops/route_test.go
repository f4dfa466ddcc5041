package netops_test

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestNeedsOnLinkRoute(t *testing.T) {
	addrs := func(list ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range list {
			out = append(out, cidr(t, s))
		}
		return out
	}
	tests := []struct {
		name  string
		gw    string
		addrs []netip.Prefix
		want  bool
	}{
		{"gateway inside the /24", "10.0.0.1", addrs("10.0.0.5/24"), false},
		{"address is a /32", "10.0.0.1", addrs("10.0.0.5/32"), true},
		{"gateway in another subnet", "10.1.0.1", addrs("10.0.0.5/24"), true},
		{"second address covers it", "10.1.0.1", addrs("10.0.0.5/24", "10.1.0.9/16"), false},
		{"no addresses", "10.0.0.1", nil, true},
		{"only an IPv6 address", "10.0.0.1", addrs("fd00::5/64"), true},
		{"IPv6 inside the /64", "fd00::1", addrs("fd00::5/64"), false},
		{"IPv6 address is a /128", "fd00::1", addrs("fd00::5/128"), true},
		{"IPv6 link-local gateway", "fe80::1", addrs("fd00::5/128"), false},
		{"IPv6 gateway, only an IPv4 address", "fd00::1", addrs("10.0.0.5/8"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := netops.NeedsOnLinkRoute(netip.MustParseAddr(tt.gw), tt.addrs); got != tt.want {
				t.Errorf("NeedsOnLinkRoute(%s, %v) = %v, want %v", tt.gw, tt.addrs, got, tt.want)
			}
		})
	}
}

func routeStrings(routes []netops.Route) []string {
	out := make([]string, 0, len(routes))
	for _, r := range routes {
		via := "<nil>"
		if r.Via.IsValid() {
			via = r.Via.String()
		}
		out = append(out, fmt.Sprintf("%s via %s", r.Dst, via))
	}
	slices.Sort(out)
	return out
}

// TestDefaultRouteViaOffLinkGateway routes through a gateway outside the
// address's prefix, twice, and checks the kernel's table each time.
func TestDefaultRouteViaOffLinkGateway(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eni0")
	err := n.Do(func(ns.NetNS) error {
		for _, a := range []string{"10.9.0.5/32", "fd00:9::5/128"} {
			if err := netops.AddAddress(link, cidr(t, a)); err != nil {
				return err
			}
		}
		for range 2 {
			for _, gw := range []string{"10.8.0.1", "fd00:8::1"} {
				if err := netops.AddDefaultRoute(link, netip.MustParseAddr(gw)); err != nil {
					return err
				}
			}
		}
		routes, err := netops.Routes(link)
		if err != nil {
			return err
		}
		got := routeStrings(routes)
		for _, want := range []string{
			"0.0.0.0/0 via 10.8.0.1",
			"10.8.0.1/32 via <nil>",
			"::/0 via fd00:8::1",
			"fd00:8::1/128 via <nil>",
		} {
			if n := countOf(got, want); n != 1 {
				t.Errorf("route %q present %d times, want once; routes: %v", want, n, got)
			}
		}

		if err := netops.FlushRoutes(link); err != nil {
			return err
		}
		routes, err = netops.Routes(link)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Via.IsValid() {
				t.Errorf("route %s via %s survived the flush", r.Dst, r.Via)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, l := range list {
		if l == s {
			n++
		}
	}
	return n
}

// TestBlackholes blocks a destination, checks that a socket cannot reach it,
// and unblocks it.
func TestBlackholes(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eni0")
	dsts := []netip.Prefix{cidr(t, "169.254.169.254/32"), cidr(t, "fd00:ec2::254/128")}
	err := n.Do(func(ns.NetNS) error {
		// A default route, so that without the blackhole the destinations
		// would be routable.
		for _, a := range []string{"10.9.0.5/24", "fd00:9::5/64"} {
			if err := netops.AddAddress(link, cidr(t, a)); err != nil {
				return err
			}
		}
		for _, gw := range []string{"10.9.0.1", "fd00:9::1"} {
			if err := netops.AddDefaultRoute(link, netip.MustParseAddr(gw)); err != nil {
				return err
			}
		}
		for _, d := range dsts {
			if _, err := net.Dial("udp", net.JoinHostPort(d.Addr().String(), "80")); err != nil {
				t.Errorf("before blocking, %s is not routable: %v", d.Addr(), err)
			}
		}
		for range 2 {
			for _, d := range dsts {
				if err := netops.AddBlackhole(d); err != nil {
					return err
				}
			}
		}
		got, err := netops.Blackholes()
		if err != nil {
			return err
		}
		if want := prefixStrings(dsts); !slices.Equal(prefixStrings(got), want) {
			t.Errorf("blackholes = %v, want %v", prefixStrings(got), want)
		}
		for _, d := range dsts {
			if _, err := net.Dial("udp", net.JoinHostPort(d.Addr().String(), "80")); err == nil {
				t.Errorf("%s is still routable behind a blackhole", d.Addr())
			}
		}
		for range 2 {
			for _, d := range dsts {
				if err := netops.DeleteBlackhole(d); err != nil {
					return err
				}
			}
		}
		got, err = netops.Blackholes()
		if err != nil {
			return err
		}
		if len(got) != 0 {
			t.Errorf("blackholes after delete = %v, want none", prefixStrings(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
