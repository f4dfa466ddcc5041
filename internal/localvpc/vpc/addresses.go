package vpc

import (
	"math/big"
	"net/netip"
)

// prefixDelegationBits is the size EC2 delegates IPv4 prefixes in (/28)
// and IPv6 prefixes in (/80).
const (
	ipv4PrefixBits = 28
	ipv6PrefixBits = 80
)

// subnetUsage is what is taken in one subnet: by address, the ENI that
// owns it. Built from the state whenever an allocation needs it.
type subnetUsage struct {
	v4         map[netip.Addr]string
	v4Prefixes map[netip.Prefix]string
	v6         map[netip.Addr]string
	v6Prefixes map[netip.Prefix]string
}

func usageOf(st *State, subnetID string) *subnetUsage {
	u := &subnetUsage{
		v4: map[netip.Addr]string{}, v4Prefixes: map[netip.Prefix]string{},
		v6: map[netip.Addr]string{}, v6Prefixes: map[netip.Prefix]string{},
	}
	for _, n := range st.NetworkInterfaces {
		if n.SubnetID == subnetID {
			u.add(n)
		}
	}
	return u
}

func (u *subnetUsage) add(n *NetworkInterface) {
	for _, p := range n.PrivateIPs {
		u.v4[p.Address] = n.ID
	}
	for _, p := range n.IPv4Prefixes {
		u.v4Prefixes[p] = n.ID
	}
	for _, a := range n.IPv6Addresses {
		u.v6[a] = n.ID
	}
	for _, p := range n.IPv6Prefixes {
		u.v6Prefixes[p] = n.ID
	}
}

// ownerV4 returns the ENI holding a (as an address or inside a prefix).
func (u *subnetUsage) ownerV4(a netip.Addr) (string, bool) {
	if id, ok := u.v4[a]; ok {
		return id, true
	}
	id, ok := u.v4Prefixes[netip.PrefixFrom(a, ipv4PrefixBits).Masked()]
	return id, ok
}

func (u *subnetUsage) ownerV6(a netip.Addr) (string, bool) {
	if id, ok := u.v6[a]; ok {
		return id, true
	}
	id, ok := u.v6Prefixes[netip.PrefixFrom(a, ipv6PrefixBits).Masked()]
	return id, ok
}

// availableV4 is DescribeSubnets' AvailableIpAddressCount: the subnet's
// size less the five reserved addresses, the assigned addresses and every
// address of the delegated prefixes.
func (u *subnetUsage) availableV4(cidr netip.Prefix) int {
	return subnetSize(cidr) - 5 - len(u.v4) - len(u.v4Prefixes)*(1<<(32-ipv4PrefixBits))
}

func subnetSize(cidr netip.Prefix) int { return 1 << (32 - cidr.Bits()) }

// reservedV4 reports whether EC2 keeps a for itself: the network address,
// the VPC router (+1), the DNS server (+2), the one reserved for future use
// (+3) and the broadcast address.
func reservedV4(cidr netip.Prefix, a netip.Addr) bool {
	off := offsetV4(cidr, a)
	return off <= 3 || off == subnetSize(cidr)-1
}

// reservedV6 reports the first four and the last address of an IPv6
// subnet, which EC2 also keeps.
func reservedV6(cidr netip.Prefix, a netip.Addr) bool {
	off := new(big.Int).Sub(ipInt(a), ipInt(cidr.Masked().Addr()))
	last := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(128-cidr.Bits())), big.NewInt(1))
	return off.Cmp(big.NewInt(3)) <= 0 || off.Cmp(last) == 0
}

func offsetV4(cidr netip.Prefix, a netip.Addr) int {
	b, n := cidr.Masked().Addr().As4(), a.As4()
	return int(be32(n) - be32(b))
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addV4(base netip.Addr, off int) netip.Addr {
	v := be32(base.As4()) + uint32(off)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func ipInt(a netip.Addr) *big.Int {
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}

func intIP(i *big.Int) netip.Addr {
	var b [16]byte
	i.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

// nextFreeV4 returns the lowest address of the subnet that is neither
// reserved nor taken.
func nextFreeV4(cidr netip.Prefix, u *subnetUsage) (netip.Addr, bool) {
	base := cidr.Masked().Addr()
	for off := 4; off < subnetSize(cidr)-1; off++ {
		a := addV4(base, off)
		if _, taken := u.ownerV4(a); !taken {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// freeV4Prefix returns the lowest aligned /28 of the subnet none of whose
// addresses is reserved or taken. The first and last /28 of a subnet hold
// reserved addresses, so they are never delegated, as on EC2.
func freeV4Prefix(cidr netip.Prefix, u *subnetUsage) (netip.Prefix, bool) {
	if cidr.Bits() > ipv4PrefixBits {
		return netip.Prefix{}, false
	}
	base := cidr.Masked().Addr()
	for off := 0; off < subnetSize(cidr); off += 16 {
		p := netip.PrefixFrom(addV4(base, off), ipv4PrefixBits)
		if v4PrefixFree(cidr, p, u) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func v4PrefixFree(cidr, p netip.Prefix, u *subnetUsage) bool {
	if _, taken := u.v4Prefixes[p]; taken {
		return false
	}
	for i := range 16 {
		a := addV4(p.Addr(), i)
		if reservedV4(cidr, a) {
			return false
		}
		if _, taken := u.v4[a]; taken {
			return false
		}
	}
	return true
}

// nextFreeV6 returns the lowest free address of the subnet's first /80
// (delegated prefixes are taken from the others).
func nextFreeV6(cidr netip.Prefix, u *subnetUsage) (netip.Addr, bool) {
	base := ipInt(cidr.Masked().Addr())
	for off := int64(4); off < 1<<20; off++ {
		a := intIP(new(big.Int).Add(base, big.NewInt(off)))
		if _, taken := u.ownerV6(a); !taken {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// freeV6Prefix returns the lowest /80 of the subnet, after the first, that
// holds no assigned address.
func freeV6Prefix(cidr netip.Prefix, u *subnetUsage) (netip.Prefix, bool) {
	usedBlocks := map[netip.Prefix]bool{}
	for a := range u.v6 {
		usedBlocks[netip.PrefixFrom(a, ipv6PrefixBits).Masked()] = true
	}
	base := ipInt(cidr.Masked().Addr())
	for k := int64(1); k < 1<<16; k++ {
		p := netip.PrefixFrom(intIP(new(big.Int).Add(base, new(big.Int).Lsh(big.NewInt(k), 128-ipv6PrefixBits))), ipv6PrefixBits)
		if _, taken := u.v6Prefixes[p]; !taken && !usedBlocks[p] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}
