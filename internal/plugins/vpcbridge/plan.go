package vpcbridge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// attachment is the key of one ADD within a network, as the spec defines
// attachments: network, container ID and CNI_IFNAME (not the container
// side's name, which containerIfName may change). The host end of its veth
// is named, addressed and labelled after it, so DEL and GC find it from the
// host alone.
type attachment struct {
	network string
	cni.Attachment
}

// aliasPrefix starts the alias of every veth end this plugin creates.
const aliasPrefix = "vpc-bridge "

// maxAlias is the longest alias the kernel stores (IFALIASZ less the NUL).
const maxAlias = 255

// networkAliasPrefix starts the aliases of the veths of one network, so that
// a GC of one network never touches another's.
func networkAliasPrefix(network string) string { return aliasPrefix + network + " " }

// alias is the label of both veth ends: network, container ID and ifname
// separated by spaces, which none of them may contain. A container ID too
// long for the kernel's limit is replaced by its hash.
func (a attachment) alias() string {
	s := networkAliasPrefix(a.network) + a.ContainerID + " " + a.IfName
	if len(s) <= maxAlias {
		return s
	}
	sum := sha256.Sum256([]byte(a.ContainerID))
	return networkAliasPrefix(a.network) + "sha256:" + hex.EncodeToString(sum[:]) + " " + a.IfName
}

// hostVethPrefix starts the name of every host veth ("vbr" + 12 hex of the
// attachment's hash).
const hostVethPrefix = "vbr"

// The alias can only be set after the veth exists, so a crash in between
// would leave a pair that no label finds. What the kernel takes at creation
// is therefore derived from the attachment too, so that nothing created is
// ever anonymous:
//   - the host end's name is "vbr" and 48 bits of the attachment's hash:
//     a retried ADD and a DEL, which know the attachment, find it by name;
//   - the host end's MAC starts with 3 bytes of the network's hash: a GC,
//     which knows only the valid attachments, recognises its network's
//     unlabelled veths by MAC, and keeps those named after a valid one.
//
// What remains: two attachments whose hashes share 48 bits (about 2 in a
// billion on a full bridge) cannot both be attached, the second ADD fails
// naming the link; a GC running while an ADD of its network for an
// attachment it does not list is between creation and labelling deletes
// that veth, as it would once labelled, and the ADD fails; a GC of another
// network does the same only if the 22 bits of the networks' MAC prefixes
// collide too.

// hostVethName is the name of the attachment's host veth.
func (a attachment) hostVethName() string {
	sum := a.hash()
	return hostVethPrefix + hex.EncodeToString(sum[:6])
}

// hostVethMAC is the hardware address of the attachment's host veth: the
// network's prefix (networkMAC) and 3 bytes of the attachment's hash.
func (a attachment) hostVethMAC() net.HardwareAddr {
	sum := a.hash()
	prefix := networkMAC(a.network)
	return net.HardwareAddr{prefix[0], prefix[1], prefix[2], sum[6], sum[7], sum[8]}
}

func (a attachment) hash() [sha256.Size]byte {
	return sha256.Sum256([]byte("vpc-bridge veth\x00" + a.network + "\x00" + a.ContainerID + "\x00" + a.IfName))
}

// networkMAC is the first half of the MAC of every host veth of network:
// locally administered, unicast.
func networkMAC(network string) [3]byte {
	sum := sha256.Sum256([]byte("vpc-bridge network\x00" + network))
	return [3]byte{(sum[0] | 0x02) &^ 0x01, sum[1], sum[2]}
}

// inNetwork reports whether mac is that of a host veth of network.
func inNetwork(mac net.HardwareAddr, network string) bool {
	prefix := networkMAC(network)
	return len(mac) == 6 && mac[0] == prefix[0] && mac[1] == prefix[1] && mac[2] == prefix[2]
}

// Positions of vpc-bridge's interfaces among its own three in the result;
// after another plugin in a chain they follow the prevResult's interfaces.
const (
	bridgeIndex    = 0
	hostVethIndex  = 1
	containerIndex = 2
)

// scopeLink marks a route to a directly attached destination (RT_SCOPE_LINK).
var scopeLink = int(unix.RT_SCOPE_LINK)

// containerPlan is what the container and the bridge get, derived from the
// IPAM result: addresses, the bridge's gateway addresses, and routes.
type containerPlan struct {
	ips      []*current.IPConfig
	gateways []netip.Prefix // on the bridge, with the prefix of the address they serve
	// routes in the container: first an on-link host route to each gateway,
	// then the IPAM's routes, each through its family's gateway.
	routes []*types.Route
	dns    types.DNS
}

// planContainer checks the IPAM result and derives the plan. Every address
// needs a gateway (the bridge answers for it); the connected subnet route is
// never part of the plan: only the gateways and the IPAM's destinations are
// reachable, so containers on one bridge cannot reach each other.
func planContainer(ipamType string, r *current.Result) (*containerPlan, error) {
	if len(r.IPs) == 0 {
		return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned no IP address", ipamType)
	}
	p := &containerPlan{dns: r.DNS}
	familyGW := map[int]net.IP{}
	seenGW := map[string]bool{}
	for _, ipc := range r.IPs {
		if ipc.Address.IP == nil || ipc.Address.Mask == nil {
			return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned an address without a prefix length: %v", ipamType, ipc.Address)
		}
		if ipc.Gateway == nil {
			return nil, cni.FieldError("ipam", "IPAM plugin %q returned %s without a gateway; the bridge needs one: configure a gateway in the ipam section", ipamType, ipc.Address.String())
		}
		fam := family(ipc.Address.IP)
		if family(ipc.Gateway) != fam {
			return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned gateway %s for %s, of another IP family", ipamType, ipc.Gateway, ipc.Address.String())
		}
		c := *ipc
		c.Interface = nil // set by buildResult, which knows the position
		p.ips = append(p.ips, &c)
		if _, ok := familyGW[fam]; !ok {
			familyGW[fam] = ipc.Gateway
		}
		if !seenGW[ipc.Gateway.String()] {
			seenGW[ipc.Gateway.String()] = true
			ones, _ := ipc.Address.Mask.Size()
			gw := netops.AddrOf(ipc.Gateway)
			p.gateways = append(p.gateways, netip.PrefixFrom(gw, ones))
			p.routes = append(p.routes, &types.Route{Dst: *netops.IPNet(netops.HostPrefix(gw)), Scope: &scopeLink})
		}
	}
	for _, r := range r.Routes {
		rt := *r
		if rt.GW == nil {
			gw, ok := familyGW[family(rt.Dst.IP)]
			if !ok {
				return nil, cni.Errorf(cni.CodeInternal, "IPAM plugin %q returned route %s but no address of its family", ipamType, rt.Dst.String())
			}
			rt.GW = gw
		}
		p.routes = append(p.routes, &rt)
	}
	return p, nil
}

// family is unix.AF_INET or unix.AF_INET6.
func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// iface describes a link for the result.
type iface struct {
	name, mac, sandbox string
}

// buildResult is the ADD's result: the prevResult of an earlier plugin in
// the chain, when there is one, kept whole and in its order (containerd
// takes the pod IP from the first address of eth0), followed by what
// vpc-bridge adds: the bridge, the host veth, the container veth (with its
// namespace), the addresses on the container veth (their interface index
// counted in the merged list) and the routes in the container. The DNS
// settings are the prevResult's unless it has none: the chain's first
// plugin speaks for the container.
func buildResult(prev *current.Result, bridge, host, container iface, p *containerPlan) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: p.dns}
	if prev != nil {
		res.Interfaces = append(res.Interfaces, prev.Interfaces...)
		res.IPs = append(res.IPs, prev.IPs...)
		res.Routes = append(res.Routes, prev.Routes...)
		if !prev.DNS.IsEmpty() {
			res.DNS = prev.DNS
		}
	}
	base := len(res.Interfaces)
	ours := [...]*current.Interface{
		bridgeIndex:    {Name: bridge.name, Mac: bridge.mac},
		hostVethIndex:  {Name: host.name, Mac: host.mac},
		containerIndex: {Name: container.name, Mac: container.mac, Sandbox: container.sandbox},
	}
	res.Interfaces = append(res.Interfaces, ours[:]...)
	for _, ipc := range p.ips {
		c := *ipc
		c.Interface = current.Int(base + containerIndex)
		res.IPs = append(res.IPs, &c)
	}
	res.Routes = append(res.Routes, p.routes...)
	return res
}

// String describes a plan in logs.
func (p *containerPlan) String() string {
	var b strings.Builder
	for _, ipc := range p.ips {
		fmt.Fprintf(&b, "address %s gateway %s; ", ipc.Address.String(), ipc.Gateway)
	}
	for _, r := range p.routes {
		fmt.Fprintf(&b, "route %s; ", describeRoute(r))
	}
	return strings.TrimSuffix(b.String(), "; ")
}
