package fabric

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// This file turns a Spec into the kernel objects the datapath needs and
// compares them with what exists. It is pure: values in, values out. The
// kernel side (kernel.go) reads what exists into the same types and carries
// out the differences.

// FabricNamespace returns the name of the namespace that plays the VPC router
// of the local VPC name.
func FabricNamespace(name string) string { return name + "-fabric" }

// InstanceNamespace returns the name of the network namespace of an instance
// of the local VPC name.
func InstanceNamespace(name, instanceID string) string { return name + "-" + instanceID }

// ExternalNamespace returns the name of the namespace of the host outside
// the local VPC name (Spec.External).
func ExternalNamespace(name string) string { return name + "-ext" }

// The external host's link: the fabric end, and the host's end (eth0) with
// a MAC of the locally administered range, fixed as a router's would be.
const externalDevice = "igw0"

var externalMAC = net.HardwareAddr{0x02, 0x00, 0x19, 0x05, 0x64, 0x0a}

const externalAlias = "vpcnet external host"

// Chains of the external host's device in the firewall.
const (
	externalOut = "external-out"
	externalIn  = "external-in"
)

// isVPCNamespace reports whether the namespace ns belongs to the local VPC
// name. Instance IDs never contain a '-' after "i-", so the namespaces of a
// VPC called "a" are never mistaken for those of a VPC called "a-b".
func isVPCNamespace(name, ns string) bool {
	if ns == FabricNamespace(name) {
		return true
	}
	id, ok := strings.CutPrefix(ns, name+"-")
	return ok && instanceRE.MatchString(id)
}

// deviceName is the name of an ENI's veth end in the fabric: derived from the
// ENI ID so that it is stable across runs and recognisable in `ip link`
// (IFNAMSIZ allows 15 bytes, so only the ID's tail fits; Validate rejects
// two ENIs whose tails collide).
func deviceName(eniID string) string {
	s := strings.TrimPrefix(eniID, "eni-")
	if len(s) > 14 {
		s = s[len(s)-14:]
	}
	return "e" + s
}

// aliasPrefix starts the alias of every fabric device that stands for an
// attached ENI. The alias records what the device was built for, so a
// device built for another instance, slot or MAC is recognised as stale, and
// Watch can name the ENI whose device vanished.
const aliasPrefix = "vpcnet eni="

// removedAlias is written on a device just before Apply or Destroy deletes
// it, so that Watch does not report a deliberate removal as a lost device.
const removedAlias = "vpcnet removed"

func deviceAlias(eni Interface) string {
	return fmt.Sprintf("%s%s instance=%s index=%d mac=%s", aliasPrefix, eni.ID, eni.InstanceID, eni.DeviceIndex, eni.MAC)
}

// interfaceOfAlias returns the ENI ID recorded in a fabric device's alias.
func interfaceOfAlias(alias string) (string, bool) {
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok {
		return "", false
	}
	id, _, _ := strings.Cut(rest, " ")
	return id, id != ""
}

// device is one attached ENI as a veth pair: Name in the fabric, Peer in the
// instance's namespace.
type device struct {
	ENI       string // the ENI's ID
	Name      string
	Alias     string
	MTU       int
	Namespace string
	Peer      string // eth<DeviceIndex>
	MAC       net.HardwareAddr
	// Host is the configuration the fabric gives a primary ENI in its
	// instance, as EC2's DHCP would; nil for secondary ENIs, which stay
	// down and unconfigured until an agent or plugin takes them.
	Host *hostConfig
}

type hostConfig struct {
	IPv4     netip.Prefix // primary address with the subnet's length
	Gateway4 netip.Addr   // invalid: the default route is on the link
	IPv6     netip.Prefix // zero if none
	Gateway6 netip.Addr
}

// route sends Dst to an ENI's device, through Via when Dst is a delegated
// prefix (Via then has a static neighbour entry with the ENI's MAC). The
// type, and the diff of wanted and present routes, are netops'.
type route = netops.Route

// neighbour is a permanent neighbour entry: the fabric knows every ENI's
// MAC, as the VPC does, so it delivers to an address whether or not the
// instance would answer ARP for it (a pod's address behind a node's ENI).
// The type, and its diff, are netops'.
type neighbour = netops.PermanentNeighbor

// proxy is a proxy NDP entry: the fabric answers neighbour solicitations for
// Addr arriving on Dev with its own MAC.
type proxy struct {
	Dev  string
	Addr netip.Addr
}

// state is everything the kernel should hold for one local VPC.
type state struct {
	Fabric    string
	Instances []string // instance namespaces, sorted
	External  string   // the external host's namespace, "" for none
	// LoAddrs are the fabric's own addresses (gateways and LocalAddrs), on
	// its lo so that every device reaches them.
	LoAddrs    []netip.Prefix
	Devices    map[string]device // by fabric device name
	Routes     map[netip.Prefix]route
	Neighbours []neighbour
	Proxies    []proxy
	Firewall   table
}

// desiredState validates spec and computes the kernel objects it stands for.
func desiredState(spec Spec) (state, error) {
	if err := spec.Validate(); err != nil {
		return state{}, fmt.Errorf("invalid datapath spec for local VPC %q: %w", spec.Name, err)
	}
	st := state{
		Fabric:  FabricNamespace(spec.Name),
		Devices: map[string]device{},
		Routes:  map[netip.Prefix]route{},
	}
	for _, in := range spec.Instances {
		st.Instances = append(st.Instances, InstanceNamespace(spec.Name, in.ID))
	}
	slices.Sort(st.Instances)

	subnets := map[string]Subnet{}
	for _, sn := range spec.Subnets {
		subnets[sn.ID] = sn
		st.LoAddrs = append(st.LoAddrs, netip.PrefixFrom(gateway(sn.IPv4), 32))
		if sn.IPv6.IsValid() {
			st.LoAddrs = append(st.LoAddrs, netip.PrefixFrom(gateway(sn.IPv6), 128))
		}
	}
	for _, a := range spec.LocalAddrs {
		st.LoAddrs = append(st.LoAddrs, netip.PrefixFrom(a, a.BitLen()))
	}
	st.LoAddrs = sortedUnique(st.LoAddrs, comparePrefix)

	for _, eni := range spec.Interfaces {
		sn := subnets[eni.SubnetID]
		dev := device{
			ENI:       eni.ID,
			Name:      deviceName(eni.ID),
			Alias:     deviceAlias(eni),
			MTU:       cmp.Or(eni.MTU, DefaultMTU),
			Namespace: InstanceNamespace(spec.Name, eni.InstanceID),
			Peer:      "eth" + strconv.Itoa(eni.DeviceIndex),
			MAC:       eni.MAC,
		}
		if eni.DeviceIndex == 0 && len(eni.IPv4) > 0 {
			dev.Host = &hostConfig{
				IPv4:     netip.PrefixFrom(eni.IPv4[0], sn.IPv4.Bits()),
				Gateway4: gateway(sn.IPv4),
			}
			if len(eni.IPv6) > 0 {
				dev.Host.IPv6 = netip.PrefixFrom(eni.IPv6[0], sn.IPv6.Bits())
				dev.Host.Gateway6 = gateway(sn.IPv6)
			}
		}
		st.Devices[dev.Name] = dev

		// A /32 (/128) per address rather than a subnet route: the VPC
		// is routed, so each address goes to the one ENI it is assigned
		// to, and an address assigned to nobody has no route at all.
		for _, a := range slices.Concat(eni.IPv4, eni.IPv6) {
			st.Routes[netip.PrefixFrom(a, a.BitLen())] = route{Dst: netip.PrefixFrom(a, a.BitLen()), Dev: dev.Name}
			st.Neighbours = append(st.Neighbours, neighbour{Dev: dev.Name, Addr: a, MAC: eni.MAC.String()})
		}
		for _, p := range eni.IPv4Prefixes {
			st.Routes[p] = route{Dst: p, Dev: dev.Name, Via: eni.IPv4[0]}
		}
		if len(eni.IPv6Prefixes) > 0 {
			// An IPv6 prefix may come without any IPv6 address on the
			// ENI: route it through the link-local address the ENI's MAC
			// implies, pinned by a static neighbour entry.
			ll := linkLocal(eni.MAC)
			st.Neighbours = append(st.Neighbours, neighbour{Dev: dev.Name, Addr: ll, MAC: eni.MAC.String()})
			for _, p := range eni.IPv6Prefixes {
				st.Routes[p] = route{Dst: p, Dev: dev.Name, Via: ll}
			}
		}
	}
	if a := spec.External; a.IsValid() {
		// A host of its own on a link of its own, as the internet is
		// behind the VPC's internet gateway. Its default route goes out
		// on the link, and the fabric answers its ARP for VPC addresses
		// (proxy ARP), as it does the instances'.
		st.External = ExternalNamespace(spec.Name)
		st.Devices[externalDevice] = device{
			ENI: "the external host", Name: externalDevice, Alias: externalAlias, MTU: 1500,
			Namespace: st.External, Peer: "eth0", MAC: externalMAC,
			Host: &hostConfig{IPv4: netip.PrefixFrom(a, 32)},
		}
		dst := netip.PrefixFrom(a, 32)
		st.Routes[dst] = route{Dst: dst, Dev: externalDevice}
		st.Neighbours = append(st.Neighbours, neighbour{Dev: externalDevice, Addr: a, MAC: externalMAC.String()})
	}
	st.Neighbours = sortedUnique(st.Neighbours, compareNeighbour)
	st.Proxies = proxies(spec)
	st.Firewall = buildTable(spec)
	return st, nil
}

// proxies lists the proxy NDP entries of the fabric. IPv4 needs none: proxy
// ARP answers for any address the fabric routes through another device.
// IPv6 proxying is per address and per device, so each ENI's device gets an
// entry for every address an instance treats as on-link in that subnet (the
// gateway, fabric-local addresses, the other ENIs' addresses) but never for
// the ENI's own addresses, which would fail the instance's duplicate address
// detection. Delegated IPv6 prefixes get no entries (they would need one
// per address): a host inside another ENI's prefix is reachable from other
// subnets, through the gateway, but not from its own subnet, on-link.
func proxies(spec Spec) []proxy {
	subnets := map[string]Subnet{}
	for _, sn := range spec.Subnets {
		subnets[sn.ID] = sn
	}
	onLink := map[string][]netip.Addr{} // subnet -> addresses
	for _, sn := range spec.Subnets {
		if !sn.IPv6.IsValid() {
			continue
		}
		onLink[sn.ID] = append(onLink[sn.ID], gateway(sn.IPv6))
		for _, a := range spec.LocalAddrs {
			if sn.IPv6.Contains(a) {
				onLink[sn.ID] = append(onLink[sn.ID], a)
			}
		}
	}
	for _, eni := range spec.Interfaces {
		onLink[eni.SubnetID] = append(onLink[eni.SubnetID], eni.IPv6...)
	}
	var out []proxy
	for _, eni := range spec.Interfaces {
		if len(eni.IPv6) == 0 || !subnets[eni.SubnetID].IPv6.IsValid() {
			continue
		}
		for _, a := range onLink[eni.SubnetID] {
			if !slices.Contains(eni.IPv6, a) {
				out = append(out, proxy{Dev: deviceName(eni.ID), Addr: a})
			}
		}
	}
	return sortedUnique(out, func(a, b proxy) int {
		return cmp.Or(strings.Compare(a.Dev, b.Dev), a.Addr.Compare(b.Addr))
	})
}

// linkLocal returns the modified EUI-64 link-local address of mac, the one
// the kernel gives a device with that MAC.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
	b[11], b[12] = 0xff, 0xfe
	b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(b)
}

// linkState is what Apply reads back about a device in the fabric.
type linkState struct {
	Name  string
	Alias string
	Up    bool
	MTU   int
}

// linkPlan is what Apply does to the fabric's devices.
type linkPlan struct {
	Remove []string // fabric device names, deleted with their peers
	Create []device
	SetMTU map[string]int
}

// planLinks compares the fabric's devices with the wanted ones. A device
// whose alias differs was built for another attachment; one that is down
// was left half configured by an interrupted Apply (devices come up last).
// Both are rebuilt. Any other device is not ours to keep.
func planLinks(want map[string]device, have []linkState) linkPlan {
	p := linkPlan{SetMTU: map[string]int{}}
	kept := map[string]bool{}
	for _, l := range have {
		if l.Name == "lo" {
			continue
		}
		d, ok := want[l.Name]
		if ok && l.Alias == d.Alias && l.Up {
			kept[l.Name] = true
			if l.MTU != d.MTU {
				p.SetMTU[l.Name] = d.MTU
			}
			continue
		}
		p.Remove = append(p.Remove, l.Name)
	}
	for name, d := range want {
		if !kept[name] {
			p.Create = append(p.Create, d)
		}
	}
	slices.Sort(p.Remove)
	slices.SortFunc(p.Create, func(a, b device) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// diffSets returns what is in want but not in have, and the reverse.
func diffSets[T comparable](want, have []T) (add, remove []T) {
	in := func(s []T) map[T]bool {
		m := make(map[T]bool, len(s))
		for _, v := range s {
			m[v] = true
		}
		return m
	}
	w, h := in(want), in(have)
	for _, v := range want {
		if !h[v] {
			add = append(add, v)
		}
	}
	for _, v := range have {
		if !w[v] {
			remove = append(remove, v)
		}
	}
	return add, remove
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

func compareNeighbour(a, b neighbour) int {
	return cmp.Or(strings.Compare(a.Dev, b.Dev), a.Addr.Compare(b.Addr), strings.Compare(a.MAC, b.MAC))
}

func sortedUnique[T comparable](s []T, compare func(a, b T) int) []T {
	slices.SortFunc(s, compare)
	return slices.Compact(s)
}
