package vpcbridge

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
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
	link, err := netops.LinkByName(ifName)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "find %s in the container", ifName)
	}
	for _, ipc := range p.ips {
		addr := netops.PrefixOf(&ipc.Address) // planContainer checked it
		if err := netops.AddAddressWithoutPrefixRoute(link, addr); err != nil {
			return nil, cni.Wrap(cni.CodeInternal, err, "add address %s to %s", addr, ifName)
		}
	}
	crashpoint.At(stepAddress)
	if err := netops.SetLinkUp(link); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "bring %s up", ifName)
	}
	for _, r := range p.routes {
		dst := netops.PrefixOf(&r.Dst)
		err := netops.AddRoute(link, dst, netops.AddrOf(r.GW), routeOptions(r))
		if errors.Is(err, netops.ErrRouteExists) {
			return nil, cni.Errorf(cni.CodeInternal, "failed to add route %s to %s: the container already has a route to %s", describeRoute(r), ifName, r.Dst.String())
		}
		if err != nil {
			return nil, cni.Wrap(cni.CodeInternal, err, "add route %s to %s", describeRoute(r), ifName)
		}
	}
	crashpoint.At(stepRoutes)
	// Re-read the link: the result reports its MAC as the kernel has it.
	return netops.LinkByIndex(link.Attrs().Index)
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

// routeOptions are the attributes of r beyond destination and gateway.
func routeOptions(r *types.Route) netops.RouteOptions {
	o := netops.RouteOptions{MTU: r.MTU, AdvMSS: r.AdvMSS, Priority: r.Priority}
	if r.Table != nil {
		o.Table = *r.Table
	}
	if r.Scope != nil {
		o.Scope = *r.Scope
	}
	return o
}

func describeRoute(r *types.Route) string {
	if r.GW == nil {
		return r.Dst.String() + " on-link"
	}
	return fmt.Sprintf("%s via %s", r.Dst.String(), r.GW)
}
