package vpcbridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
)

// The container side: the veth end called containerIfName (by default
// CNI_IFNAME), its addresses and routes. These functions run inside the
// container's namespace. Nothing here deletes a link: the container end
// goes when DEL deletes the host end (host.go).

// configureContainer gives the container veth its addresses and routes and
// brings it up. Addresses are added without their prefix route: the kernel
// would otherwise route the whole subnet, other containers included, out of
// this interface. Only the gateways (on-link host routes) and the IPAM's
// destinations (through the gateway) are reachable.
func configureContainer(ifName string, p *containerPlan) (netlink.Link, error) {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "find %s in the container", ifName)
	}
	for _, ipc := range p.ips {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: hostIP(ipc.Address.IP), Mask: ipc.Address.Mask}, Flags: unix.IFA_F_NOPREFIXROUTE}
		if family(ipc.Address.IP) == unix.AF_INET6 {
			addr.Flags |= unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, cni.Wrap(cni.CodeInternal, err, "add address %s to %s", addr.IPNet, ifName)
		}
	}
	crashpoint.At(stepAddress)
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "bring %s up", ifName)
	}
	for _, r := range p.routes {
		if err := netlink.RouteAdd(kernelRoute(link.Attrs().Index, r)); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, cni.Errorf(cni.CodeInternal, "failed to add route %s to %s: the container already has a route to %s", describeRoute(r), ifName, r.Dst.String())
			}
			return nil, cni.Wrap(cni.CodeInternal, err, "add route %s to %s", describeRoute(r), ifName)
		}
	}
	crashpoint.At(stepRoutes)
	// Re-read the link: the result reports its MAC as the kernel has it.
	return netlink.LinkByIndex(link.Attrs().Index)
}

// configureContainerIn runs configureContainer in the container's namespace.
func configureContainerIn(netns ns.NetNS, ifName string, p *containerPlan) (netlink.Link, error) {
	var link netlink.Link
	err := netns.Do(func(ns.NetNS) error {
		var err error
		link, err = configureContainer(ifName, p)
		return err
	})
	return link, err
}

// kernelRoute is r through the link with the given index.
func kernelRoute(linkIndex int, r *types.Route) *netlink.Route {
	dst := r.Dst
	rt := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &dst,
		Gw:        r.GW,
		MTU:       r.MTU,
		AdvMSS:    r.AdvMSS,
		Priority:  r.Priority,
	}
	if r.Table != nil {
		rt.Table = *r.Table
	}
	if r.Scope != nil {
		rt.Scope = netlink.Scope(*r.Scope)
	}
	return rt
}

func describeRoute(r *types.Route) string {
	if r.GW == nil {
		return r.Dst.String() + " on-link"
	}
	return fmt.Sprintf("%s via %s", r.Dst.String(), r.GW)
}
