package ec2api

import (
	"net/netip"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// The actions: each reads its parameters, asks the model and shapes the
// reply. EC2 semantics live in the model; nothing here decides.

type returnTrue struct {
	meta
	Return bool `xml:"return"`
}

func ok() response { return &returnTrue{Return: true} }

func (h *Handler) view() view {
	return view{account: h.model.AccountID(), region: h.model.Region(), groupNames: h.model.SecurityGroupNames()}
}

type createNetworkInterfaceResponse struct {
	meta
	NetworkInterface xmlENI `xml:"networkInterface"`
	ClientToken      string `xml:"clientToken,omitempty"`
}

func (h *Handler) createNetworkInterface(p params) (response, error) {
	in, err := createNetworkInterfaceInput(p)
	if err != nil {
		return nil, err
	}
	n, err := h.model.CreateNetworkInterface(in)
	if err != nil {
		return nil, err
	}
	return &createNetworkInterfaceResponse{NetworkInterface: h.view().eni(n, false), ClientToken: p.str("ClientToken")}, nil
}

func createNetworkInterfaceInput(p params) (vpc.CreateNetworkInterfaceInput, error) {
	var in vpc.CreateNetworkInterfaceInput
	var err error
	if in.SubnetID, err = p.required("SubnetId"); err != nil {
		return in, err
	}
	in.Description = p.str("Description")
	in.Groups = p.list("SecurityGroupId")
	in.InterfaceType = p.str("InterfaceType")
	if in.PrivateIPs, err = privateIPSpecs(p); err != nil {
		return in, err
	}
	counts := []struct {
		name string
		dst  *int
	}{
		{"SecondaryPrivateIpAddressCount", &in.SecondaryCount}, {"Ipv4PrefixCount", &in.IPv4PrefixCount},
		{"Ipv6AddressCount", &in.IPv6Count}, {"Ipv6PrefixCount", &in.IPv6PrefixCount},
	}
	for _, c := range counts {
		if *c.dst, err = p.count(c.name); err != nil {
			return in, err
		}
	}
	if in.IPv4Prefixes, err = parsePrefixes("Ipv4Prefix", p.structList("Ipv4Prefix", "Ipv4Prefix")); err != nil {
		return in, err
	}
	if in.IPv6Addresses, err = parseAddrs("Ipv6Addresses", p.structList("Ipv6Addresses", "Ipv6Address")); err != nil {
		return in, err
	}
	if in.IPv6Prefixes, err = parsePrefixes("Ipv6Prefix", p.structList("Ipv6Prefix", "Ipv6Prefix")); err != nil {
		return in, err
	}
	in.Tags, err = p.tagSpecifications("network-interface")
	return in, err
}

// privateIPSpecs merges PrivateIpAddress and PrivateIpAddresses.N into one
// list with the primary first.
func privateIPSpecs(p params) ([]netip.Addr, error) {
	var primary netip.Addr
	if v := p.str("PrivateIpAddress"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, invalidParam("PrivateIpAddress", v)
		}
		primary = a
	}
	var secondaries []netip.Addr
	for _, m := range p.members("PrivateIpAddresses") {
		a, err := netip.ParseAddr(m.str("PrivateIpAddress"))
		if err != nil {
			return nil, invalidParam("PrivateIpAddresses.PrivateIpAddress", m.str("PrivateIpAddress"))
		}
		isPrimary, err := m.boolean("Primary")
		if err != nil {
			return nil, err
		}
		switch {
		case isPrimary != nil && *isPrimary && primary.IsValid() && primary != a:
			return nil, &vpc.Error{Code: vpc.CodeInvalidParameterCombination, Message: "Only one primary private IP address may be specified."}
		case isPrimary != nil && *isPrimary:
			primary = a
		case a != primary:
			secondaries = append(secondaries, a)
		}
	}
	if !primary.IsValid() && len(secondaries) > 0 {
		primary, secondaries = secondaries[0], secondaries[1:]
	}
	if !primary.IsValid() {
		return nil, nil
	}
	return append([]netip.Addr{primary}, secondaries...), nil
}

func (h *Handler) deleteNetworkInterface(p params) (response, error) {
	id, err := p.required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	return ok(), h.model.DeleteNetworkInterface(id)
}

type attachResponse struct {
	meta
	AttachmentID     string `xml:"attachmentId"`
	NetworkCardIndex int32  `xml:"networkCardIndex"`
}

func (h *Handler) attachNetworkInterface(p params) (response, error) {
	var in vpc.AttachInput
	var err error
	if in.NetworkInterfaceID, err = p.required("NetworkInterfaceId"); err != nil {
		return nil, err
	}
	if in.InstanceID, err = p.required("InstanceId"); err != nil {
		return nil, err
	}
	if _, err = p.required("DeviceIndex"); err != nil {
		return nil, err
	}
	dev, err := p.integer("DeviceIndex")
	if err != nil {
		return nil, err
	}
	card, err := p.integer("NetworkCardIndex")
	if err != nil {
		return nil, err
	}
	in.DeviceIndex, in.NetworkCardIndex = int32(dev), int32(card)
	id, err := h.model.AttachNetworkInterface(in)
	if err != nil {
		return nil, err
	}
	return &attachResponse{AttachmentID: id, NetworkCardIndex: in.NetworkCardIndex}, nil
}

func (h *Handler) detachNetworkInterface(p params) (response, error) {
	id, err := p.required("AttachmentId")
	if err != nil {
		return nil, err
	}
	force, err := p.boolean("Force")
	if err != nil {
		return nil, err
	}
	return ok(), h.model.DetachNetworkInterface(id, force != nil && *force)
}

type describeNetworkInterfacesResponse struct {
	meta
	NetworkInterfaces set[xmlENI] `xml:"networkInterfaceSet"`
	NextToken         string      `xml:"nextToken,omitempty"`
}

func (h *Handler) describeNetworkInterfaces(p params) (response, error) {
	in, err := p.describeInput("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	enis, next, err := h.model.DescribeNetworkInterfaces(in)
	if err != nil {
		return nil, err
	}
	v := h.view()
	return &describeNetworkInterfacesResponse{
		NetworkInterfaces: setOf(mapSlice(enis, func(n vpc.NetworkInterface) xmlENI { return v.eni(n, false) })),
		NextToken:         next,
	}, nil
}

func (h *Handler) modifyNetworkInterfaceAttribute(p params) (response, error) {
	in := vpc.ModifyNetworkInterfaceInput{Groups: p.list("SecurityGroupId"), AttachmentID: p.str("Attachment.AttachmentId")}
	var err error
	if in.NetworkInterfaceID, err = p.required("NetworkInterfaceId"); err != nil {
		return nil, err
	}
	if in.SourceDestCheck, err = p.boolean("SourceDestCheck.Value"); err != nil {
		return nil, err
	}
	if in.DeleteOnTermination, err = p.boolean("Attachment.DeleteOnTermination"); err != nil {
		return nil, err
	}
	if p.has("Description.Value") {
		d := p.str("Description.Value")
		in.Description = &d
	}
	return ok(), h.model.ModifyNetworkInterfaceAttribute(in)
}

type xmlAssignedPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
}

type assignPrivateResponse struct {
	meta
	NetworkInterfaceID string                    `xml:"networkInterfaceId"`
	Addresses          set[xmlAssignedPrivateIP] `xml:"assignedPrivateIpAddressesSet"`
	Prefixes           set[xmlIPv4Prefix]        `xml:"assignedIpv4PrefixSet"`
	Return             bool                      `xml:"return"`
}

func (h *Handler) assignPrivateIPAddresses(p params) (response, error) {
	in := vpc.AssignPrivateInput{}
	var err error
	if in.NetworkInterfaceID, err = p.required("NetworkInterfaceId"); err != nil {
		return nil, err
	}
	if in.Addresses, err = parseAddrs("PrivateIpAddress", p.list("PrivateIpAddress")); err != nil {
		return nil, err
	}
	if in.Prefixes, err = parsePrefixes("Ipv4Prefix", p.list("Ipv4Prefix")); err != nil {
		return nil, err
	}
	if in.Count, err = p.count("SecondaryPrivateIpAddressCount"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = p.count("Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	reassign, err := p.boolean("AllowReassignment")
	if err != nil {
		return nil, err
	}
	in.AllowReassignment = reassign != nil && *reassign
	got, err := h.model.AssignPrivateIPAddresses(in)
	if err != nil {
		return nil, err
	}
	return &assignPrivateResponse{
		NetworkInterfaceID: in.NetworkInterfaceID, Return: true,
		Addresses: setOf(mapSlice(got.Addresses, func(a netip.Addr) xmlAssignedPrivateIP { return xmlAssignedPrivateIP{a.String()} })),
		Prefixes:  setOf(mapSlice(got.Prefixes, func(p netip.Prefix) xmlIPv4Prefix { return xmlIPv4Prefix{p.String()} })),
	}, nil
}

func (h *Handler) unassignPrivateIPAddresses(p params) (response, error) {
	id, err := p.required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	addrs, err := parseAddrs("PrivateIpAddress", p.list("PrivateIpAddress"))
	if err != nil {
		return nil, err
	}
	prefixes, err := parsePrefixes("Ipv4Prefix", p.list("Ipv4Prefix"))
	if err != nil {
		return nil, err
	}
	return ok(), h.model.UnassignPrivateIPAddresses(id, addrs, prefixes)
}

type ipv6Response struct {
	meta
	NetworkInterfaceID string `xml:"networkInterfaceId"`
	// These lists hold plain strings (<item>fd00::1</item>), unlike the
	// sets of a network interface.
	Assigned           *set[string] `xml:"assignedIpv6Addresses,omitempty"`
	AssignedPrefixes   *set[string] `xml:"assignedIpv6PrefixSet,omitempty"`
	Unassigned         *set[string] `xml:"unassignedIpv6Addresses,omitempty"`
	UnassignedPrefixes *set[string] `xml:"unassignedIpv6PrefixSet,omitempty"`
}

func ipv6Sets(got vpc.Assigned) (*set[string], *set[string]) {
	a := setOf(mapSlice(got.Addresses, netip.Addr.String))
	p := setOf(mapSlice(got.Prefixes, netip.Prefix.String))
	return &a, &p
}

func (h *Handler) assignIPv6Addresses(p params) (response, error) {
	in := vpc.AssignIPv6Input{}
	var err error
	if in.NetworkInterfaceID, err = p.required("NetworkInterfaceId"); err != nil {
		return nil, err
	}
	if in.Addresses, err = parseAddrs("Ipv6Addresses", p.list("Ipv6Addresses")); err != nil {
		return nil, err
	}
	if in.Prefixes, err = parsePrefixes("Ipv6Prefix", p.list("Ipv6Prefix")); err != nil {
		return nil, err
	}
	if in.Count, err = p.count("Ipv6AddressCount"); err != nil {
		return nil, err
	}
	if in.PrefixCount, err = p.count("Ipv6PrefixCount"); err != nil {
		return nil, err
	}
	got, err := h.model.AssignIPv6Addresses(in)
	if err != nil {
		return nil, err
	}
	r := &ipv6Response{NetworkInterfaceID: in.NetworkInterfaceID}
	r.Assigned, r.AssignedPrefixes = ipv6Sets(got)
	return r, nil
}

func (h *Handler) unassignIPv6Addresses(p params) (response, error) {
	id, err := p.required("NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	addrs, err := parseAddrs("Ipv6Addresses", p.list("Ipv6Addresses"))
	if err != nil {
		return nil, err
	}
	prefixes, err := parsePrefixes("Ipv6Prefix", p.list("Ipv6Prefix"))
	if err != nil {
		return nil, err
	}
	got, err := h.model.UnassignIPv6Addresses(id, addrs, prefixes)
	if err != nil {
		return nil, err
	}
	r := &ipv6Response{NetworkInterfaceID: id}
	r.Unassigned, r.UnassignedPrefixes = ipv6Sets(got)
	return r, nil
}

func (h *Handler) createTags(p params) (response, error) {
	tags := tagsFrom(p.members("Tag"))
	if len(tags) == 0 {
		return nil, &vpc.Error{Code: vpc.CodeMissingParameter, Message: "The request must contain the parameter tagSet"}
	}
	return ok(), h.model.CreateTags(p.list("ResourceId"), tags)
}

func (h *Handler) deleteTags(p params) (response, error) {
	var keys []vpc.TagKey
	for _, m := range p.members("Tag") {
		k := vpc.TagKey{Key: m.str("Key")}
		if m.has("Value") {
			v := m.str("Value")
			k.Value = &v
		}
		keys = append(keys, k)
	}
	return ok(), h.model.DeleteTags(p.list("ResourceId"), keys)
}

type describeInstancesResponse struct {
	meta
	Reservations set[xmlReservation] `xml:"reservationSet"`
	NextToken    string              `xml:"nextToken,omitempty"`
}

func (h *Handler) describeInstances(p params) (response, error) {
	in, err := p.describeInput("InstanceId")
	if err != nil {
		return nil, err
	}
	insts, next, err := h.model.DescribeInstances(in)
	if err != nil {
		return nil, err
	}
	v := h.view()
	r := &describeInstancesResponse{NextToken: next}
	for _, d := range insts {
		x := v.instance(d)
		r.Reservations.Items = append(r.Reservations.Items, xmlReservation{
			ReservationID: d.Instance.ReservationID, OwnerID: v.account, Instances: setOf([]xmlInstance{x}),
		})
	}
	return r, nil
}

type describeInstanceTypesResponse struct {
	meta
	InstanceTypes set[xmlInstanceType] `xml:"instanceTypeSet"`
}

func (h *Handler) describeInstanceTypes(p params) (response, error) {
	if fs := p.filters(); len(fs) > 0 {
		return nil, &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: "The filter '" + fs[0].Name + "' is invalid"}
	}
	types, err := vpc.DescribeInstanceTypes(p.list("InstanceType"))
	if err != nil {
		return nil, err
	}
	return &describeInstanceTypesResponse{InstanceTypes: setOf(mapSlice(types, instanceType))}, nil
}

type describeSubnetsResponse struct {
	meta
	Subnets   set[xmlSubnet] `xml:"subnetSet"`
	NextToken string         `xml:"nextToken,omitempty"`
}

func (h *Handler) describeSubnets(p params) (response, error) {
	in, err := p.describeInput("SubnetId")
	if err != nil {
		return nil, err
	}
	subnets, next, err := h.model.DescribeSubnets(in)
	if err != nil {
		return nil, err
	}
	return &describeSubnetsResponse{Subnets: setOf(mapSlice(subnets, h.view().subnet)), NextToken: next}, nil
}

type describeVPCsResponse struct {
	meta
	VPCs      set[xmlVPC] `xml:"vpcSet"`
	NextToken string      `xml:"nextToken,omitempty"`
}

func (h *Handler) describeVPCs(p params) (response, error) {
	in, err := p.describeInput("VpcId")
	if err != nil {
		return nil, err
	}
	vpcs, next, err := h.model.DescribeVPCs(in)
	if err != nil {
		return nil, err
	}
	return &describeVPCsResponse{VPCs: setOf(mapSlice(vpcs, h.view().vpc)), NextToken: next}, nil
}

type describeSecurityGroupsResponse struct {
	meta
	Groups    set[xmlSecurityGroup] `xml:"securityGroupInfo"`
	NextToken string                `xml:"nextToken,omitempty"`
}

func (h *Handler) describeSecurityGroups(p params) (response, error) {
	in, err := p.describeInput("GroupId")
	if err != nil {
		return nil, err
	}
	groups, next, err := h.model.DescribeSecurityGroups(in, p.list("GroupName"))
	if err != nil {
		return nil, err
	}
	return &describeSecurityGroupsResponse{Groups: setOf(mapSlice(groups, h.view().securityGroup)), NextToken: next}, nil
}

type createSecurityGroupResponse struct {
	meta
	Return           bool        `xml:"return"`
	GroupID          string      `xml:"groupId"`
	SecurityGroupARN string      `xml:"securityGroupArn"`
	TagSet           set[xmlTag] `xml:"tagSet"`
}

func (h *Handler) createSecurityGroup(p params) (response, error) {
	tags, err := p.tagSpecifications("security-group")
	if err != nil {
		return nil, err
	}
	g, err := h.model.CreateSecurityGroup(vpc.CreateSecurityGroupInput{
		Name: p.str("GroupName"), Description: p.str("GroupDescription"), VPCID: p.str("VpcId"), Tags: tags,
	})
	if err != nil {
		return nil, err
	}
	v := h.view()
	return &createSecurityGroupResponse{
		Return: true, GroupID: g.ID, TagSet: tagSet(g.Tags),
		SecurityGroupARN: "arn:aws:ec2:" + v.region + ":" + v.account + ":security-group/" + g.ID,
	}, nil
}

type deleteSecurityGroupResponse struct {
	meta
	Return  bool   `xml:"return"`
	GroupID string `xml:"groupId"`
}

func (h *Handler) deleteSecurityGroup(p params) (response, error) {
	id, err := h.model.DeleteSecurityGroup(p.str("GroupId"), p.str("GroupName"))
	if err != nil {
		return nil, err
	}
	return &deleteSecurityGroupResponse{Return: true, GroupID: id}, nil
}

type authorizeResponse struct {
	meta
	Return bool         `xml:"return"`
	Rules  set[xmlRule] `xml:"securityGroupRuleSet"`
}

func (h *Handler) authorize(egress bool) func(p params) (response, error) {
	return func(p params) (response, error) {
		id, err := p.required("GroupId")
		if err != nil {
			return nil, err
		}
		perms, err := p.permissions()
		if err != nil {
			return nil, err
		}
		rules, err := h.model.AuthorizeSecurityGroupRules(id, egress, perms)
		if err != nil {
			return nil, err
		}
		v := h.view()
		return &authorizeResponse{Return: true, Rules: setOf(mapSlice(rules, func(r vpc.Rule) xmlRule { return v.rule(id, egress, r) }))}, nil
	}
}

func (h *Handler) revoke(egress bool) func(p params) (response, error) {
	return func(p params) (response, error) {
		id, err := p.required("GroupId")
		if err != nil {
			return nil, err
		}
		perms, err := p.permissions()
		if err != nil {
			return nil, err
		}
		return ok(), h.model.RevokeSecurityGroupRules(id, egress, perms)
	}
}
