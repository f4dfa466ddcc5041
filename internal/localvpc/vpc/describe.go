package vpc

import (
	"slices"
)

// eniAttributes is the table of DescribeNetworkInterfaces filters.
func eniAttributes(st *State) attributes[*NetworkInterface] {
	attach := func(f func(a *Attachment) string) func(*NetworkInterface) []string {
		return func(n *NetworkInterface) []string {
			if n.Attachment == nil {
				return nil
			}
			return one(f(n.Attachment))
		}
	}
	v4 := func(n *NetworkInterface) []string {
		var out []string
		for _, p := range n.PrivateIPs {
			out = append(out, p.Address.String())
		}
		return out
	}
	return attributes[*NetworkInterface]{
		"network-interface-id":             func(n *NetworkInterface) []string { return one(n.ID) },
		"subnet-id":                        func(n *NetworkInterface) []string { return one(n.SubnetID) },
		"vpc-id":                           func(n *NetworkInterface) []string { return one(n.VPCID) },
		"availability-zone":                func(n *NetworkInterface) []string { return one(n.AvailabilityZone) },
		"status":                           func(n *NetworkInterface) []string { return one(n.Status) },
		"description":                      func(n *NetworkInterface) []string { return one(n.Description) },
		"mac-address":                      func(n *NetworkInterface) []string { return one(n.MAC) },
		"interface-type":                   func(n *NetworkInterface) []string { return one(n.InterfaceType) },
		"source-dest-check":                func(n *NetworkInterface) []string { return one(boolString(n.SourceDestCheck)) },
		"requester-managed":                func(n *NetworkInterface) []string { return one(boolString(n.RequesterID != "")) },
		"owner-id":                         func(*NetworkInterface) []string { return one(st.AccountID) },
		"group-id":                         func(n *NetworkInterface) []string { return n.Groups },
		"private-ip-address":               v4,
		"addresses.private-ip-address":     v4,
		"attachment.instance-id":           attach(func(a *Attachment) string { return a.InstanceID }),
		"attachment.attachment-id":         attach(func(a *Attachment) string { return a.ID }),
		"attachment.status":                attach(func(a *Attachment) string { return a.Status }),
		"attachment.device-index":          attach(func(a *Attachment) string { return itoa32(a.DeviceIndex) }),
		"attachment.delete-on-termination": attach(func(a *Attachment) string { return boolString(a.DeleteOnTermination) }),
		"attachment.instance-owner-id":     attach(func(*Attachment) string { return st.AccountID }),
		"ipv6-addresses.ipv6-address":      func(n *NetworkInterface) []string { return addrStrings(n.IPv6Addresses) },
		"ipv4-prefix.ipv4-prefix":          func(n *NetworkInterface) []string { return prefixStrings(n.IPv4Prefixes) },
		"ipv6-prefix.ipv6-prefix":          func(n *NetworkInterface) []string { return prefixStrings(n.IPv6Prefixes) },
		"group-name":                       func(n *NetworkInterface) []string { return groupNames(st, n.Groups) },
		"attachment.network-card-index":    attach(func(a *Attachment) string { return itoa32(a.NetworkCardIndex) }),
		"private-dns-name":                 func(n *NetworkInterface) []string { return one(PrivateDNSName(n.PrimaryIP(), st.Region)) },
	}
}

// DescribeNetworkInterfaces lists ENIs by ID and filters, a page at a time.
func (m *Model) DescribeNetworkInterfaces(in DescribeInput) ([]NetworkInterface, string, error) {
	var out []NetworkInterface
	var next string
	err := m.read(func(st *State) error {
		if err := checkPaging(in, "networkInterfaceIdSet"); err != nil {
			return err
		}
		attrs := eniAttributes(st)
		if err := checkFilters(attrs, in.Filters); err != nil {
			return err
		}
		all, err := selectByID(st.NetworkInterfaces, in.IDs, findENIByID)
		if err != nil {
			return err
		}
		all = slices.DeleteFunc(all, func(n *NetworkInterface) bool { return !matches(n, n.Tags, attrs, in.Filters) })
		page, token, err := paginate(all, func(n *NetworkInterface) string { return n.ID }, in.MaxResults, in.NextToken)
		if err != nil {
			return err
		}
		for _, n := range page {
			out = append(out, *n.clone())
		}
		next = token
		return nil
	})
	return out, next, err
}

func findENIByID(st map[string]*NetworkInterface, id string) (*NetworkInterface, error) {
	if !hasPrefix(id, "eni") {
		return nil, errorf(CodeInvalidNetworkInterfaceIDMalformed, "Invalid id: \"%s\" (expecting \"eni-...\")", id)
	}
	if n, ok := st[id]; ok {
		return n, nil
	}
	return nil, eniNotFound(id)
}

// selectByID returns all resources sorted by ID, or only the named ones:
// any unknown ID fails the whole call, as in EC2.
func selectByID[V any](m map[string]V, ids []string, find func(map[string]V, string) (V, error)) ([]V, error) {
	if len(ids) == 0 {
		return SortedValues(m), nil
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(ids)))
	out := make([]V, 0, len(sorted))
	for _, id := range sorted {
		v, err := find(m, id)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// InstanceDescription is an instance with the network interfaces attached
// to it, ordered by device index, as DescribeInstances shows it.
type InstanceDescription struct {
	Instance          Instance
	NetworkInterfaces []NetworkInterface
}

func instanceAttributes(st *State) attributes[*Instance] {
	enis := func(i *Instance, f func(n *NetworkInterface) []string) []string {
		var out []string
		for _, n := range st.NetworkInterfaces {
			if n.Attachment != nil && n.Attachment.InstanceID == i.ID {
				out = append(out, f(n)...)
			}
		}
		return out
	}
	return attributes[*Instance]{
		"instance-id":         func(i *Instance) []string { return one(i.ID) },
		"instance-type":       func(i *Instance) []string { return one(i.Type) },
		"instance-state-name": func(i *Instance) []string { return one(i.State) },
		"subnet-id":           func(i *Instance) []string { return one(i.SubnetID) },
		"vpc-id":              func(i *Instance) []string { return one(i.VPCID) },
		"availability-zone":   func(i *Instance) []string { return one(i.AvailabilityZone) },
		"image-id":            func(i *Instance) []string { return one(i.ImageID) },
		"reservation-id":      func(i *Instance) []string { return one(i.ReservationID) },
		"owner-id":            func(*Instance) []string { return one(st.AccountID) },
		"private-ip-address":  func(i *Instance) []string { return enis(i, primaryOfDevice0(i)) },
		"network-interface.network-interface-id": func(i *Instance) []string {
			return enis(i, func(n *NetworkInterface) []string { return one(n.ID) })
		},
		"network-interface.addresses.private-ip-address": func(i *Instance) []string {
			return enis(i, func(n *NetworkInterface) []string { return eniAttributes(st)["private-ip-address"](n) })
		},
		"network-interface.mac-address": func(i *Instance) []string {
			return enis(i, func(n *NetworkInterface) []string { return one(n.MAC) })
		},
	}
}

func primaryOfDevice0(i *Instance) func(n *NetworkInterface) []string {
	return func(n *NetworkInterface) []string {
		if n.ID != i.PrimaryENIID {
			return nil
		}
		return one(n.PrimaryIP().String())
	}
}

// DescribeInstances lists instances by ID and filters, a page at a time.
func (m *Model) DescribeInstances(in DescribeInput) ([]InstanceDescription, string, error) {
	var out []InstanceDescription
	var next string
	err := m.read(func(st *State) error {
		if err := checkPaging(in, "instancesSet"); err != nil {
			return err
		}
		attrs := instanceAttributes(st)
		if err := checkFilters(attrs, in.Filters); err != nil {
			return err
		}
		all, err := selectByID(st.Instances, in.IDs, func(m map[string]*Instance, id string) (*Instance, error) {
			if !hasPrefix(id, "i") {
				return nil, errorf(CodeInvalidInstanceIDMalformed, "Invalid id: \"%s\"", id)
			}
			if i, ok := m[id]; ok {
				return i, nil
			}
			return nil, instanceNotFound(id)
		})
		if err != nil {
			return err
		}
		all = slices.DeleteFunc(all, func(i *Instance) bool { return !matches(i, i.Tags, attrs, in.Filters) })
		page, token, err := paginate(all, func(i *Instance) string { return i.ID }, in.MaxResults, in.NextToken)
		if err != nil {
			return err
		}
		for _, i := range page {
			out = append(out, describeInstance(st, i))
		}
		next = token
		return nil
	})
	return out, next, err
}

func describeInstance(st *State, i *Instance) InstanceDescription {
	d := InstanceDescription{Instance: *i}
	d.Instance.Tags = cloneTags(i.Tags)
	for _, n := range st.NetworkInterfaces {
		if n.Attachment != nil && n.Attachment.InstanceID == i.ID {
			d.NetworkInterfaces = append(d.NetworkInterfaces, *n.clone())
		}
	}
	slices.SortFunc(d.NetworkInterfaces, func(a, b NetworkInterface) int {
		return int(a.Attachment.DeviceIndex - b.Attachment.DeviceIndex)
	})
	return d
}

// SubnetDescription is a subnet with its count of free IPv4 addresses.
type SubnetDescription struct {
	Subnet                  Subnet
	AvailableIPAddressCount int
}

func subnetAttributes(st *State) attributes[*Subnet] {
	return attributes[*Subnet]{
		"subnet-id":            func(s *Subnet) []string { return one(s.ID) },
		"vpc-id":               func(s *Subnet) []string { return one(s.VPCID) },
		"availability-zone":    func(s *Subnet) []string { return one(s.AvailabilityZone) },
		"availability-zone-id": func(s *Subnet) []string { return one(s.AvailabilityZoneID) },
		"cidr-block":           func(s *Subnet) []string { return one(s.CIDR.String()) },
		"cidr":                 func(s *Subnet) []string { return one(s.CIDR.String()) },
		"cidrBlock":            func(s *Subnet) []string { return one(s.CIDR.String()) },
		"ipv6-cidr-block-association.ipv6-cidr-block": func(s *Subnet) []string { return one(s.IPv6CIDR.String()) },
		"state":          func(*Subnet) []string { return one("available") },
		"default-for-az": func(*Subnet) []string { return one("false") },
		"owner-id":       func(*Subnet) []string { return one(st.AccountID) },
	}
}

// DescribeSubnets lists subnets by ID and filters.
func (m *Model) DescribeSubnets(in DescribeInput) ([]SubnetDescription, string, error) {
	var out []SubnetDescription
	var next string
	err := m.read(func(st *State) error {
		if err := checkPaging(in, "subnetIds"); err != nil {
			return err
		}
		attrs := subnetAttributes(st)
		if err := checkFilters(attrs, in.Filters); err != nil {
			return err
		}
		all, err := selectByID(st.Subnets, in.IDs, func(m map[string]*Subnet, id string) (*Subnet, error) {
			if s, ok := m[id]; ok {
				return s, nil
			}
			return nil, subnetNotFound(id)
		})
		if err != nil {
			return err
		}
		all = slices.DeleteFunc(all, func(s *Subnet) bool { return !matches(s, s.Tags, attrs, in.Filters) })
		page, token, err := paginate(all, func(s *Subnet) string { return s.ID }, in.MaxResults, in.NextToken)
		if err != nil {
			return err
		}
		for _, s := range page {
			c := *s
			c.Tags = cloneTags(s.Tags)
			out = append(out, SubnetDescription{Subnet: c, AvailableIPAddressCount: usageOf(st, s.ID).availableV4(s.CIDR)})
		}
		next = token
		return nil
	})
	return out, next, err
}

func vpcAttributes(st *State) attributes[*VPC] {
	return attributes[*VPC]{
		"vpc-id":                            func(v *VPC) []string { return one(v.ID) },
		"cidr":                              func(v *VPC) []string { return one(v.CIDR.String()) },
		"cidr-block-association.cidr-block": func(v *VPC) []string { return one(v.CIDR.String()) },
		"ipv6-cidr-block-association.ipv6-cidr-block": func(v *VPC) []string { return one(v.IPv6CIDR.String()) },
		"state":      func(*VPC) []string { return one("available") },
		"is-default": func(*VPC) []string { return one("false") },
		"owner-id":   func(*VPC) []string { return one(st.AccountID) },
	}
}

// DescribeVPCs lists VPCs by ID and filters.
func (m *Model) DescribeVPCs(in DescribeInput) ([]VPC, string, error) {
	var out []VPC
	var next string
	err := m.read(func(st *State) error {
		if err := checkPaging(in, "vpcIds"); err != nil {
			return err
		}
		attrs := vpcAttributes(st)
		if err := checkFilters(attrs, in.Filters); err != nil {
			return err
		}
		all, err := selectByID(st.VPCs, in.IDs, func(m map[string]*VPC, id string) (*VPC, error) {
			if v, ok := m[id]; ok {
				return v, nil
			}
			return nil, vpcNotFound(id)
		})
		if err != nil {
			return err
		}
		all = slices.DeleteFunc(all, func(v *VPC) bool { return !matches(v, v.Tags, attrs, in.Filters) })
		page, token, err := paginate(all, func(v *VPC) string { return v.ID }, in.MaxResults, in.NextToken)
		if err != nil {
			return err
		}
		for _, v := range page {
			c := *v
			c.Tags = cloneTags(v.Tags)
			out = append(out, c)
		}
		next = token
		return nil
	})
	return out, next, err
}

func groupAttributes() attributes[*SecurityGroup] {
	return attributes[*SecurityGroup]{
		"group-id":    func(g *SecurityGroup) []string { return one(g.ID) },
		"group-name":  func(g *SecurityGroup) []string { return one(g.Name) },
		"vpc-id":      func(g *SecurityGroup) []string { return one(g.VPCID) },
		"description": func(g *SecurityGroup) []string { return one(g.Description) },
	}
}

// DescribeSecurityGroups lists groups by ID, by name and by filters.
func (m *Model) DescribeSecurityGroups(in DescribeInput, names []string) ([]SecurityGroup, string, error) {
	var out []SecurityGroup
	var next string
	err := m.read(func(st *State) error {
		if err := checkPaging(in, "groupId"); err != nil {
			return err
		}
		attrs := groupAttributes()
		if err := checkFilters(attrs, in.Filters); err != nil {
			return err
		}
		all, err := selectByID(st.SecurityGroups, in.IDs, func(m map[string]*SecurityGroup, id string) (*SecurityGroup, error) {
			if g, ok := m[id]; ok {
				return g, nil
			}
			return nil, groupNotFound(id)
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			if !slices.ContainsFunc(all, func(g *SecurityGroup) bool { return g.Name == name }) {
				return errorf(CodeInvalidGroupNotFound, "The security group '%s' does not exist in default VPC", name)
			}
		}
		all = slices.DeleteFunc(all, func(g *SecurityGroup) bool {
			return (len(names) > 0 && !slices.Contains(names, g.Name)) || !matches(g, g.Tags, attrs, in.Filters)
		})
		page, token, err := paginate(all, func(g *SecurityGroup) string { return g.ID }, in.MaxResults, in.NextToken)
		if err != nil {
			return err
		}
		for _, g := range page {
			out = append(out, *g.clone())
		}
		next = token
		return nil
	})
	return out, next, err
}

// SecurityGroupNames maps every group ID to its name, for showing groupSet
// items (names never change).
func (m *Model) SecurityGroupNames() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.st.SecurityGroups))
	for id, g := range m.st.SecurityGroups {
		out[id] = g.Name
	}
	return out
}

func groupNames(st *State, ids []string) []string {
	var out []string
	for _, id := range ids {
		if g, ok := st.SecurityGroups[id]; ok {
			out = append(out, g.Name)
		}
	}
	return out
}

func addrStrings[T interface{ String() string }](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

func prefixStrings[T interface{ String() string }](xs []T) []string { return addrStrings(xs) }
