package vpc

import (
	"net/netip"
	"slices"
)

// CreateNetworkInterfaceInput is CreateNetworkInterface's request.
type CreateNetworkInterfaceInput struct {
	SubnetID    string
	Description string
	Groups      []string // the VPC's default group when empty
	// PrivateIPs are explicit IPv4 addresses, the primary first.
	PrivateIPs []netip.Addr
	// SecondaryCount asks for that many secondary addresses besides the
	// primary.
	SecondaryCount  int
	IPv4Prefixes    []netip.Prefix
	IPv4PrefixCount int
	IPv6Addresses   []netip.Addr
	IPv6Count       int
	IPv6Prefixes    []netip.Prefix
	IPv6PrefixCount int
	InterfaceType   string // "interface" when empty
	Tags            Tags
}

// CreateNetworkInterface creates an available ENI in a subnet.
func (m *Model) CreateNetworkInterface(in CreateNetworkInterfaceInput) (NetworkInterface, error) {
	var out NetworkInterface
	err := m.update(func(st *State) error {
		n, err := createENI(st, in)
		if err != nil {
			return err
		}
		out = *n.clone()
		return nil
	})
	return out, err
}

func createENI(st *State, in CreateNetworkInterfaceInput) (*NetworkInterface, error) {
	if err := checkCreateCombination(in); err != nil {
		return nil, err
	}
	s, ok := st.Subnets[in.SubnetID]
	if !ok {
		return nil, subnetNotFound(in.SubnetID)
	}
	groups := slices.Clone(in.Groups)
	if len(groups) == 0 {
		groups = []string{defaultGroupOf(st, s.VPCID)}
	}
	if err := checkGroupCount(groups); err != nil {
		return nil, err
	}
	if err := checkDescription("description", in.Description); err != nil {
		return nil, err
	}
	if err := checkGroups(st, s.VPCID, groups); err != nil {
		return nil, err
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	ifType := in.InterfaceType
	if ifType == "" {
		ifType = "interface"
	}
	n := &NetworkInterface{
		SubnetID: s.ID, VPCID: s.VPCID, AvailabilityZone: s.AvailabilityZone, Description: in.Description,
		Groups: groups, SourceDestCheck: true, Status: StatusAvailable, InterfaceType: ifType, Tags: cloneTags(in.Tags),
	}
	u := usageOf(st, s.ID)
	secondaries := in.SecondaryCount
	if len(in.PrivateIPs) == 0 {
		secondaries++ // the primary
	}
	v4, err := allocateV4(s, u, n, in.PrivateIPs, secondaries, false, st)
	if err != nil {
		return nil, err
	}
	for i, a := range v4 {
		n.PrivateIPs = append(n.PrivateIPs, PrivateIP{Address: a, Primary: i == 0})
	}
	if n.IPv4Prefixes, err = allocateV4Prefixes(s, u, n, in.IPv4Prefixes, in.IPv4PrefixCount); err != nil {
		return nil, err
	}
	if ipv4Slots(n) > maxAddressesPerInterface {
		return nil, addressLimit()
	}
	if n.IPv6Addresses, err = allocateV6(s, u, n, in.IPv6Addresses, in.IPv6Count); err != nil {
		return nil, err
	}
	if n.IPv6Prefixes, err = allocateV6Prefixes(s, u, n, in.IPv6Prefixes, in.IPv6PrefixCount); err != nil {
		return nil, err
	}
	if ipv6Slots(n) > maxAddressesPerInterface {
		return nil, addressLimit()
	}
	n.ID = st.newID("eni")
	n.MAC = st.newMAC()
	st.NetworkInterfaces[n.ID] = n
	return n, nil
}

func checkCreateCombination(in CreateNetworkInterfaceInput) error {
	switch {
	case len(in.PrivateIPs) > 1 && in.SecondaryCount > 0:
		return combination("You may specify secondaryPrivateIpAddressCount or specific secondary private IP addresses, but not both.")
	case len(in.IPv4Prefixes) > 0 && in.IPv4PrefixCount > 0:
		return combination("You may specify ipv4PrefixCount or specific IPv4 prefixes, but not both.")
	case len(in.IPv6Addresses) > 0 && in.IPv6Count > 0:
		return combination("You may specify ipv6AddressCount or specific IPv6 addresses, but not both.")
	case len(in.IPv6Prefixes) > 0 && in.IPv6PrefixCount > 0:
		return combination("You may specify ipv6PrefixCount or specific IPv6 prefixes, but not both.")
	case in.SecondaryCount < 0 || in.IPv4PrefixCount < 0 || in.IPv6Count < 0 || in.IPv6PrefixCount < 0:
		return invalidValue("Counts must not be negative.")
	}
	return nil
}

// ipv4Slots counts an ENI's IPv4 addresses and prefixes against the
// per-interface limit: on Nitro a /28 prefix takes one slot.
func ipv4Slots(n *NetworkInterface) int { return len(n.PrivateIPs) + len(n.IPv4Prefixes) }

func ipv6Slots(n *NetworkInterface) int { return len(n.IPv6Addresses) + len(n.IPv6Prefixes) }

func addressLimit() *Error {
	return errorf(CodePrivateIPAddressLimitExceeded, "Number of private addresses will exceed limit.")
}

// DeleteNetworkInterface deletes an ENI that is not attached.
func (m *Model) DeleteNetworkInterface(id string) error {
	return m.update(func(st *State) error {
		n, err := findENI(st, id)
		if err != nil {
			return err
		}
		if n.Attachment != nil {
			return invalidValue("Network interface '%s' is currently in use.", id)
		}
		delete(st.NetworkInterfaces, id)
		return nil
	})
}

func findENI(st *State, id string) (*NetworkInterface, error) {
	if !hasPrefix(id, "eni") {
		return nil, errorf(CodeInvalidNetworkInterfaceIDMalformed, "Invalid id: \"%s\" (expecting \"eni-...\")", id)
	}
	n, ok := st.NetworkInterfaces[id]
	if !ok {
		return nil, eniNotFound(id)
	}
	return n, nil
}

// ModifyNetworkInterfaceInput is ModifyNetworkInterfaceAttribute's
// request: exactly one attribute is set.
type ModifyNetworkInterfaceInput struct {
	NetworkInterfaceID  string
	SourceDestCheck     *bool
	Description         *string
	Groups              []string
	AttachmentID        string
	DeleteOnTermination *bool
}

// ModifyNetworkInterfaceAttribute changes one attribute of an ENI.
func (m *Model) ModifyNetworkInterfaceAttribute(in ModifyNetworkInterfaceInput) error {
	set := 0
	for _, b := range []bool{in.SourceDestCheck != nil, in.Description != nil, len(in.Groups) > 0, in.DeleteOnTermination != nil} {
		if b {
			set++
		}
	}
	if set == 0 {
		return errorf(CodeMissingParameter, "No attributes specified.")
	}
	if set > 1 {
		return combination("Fields for multiple attribute types specified: only one attribute can be modified at a time.")
	}
	return m.update(func(st *State) error {
		n, err := findENI(st, in.NetworkInterfaceID)
		if err != nil {
			return err
		}
		switch {
		case in.SourceDestCheck != nil:
			n.SourceDestCheck = *in.SourceDestCheck
		case in.Description != nil:
			if err := checkDescription("description", *in.Description); err != nil {
				return err
			}
			n.Description = *in.Description
		case len(in.Groups) > 0:
			if err := checkGroupCount(in.Groups); err != nil {
				return err
			}
			if err := checkGroups(st, n.VPCID, in.Groups); err != nil {
				return err
			}
			n.Groups = slices.Compact(slices.Clone(in.Groups))
		default:
			if n.Attachment == nil || n.Attachment.ID != in.AttachmentID {
				return errorf(CodeInvalidAttachmentIDNotFound, "The attachment ID '%s' does not exist", in.AttachmentID)
			}
			n.Attachment.DeleteOnTermination = *in.DeleteOnTermination
		}
		return nil
	})
}
