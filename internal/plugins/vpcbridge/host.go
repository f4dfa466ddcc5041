package vpcbridge

import (
	"errors"
	"log/slog"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// The host side: the bridge and the host ends of the veths, in the namespace
// the plugin runs in (the instance's).

// hostVethPrefix starts the name of every host veth ("vbr" + 12 hex).
const hostVethPrefix = "vbr"

func ensureBridge(conf *NetConf) (*netlink.Bridge, error) {
	br, err := netops.EnsureBridge(conf.Bridge, conf.MTU)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "set up bridge %s", conf.Bridge)
	}
	return br, nil
}

// createVeth creates the attachment's veth: the host end labelled with the
// attachment, the container end called CNI_IFNAME in the container.
func createVeth(conf *NetConf, a attachment, netns ns.NetNS) (*netlink.Veth, error) {
	v, err := netops.CreateVeth(netops.VethSpec{
		HostPrefix: hostVethPrefix,
		HostAlias:  a.alias(),
		PeerNS:     netns,
		PeerName:   a.IfName,
		MTU:        conf.MTU,
	})
	if errors.Is(err, netops.ErrNameTaken) {
		return nil, cni.EnvError("CNI_IFNAME", "an interface called %q already exists in %s and is not this attachment's", a.IfName, netns.Path())
	}
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "create the veth for %s", a.IfName)
	}
	return v, nil
}

// attach makes the host veth an isolated port of the bridge. A full bridge
// frees up as other containers stop, hence "try again later".
func attach(v *netlink.Veth, br *netlink.Bridge) error {
	err := netops.AttachToBridge(v, br, true)
	if errors.Is(err, netops.ErrBridgeFull) {
		return cni.Errorf(cni.CodeTryAgainLater, "%v", err)
	}
	return cni.Wrap(cni.CodeInternal, err, "attach %s to bridge %s", v.Name, br.Name)
}

func addGateways(br *netlink.Bridge, p *containerPlan) error {
	for _, gw := range p.gateways {
		if err := netops.AddAddress(br, gw); err != nil {
			return cni.Wrap(cni.CodeInternal, err, "give bridge %s its gateway address", br.Name)
		}
	}
	return nil
}

// attachmentVeths returns the host veths labelled with the attachment:
// normally none or one.
func attachmentVeths(a attachment) ([]netlink.Link, error) {
	want := a.alias()
	links, err := netops.LinksByAliasPrefix(want)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "list host veths")
	}
	var found []netlink.Link
	for _, l := range links {
		if l.Attrs().Alias == want {
			found = append(found, l)
		}
	}
	return found, nil
}

// removeAttachmentVeths deletes the attachment's veths from the host side,
// which takes the container ends with them, wherever they are.
func removeAttachmentVeths(a attachment) error {
	links, err := attachmentVeths(a)
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := deleteLink(l); err != nil {
			return err
		}
	}
	return nil
}

func deleteLink(l netlink.Link) error {
	deleted, err := netops.DeleteLink(l)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "delete veth %s", l.Attrs().Name)
	}
	if deleted {
		slog.Info("deleted veth", "veth", l.Attrs().Name, "alias", l.Attrs().Alias)
	}
	return nil
}

// staleVeths returns the host veths of the network whose attachment is not
// among keep: those a GC removes.
func staleVeths(network string, keep map[cni.Attachment]bool) ([]netlink.Link, error) {
	links, err := netops.LinksByAliasPrefix(networkAliasPrefix(network))
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "list host veths")
	}
	valid := make(map[string]bool, len(keep))
	for k := range keep {
		valid[attachment{network: network, Attachment: k}.alias()] = true
	}
	var stale []netlink.Link
	for _, l := range links {
		if !valid[l.Attrs().Alias] {
			stale = append(stale, l)
		}
	}
	return stale, nil
}

// bridgeStatus says whether a container could be attached to the bridge
// called name now: it exists with a free port, or the name is free.
func bridgeStatus(name string) error {
	br, err := netops.LookupBridge(name)
	if errors.Is(err, netops.ErrLinkNotFound) {
		return nil
	}
	if err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "bridge %s cannot be used: %v", name, err)
	}
	ports, err := netops.BridgePorts(br)
	if err != nil {
		return cni.Errorf(cni.CodePluginNotAvailable, "cannot count the ports of bridge %s: %v", name, err)
	}
	if len(ports) >= netops.MaxBridgePorts {
		return cni.Errorf(cni.CodePluginNotAvailable, "bridge %s is full: a Linux bridge has at most %d ports", name, netops.MaxBridgePorts)
	}
	return nil
}
