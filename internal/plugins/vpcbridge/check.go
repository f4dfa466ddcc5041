package vpcbridge

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// CHECK compares the kernel with the ADD's result. The comparisons are pure
// functions over what was read, so they are tested with tables.

// ownResult is vpc-bridge's part of a prevResult, which after another
// plugin in a chain also holds that plugin's interfaces, addresses and
// routes.
type ownResult struct {
	mac    string         // of the container interface, as ADD reported it
	addrs  []netip.Prefix // on the container interface
	routes []*types.Route
}

// ownPart picks vpc-bridge's part out of prev: the last interface called
// ctrIfName in a sandbox (vpc-bridge appends its own after the earlier
// plugins'), the addresses pointing at it, and the routes vpc-bridge adds:
// an on-link route to one of those addresses' gateways, or a route via one.
func ownPart(prev *current.Result, ctrIfName string) (ownResult, error) {
	index := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == ctrIfName && intf.Sandbox != "" {
			index = i
		}
	}
	if index < 0 {
		return ownResult{}, fmt.Errorf("no interface %s in a sandbox: it is not the result of vpc-bridge's ADD", ctrIfName)
	}
	own := ownResult{mac: prev.Interfaces[index].Mac}
	var gateways []netip.Addr
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == index {
			if p := netops.PrefixOf(&ipc.Address); p.IsValid() {
				own.addrs = append(own.addrs, p)
			}
			if gw := netops.AddrOf(ipc.Gateway); gw.IsValid() {
				gateways = append(gateways, gw)
			}
		}
	}
	for _, r := range prev.Routes {
		dst := netops.PrefixOf(&r.Dst)
		onLinkToGateway := r.GW == nil && slices.Contains(gateways, dst.Addr()) && dst == netops.HostPrefix(dst.Addr())
		if onLinkToGateway || r.GW != nil && slices.Contains(gateways, netops.AddrOf(r.GW)) {
			own.routes = append(own.routes, r)
		}
	}
	return own, nil
}

// checkHostVeth verifies that the attachment has its host veth, labelled,
// and that it is an up, isolated port of the bridge. It returns the veth.
func checkHostVeth(a attachment, br *netlink.Bridge) (netlink.Link, error) {
	v, foreign, err := attachmentVeth(a)
	if err != nil {
		return nil, err
	}
	if foreign != nil {
		return nil, checkFailed("host link %s is not the veth of attachment %q (%s, alias %q)", foreign.Attrs().Name, a.alias(), foreign.Type(), foreign.Attrs().Alias)
	}
	if v == nil {
		return nil, checkFailed("no host veth %s labelled %q", a.hostVethName(), a.alias())
	}
	if v.Alias != a.alias() {
		return nil, checkFailed("host veth %s is not labelled %q", v.Name, a.alias())
	}
	if v.MasterIndex != br.Index {
		return nil, checkFailed("host veth %s is not a port of bridge %s", v.Name, br.Name)
	}
	if v.Flags&net.FlagUp == 0 {
		return nil, checkFailed("host veth %s is down", v.Name)
	}
	isolated, err := netops.IsIsolatedPort(v)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "read the bridge port flags of %s", v.Name)
	}
	if !isolated {
		return nil, checkFailed("bridge port %s is not isolated: containers on bridge %s could reach each other", v.Name, br.Name)
	}
	if !isolationActive(br.Name) {
		return nil, checkFailed("nftables does not refuse routing between the ports of bridge %s: containers could reach each other through the host", br.Name)
	}
	return v, nil
}

// checkContainer verifies, inside the container, the veth called
// ctrIfName: that it is the peer of the host veth and labelled with the
// attachment, its MTU, and the addresses and routes of own.
func checkContainer(a attachment, ctrIfName string, mtu, hostIndex int, own ownResult) error {
	link, err := netops.LinkByName(ctrIfName)
	if err != nil {
		return checkFailed("no interface %s in the container: %v", ctrIfName, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return checkFailed("%s in the container is a %s, not a veth", ctrIfName, link.Type())
	}
	if link.Attrs().ParentIndex != hostIndex {
		return checkFailed("%s in the container is not the peer of the attachment's host veth", ctrIfName)
	}
	if link.Attrs().Alias != a.alias() {
		return checkFailed("%s in the container is labelled %q, not %q", ctrIfName, link.Attrs().Alias, a.alias())
	}
	if link.Attrs().MTU != mtu {
		return checkFailed("%s has MTU %d, config says %d", ctrIfName, link.Attrs().MTU, mtu)
	}
	if own.mac != "" && own.mac != link.Attrs().HardwareAddr.String() {
		return checkFailed("%s has MAC %s, the result says %s", ctrIfName, link.Attrs().HardwareAddr, own.mac)
	}
	addrs, err := netops.Addresses(link)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "read %s", ctrIfName)
	}
	routes, err := netops.Routes(link)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "read %s", ctrIfName)
	}
	var problems []string
	problems = append(problems, missingAddrs(own.addrs, addrs)...)
	problems = append(problems, missingRoutes(own.routes, routes)...)
	problems = append(problems, subnetRoutes(own.addrs, routes)...)
	if len(problems) > 0 {
		return checkFailed("%s: %s", ctrIfName, strings.Join(problems, "; "))
	}
	return nil
}

func missingAddrs(want, have []netip.Prefix) []string {
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			out = append(out, "address "+w.String()+" missing")
		}
	}
	return out
}

func missingRoutes(want []*types.Route, have []netops.Route) []string {
	var out []string
	for _, w := range want {
		dst := netops.PrefixOf(&w.Dst)
		gw := netops.AddrOf(w.GW)
		if !slices.ContainsFunc(have, func(h netops.Route) bool { return h.Dst == dst && h.Via == gw }) {
			out = append(out, "route "+describeRoute(w)+" missing")
		}
	}
	return out
}

// subnetRoutes reports routes to the subnet of an address: the route that
// would let the container reach the other containers on the bridge.
func subnetRoutes(addrs []netip.Prefix, have []netops.Route) []string {
	var out []string
	for _, a := range addrs {
		if a.IsSingleIP() {
			continue
		}
		subnet := a.Masked()
		for _, h := range have {
			if h.Dst == subnet {
				out = append(out, "unexpected route to the bridge subnet "+subnet.String())
			}
		}
	}
	return out
}

func checkFailed(format string, args ...any) error {
	return cni.Errorf(cni.CodeInternal, "CHECK failed: "+format, args...)
}
