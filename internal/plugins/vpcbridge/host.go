package vpcbridge

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// The host side: the bridge and the host ends of the veths, in the namespace
// the plugin runs in (the instance's).

// ensureBridge returns the bridge, created if missing, with packets
// between its ports refused at layer 3 too (see firewall.go).
func ensureBridge(conf *Config) (*netlink.Bridge, error) {
	br, err := netops.EnsureBridge(conf.Bridge, conf.MTU)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "set up bridge %s", conf.Bridge)
	}
	if err := ensureIsolation(conf.Bridge); err != nil {
		return nil, err
	}
	return br, nil
}

// createVeth creates the attachment's veth: the host end named and
// addressed after the attachment (see hostVethName), the container end
// called ctrIfName in the container. It is not labelled yet.
func createVeth(conf *Config, a attachment, netns ns.NetNS, ctrIfName string) (*netlink.Veth, error) {
	v, err := netops.CreateVeth(netops.VethSpec{
		HostName: a.hostVethName(),
		HostMAC:  a.hostVethMAC(),
		PeerNS:   netns,
		PeerName: ctrIfName,
		MTU:      conf.MTU,
	})
	switch {
	case errors.Is(err, netops.ErrNameTaken) && conf.ContainerIfName != "":
		return nil, cni.FieldError("containerIfName", "an interface called %q already exists in %s and is not this attachment's", ctrIfName, netns.Path())
	case errors.Is(err, netops.ErrNameTaken):
		return nil, cni.EnvError("CNI_IFNAME", "an interface called %q already exists in %s and is not this attachment's; "+
			"if vpc-bridge follows another plugin in a chain, which gets the same CNI_IFNAME, set \"containerIfName\" in its config to name its own interface",
			ctrIfName, netns.Path())
	case errors.Is(err, netops.ErrHostNameTaken):
		return nil, cni.Errorf(cni.CodeInternal, "the host already has a link called %s that is not this attachment's veth: remove it", a.hostVethName())
	case err != nil:
		return nil, cni.Wrap(cni.CodeInternal, err, "create the veth for %s", ctrIfName)
	}
	return v, nil
}

// labelVeth labels both ends of the veth with the attachment.
func labelVeth(v *netlink.Veth, a attachment, netns ns.NetNS, ctrIfName string) error {
	return cni.Wrap(cni.CodeInternal, netops.LabelVeth(v, a.alias(), netns, ctrIfName), "label the veth of %s", a.IfName)
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

// attachmentVeth returns the attachment's host veth, found by its name:
// labelled, or unlabelled when an ADD crashed between creating and
// labelling it. It returns nil, nil when there is none, and as foreign a
// link of that name that is not a veth or is labelled for someone else.
func attachmentVeth(a attachment) (*netlink.Veth, netlink.Link, error) {
	v, foreign, err := netops.OwnVeth(a.hostVethName(), a.alias())
	if err != nil {
		return nil, nil, cni.Wrap(cni.CodeInternal, err, "find the attachment's host veth")
	}
	return v, foreign, nil
}

// removeAttachmentVeth deletes the attachment's veth from the host side,
// which takes the container end with it, wherever it is. The container end
// is never looked up by name: in a chain another plugin's link may carry
// that name (on the local VPC an ENI is a veth too). A foreign link with
// the veth's name is left alone.
func removeAttachmentVeth(a attachment) error {
	v, foreign, err := attachmentVeth(a)
	if foreign != nil {
		slog.Warn("a host link has the name of the attachment's veth but is not it; leaving it",
			"link", foreign.Attrs().Name, "type", foreign.Type(), "alias", foreign.Attrs().Alias, "attachment", a.alias())
	}
	if err != nil || v == nil {
		return err
	}
	return deleteLink(v)
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
// among keep: those a GC removes. A labelled veth is the network's if its
// label says so; an unlabelled one (an ADD crashed before labelling it) if
// its name starts with the prefix and its MAC with the network's prefix,
// and it is stale unless it carries the name of a valid attachment.
func staleVeths(network string, keep map[cni.Attachment]bool) ([]netlink.Link, error) {
	links, err := netops.ListLinks()
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "list host veths")
	}
	validAlias := make(map[string]bool, len(keep))
	validName := make(map[string]bool, len(keep))
	for k := range keep {
		a := attachment{network: network, Attachment: k}
		validAlias[a.alias()] = true
		validName[a.hostVethName()] = true
	}
	var stale []netlink.Link
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); !ok {
			continue
		}
		attrs := l.Attrs()
		switch {
		case strings.HasPrefix(attrs.Alias, networkAliasPrefix(network)):
			if !validAlias[attrs.Alias] {
				stale = append(stale, l)
			}
		case attrs.Alias == "" && strings.HasPrefix(attrs.Name, hostVethPrefix) && inNetwork(attrs.HardwareAddr, network):
			if !validName[attrs.Name] {
				stale = append(stale, l)
			}
		}
	}
	return stale, nil
}

// bridgeStatus says whether a container could be attached to the bridge
// called name now: it exists with a free port, or the name is free.
func bridgeStatus(name string) error {
	if err := isolationStatus(name); err != nil {
		return err
	}
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
