package vpc

import (
	"net/netip"
	"strconv"
	"strings"
)

// The bootstrap operations below build the local VPC for `vpcnet local up`.
// They are not EC2 actions and the EC2 API does not expose them.

// DefaultVPCCIDR is the IPv4 block of a VPC created without one.
var DefaultVPCCIDR = netip.MustParsePrefix("10.0.0.0/16")

// VPCSpec describes a VPC to create.
type VPCSpec struct {
	CIDR netip.Prefix // DefaultVPCCIDR when zero
	Tags Tags
}

// CreateVPC creates a VPC with a random ULA IPv6 /56 and its "default"
// security group.
func (m *Model) CreateVPC(spec VPCSpec) (VPC, error) {
	if !spec.CIDR.IsValid() {
		spec.CIDR = DefaultVPCCIDR
	}
	if !spec.CIDR.Addr().Is4() || spec.CIDR.Bits() < 16 || spec.CIDR.Bits() > 28 {
		return VPC{}, errorf(CodeInvalidParameterValue, "Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", spec.CIDR)
	}
	var out VPC
	err := m.update(func(st *State) error {
		v := &VPC{
			ID:                st.newID("vpc"),
			CIDR:              spec.CIDR.Masked(),
			CIDRAssociationID: st.newID("vpc-cidr-assoc"),
			IPv6CIDR:          randomULA56(),
			IPv6AssociationID: st.newID("vpc-cidr-assoc"),
			Tags:              cloneTags(spec.Tags),
		}
		st.VPCs[v.ID] = v
		createDefaultGroup(st, v.ID)
		out = *v
		return nil
	})
	return out, err
}

// randomULA56 returns fdXX:XXXX:XXXX:XX00::/56 with a random global ID, as
// RFC 4193 asks, so two local VPCs never collide.
func randomULA56() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	copy(b[1:6], randomBytes(5))
	return netip.PrefixFrom(netip.AddrFrom16(b), 56)
}

// SubnetSpec describes a subnet to create.
type SubnetSpec struct {
	VPCID            string
	CIDR             netip.Prefix
	AvailabilityZone string // region + "a" when empty
	Tags             Tags
}

// CreateSubnet creates a subnet in a VPC, with the next free /64 of the
// VPC's IPv6 block.
func (m *Model) CreateSubnet(spec SubnetSpec) (Subnet, error) {
	var out Subnet
	err := m.update(func(st *State) error {
		v, ok := st.VPCs[spec.VPCID]
		if !ok {
			return vpcNotFound(spec.VPCID)
		}
		if err := checkSubnetCIDR(st, v, spec.CIDR); err != nil {
			return err
		}
		v6, err := nextSubnetIPv6(st, v)
		if err != nil {
			return err
		}
		az := spec.AvailabilityZone
		if az == "" {
			az = st.Region + "a"
		}
		s := &Subnet{
			ID:                 st.newID("subnet"),
			VPCID:              v.ID,
			CIDR:               spec.CIDR.Masked(),
			IPv6CIDR:           v6,
			IPv6AssociationID:  st.newID("subnet-cidr-assoc"),
			AvailabilityZone:   az,
			AvailabilityZoneID: zoneID(st.Region, az),
			Tags:               cloneTags(spec.Tags),
		}
		st.Subnets[s.ID] = s
		out = *s
		return nil
	})
	return out, err
}

func checkSubnetCIDR(st *State, v *VPC, cidr netip.Prefix) error {
	if !cidr.IsValid() || !cidr.Addr().Is4() || cidr != cidr.Masked() {
		return invalidValue("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", cidr)
	}
	if cidr.Bits() < 16 || cidr.Bits() > 28 || !v.CIDR.Contains(cidr.Addr()) || cidr.Bits() < v.CIDR.Bits() {
		return errorf(CodeInvalidSubnetRange, "The CIDR '%s' is invalid.", cidr)
	}
	for _, s := range st.Subnets {
		if s.VPCID == v.ID && s.CIDR.Overlaps(cidr) {
			return errorf(CodeInvalidSubnetConflict, "The CIDR '%s' conflicts with another subnet", cidr)
		}
	}
	return nil
}

func nextSubnetIPv6(st *State, v *VPC) (netip.Prefix, error) {
	used := map[netip.Prefix]bool{}
	for _, s := range st.Subnets {
		if s.VPCID == v.ID {
			used[s.IPv6CIDR] = true
		}
	}
	b := v.IPv6CIDR.Addr().As16()
	for i := range 256 {
		b[7] = byte(i)
		p := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if !used[p] {
			return p, nil
		}
	}
	return netip.Prefix{}, errorf(CodeInsufficientCidrBlocks, "The VPC %s has no free IPv6 /64.", v.ID)
}

// zoneID names a zone after EC2's AZ IDs (use1-az1 for us-east-1a); the
// local VPC maps letters to numbers in order, as no real account does.
func zoneID(region, az string) string {
	parts := strings.Split(region, "-")
	short := ""
	for i, part := range parts {
		if i > 0 && i < len(parts)-1 && part != "" {
			part = part[:1]
		}
		short += part
	}
	letter := 1
	if len(az) > len(region) {
		letter = int(az[len(az)-1]-'a') + 1
	}
	return short + "-az" + strconv.Itoa(letter)
}

// InstanceSpec describes an instance to launch.
type InstanceSpec struct {
	Type     string
	SubnetID string
	GroupIDs []string // the VPC's default group when empty
	// PrivateIP is the primary address of the primary ENI; the next free
	// one when zero.
	PrivateIP netip.Addr
	RoleName  string
	ImageID   string
	Tags      Tags
}

// RunInstance launches an instance: its primary ENI is created in the
// subnet and attached at device index 0 at once, as RunInstances does, with
// DeleteOnTermination set.
func (m *Model) RunInstance(spec InstanceSpec) (Instance, error) {
	if _, err := LookupInstanceType(spec.Type); err != nil {
		return Instance{}, err
	}
	var out Instance
	err := m.update(func(st *State) error {
		s, ok := st.Subnets[spec.SubnetID]
		if !ok {
			return subnetNotFound(spec.SubnetID)
		}
		in := CreateNetworkInterfaceInput{SubnetID: s.ID, Groups: spec.GroupIDs, Description: "Primary network interface"}
		if spec.PrivateIP.IsValid() {
			in.PrivateIPs = []netip.Addr{spec.PrivateIP}
		}
		eni, err := createENI(st, in)
		if err != nil {
			return err
		}
		now := m.now().UTC()
		image := spec.ImageID
		if image == "" {
			image = "ami-" + st.Seed + "000000001"
		}
		inst := &Instance{
			ID: st.newID("i"), ReservationID: st.newID("r"), Type: spec.Type, ImageID: image,
			VPCID: s.VPCID, SubnetID: s.ID, AvailabilityZone: s.AvailabilityZone, AvailabilityZoneID: s.AvailabilityZoneID,
			PrimaryENIID: eni.ID, LaunchTime: now.Truncate(1e9), State: "running", RoleName: spec.RoleName,
			Tags: cloneTags(spec.Tags),
		}
		st.Instances[inst.ID] = inst
		eni.Status = StatusInUse
		eni.Attachment = &Attachment{
			ID: st.newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: 0, Status: AttachmentAttached,
			DeleteOnTermination: true, AttachTime: now,
		}
		out = *inst
		return nil
	})
	return out, err
}

// TerminateInstance terminates an instance: interfaces attached with
// DeleteOnTermination are deleted, the others detached.
func (m *Model) TerminateInstance(id string) error {
	return m.update(func(st *State) error {
		inst, ok := st.Instances[id]
		if !ok {
			return instanceNotFound(id)
		}
		for _, n := range SortedValues(st.NetworkInterfaces) {
			if n.Attachment == nil || n.Attachment.InstanceID != id {
				continue
			}
			if n.Attachment.DeleteOnTermination {
				delete(st.NetworkInterfaces, n.ID)
				continue
			}
			n.Attachment, n.Status = nil, StatusAvailable
		}
		for kid, k := range st.AccessKeys {
			if k.InstanceID == id {
				delete(st.AccessKeys, kid)
			}
		}
		inst.State = "terminated"
		return nil
	})
}

func cloneTags(t Tags) Tags {
	if len(t) == 0 {
		return nil
	}
	c := make(Tags, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}
