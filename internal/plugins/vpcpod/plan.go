package vpcpod

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// The values of vpc-pod's datapath, derived from the attachment and
// vpcnetd's reply: pure functions, tested with tables.

// podGateway is the pod's gateway: a link-local address that no host owns.
// The pod's permanent neighbour entry maps it to the host veth's MAC, so
// every packet the pod routes leaves through the host veth, and the host
// routes it like any other.
var podGateway = netip.MustParseAddr("169.254.1.1")

// Rule priorities, as aws-node's: traffic to a pod looks up main (its /32
// route to the host veth) before the rule that sends traffic from a pod on
// a secondary ENI out of that ENI's table.
const (
	priorityToPod   = 512
	priorityFromPod = 1536
)

// RuleProtocol marks the rules vpc-pod installs (see nodeapi.RuleProtocol).
const RuleProtocol = nodeapi.RuleProtocol

// attachment is the key of one ADD, as vpcnetd keys its assignments, and
// the host veth's names derived from it.
type attachment struct {
	api    *nodeapi.Attachment
	prefix string // vethPrefix
}

func newAttachment(network, containerID, ifName, prefix string) attachment {
	return attachment{api: &nodeapi.Attachment{Network: network, ContainerId: containerID, IfName: ifName}, prefix: prefix}
}

// aliasPrefix starts the alias of every host veth vpc-pod creates.
const aliasPrefix = "vpc-pod "

// maxAlias is the longest alias the kernel stores (IFALIASZ less the NUL).
const maxAlias = 255

// networkAliasPrefix starts the aliases of one network's veths, so that a
// GC of one network never touches another's.
func networkAliasPrefix(network string) string { return aliasPrefix + network + " " }

// alias labels the host veth with the attachment, so GC can tell whose it
// is from the host alone. A container ID too long for the kernel's limit
// is replaced by its hash.
func (a attachment) alias() string {
	s := networkAliasPrefix(a.api.Network) + a.api.ContainerId + " " + a.api.IfName
	if len(s) <= maxAlias {
		return s
	}
	sum := sha256.Sum256([]byte(a.api.ContainerId))
	return networkAliasPrefix(a.api.Network) + "sha256:" + hex.EncodeToString(sum[:]) + " " + a.api.IfName
}

// The alias can only be set once the veth exists, so what the kernel takes
// at creation is derived from the attachment too, and a crash in between
// leaves nothing anonymous:
//   - the name is nodeapi.HostVethName (prefix + hash), which vpcnetd
//     computes too: a retried ADD and a DEL find the veth by name;
//   - the MAC starts with 3 bytes of the network's hash: a GC, which knows
//     only the valid attachments, recognises its network's unlabelled
//     veths and keeps those named after a valid one.
//
// The MAC is also what the pod's gateway entry points at; being derived,
// it is the same on a retried ADD.

func (a attachment) hostVethName() string { return nodeapi.HostVethName(a.prefix, a.api) }

func (a attachment) hostVethMAC() net.HardwareAddr {
	sum := sha256.Sum256([]byte("vpc-pod veth\x00" + a.api.Network + "\x00" + a.api.ContainerId + "\x00" + a.api.IfName))
	p := networkMAC(a.api.Network)
	return net.HardwareAddr{p[0], p[1], p[2], sum[0], sum[1], sum[2]}
}

// networkMAC is the first half of the MAC of every host veth of network:
// locally administered, unicast.
func networkMAC(network string) [3]byte {
	sum := sha256.Sum256([]byte("vpc-pod network\x00" + network))
	return [3]byte{(sum[0] | 0x02) &^ 0x01, sum[1], sum[2]}
}

// inNetwork reports whether mac is that of a host veth of network.
func inNetwork(mac net.HardwareAddr, network string) bool {
	p := networkMAC(network)
	return len(mac) == 6 && mac[0] == p[0] && mac[1] == p[1] && mac[2] == p[2]
}

// podPlan is what one pod gets: its address, the table its traffic leaves
// by (0: main, the primary ENI), and the MTU of its veth.
type podPlan struct {
	addr  netip.Addr
	table int
	mtu   int
}

// planPod checks vpcnetd's reply and derives the plan. The config's MTU,
// when set, wins over the ENI's: an operator lowers it for a reason.
func planPod(r *nodeapi.AddNetworkReply, confMTU int) (podPlan, error) {
	addr, err := netip.ParseAddr(r.GetIpv4Address())
	if err != nil || !addr.Is4() || !addr.IsGlobalUnicast() {
		return podPlan{}, cni.Errorf(cni.CodeInternal, "vpcnetd replied with %q, not a unicast IPv4 address", r.GetIpv4Address())
	}
	if r.GetRouteTable() < 0 || r.GetRouteTable() == netops.TableMain || r.GetRouteTable() == 255 {
		return podPlan{}, cni.Errorf(cni.CodeInternal, "vpcnetd replied with route table %d for %s: want 0 (main) or a table of its own", r.GetRouteTable(), addr)
	}
	p := podPlan{addr: addr, table: int(r.GetRouteTable()), mtu: confMTU}
	if p.mtu == 0 {
		p.mtu = int(r.GetMtu())
		if p.mtu == 0 {
			p.mtu = FallbackMTU
		}
		if p.mtu < minMTU || p.mtu > maxMTU {
			return podPlan{}, cni.Errorf(cni.CodeInternal, "vpcnetd replied with MTU %d for %s's ENI, outside %d-%d; set \"mtu\" in the config", p.mtu, addr, minMTU, maxMTU)
		}
	}
	return p, nil
}

func (p podPlan) prefix() netip.Prefix { return netip.PrefixFrom(p.addr, 32) }

// rules are the host's policy rules for the pod: traffic to it looks up
// main; traffic from it, when its address belongs to a secondary ENI,
// leaves through that ENI's table.
func (p podPlan) rules() []netops.Rule {
	rs := []netops.Rule{{Priority: priorityToPod, Dst: p.prefix(), Protocol: RuleProtocol}}
	if p.table != 0 {
		rs = append(rs, netops.Rule{Priority: priorityFromPod, Src: p.prefix(), Table: p.table, Protocol: RuleProtocol})
	}
	return rs
}

// podOf returns the pod address of r if r has the shape of one of vpc-pod's
// rules (512 to a host address, 1536 from one), and false otherwise: vpcnetd
// marks its own rules (1024: not to the VPC lookup main) with the same
// protocol, and those are never a pod's.
func podOf(r netops.Rule) (netip.Addr, bool) {
	if r.Protocol != RuleProtocol || r.Invert {
		return netip.Addr{}, false
	}
	host := func(p netip.Prefix) bool { return p.IsValid() && p.Bits() == p.Addr().BitLen() }
	switch {
	case r.Priority == priorityToPod && host(r.Dst) && !r.Src.IsValid() && (r.Table == 0 || r.Table == netops.TableMain):
		return r.Dst.Addr(), true
	case r.Priority == priorityFromPod && host(r.Src) && !r.Dst.IsValid():
		return r.Src.Addr(), true
	}
	return netip.Addr{}, false
}

// rulesOf picks, out of rules, vpc-pod's rules that concern addr.
func rulesOf(rules []netops.Rule, addr netip.Addr) []netops.Rule {
	var out []netops.Rule
	for _, r := range rules {
		if pod, ok := podOf(r); ok && pod == addr {
			out = append(out, r)
		}
	}
	return out
}

// orphanRules picks vpc-pod's rules whose pod has no host route any more
// (routed: the main table's destinations): the veth died with the pod's
// namespace. ADD installs the route before the rules and DEL removes the
// rules before the veth, so a rule without a route is never one an ADD
// still needs.
func orphanRules(rules []netops.Rule, routed map[netip.Prefix]bool) []netops.Rule {
	var out []netops.Rule
	for _, r := range rules {
		if pod, ok := podOf(r); ok && !routed[netip.PrefixFrom(pod, pod.BitLen())] {
			out = append(out, r)
		}
	}
	return out
}

// Positions of vpc-pod's interfaces in its result.
const (
	hostVethIndex  = 0
	containerIndex = 1
)

// iface describes a link for the result.
type iface struct {
	name, mac, sandbox string
}

// buildResult is the ADD's result: the host veth and the pod's interface
// (with its namespace), the pod's address on it with the gateway, and the
// default route.
func buildResult(host, pod iface, p podPlan) *current.Result {
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			hostVethIndex:  {Name: host.name, Mac: host.mac},
			containerIndex: {Name: pod.name, Mac: pod.mac, Sandbox: pod.sandbox},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(containerIndex),
			Address:   *netops.IPNet(p.prefix()),
			Gateway:   netops.IP(podGateway),
		}},
		Routes: []*types.Route{{Dst: *netops.IPNet(netops.DefaultDestination(podGateway)), GW: netops.IP(podGateway)}},
	}
}

func podGatewayPrefix() netip.Prefix { return netip.PrefixFrom(podGateway, 32) }
