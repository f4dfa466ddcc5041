package fabric

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Spec is the whole datapath of one local VPC as the control plane wants it.
// It is a plain value: Apply makes the kernel match it and keeps nothing
// else.
type Spec struct {
	// Name of the local VPC. Every namespace of the VPC is named after it:
	// FabricNamespace(Name) and InstanceNamespace(Name, instanceID).
	Name       string
	Subnets    []Subnet
	Instances  []Instance
	Interfaces []Interface // the ENIs whose device should exist (attached ones)
	Groups     []SecurityGroup
	// LocalAddrs are addresses the fabric itself owns and the control plane
	// listens on (Listen): 169.254.169.254, fd00:ec2::254 and the in-VPC EC2
	// API endpoint.
	LocalAddrs []netip.Addr
	// External, when valid, is the IPv4 address of a host outside the VPC
	// (namespace ExternalNamespace(Name)), reached from the fabric as
	// through an internet gateway: instances' packets to it leave through
	// the fabric with their own source address, after their ENI's
	// source/destination check and security groups.
	External netip.Addr
}

// Subnet is a VPC subnet. Its gateway (the VPC router) is the first address
// after the network address, in IPv4 and in IPv6.
type Subnet struct {
	ID   string
	IPv4 netip.Prefix
	IPv6 netip.Prefix // zero when the subnet has no IPv6 block
}

// Instance is an EC2 instance: a network namespace of its own.
type Instance struct {
	ID string // "i-" followed by letters and digits
}

// Interface is an ENI attached to an instance.
type Interface struct {
	ID          string // "eni-" followed by letters and digits
	InstanceID  string
	DeviceIndex int // 0 is the primary ENI, configured by the fabric; the device is eth<DeviceIndex>
	MAC         net.HardwareAddr
	SubnetID    string
	IPv4        []netip.Addr // primary first
	// IPv4Prefixes are delegated prefixes (/28 on EC2), routed to the ENI.
	IPv4Prefixes []netip.Prefix
	IPv6         []netip.Addr
	IPv6Prefixes []netip.Prefix
	// SourceDestCheck drops packets leaving the ENI with a source address
	// that is not assigned to it. EC2's default is true.
	SourceDestCheck bool
	Groups          []string // security group IDs
	MTU             int      // 0 means DefaultMTU
}

// SecurityGroup holds allow rules; everything else is denied.
type SecurityGroup struct {
	ID      string
	Ingress []Rule
	Egress  []Rule
}

// Rule is one security group permission, with EC2's encoding.
type Rule struct {
	// Protocol is "-1" (all), "tcp", "udp", "icmp", "icmpv6" or an IP
	// protocol number.
	Protocol string
	// FromPort and ToPort are the port range for TCP and UDP, or the ICMP
	// type and code; -1 means all.
	FromPort, ToPort int
	CIDRs            []netip.Prefix
	// Groups are referenced security groups: the rule matches the addresses
	// of every ENI in them.
	Groups []string
}

// DefaultMTU is the MTU of an ENI whose Interface.MTU is 0, as on EC2
// (jumbo frames inside a VPC).
const DefaultMTU = 9001

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	instanceRE = regexp.MustCompile(`^i-[A-Za-z0-9]+$`)
	eniRE      = regexp.MustCompile(`^eni-[A-Za-z0-9]+$`)
	groupRE    = regexp.MustCompile(`^sg-[A-Za-z0-9]+$`)
	subnetRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)
)

// gateway returns the VPC router's address in p: the first address after the
// network address, as EC2 reserves it.
func gateway(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// Validate reports every inconsistency of the spec that would make the
// datapath ambiguous (an address on two ENIs, an ENI on a missing instance)
// or impossible to build. The control plane's own checks are stricter (EC2
// limits, reserved addresses); these only protect the datapath.
func (s Spec) Validate() error {
	v := &validator{owner: map[netip.Addr]string{}}
	if !nameRE.MatchString(s.Name) {
		v.bad("local VPC name %q: want 1-63 letters, digits, '_', '.' or '-'", s.Name)
	}
	subnets := v.subnets(s.Subnets)
	instances := v.instances(s.Instances)
	groups := v.groups(s.Groups)
	v.fabricAddrs(s)
	v.interfaces(s.Interfaces, subnets, instances, groups)
	return errors.Join(v.errs...)
}

// validator collects Validate's findings, and who owns each address.
type validator struct {
	errs  []error
	owner map[netip.Addr]string // address -> ENI, "the fabric", a gateway ...
}

func (v *validator) bad(format string, a ...any) { v.errs = append(v.errs, fmt.Errorf(format, a...)) }

// claim records that by owns a; a second owner is an error.
func (v *validator) claim(a netip.Addr, by string) {
	if prev, ok := v.owner[a]; ok && prev != by {
		v.bad("address %v is assigned to both %s and %s", a, prev, by)
	}
	v.owner[a] = by
}

func (v *validator) subnets(list []Subnet) map[string]Subnet {
	subnets := map[string]Subnet{}
	for _, sn := range list {
		switch {
		case !subnetRE.MatchString(sn.ID):
			v.bad("subnet ID %q: want letters, digits and '-'", sn.ID)
		case subnets[sn.ID].ID != "":
			v.bad("subnet %s listed twice", sn.ID)
		}
		if !sn.IPv4.IsValid() || !sn.IPv4.Addr().Is4() || sn.IPv4.Bits() > 28 {
			v.bad("subnet %s: IPv4 block %v is not an IPv4 prefix of /28 or larger", sn.ID, sn.IPv4)
		}
		if sn.IPv6.IsValid() && (!sn.IPv6.Addr().Is6() || sn.IPv6.Addr().Is4In6() || sn.IPv6.Bits() > 124) {
			v.bad("subnet %s: IPv6 block %v is not an IPv6 prefix of /124 or larger", sn.ID, sn.IPv6)
		}
		subnets[sn.ID] = sn
	}
	return subnets
}

func (v *validator) instances(list []Instance) map[string]bool {
	instances := map[string]bool{}
	for _, in := range list {
		if !instanceRE.MatchString(in.ID) {
			v.bad("instance ID %q: want i- followed by letters and digits", in.ID)
		}
		if instances[in.ID] {
			v.bad("instance %s listed twice", in.ID)
		}
		instances[in.ID] = true
	}
	return instances
}

func (v *validator) groups(list []SecurityGroup) map[string]bool {
	groups := map[string]bool{}
	for _, g := range list {
		if !groupRE.MatchString(g.ID) {
			v.bad("security group ID %q: want sg- followed by letters and digits", g.ID)
		}
		if groups[g.ID] {
			v.bad("security group %s listed twice", g.ID)
		}
		groups[g.ID] = true
	}
	for _, g := range list {
		for i, r := range g.Ingress {
			if err := r.validate(groups); err != nil {
				v.bad("security group %s ingress rule %d: %w", g.ID, i, err)
			}
		}
		for i, r := range g.Egress {
			if err := r.validate(groups); err != nil {
				v.bad("security group %s egress rule %d: %w", g.ID, i, err)
			}
		}
	}
	return groups
}

// fabricAddrs claims the addresses that are not an ENI's: the fabric's
// own, the subnets' gateways and the external host.
func (v *validator) fabricAddrs(s Spec) {
	for _, a := range s.LocalAddrs {
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			v.bad("local address %v is not a plain IPv4 or IPv6 address", a)
			continue
		}
		v.claim(a, "the fabric")
	}
	for _, sn := range s.Subnets {
		v.claim(gateway(sn.IPv4), "the gateway of "+sn.ID)
		if sn.IPv6.IsValid() {
			v.claim(gateway(sn.IPv6), "the gateway of "+sn.ID)
		}
	}
	if a := s.External; a.IsValid() {
		if !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			v.bad("external host %v is not a unicast IPv4 address", a)
		}
		for _, sn := range s.Subnets {
			if sn.IPv4.Contains(a) {
				v.bad("external host %v is inside subnet %s (%v)", a, sn.ID, sn.IPv4)
			}
		}
		v.claim(a, "the external host")
	}
}

func (v *validator) interfaces(list []Interface, subnets map[string]Subnet, instances, groups map[string]bool) {
	ids := map[string]bool{}
	macs := map[string]string{}
	devices := map[string]string{} // fabric device name -> ENI
	slots := map[string]string{}   // instance/index -> ENI
	for _, eni := range list {
		if !eniRE.MatchString(eni.ID) {
			v.bad("interface ID %q: want eni- followed by letters and digits", eni.ID)
			continue
		}
		if ids[eni.ID] {
			v.bad("interface %s listed twice", eni.ID)
			continue
		}
		ids[eni.ID] = true
		if prev, ok := devices[deviceName(eni.ID)]; ok {
			v.bad("interfaces %s and %s share the fabric device name %s; the last 14 characters of ENI IDs must differ", prev, eni.ID, deviceName(eni.ID))
		}
		devices[deviceName(eni.ID)] = eni.ID
		if !instances[eni.InstanceID] {
			v.bad("interface %s is attached to unknown instance %q", eni.ID, eni.InstanceID)
		}
		if eni.DeviceIndex < 0 || eni.DeviceIndex > 99 {
			v.bad("interface %s: device index %d is outside 0-99", eni.ID, eni.DeviceIndex)
		}
		slot := eni.InstanceID + "/" + strconv.Itoa(eni.DeviceIndex)
		if prev, ok := slots[slot]; ok {
			v.bad("interfaces %s and %s are both at device index %d of %s", prev, eni.ID, eni.DeviceIndex, eni.InstanceID)
		}
		slots[slot] = eni.ID
		if len(eni.MAC) != 6 || eni.MAC[0]&1 != 0 {
			v.bad("interface %s: MAC %v is not a unicast Ethernet address", eni.ID, eni.MAC)
		} else if prev, ok := macs[eni.MAC.String()]; ok {
			v.bad("interfaces %s and %s share MAC %v", prev, eni.ID, eni.MAC)
		} else {
			macs[eni.MAC.String()] = eni.ID
		}
		if eni.MTU != 0 && (eni.MTU < 1280 || eni.MTU > 65535) {
			v.bad("interface %s: MTU %d is outside 1280-65535", eni.ID, eni.MTU)
		}
		for _, g := range eni.Groups {
			if !groups[g] {
				v.bad("interface %s is in unknown security group %q", eni.ID, g)
			}
		}
		sn, ok := subnets[eni.SubnetID]
		if !ok {
			v.bad("interface %s is in unknown subnet %q", eni.ID, eni.SubnetID)
			continue
		}
		v.interfaceAddrs(eni, sn)
	}
}

// interfaceAddrs checks an interface's addresses and prefixes against its
// subnet and claims its addresses.
func (v *validator) interfaceAddrs(eni Interface, sn Subnet) {
	for _, a := range eni.IPv4 {
		if !a.Is4() || !sn.IPv4.Contains(a) {
			v.bad("interface %s: IPv4 address %v is not in subnet %s (%v)", eni.ID, a, sn.ID, sn.IPv4)
			continue
		}
		v.claim(a, eni.ID)
	}
	for _, p := range eni.IPv4Prefixes {
		if !p.Addr().Is4() || p != p.Masked() || !sn.IPv4.Contains(p.Addr()) || p.Bits() < sn.IPv4.Bits() {
			v.bad("interface %s: IPv4 prefix %v is not a prefix of subnet %s (%v)", eni.ID, p, sn.ID, sn.IPv4)
		}
	}
	if len(eni.IPv4Prefixes) > 0 && len(eni.IPv4) == 0 {
		v.bad("interface %s has IPv4 prefixes but no IPv4 address to route them through", eni.ID)
	}
	if (len(eni.IPv6) > 0 || len(eni.IPv6Prefixes) > 0) && !sn.IPv6.IsValid() {
		v.bad("interface %s has IPv6 addresses but subnet %s has no IPv6 block", eni.ID, sn.ID)
		return
	}
	for _, a := range eni.IPv6 {
		if !a.Is6() || a.Is4In6() || a.Zone() != "" || !sn.IPv6.Contains(a) {
			v.bad("interface %s: IPv6 address %v is not in subnet %s (%v)", eni.ID, a, sn.ID, sn.IPv6)
			continue
		}
		v.claim(a, eni.ID)
	}
	for _, p := range eni.IPv6Prefixes {
		if !p.Addr().Is6() || p != p.Masked() || !sn.IPv6.Contains(p.Addr()) || p.Bits() < sn.IPv6.Bits() {
			v.bad("interface %s: IPv6 prefix %v is not a prefix of subnet %s (%v)", eni.ID, p, sn.ID, sn.IPv6)
		}
	}
}

func (r Rule) validate(groups map[string]bool) error {
	proto, err := r.protocol()
	if err != nil {
		return err
	}
	for _, g := range r.Groups {
		if !groups[g] {
			return fmt.Errorf("references unknown security group %q", g)
		}
	}
	for _, c := range r.CIDRs {
		if !c.IsValid() || c.Addr().Is4In6() {
			return fmt.Errorf("CIDR %v is not an IPv4 or IPv6 prefix", c)
		}
	}
	switch proto {
	case "tcp", "udp":
		if r.FromPort == -1 && r.ToPort == -1 {
			return nil
		}
		if r.FromPort < 0 || r.ToPort > 65535 || r.FromPort > r.ToPort {
			return fmt.Errorf("port range %d-%d is not within 0-65535", r.FromPort, r.ToPort)
		}
	case "icmp", "icmpv6":
		if r.FromPort < -1 || r.FromPort > 255 || r.ToPort < -1 || r.ToPort > 255 {
			return fmt.Errorf("ICMP type %d and code %d: want -1 or 0-255", r.FromPort, r.ToPort)
		}
		if r.FromPort == -1 && r.ToPort != -1 {
			return fmt.Errorf("an ICMP code (%d) needs an ICMP type", r.ToPort)
		}
	}
	return nil
}

// protocol returns the canonical protocol of the rule: "all", "tcp", "udp",
// "icmp", "icmpv6" or a protocol number, as EC2 treats "6" like "tcp".
func (r Rule) protocol() (string, error) {
	p := strings.ToLower(r.Protocol)
	switch p {
	case "-1", "all":
		return "all", nil
	case "tcp", "6":
		return "tcp", nil
	case "udp", "17":
		return "udp", nil
	case "icmp", "1":
		return "icmp", nil
	case "icmpv6", "58":
		return "icmpv6", nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 255 {
		return "", fmt.Errorf("protocol %q: want -1, tcp, udp, icmp, icmpv6 or a number 0-255", r.Protocol)
	}
	return strconv.Itoa(n), nil
}
