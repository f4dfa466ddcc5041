package vpc

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// State is everything EC2 knows about the local VPC's account and region. A
// Snapshot is a deep copy: the datapath and the metadata service read it
// without holding the model's lock.
type State struct {
	// Revision grows by one with every committed change.
	Revision  uint64 `json:"revision"`
	AccountID string `json:"accountId"`
	Region    string `json:"region"`
	// Seed is random per state directory; IDs and MACs carry it, so two
	// local VPCs (or one recreated) never hand out the same names.
	Seed string `json:"seed"`
	// Counters holds the last number used for each kind of ID.
	Counters map[string]uint64 `json:"counters"`

	VPCs              map[string]*VPC              `json:"vpcs"`
	Subnets           map[string]*Subnet           `json:"subnets"`
	SecurityGroups    map[string]*SecurityGroup    `json:"securityGroups"`
	Instances         map[string]*Instance         `json:"instances"`
	NetworkInterfaces map[string]*NetworkInterface `json:"networkInterfaces"`

	// RootAccessKeyID names the operator's key in AccessKeys.
	RootAccessKeyID string                `json:"rootAccessKeyId"`
	AccessKeys      map[string]*AccessKey `json:"accessKeys"`
}

// Tags are a resource's EC2 tags, key to value.
type Tags map[string]string

// VPC is a virtual private cloud: an IPv4 block and a ULA IPv6 /56.
type VPC struct {
	ID                string       `json:"id"`
	CIDR              netip.Prefix `json:"cidr"`
	CIDRAssociationID string       `json:"cidrAssociationId"`
	IPv6CIDR          netip.Prefix `json:"ipv6Cidr"`
	IPv6AssociationID string       `json:"ipv6AssociationId"`
	Tags              Tags         `json:"tags,omitempty"`
}

// Subnet is a range of a VPC in one availability zone, with an IPv6 /64.
type Subnet struct {
	ID                 string       `json:"id"`
	VPCID              string       `json:"vpcId"`
	CIDR               netip.Prefix `json:"cidr"`
	IPv6CIDR           netip.Prefix `json:"ipv6Cidr"`
	IPv6AssociationID  string       `json:"ipv6AssociationId"`
	AvailabilityZone   string       `json:"availabilityZone"`
	AvailabilityZoneID string       `json:"availabilityZoneId"`
	Tags               Tags         `json:"tags,omitempty"`
}

// Gateway is the VPC router's address in the subnet (network + 1).
func (s *Subnet) Gateway() netip.Addr { return s.CIDR.Masked().Addr().Next() }

// Rule is one security group permission for one peer: a CIDR (IPv4 or IPv6)
// or another group. EC2 shows rules grouped by protocol and ports; the model
// keeps them flat, which is what the datapath needs.
type Rule struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"` // "-1" (all), "tcp", "udp", "icmp", "icmpv6" or a number
	// FromPort and ToPort are -1 when the protocol has no ports. For ICMP
	// they are the type and code.
	FromPort    int32        `json:"fromPort"`
	ToPort      int32        `json:"toPort"`
	CIDR        netip.Prefix `json:"cidr,omitzero"`
	GroupID     string       `json:"groupId,omitempty"`
	Description string       `json:"description,omitempty"`
}

// SecurityGroup is a stateful firewall attached to network interfaces.
type SecurityGroup struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	VPCID       string `json:"vpcId"`
	Ingress     []Rule `json:"ingress"`
	Egress      []Rule `json:"egress"`
	Tags        Tags   `json:"tags,omitempty"`
}

// Instance is a (namespace playing an) EC2 instance.
type Instance struct {
	ID                 string    `json:"id"`
	ReservationID      string    `json:"reservationId"`
	Type               string    `json:"type"`
	ImageID            string    `json:"imageId"`
	VPCID              string    `json:"vpcId"`
	SubnetID           string    `json:"subnetId"`
	AvailabilityZone   string    `json:"availabilityZone"`
	AvailabilityZoneID string    `json:"availabilityZoneId"`
	PrimaryENIID       string    `json:"primaryEniId"`
	LaunchTime         time.Time `json:"launchTime"`
	// State is "running" or "terminated" (EC2's instance-state-name).
	State string `json:"state"`
	// RoleName is the IAM role of the instance profile; its credentials are
	// served by the metadata service.
	RoleName string `json:"roleName,omitempty"`
	Tags     Tags   `json:"tags,omitempty"`
}

// PrivateIP is one IPv4 address of a network interface.
type PrivateIP struct {
	Address netip.Addr `json:"address"`
	Primary bool       `json:"primary,omitempty"`
}

// ENI statuses and attachment statuses, as EC2 spells them.
const (
	StatusAvailable = "available"
	StatusInUse     = "in-use"

	AttachmentAttaching = "attaching"
	AttachmentAttached  = "attached"
	AttachmentDetaching = "detaching"
	AttachmentDetached  = "detached"
)

// Attachment binds a network interface to an instance at a device index.
type Attachment struct {
	ID                  string    `json:"id"`
	InstanceID          string    `json:"instanceId"`
	DeviceIndex         int32     `json:"deviceIndex"`
	NetworkCardIndex    int32     `json:"networkCardIndex"`
	Status              string    `json:"status"`
	DeleteOnTermination bool      `json:"deleteOnTermination"`
	AttachTime          time.Time `json:"attachTime"`
}

// NetworkInterface is an elastic network interface (ENI).
type NetworkInterface struct {
	ID               string `json:"id"`
	SubnetID         string `json:"subnetId"`
	VPCID            string `json:"vpcId"`
	AvailabilityZone string `json:"availabilityZone"`
	Description      string `json:"description"`
	// MAC is locally administered and unique, in EC2's lower-case form.
	MAC string `json:"mac"`
	// PrivateIPs holds the primary address first.
	PrivateIPs      []PrivateIP    `json:"privateIps"`
	IPv4Prefixes    []netip.Prefix `json:"ipv4Prefixes,omitempty"`
	IPv6Addresses   []netip.Addr   `json:"ipv6Addresses,omitempty"`
	IPv6Prefixes    []netip.Prefix `json:"ipv6Prefixes,omitempty"`
	Groups          []string       `json:"groups"`
	SourceDestCheck bool           `json:"sourceDestCheck"`
	Status          string         `json:"status"`
	Attachment      *Attachment    `json:"attachment,omitempty"`
	// InterfaceType is EC2's interfaceType ("interface", "trunk", ...).
	InterfaceType string `json:"interfaceType"`
	// RequesterID is set for interfaces created by a service, not a user.
	RequesterID string `json:"requesterId,omitempty"`
	Tags        Tags   `json:"tags,omitempty"`
}

// PrimaryIP is the interface's primary private IPv4 address.
func (n *NetworkInterface) PrimaryIP() netip.Addr {
	for _, p := range n.PrivateIPs {
		if p.Primary {
			return p.Address
		}
	}
	return netip.Addr{}
}

// AccessKey is a credential the local VPC issued: the operator's root key
// (no session token, no expiry) or an instance role's temporary key.
type AccessKey struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
	// Principal is the ARN the key acts as.
	Principal  string `json:"principal"`
	InstanceID string `json:"instanceId,omitempty"`
	RoleName   string `json:"roleName,omitempty"`
	// Issued and Expiration are zero for the root key, which never expires.
	Issued     time.Time `json:"issued,omitzero"`
	Expiration time.Time `json:"expiration,omitzero"`
}

// Expired reports whether a temporary key is past its expiration at now.
func (k *AccessKey) Expired(now time.Time) bool {
	return !k.Expiration.IsZero() && !now.Before(k.Expiration)
}

// Clone returns a deep copy of the state.
func (s *State) Clone() State {
	c := *s
	c.Counters = maps.Clone(s.Counters)
	c.VPCs = cloneMap(s.VPCs, func(v *VPC) *VPC { x := *v; x.Tags = maps.Clone(v.Tags); return &x })
	c.Subnets = cloneMap(s.Subnets, func(v *Subnet) *Subnet { x := *v; x.Tags = maps.Clone(v.Tags); return &x })
	c.SecurityGroups = cloneMap(s.SecurityGroups, (*SecurityGroup).clone)
	c.Instances = cloneMap(s.Instances, func(v *Instance) *Instance { x := *v; x.Tags = maps.Clone(v.Tags); return &x })
	c.NetworkInterfaces = cloneMap(s.NetworkInterfaces, (*NetworkInterface).clone)
	c.AccessKeys = cloneMap(s.AccessKeys, func(v *AccessKey) *AccessKey { x := *v; return &x })
	return c
}

func (g *SecurityGroup) clone() *SecurityGroup {
	x := *g
	x.Ingress = slices.Clone(g.Ingress)
	x.Egress = slices.Clone(g.Egress)
	x.Tags = maps.Clone(g.Tags)
	return &x
}

func (n *NetworkInterface) clone() *NetworkInterface {
	x := *n
	x.PrivateIPs = slices.Clone(n.PrivateIPs)
	x.IPv4Prefixes = slices.Clone(n.IPv4Prefixes)
	x.IPv6Addresses = slices.Clone(n.IPv6Addresses)
	x.IPv6Prefixes = slices.Clone(n.IPv6Prefixes)
	x.Groups = slices.Clone(n.Groups)
	x.Tags = maps.Clone(n.Tags)
	if n.Attachment != nil {
		a := *n.Attachment
		x.Attachment = &a
	}
	return &x
}

func cloneMap[V any](m map[string]V, clone func(V) V) map[string]V {
	if m == nil {
		return nil
	}
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = clone(v)
	}
	return c
}

// SortedValues returns a map's values ordered by key (resource ID), the
// order in which describe calls list and paginate them.
func SortedValues[V any](m map[string]V) []V {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

// PrivateDNSName is EC2's private host name for an IPv4 address: the
// address with dashes, under ec2.internal in us-east-1 and
// REGION.compute.internal elsewhere.
func PrivateDNSName(a netip.Addr, region string) string {
	if !a.IsValid() {
		return ""
	}
	host := "ip-" + strings.ReplaceAll(a.String(), ".", "-")
	if region == "us-east-1" {
		return host + ".ec2.internal"
	}
	return host + "." + region + ".compute.internal"
}
