package vpcbridge

import (
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// CHECK compares the kernel with the ADD's result. The comparisons are pure
// functions over what was read, so they are tested with tables.

// checkHostVeth verifies that the attachment has exactly one host veth and
// that it is an up, isolated port of the bridge. It returns the veth.
func checkHostVeth(a attachment, br *netlink.Bridge) (netlink.Link, error) {
	veths, err := attachmentVeths(a)
	if err != nil {
		return nil, err
	}
	if len(veths) != 1 {
		return nil, checkFailed("want 1 host veth labelled %q, found %d", a.alias(), len(veths))
	}
	v := veths[0]
	if v.Attrs().MasterIndex != br.Index {
		return nil, checkFailed("host veth %s is not a port of bridge %s", v.Attrs().Name, br.Name)
	}
	if v.Attrs().Flags&net.FlagUp == 0 {
		return nil, checkFailed("host veth %s is down", v.Attrs().Name)
	}
	pi, err := netlink.LinkGetProtinfo(v)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "read the bridge port flags of %s", v.Attrs().Name)
	}
	if !pi.Isolated {
		return nil, checkFailed("bridge port %s is not isolated: containers on bridge %s could reach each other", v.Attrs().Name, br.Name)
	}
	return v, nil
}

// checkContainer verifies, inside the container, the veth, its MTU, that it
// is the peer of the host veth, and the addresses and routes of prev.
func checkContainer(ifName string, mtu, hostIndex int, prev *current.Result) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return checkFailed("no interface %s in the container: %v", ifName, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return checkFailed("%s in the container is a %s, not a veth", ifName, link.Type())
	}
	if link.Attrs().ParentIndex != hostIndex {
		return checkFailed("%s in the container is not the peer of the attachment's host veth", ifName)
	}
	if link.Attrs().MTU != mtu {
		return checkFailed("%s has MTU %d, config says %d", ifName, link.Attrs().MTU, mtu)
	}
	addrs, err := netops.Addresses(link)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "read %s", ifName)
	}
	routes, err := netops.Routes(link)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "read %s", ifName)
	}
	want := containerAddrs(prev, ifName)
	var problems []string
	problems = append(problems, missingAddrs(want, addrs)...)
	problems = append(problems, missingRoutes(prev.Routes, routes)...)
	problems = append(problems, subnetRoutes(want, routes)...)
	if len(problems) > 0 {
		return checkFailed("%s: %s", ifName, strings.Join(problems, "; "))
	}
	return nil
}

// containerAddrs returns the addresses of prev that belong to the container
// interface called ifName.
func containerAddrs(prev *current.Result, ifName string) []net.IPNet {
	var out []net.IPNet
	for _, ipc := range prev.IPs {
		if ipc.Interface == nil || *ipc.Interface < 0 || *ipc.Interface >= len(prev.Interfaces) {
			continue
		}
		intf := prev.Interfaces[*ipc.Interface]
		if intf.Name == ifName && intf.Sandbox != "" {
			out = append(out, ipc.Address)
		}
	}
	return out
}

func missingAddrs(want []net.IPNet, have []*net.IPNet) []string {
	var out []string
	for _, w := range want {
		found := false
		for _, h := range have {
			if h != nil && sameNet(*h, w) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, "address "+w.String()+" missing")
		}
	}
	return out
}

func missingRoutes(want []*types.Route, have []netlink.Route) []string {
	var out []string
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Dst != nil && sameNet(*h.Dst, w.Dst) && (w.GW == nil && h.Gw == nil || w.GW != nil && w.GW.Equal(h.Gw)) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, "route "+describeRoute(w)+" missing")
		}
	}
	return out
}

// subnetRoutes reports routes to the subnet of an address: the route that
// would let the container reach the other containers on the bridge.
func subnetRoutes(addrs []net.IPNet, have []netlink.Route) []string {
	var out []string
	for _, a := range addrs {
		ones, bits := a.Mask.Size()
		if ones == bits {
			continue
		}
		subnet := net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
		for _, h := range have {
			if h.Dst != nil && sameNet(*h.Dst, subnet) {
				out = append(out, "unexpected route to the bridge subnet "+subnet.String())
			}
		}
	}
	return out
}

// sameNet compares address and prefix length, whatever the byte forms.
func sameNet(a, b net.IPNet) bool {
	aOnes, aBits := a.Mask.Size()
	bOnes, bBits := b.Mask.Size()
	return a.IP.Equal(b.IP) && aOnes == bOnes && aBits == bBits
}

func checkFailed(format string, args ...any) error {
	return cni.Errorf(cni.CodeInternal, "CHECK failed: "+format, args...)
}
