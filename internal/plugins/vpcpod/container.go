package vpcpod

import (
	"errors"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// The pod side: the veth end called CNI_IFNAME, its address, routes and
// gateway entry. These functions run inside the pod's namespace. Nothing
// here deletes a link: the pod end goes when the host end is deleted.

// configurePod gives the pod its address as a /32 (no subnet route: every
// destination, the pod's neighbours on the node included, is reached
// through the gateway), an on-link route to the gateway, the default route
// through it, and the gateway's permanent neighbour entry pointing at the
// host veth's MAC, so the pod never has to ask for it.
func configurePod(ifName string, p podPlan, hostMAC net.HardwareAddr) (netlink.Link, error) {
	link, err := netops.LinkByName(ifName)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "find %s in the pod", ifName)
	}
	if err := netops.AddAddress(link, p.prefix()); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "give %s its address", ifName)
	}
	if err := netops.SetLinkUp(link); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "bring %s up", ifName)
	}
	crashpoint.At(stepPodAddress)
	gw := netops.TableRoute{Dst: podGatewayPrefix(), LinkIndex: link.Attrs().Index}
	if err := netops.ReplaceTableRoute(gw); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "route the gateway %s on %s", podGateway, ifName)
	}
	if err := netops.AddRoute(link, netops.DefaultDestination(podGateway), podGateway, netops.RouteOptions{}); err != nil {
		if errors.Is(err, netops.ErrRouteExists) {
			return nil, cni.Errorf(cni.CodeInternal, "failed to add the default route via %s on %s: the pod already has a default route", podGateway, ifName)
		}
		return nil, cni.Wrap(cni.CodeInternal, err, "add the default route via %s on %s", podGateway, ifName)
	}
	if err := netops.SetPermanentNeighbor(link, podGateway, hostMAC); err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "set the gateway's neighbour entry on %s", ifName)
	}
	crashpoint.At(stepPodRoutes)
	// Re-read the link: the result reports its MAC as the kernel has it.
	return netops.LinkByIndex(link.Attrs().Index)
}

// configurePodIn runs configurePod in the pod's namespace.
func configurePodIn(netns ns.NetNS, ifName string, p podPlan, hostMAC net.HardwareAddr) (netlink.Link, error) {
	var link netlink.Link
	err := netns.Do(func(ns.NetNS) error {
		var err error
		link, err = configurePod(ifName, p, hostMAC)
		return err
	})
	return link, err
}
