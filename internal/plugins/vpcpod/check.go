package vpcpod

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// CHECK reads what the kernel holds (observe) and compares it with the
// plan from vpcnetd's assignment (problems, a pure function tested with
// tables).

// observed is the kernel state of one attachment, on the node and in the
// pod. A missing link leaves its fields zero.
type observed struct {
	host struct {
		found, veth, up bool
		alias           string
		mtu, index      int
		mac             net.HardwareAddr
		routes          []netops.TableRoute // main, out of the host veth
	}
	rules []netops.Rule // vpc-pod's, of every pod
	pod   struct {
		found, veth, up bool
		peerIndex, mtu  int
		addrs           []netip.Prefix
		routes          []netops.TableRoute // main, out of the pod's interface
		neighbors       []netops.Neighbor
	}
}

// observe reads the attachment's state from the node (the current
// namespace) and the pod.
func observe(a attachment, netns ns.NetNS, ifName string) (observed, error) {
	var o observed
	l, err := netops.LinkByName(a.hostVethName())
	if err == nil {
		at := l.Attrs()
		o.host.found = true
		_, o.host.veth = l.(*netlink.Veth)
		o.host.up = at.Flags&net.FlagUp != 0
		o.host.alias, o.host.mtu, o.host.index, o.host.mac = at.Alias, at.MTU, at.Index, at.HardwareAddr
		if o.host.routes, err = netops.TableRoutes(0, at.Index); err != nil {
			return o, cni.Wrap(cni.CodeInternal, err, "read host veth %s", at.Name)
		}
	}
	if o.rules, err = netops.Rules(RuleProtocol); err != nil {
		return o, cni.Wrap(cni.CodeInternal, err, "read the policy rules")
	}
	err = netns.Do(func(ns.NetNS) error {
		l, err := netops.LinkByName(ifName)
		if err != nil {
			return nil
		}
		at := l.Attrs()
		o.pod.found = true
		_, o.pod.veth = l.(*netlink.Veth)
		o.pod.up = at.Flags&net.FlagUp != 0
		o.pod.peerIndex, o.pod.mtu = at.ParentIndex, at.MTU
		addrs, err := netops.Addresses(l)
		if err != nil {
			return err
		}
		o.pod.addrs = addrs
		if o.pod.routes, err = netops.TableRoutes(0, at.Index); err != nil {
			return err
		}
		o.pod.neighbors, err = netops.Neighbors(l)
		return err
	})
	if err != nil {
		return o, cni.Wrap(cni.CodeInternal, err, "read %s in the pod", ifName)
	}
	return o, nil
}

// problems lists how o differs from what ADD sets up for plan p.
func (p podPlan) problems(a attachment, ifName string, o observed) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	name := a.hostVethName()
	switch {
	case !o.host.found:
		add("no host veth %s", name)
	case !o.host.veth:
		add("host link %s is not a veth", name)
	case o.host.alias != a.alias():
		add("host veth %s is labelled %q, not %q", name, o.host.alias, a.alias())
	default:
		if !o.host.up {
			add("host veth %s is down", name)
		}
		if o.host.mtu != p.mtu {
			add("host veth %s has MTU %d, want %d", name, o.host.mtu, p.mtu)
		}
		if !slices.ContainsFunc(o.host.routes, func(r netops.TableRoute) bool { return r.Dst == p.prefix() && !r.Gw.IsValid() }) {
			add("no route %s dev %s on the node", p.prefix(), name)
		}
	}
	for _, want := range p.rules() {
		if !slices.Contains(o.rules, want) {
			add("rule %q missing", want.String())
		}
	}
	for _, r := range rulesOf(o.rules, p.addr) {
		if !slices.Contains(p.rules(), r) {
			add("unexpected rule %q", r.String())
		}
	}
	switch {
	case !o.pod.found:
		add("no %s in the pod", ifName)
		return out
	case !o.pod.veth:
		add("%s in the pod is not a veth", ifName)
		return out
	case !o.host.found || o.pod.peerIndex != o.host.index:
		add("%s in the pod is not the peer of host veth %s", ifName, name)
	}
	if !o.pod.up {
		add("%s is down", ifName)
	}
	if o.pod.mtu != p.mtu {
		add("%s has MTU %d, want %d", ifName, o.pod.mtu, p.mtu)
	}
	if !slices.Contains(o.pod.addrs, p.prefix()) {
		add("address %s missing on %s", p.prefix(), ifName)
	}
	hasRoute := func(dst netip.Prefix, gw netip.Addr) bool {
		return slices.ContainsFunc(o.pod.routes, func(r netops.TableRoute) bool { return r.Dst == dst && r.Gw == gw })
	}
	if !hasRoute(podGatewayPrefix(), netip.Addr{}) {
		add("route %s dev %s scope link missing in the pod", podGateway, ifName)
	}
	if !hasRoute(netip.MustParsePrefix("0.0.0.0/0"), podGateway) {
		add("default route via %s missing in the pod", podGateway)
	}
	gwEntry := slices.IndexFunc(o.pod.neighbors, func(n netops.Neighbor) bool { return n.IP == podGateway })
	switch {
	case gwEntry < 0:
		add("no neighbour entry for %s in the pod", podGateway)
	case !o.pod.neighbors[gwEntry].Permanent:
		add("the neighbour entry for %s in the pod is not permanent", podGateway)
	case o.host.found && o.pod.neighbors[gwEntry].MAC.String() != o.host.mac.String():
		add("the neighbour entry for %s in the pod points at %s, not at host veth %s (%s)", podGateway, o.pod.neighbors[gwEntry].MAC, name, o.host.mac)
	}
	return out
}

// resultProblems compares the ADD's result (prevResult) with the
// assignment: the address vpcnetd holds must be the one the runtime knows.
func resultProblems(prev *current.Result, ifName string, p podPlan) []string {
	for _, ipc := range prev.IPs {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(prev.Interfaces) {
			continue
		}
		if intf := prev.Interfaces[*ipc.Interface]; intf.Name != ifName || intf.Sandbox == "" {
			continue
		}
		if netops.AddrOf(ipc.Address.IP) == p.addr {
			return nil
		}
	}
	return []string{fmt.Sprintf("the ADD's result has no address %s on %s: vpcnetd and the runtime disagree", p.addr, ifName)}
}
