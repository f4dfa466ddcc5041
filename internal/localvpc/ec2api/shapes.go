package ec2api

import (
	"net/netip"
	"sort"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// The XML shapes below are EC2's, element for element as aws-sdk-go-v2's
// and botocore's ec2 deserialisers read them. Sets are <xSet><item>..., and
// the sets EC2 always sends (groupSet, tagSet, ...) are sent even when
// empty, so that clients see [] where EC2 gives [].

// meta is the part of every response that is not the action's own.
type meta struct {
	RequestID string `xml:"requestId"`
}

func (m *meta) setRequestID(id string) { m.RequestID = id }

// response is what every action returns to be written.
type response interface{ setRequestID(string) }

type set[T any] struct {
	Items []T `xml:"item"`
}

func setOf[T any](items []T) set[T] { return set[T]{Items: items} }

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagSet(t vpc.Tags) set[xmlTag] {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]xmlTag, len(keys))
	for i, k := range keys {
		out[i] = xmlTag{Key: k, Value: t[k]}
	}
	return setOf(out)
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

func groupSet(ids []string, names map[string]string) set[xmlGroup] {
	out := make([]xmlGroup, len(ids))
	for i, id := range ids {
		out[i] = xmlGroup{GroupID: id, GroupName: names[id]}
	}
	return setOf(out)
}

type xmlPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	PrivateDNSName   string `xml:"privateDnsName"`
	Primary          bool   `xml:"primary"`
}

type xmlIPv6Address struct {
	Address string `xml:"ipv6Address"`
}

type xmlIPv4Prefix struct {
	Prefix string `xml:"ipv4Prefix"`
}

type xmlIPv6Prefix struct {
	Prefix string `xml:"ipv6Prefix"`
}

type xmlAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId,omitempty"`
	InstanceOwnerID     string `xml:"instanceOwnerId,omitempty"`
	DeviceIndex         int32  `xml:"deviceIndex"`
	NetworkCardIndex    int32  `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

// xmlENI serves both NetworkInterface (DescribeNetworkInterfaces) and
// InstanceNetworkInterface (DescribeInstances): the second is a subset, and
// clients skip elements they do not know.
type xmlENI struct {
	NetworkInterfaceID string              `xml:"networkInterfaceId"`
	SubnetID           string              `xml:"subnetId"`
	VPCID              string              `xml:"vpcId"`
	AvailabilityZone   string              `xml:"availabilityZone"`
	Description        string              `xml:"description"`
	OwnerID            string              `xml:"ownerId"`
	RequesterID        string              `xml:"requesterId,omitempty"`
	RequesterManaged   bool                `xml:"requesterManaged"`
	Status             string              `xml:"status"`
	MACAddress         string              `xml:"macAddress"`
	PrivateIPAddress   string              `xml:"privateIpAddress"`
	PrivateDNSName     string              `xml:"privateDnsName"`
	SourceDestCheck    bool                `xml:"sourceDestCheck"`
	InterfaceType      string              `xml:"interfaceType"`
	GroupSet           set[xmlGroup]       `xml:"groupSet"`
	Attachment         *xmlAttachment      `xml:"attachment,omitempty"`
	TagSet             *set[xmlTag]        `xml:"tagSet,omitempty"`
	PrivateIPs         set[xmlPrivateIP]   `xml:"privateIpAddressesSet"`
	IPv6Addresses      set[xmlIPv6Address] `xml:"ipv6AddressesSet"`
	IPv4Prefixes       *set[xmlIPv4Prefix] `xml:"ipv4PrefixSet,omitempty"`
	IPv6Prefixes       *set[xmlIPv6Prefix] `xml:"ipv6PrefixSet,omitempty"`
	IPv6Native         bool                `xml:"ipv6Native"`
}

// view holds what rendering needs besides the resource itself.
type view struct {
	account    string
	region     string
	groupNames map[string]string
}

func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (v view) eni(n vpc.NetworkInterface, inInstance bool) xmlENI {
	x := xmlENI{
		NetworkInterfaceID: n.ID, SubnetID: n.SubnetID, VPCID: n.VPCID, Description: n.Description,
		OwnerID: v.account, RequesterID: n.RequesterID, RequesterManaged: n.RequesterID != "",
		Status: n.Status, MACAddress: n.MAC, SourceDestCheck: n.SourceDestCheck, InterfaceType: n.InterfaceType,
		GroupSet: groupSet(n.Groups, v.groupNames),
	}
	if p := n.PrimaryIP(); p.IsValid() {
		x.PrivateIPAddress = p.String()
		x.PrivateDNSName = vpc.PrivateDNSName(p, v.region)
	}
	for _, p := range n.PrivateIPs {
		x.PrivateIPs.Items = append(x.PrivateIPs.Items, xmlPrivateIP{
			PrivateIPAddress: p.Address.String(), PrivateDNSName: vpc.PrivateDNSName(p.Address, v.region), Primary: p.Primary,
		})
	}
	for _, a := range n.IPv6Addresses {
		x.IPv6Addresses.Items = append(x.IPv6Addresses.Items, xmlIPv6Address{Address: a.String()})
	}
	if len(n.IPv4Prefixes) > 0 {
		s := setOf(mapSlice(n.IPv4Prefixes, func(p netip.Prefix) xmlIPv4Prefix { return xmlIPv4Prefix{p.String()} }))
		x.IPv4Prefixes = &s
	}
	if len(n.IPv6Prefixes) > 0 {
		s := setOf(mapSlice(n.IPv6Prefixes, func(p netip.Prefix) xmlIPv6Prefix { return xmlIPv6Prefix{p.String()} }))
		x.IPv6Prefixes = &s
	}
	if a := n.Attachment; a != nil {
		x.Attachment = &xmlAttachment{
			AttachmentID: a.ID, DeviceIndex: a.DeviceIndex, NetworkCardIndex: a.NetworkCardIndex, Status: a.Status,
			AttachTime: timestamp(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination,
		}
		if !inInstance {
			x.Attachment.InstanceID, x.Attachment.InstanceOwnerID = a.InstanceID, v.account
		}
	}
	if !inInstance {
		x.AvailabilityZone = n.AvailabilityZone
		t := tagSet(n.Tags)
		x.TagSet = &t
	}
	return x
}

type xmlInstanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlPlacement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	GroupName        string `xml:"groupName"`
	Tenancy          string `xml:"tenancy"`
}

type xmlProfile struct {
	ARN string `xml:"arn"`
	ID  string `xml:"id"`
}

type xmlInstance struct {
	InstanceID         string           `xml:"instanceId"`
	ImageID            string           `xml:"imageId"`
	InstanceState      xmlInstanceState `xml:"instanceState"`
	PrivateDNSName     string           `xml:"privateDnsName"`
	DNSName            string           `xml:"dnsName"`
	AMILaunchIndex     int              `xml:"amiLaunchIndex"`
	InstanceType       string           `xml:"instanceType"`
	LaunchTime         string           `xml:"launchTime"`
	Placement          xmlPlacement     `xml:"placement"`
	SubnetID           string           `xml:"subnetId"`
	VPCID              string           `xml:"vpcId"`
	PrivateIPAddress   string           `xml:"privateIpAddress"`
	SourceDestCheck    bool             `xml:"sourceDestCheck"`
	GroupSet           set[xmlGroup]    `xml:"groupSet"`
	Architecture       string           `xml:"architecture"`
	RootDeviceType     string           `xml:"rootDeviceType"`
	RootDeviceName     string           `xml:"rootDeviceName"`
	VirtualizationType string           `xml:"virtualizationType"`
	Hypervisor         string           `xml:"hypervisor"`
	EnaSupport         bool             `xml:"enaSupport"`
	IAMInstanceProfile *xmlProfile      `xml:"iamInstanceProfile,omitempty"`
	TagSet             set[xmlTag]      `xml:"tagSet"`
	NetworkInterfaces  set[xmlENI]      `xml:"networkInterfaceSet"`
}

type xmlReservation struct {
	ReservationID string           `xml:"reservationId"`
	OwnerID       string           `xml:"ownerId"`
	GroupSet      set[xmlGroup]    `xml:"groupSet"`
	Instances     set[xmlInstance] `xml:"instancesSet"`
}

// instanceStateCodes are EC2's codes for instance-state-name.
var instanceStateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func (v view) instance(d vpc.InstanceDescription) xmlInstance {
	i := d.Instance
	x := xmlInstance{
		InstanceID: i.ID, ImageID: i.ImageID, InstanceState: xmlInstanceState{Code: instanceStateCodes[i.State], Name: i.State},
		InstanceType: i.Type, LaunchTime: timestamp(i.LaunchTime),
		Placement: xmlPlacement{AvailabilityZone: i.AvailabilityZone, Tenancy: "default"},
		SubnetID:  i.SubnetID, VPCID: i.VPCID, Architecture: "x86_64", RootDeviceType: "ebs", RootDeviceName: "/dev/xvda",
		VirtualizationType: "hvm", Hypervisor: "xen", EnaSupport: true, TagSet: tagSet(i.Tags),
	}
	if i.RoleName != "" {
		x.IAMInstanceProfile = &xmlProfile{ARN: "arn:aws:iam::" + v.account + ":instance-profile/" + i.RoleName, ID: "AIPA" + i.ID[2:]}
	}
	for _, n := range d.NetworkInterfaces {
		x.NetworkInterfaces.Items = append(x.NetworkInterfaces.Items, v.eni(n, true))
		if n.ID == i.PrimaryENIID {
			x.PrivateIPAddress = n.PrimaryIP().String()
			x.PrivateDNSName = vpc.PrivateDNSName(n.PrimaryIP(), v.region)
			x.SourceDestCheck = n.SourceDestCheck
			x.GroupSet = groupSet(n.Groups, v.groupNames)
		}
	}
	return x
}

type xmlCIDRState struct {
	State string `xml:"state"`
}

type xmlIPv6Association struct {
	AssociationID      string       `xml:"associationId"`
	IPv6CIDRBlock      string       `xml:"ipv6CidrBlock"`
	IPv6CIDRBlockState xmlCIDRState `xml:"ipv6CidrBlockState"`
	NetworkBorderGroup string       `xml:"networkBorderGroup,omitempty"`
}

type xmlSubnet struct {
	SubnetID                    string                  `xml:"subnetId"`
	SubnetARN                   string                  `xml:"subnetArn"`
	State                       string                  `xml:"state"`
	VPCID                       string                  `xml:"vpcId"`
	OwnerID                     string                  `xml:"ownerId"`
	CIDRBlock                   string                  `xml:"cidrBlock"`
	IPv6CIDRBlockAssociationSet set[xmlIPv6Association] `xml:"ipv6CidrBlockAssociationSet"`
	AvailableIPAddressCount     int                     `xml:"availableIpAddressCount"`
	AvailabilityZone            string                  `xml:"availabilityZone"`
	AvailabilityZoneID          string                  `xml:"availabilityZoneId"`
	DefaultForAz                bool                    `xml:"defaultForAz"`
	MapPublicIPOnLaunch         bool                    `xml:"mapPublicIpOnLaunch"`
	AssignIPv6OnCreation        bool                    `xml:"assignIpv6AddressOnCreation"`
	IPv6Native                  bool                    `xml:"ipv6Native"`
	TagSet                      set[xmlTag]             `xml:"tagSet"`
}

func (v view) subnet(d vpc.SubnetDescription) xmlSubnet {
	s := d.Subnet
	return xmlSubnet{
		SubnetID: s.ID, SubnetARN: "arn:aws:ec2:" + v.region + ":" + v.account + ":subnet/" + s.ID, State: "available",
		VPCID: s.VPCID, OwnerID: v.account, CIDRBlock: s.CIDR.String(),
		IPv6CIDRBlockAssociationSet: setOf([]xmlIPv6Association{{
			AssociationID: s.IPv6AssociationID, IPv6CIDRBlock: s.IPv6CIDR.String(), IPv6CIDRBlockState: xmlCIDRState{"associated"},
		}}),
		AvailableIPAddressCount: d.AvailableIPAddressCount, AvailabilityZone: s.AvailabilityZone,
		AvailabilityZoneID: s.AvailabilityZoneID, TagSet: tagSet(s.Tags),
	}
}

type xmlCIDRAssociation struct {
	AssociationID  string       `xml:"associationId"`
	CIDRBlock      string       `xml:"cidrBlock"`
	CIDRBlockState xmlCIDRState `xml:"cidrBlockState"`
}

type xmlVPC struct {
	VPCID                       string                  `xml:"vpcId"`
	OwnerID                     string                  `xml:"ownerId"`
	State                       string                  `xml:"state"`
	CIDRBlock                   string                  `xml:"cidrBlock"`
	CIDRBlockAssociationSet     set[xmlCIDRAssociation] `xml:"cidrBlockAssociationSet"`
	IPv6CIDRBlockAssociationSet set[xmlIPv6Association] `xml:"ipv6CidrBlockAssociationSet"`
	DHCPOptionsID               string                  `xml:"dhcpOptionsId"`
	InstanceTenancy             string                  `xml:"instanceTenancy"`
	IsDefault                   bool                    `xml:"isDefault"`
	TagSet                      set[xmlTag]             `xml:"tagSet"`
}

func (v view) vpc(x vpc.VPC) xmlVPC {
	return xmlVPC{
		VPCID: x.ID, OwnerID: v.account, State: "available", CIDRBlock: x.CIDR.String(),
		CIDRBlockAssociationSet: setOf([]xmlCIDRAssociation{{AssociationID: x.CIDRAssociationID, CIDRBlock: x.CIDR.String(), CIDRBlockState: xmlCIDRState{"associated"}}}),
		IPv6CIDRBlockAssociationSet: setOf([]xmlIPv6Association{{
			AssociationID: x.IPv6AssociationID, IPv6CIDRBlock: x.IPv6CIDR.String(), IPv6CIDRBlockState: xmlCIDRState{"associated"}, NetworkBorderGroup: v.region,
		}}),
		DHCPOptionsID: "default", InstanceTenancy: "default", TagSet: tagSet(x.Tags),
	}
}

type xmlGroupPair struct {
	UserID      string `xml:"userId"`
	GroupID     string `xml:"groupId"`
	Description string `xml:"description,omitempty"`
}

type xmlIPRange struct {
	CIDRIP      string `xml:"cidrIp"`
	Description string `xml:"description,omitempty"`
}

type xmlIPv6Range struct {
	CIDRIPv6    string `xml:"cidrIpv6"`
	Description string `xml:"description,omitempty"`
}

type xmlPermission struct {
	IPProtocol    string            `xml:"ipProtocol"`
	FromPort      *int32            `xml:"fromPort,omitempty"`
	ToPort        *int32            `xml:"toPort,omitempty"`
	Groups        set[xmlGroupPair] `xml:"groups"`
	IPRanges      set[xmlIPRange]   `xml:"ipRanges"`
	IPv6Ranges    set[xmlIPv6Range] `xml:"ipv6Ranges"`
	PrefixListIDs set[struct{}]     `xml:"prefixListIds"`
}

type xmlSecurityGroup struct {
	OwnerID             string             `xml:"ownerId"`
	GroupID             string             `xml:"groupId"`
	GroupName           string             `xml:"groupName"`
	GroupDescription    string             `xml:"groupDescription"`
	VPCID               string             `xml:"vpcId"`
	SecurityGroupARN    string             `xml:"securityGroupArn"`
	IPPermissions       set[xmlPermission] `xml:"ipPermissions"`
	IPPermissionsEgress set[xmlPermission] `xml:"ipPermissionsEgress"`
	TagSet              set[xmlTag]        `xml:"tagSet"`
}

func (v view) securityGroup(g vpc.SecurityGroup) xmlSecurityGroup {
	return xmlSecurityGroup{
		OwnerID: v.account, GroupID: g.ID, GroupName: g.Name, GroupDescription: g.Description, VPCID: g.VPCID,
		SecurityGroupARN:    "arn:aws:ec2:" + v.region + ":" + v.account + ":security-group/" + g.ID,
		IPPermissions:       setOf(v.permissions(g.Ingress)),
		IPPermissionsEgress: setOf(v.permissions(g.Egress)),
		TagSet:              tagSet(g.Tags),
	}
}

func (v view) permissions(rules []vpc.Rule) []xmlPermission {
	var out []xmlPermission
	for _, p := range vpc.Permissions(rules) {
		x := xmlPermission{IPProtocol: p.Protocol}
		if p.Protocol != "-1" && (p.FromPort != -1 || p.ToPort != -1 || p.Protocol == "icmp" || p.Protocol == "icmpv6") {
			from, to := p.FromPort, p.ToPort
			x.FromPort, x.ToPort = &from, &to
		}
		for _, c := range p.CIDRs {
			if c.CIDR.Addr().Is4() {
				x.IPRanges.Items = append(x.IPRanges.Items, xmlIPRange{CIDRIP: c.CIDR.String(), Description: c.Description})
			} else {
				x.IPv6Ranges.Items = append(x.IPv6Ranges.Items, xmlIPv6Range{CIDRIPv6: c.CIDR.String(), Description: c.Description})
			}
		}
		for _, g := range p.Groups {
			x.Groups.Items = append(x.Groups.Items, xmlGroupPair{UserID: v.account, GroupID: g.GroupID, Description: g.Description})
		}
		out = append(out, x)
	}
	return out
}

type xmlReferencedGroup struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type xmlRule struct {
	SecurityGroupRuleID string              `xml:"securityGroupRuleId"`
	GroupID             string              `xml:"groupId"`
	GroupOwnerID        string              `xml:"groupOwnerId"`
	IsEgress            bool                `xml:"isEgress"`
	IPProtocol          string              `xml:"ipProtocol"`
	FromPort            int32               `xml:"fromPort"`
	ToPort              int32               `xml:"toPort"`
	CIDRIPv4            string              `xml:"cidrIpv4,omitempty"`
	CIDRIPv6            string              `xml:"cidrIpv6,omitempty"`
	ReferencedGroup     *xmlReferencedGroup `xml:"referencedGroupInfo,omitempty"`
	Description         string              `xml:"description,omitempty"`
}

func (v view) rule(groupID string, egress bool, r vpc.Rule) xmlRule {
	x := xmlRule{
		SecurityGroupRuleID: r.ID, GroupID: groupID, GroupOwnerID: v.account, IsEgress: egress,
		IPProtocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort, Description: r.Description,
	}
	switch {
	case r.GroupID != "":
		x.ReferencedGroup = &xmlReferencedGroup{GroupID: r.GroupID, UserID: v.account}
	case r.CIDR.Addr().Is4():
		x.CIDRIPv4 = r.CIDR.String()
	default:
		x.CIDRIPv6 = r.CIDR.String()
	}
	return x
}

type xmlNetworkCard struct {
	NetworkCardIndex         int32  `xml:"networkCardIndex"`
	NetworkPerformance       string `xml:"networkPerformance"`
	MaximumNetworkInterfaces int32  `xml:"maximumNetworkInterfaces"`
}

type xmlNetworkInfo struct {
	NetworkPerformance           string              `xml:"networkPerformance"`
	MaximumNetworkInterfaces     int32               `xml:"maximumNetworkInterfaces"`
	MaximumNetworkCards          int32               `xml:"maximumNetworkCards"`
	DefaultNetworkCardIndex      int32               `xml:"defaultNetworkCardIndex"`
	NetworkCards                 set[xmlNetworkCard] `xml:"networkCards"`
	IPv4AddressesPerInterface    int32               `xml:"ipv4AddressesPerInterface"`
	IPv6AddressesPerInterface    int32               `xml:"ipv6AddressesPerInterface"`
	IPv6Supported                bool                `xml:"ipv6Supported"`
	EnaSupport                   string              `xml:"enaSupport"`
	EfaSupported                 bool                `xml:"efaSupported"`
	EncryptionInTransitSupported bool                `xml:"encryptionInTransitSupported"`
}

type xmlInstanceType struct {
	InstanceType      string `xml:"instanceType"`
	CurrentGeneration bool   `xml:"currentGeneration"`
	FreeTierEligible  bool   `xml:"freeTierEligible"`
	BareMetal         bool   `xml:"bareMetal"`
	Hypervisor        string `xml:"hypervisor"`
	VCPUInfo          struct {
		DefaultVCPUs int32 `xml:"defaultVCpus"`
	} `xml:"vCpuInfo"`
	MemoryInfo struct {
		SizeInMiB int64 `xml:"sizeInMiB"`
	} `xml:"memoryInfo"`
	NetworkInfo xmlNetworkInfo `xml:"networkInfo"`
}

func instanceType(t vpc.InstanceType) xmlInstanceType {
	x := xmlInstanceType{InstanceType: t.Name, CurrentGeneration: true, Hypervisor: "xen"}
	if t.Nitro {
		x.Hypervisor = "nitro"
	}
	x.VCPUInfo.DefaultVCPUs = t.VCPUs
	x.MemoryInfo.SizeInMiB = t.MemoryMiB
	x.NetworkInfo = xmlNetworkInfo{
		NetworkPerformance: t.NetworkPerformance, MaximumNetworkInterfaces: t.MaxNetworkInterfaces, MaximumNetworkCards: 1,
		NetworkCards:              setOf([]xmlNetworkCard{{NetworkPerformance: t.NetworkPerformance, MaximumNetworkInterfaces: t.MaxNetworkInterfaces}}),
		IPv4AddressesPerInterface: t.IPv4PerInterface, IPv6AddressesPerInterface: t.IPv6PerInterface,
		IPv6Supported: true, EnaSupport: "required",
	}
	return x
}

func mapSlice[T, U any](in []T, f func(T) U) []U {
	out := make([]U, len(in))
	for i, x := range in {
		out[i] = f(x)
	}
	return out
}
