package netops

import (
	"net"
	"net/netip"
)

// The kernel (through netlink) and CNI results speak net.IP and
// net.IPNet; vpcnet's own code speaks netip. These are the project's one
// pair of converters between the two.

// IPNet returns p as an address with a mask, keeping the address's host
// bits (10.0.1.5/24 stays 10.0.1.5/24, as an interface address must), with
// a 4-byte address for IPv4.
func IPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// PrefixOf returns n as a prefix, host bits kept and an IPv4-mapped
// address unmapped; the zero (invalid) Prefix when n is nil or not a valid
// address and mask.
func PrefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 || ones > a.BitLen() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, ones)
}

// AddrOf returns ip as an address, IPv4-mapped ones unmapped; the zero
// (invalid) Addr for a nil or malformed ip.
func AddrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// IP returns a as a net.IP, 4 bytes for IPv4; nil for the zero Addr.
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.Unmap().AsSlice())
}
