package vpc

import (
	"net/netip"
	"slices"
)

// Assigned lists the addresses and prefixes an assign (or unassign) call
// changed.
type Assigned struct {
	Addresses []netip.Addr
	Prefixes  []netip.Prefix
}

// AssignPrivateInput is AssignPrivateIpAddresses' request: explicit
// addresses, a count of addresses, explicit /28 prefixes or a count of
// prefixes; exactly one of them.
type AssignPrivateInput struct {
	NetworkInterfaceID string
	Addresses          []netip.Addr
	Count              int
	// AllowReassignment lets an explicit address move from the ENI that
	// holds it to this one.
	AllowReassignment bool
	Prefixes          []netip.Prefix
	PrefixCount       int
}

// AssignPrivateIPAddresses assigns secondary IPv4 addresses or /28
// prefixes to an ENI, within the per-interface limit of the instance type
// it is attached to.
func (m *Model) AssignPrivateIPAddresses(in AssignPrivateInput) (Assigned, error) {
	if n := countSet(len(in.Addresses) > 0, in.Count > 0, len(in.Prefixes) > 0, in.PrefixCount > 0); n == 0 {
		return Assigned{}, errorf(CodeMissingParameter, "Either private IP addresses, a secondary private IP address count, IPv4 prefixes or an IPv4 prefix count must be specified.")
	} else if n > 1 {
		return Assigned{}, combination("Only one of private IP addresses, a secondary private IP address count, IPv4 prefixes and an IPv4 prefix count may be specified.")
	}
	var out Assigned
	err := m.update(func(st *State) error {
		n, err := findENI(st, in.NetworkInterfaceID)
		if err != nil {
			return err
		}
		s := st.Subnets[n.SubnetID]
		u := usageOf(st, s.ID)
		limit, _ := interfaceLimits(st, n)
		if ipv4Slots(n)+len(in.Addresses)+in.Count+len(in.Prefixes)+in.PrefixCount > limit {
			return addressLimit()
		}
		addrs, err := allocateV4(s, u, n, in.Addresses, in.Count, in.AllowReassignment, st)
		if err != nil {
			return err
		}
		prefixes, err := allocateV4Prefixes(s, u, n, in.Prefixes, in.PrefixCount)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			n.PrivateIPs = append(n.PrivateIPs, PrivateIP{Address: a})
		}
		n.IPv4Prefixes = append(n.IPv4Prefixes, prefixes...)
		out = Assigned{Addresses: addrs, Prefixes: prefixes}
		return nil
	})
	return out, err
}

// UnassignPrivateIPAddresses removes secondary IPv4 addresses and /28
// prefixes from an ENI. The primary address cannot be removed.
func (m *Model) UnassignPrivateIPAddresses(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	if len(addrs)+len(prefixes) == 0 {
		return errorf(CodeMissingParameter, "Either private IP addresses or IPv4 prefixes must be specified.")
	}
	return m.update(func(st *State) error {
		n, err := findENI(st, eniID)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			i := slices.IndexFunc(n.PrivateIPs, func(p PrivateIP) bool { return p.Address == a })
			if i < 0 {
				return invalidValue("Some of the specified addresses are not assigned to interface %s", eniID)
			}
			if n.PrivateIPs[i].Primary {
				return invalidValue("The primary private IP address %s of interface %s cannot be unassigned.", a, eniID)
			}
			n.PrivateIPs = slices.Delete(n.PrivateIPs, i, i+1)
		}
		for _, p := range prefixes {
			i := slices.Index(n.IPv4Prefixes, p)
			if i < 0 {
				return invalidValue("Some of the specified prefixes are not assigned to interface %s", eniID)
			}
			n.IPv4Prefixes = slices.Delete(n.IPv4Prefixes, i, i+1)
		}
		return nil
	})
}

// AssignIPv6Input is AssignIpv6Addresses' request.
type AssignIPv6Input struct {
	NetworkInterfaceID string
	Addresses          []netip.Addr
	Count              int
	Prefixes           []netip.Prefix
	PrefixCount        int
}

// AssignIPv6Addresses assigns IPv6 addresses or /80 prefixes to an ENI.
func (m *Model) AssignIPv6Addresses(in AssignIPv6Input) (Assigned, error) {
	if n := countSet(len(in.Addresses) > 0, in.Count > 0, len(in.Prefixes) > 0, in.PrefixCount > 0); n == 0 {
		return Assigned{}, errorf(CodeMissingParameter, "Either IPv6 addresses, an IPv6 address count, IPv6 prefixes or an IPv6 prefix count must be specified.")
	} else if len(in.Addresses) > 0 && in.Count > 0 || len(in.Prefixes) > 0 && in.PrefixCount > 0 {
		return Assigned{}, combination("You may specify a count or specific values, but not both.")
	}
	var out Assigned
	err := m.update(func(st *State) error {
		n, err := findENI(st, in.NetworkInterfaceID)
		if err != nil {
			return err
		}
		s := st.Subnets[n.SubnetID]
		u := usageOf(st, s.ID)
		_, limit := interfaceLimits(st, n)
		if ipv6Slots(n)+len(in.Addresses)+in.Count+len(in.Prefixes)+in.PrefixCount > limit {
			return addressLimit()
		}
		addrs, err := allocateV6(s, u, n, in.Addresses, in.Count)
		if err != nil {
			return err
		}
		prefixes, err := allocateV6Prefixes(s, u, n, in.Prefixes, in.PrefixCount)
		if err != nil {
			return err
		}
		n.IPv6Addresses = append(n.IPv6Addresses, addrs...)
		n.IPv6Prefixes = append(n.IPv6Prefixes, prefixes...)
		out = Assigned{Addresses: addrs, Prefixes: prefixes}
		return nil
	})
	return out, err
}

// UnassignIPv6Addresses removes IPv6 addresses and /80 prefixes from an
// ENI.
func (m *Model) UnassignIPv6Addresses(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) (Assigned, error) {
	if len(addrs)+len(prefixes) == 0 {
		return Assigned{}, errorf(CodeMissingParameter, "Either IPv6 addresses or IPv6 prefixes must be specified.")
	}
	err := m.update(func(st *State) error {
		n, err := findENI(st, eniID)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			i := slices.Index(n.IPv6Addresses, a)
			if i < 0 {
				return invalidValue("Some of the specified addresses are not assigned to interface %s", eniID)
			}
			n.IPv6Addresses = slices.Delete(n.IPv6Addresses, i, i+1)
		}
		for _, p := range prefixes {
			i := slices.Index(n.IPv6Prefixes, p)
			if i < 0 {
				return invalidValue("Some of the specified prefixes are not assigned to interface %s", eniID)
			}
			n.IPv6Prefixes = slices.Delete(n.IPv6Prefixes, i, i+1)
		}
		return nil
	})
	return Assigned{Addresses: addrs, Prefixes: prefixes}, err
}

// interfaceLimits returns the IPv4 and IPv6 per-interface limits that
// apply to an ENI: its instance type's once attached.
func interfaceLimits(st *State, n *NetworkInterface) (v4, v6 int) {
	if n.Attachment != nil {
		if inst, ok := st.Instances[n.Attachment.InstanceID]; ok {
			if t, err := LookupInstanceType(inst.Type); err == nil {
				return int(t.IPv4PerInterface), int(t.IPv6PerInterface)
			}
		}
	}
	return maxAddressesPerInterface, maxAddressesPerInterface
}

func countSet(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// allocateV4 takes the explicit addresses (moving them from another ENI if
// reassignment is allowed) and then count more of the lowest free ones.
func allocateV4(s *Subnet, u *subnetUsage, n *NetworkInterface, explicit []netip.Addr, count int, reassign bool, st *State) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range explicit {
		if err := checkV4InSubnet(s, a); err != nil {
			return nil, err
		}
		if owner, taken := u.ownerV4(a); taken {
			if !reassign || owner == n.ID || !takeAddress(st, owner, a) {
				return nil, errorf(CodeInvalidIPAddressInUse, "The specified address %s is already in use.", a)
			}
			delete(u.v4, a)
		}
		u.v4[a] = n.ID
		out = append(out, a)
	}
	for range count {
		a, ok := nextFreeV4(s.CIDR, u)
		if !ok {
			return nil, errorf(CodeInsufficientFreeAddresses, "There are not enough free addresses in subnet '%s' to satisfy the requested number of addresses.", s.ID)
		}
		u.v4[a] = n.ID
		out = append(out, a)
	}
	return out, nil
}

func checkV4InSubnet(s *Subnet, a netip.Addr) error {
	if !a.Is4() || !s.CIDR.Contains(a) {
		return invalidValue("Address %s does not fall within the subnet's address range", a)
	}
	if reservedV4(s.CIDR, a) {
		return invalidValue("Address %s is reserved in subnet %s and cannot be assigned", a, s.ID)
	}
	return nil
}

// takeAddress removes a secondary address from its ENI for reassignment;
// a primary address, or one inside a prefix, cannot move.
func takeAddress(st *State, ownerID string, a netip.Addr) bool {
	owner := st.NetworkInterfaces[ownerID]
	i := slices.IndexFunc(owner.PrivateIPs, func(p PrivateIP) bool { return p.Address == a })
	if i < 0 || owner.PrivateIPs[i].Primary {
		return false
	}
	owner.PrivateIPs = slices.Delete(owner.PrivateIPs, i, i+1)
	return true
}

func allocateV4Prefixes(s *Subnet, u *subnetUsage, n *NetworkInterface, explicit []netip.Prefix, count int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range explicit {
		if !p.Addr().Is4() || p.Bits() != ipv4PrefixBits || p != p.Masked() || s.CIDR.Bits() > ipv4PrefixBits || !s.CIDR.Contains(p.Addr()) {
			return nil, invalidValue("The prefix %s is not a /28 aligned inside subnet %s (%s)", p, s.ID, s.CIDR)
		}
		if !v4PrefixFree(s.CIDR, p, u) {
			return nil, errorf(CodeInvalidIPAddressInUse, "The specified prefix %s overlaps addresses in use or reserved.", p)
		}
		u.v4Prefixes[p] = n.ID
		out = append(out, p)
	}
	for range count {
		p, ok := freeV4Prefix(s.CIDR, u)
		if !ok {
			return nil, errorf(CodeInsufficientCidrBlocks, "There are not enough free cidr blocks in the specified subnet to satisfy the request.")
		}
		u.v4Prefixes[p] = n.ID
		out = append(out, p)
	}
	return out, nil
}

func allocateV6(s *Subnet, u *subnetUsage, n *NetworkInterface, explicit []netip.Addr, count int) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range explicit {
		if !a.Is6() || a.Is4In6() || !s.IPv6CIDR.Contains(a) {
			return nil, invalidValue("Address %s does not fall within the subnet's IPv6 address range", a)
		}
		if reservedV6(s.IPv6CIDR, a) {
			return nil, invalidValue("Address %s is reserved in subnet %s and cannot be assigned", a, s.ID)
		}
		if _, taken := u.ownerV6(a); taken {
			return nil, errorf(CodeInvalidIPAddressInUse, "The specified address %s is already in use.", a)
		}
		u.v6[a] = n.ID
		out = append(out, a)
	}
	for range count {
		a, ok := nextFreeV6(s.IPv6CIDR, u)
		if !ok {
			return nil, errorf(CodeInsufficientFreeAddresses, "There are not enough free IPv6 addresses in subnet '%s'.", s.ID)
		}
		u.v6[a] = n.ID
		out = append(out, a)
	}
	return out, nil
}

func allocateV6Prefixes(s *Subnet, u *subnetUsage, n *NetworkInterface, explicit []netip.Prefix, count int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range explicit {
		if !p.Addr().Is6() || p.Bits() != ipv6PrefixBits || p != p.Masked() || !s.IPv6CIDR.Contains(p.Addr()) {
			return nil, invalidValue("The prefix %s is not a /80 inside subnet %s (%s)", p, s.ID, s.IPv6CIDR)
		}
		if _, taken := u.v6Prefixes[p]; taken || v6BlockHasAddress(u, p) {
			return nil, errorf(CodeInvalidIPAddressInUse, "The specified prefix %s is already in use.", p)
		}
		u.v6Prefixes[p] = n.ID
		out = append(out, p)
	}
	for range count {
		p, ok := freeV6Prefix(s.IPv6CIDR, u)
		if !ok {
			return nil, errorf(CodeInsufficientCidrBlocks, "There are not enough free cidr blocks in the specified subnet to satisfy the request.")
		}
		u.v6Prefixes[p] = n.ID
		out = append(out, p)
	}
	return out, nil
}

func v6BlockHasAddress(u *subnetUsage, p netip.Prefix) bool {
	for a := range u.v6 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
