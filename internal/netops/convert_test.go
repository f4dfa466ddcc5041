package netops_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vpcnet/vpcnet/internal/netops"
)

func TestConverters(t *testing.T) {
	for _, s := range []string{"10.0.1.5/24", "0.0.0.0/0", "169.254.170.2/32", "fd00:ec2::254/128", "2600:1f14::5/64", "::/0"} {
		p := netip.MustParsePrefix(s)
		n := netops.IPNet(p)
		if n.String() != s {
			t.Errorf("IPNet(%s) = %s: host bits or length lost", s, n)
		}
		if p.Addr().Is4() && len(n.IP) != net.IPv4len {
			t.Errorf("IPNet(%s) has a %d-byte address, want 4", s, len(n.IP))
		}
		if back := netops.PrefixOf(n); back != p {
			t.Errorf("PrefixOf(IPNet(%s)) = %s", s, back)
		}
	}
	// The kernel's and net.ParseCIDR's 16-byte form of an IPv4 address
	// comes back as IPv4.
	ip, n, _ := net.ParseCIDR("10.0.1.5/24")
	n.IP = ip.To16()
	if got := netops.PrefixOf(n); got != netip.MustParsePrefix("10.0.1.5/24") {
		t.Errorf("PrefixOf of a 16-byte IPv4 address = %s", got)
	}
	for _, bad := range []*net.IPNet{nil, {IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(8, 32)}, {IP: net.IPv4(10, 0, 0, 1)}} {
		if got := netops.PrefixOf(bad); got.IsValid() {
			t.Errorf("PrefixOf(%v) = %s, want the zero Prefix", bad, got)
		}
	}
	if a := netops.AddrOf(net.ParseIP("10.0.0.1")); a != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("AddrOf of a 16-byte IPv4 address = %s", a)
	}
	if a := netops.AddrOf(nil); a.IsValid() {
		t.Errorf("AddrOf(nil) = %s", a)
	}
	if ip := netops.IP(netip.MustParseAddr("10.0.0.1")); len(ip) != net.IPv4len || ip.String() != "10.0.0.1" {
		t.Errorf("IP(10.0.0.1) = %v", []byte(ip))
	}
	if ip := netops.IP(netip.Addr{}); ip != nil {
		t.Errorf("IP of the zero Addr = %v", ip)
	}
}
