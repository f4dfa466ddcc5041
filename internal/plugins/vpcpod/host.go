package vpcpod

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// The host side: the host ends of the veths, their /32 routes and the
// policy rules, in the namespace the plugin runs in (the node's).

// createVeth creates the attachment's veth: the host end named and
// addressed after the attachment, the pod end called ifName in the pod.
// It is not labelled yet.
func createVeth(a attachment, netns ns.NetNS, ifName string, mtu int) (*netlink.Veth, error) {
	v, err := netops.CreateVeth(netops.VethSpec{
		HostName: a.hostVethName(),
		HostMAC:  a.hostVethMAC(),
		PeerNS:   netns,
		PeerName: ifName,
		MTU:      mtu,
	})
	switch {
	case errors.Is(err, netops.ErrNameTaken):
		return nil, cni.EnvError("CNI_IFNAME", "an interface called %q already exists in %s and is not this attachment's", ifName, netns.Path())
	case errors.Is(err, netops.ErrHostNameTaken):
		return nil, cni.Errorf(cni.CodeInternal, "the node already has a link called %s that is not this attachment's veth: remove it", a.hostVethName())
	case err != nil:
		return nil, cni.Wrap(cni.CodeInternal, err, "create the veth for %s", ifName)
	}
	return v, nil
}

// labelVeth labels both ends of the veth with the attachment.
func labelVeth(v *netlink.Veth, a attachment, netns ns.NetNS, ifName string) error {
	return cni.Wrap(cni.CodeInternal, netops.LabelVeth(v, a.alias(), netns, ifName), "label the veth of %s", ifName)
}

// The rule lock (flock) is held while rules are added next to their route
// and while orphaned rules are swept. Without it a sweep that has just
// seen a dead pod's rule with no route could delete it after a new pod
// given the same address found it in place (AddRule keeps an existing
// rule) and routed its address. Each holder keeps it for a few netlink
// calls, never across a veth creation or a call to vpcnetd. It lives next
// to vpcnetd's socket, in the node's run directory.
const ruleLockName = "vpc-pod.lock"

// ruleLock is the lock file for the config's socket.
func ruleLock(socket string) string { return filepath.Join(filepath.Dir(socket), ruleLockName) }

// lockRules takes the rule lock and returns its release.
func lockRules(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, cni.Wrap(cni.CodeIOFailure, err, "create the directory of lock %s", path)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, cni.Wrap(cni.CodeIOFailure, err, "open lock %s", path)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, cni.Wrap(cni.CodeIOFailure, err, "lock %s", path)
	}
	return func() { f.Close() }, nil // closing the last descriptor releases the lock
}

// configureHost brings the host veth up and routes the pod's address to
// it: the /32 route first, then the rules, so that a rule never exists
// without its route (orphanRules relies on it), under the rule lock.
func configureHost(v *netlink.Veth, p podPlan, lock string) error {
	if err := netops.SetLinkUp(v); err != nil {
		return cni.Wrap(cni.CodeInternal, err, "bring host veth %s up", v.Name)
	}
	unlock, err := lockRules(lock)
	if err != nil {
		return err
	}
	defer unlock()
	route := netops.TableRoute{Dst: p.prefix(), LinkIndex: v.Index}
	if err := netops.ReplaceTableRoute(route); err != nil {
		return cni.Wrap(cni.CodeInternal, err, "route %s to host veth %s", p.addr, v.Name)
	}
	crashpoint.At(stepHostRoute)
	for _, r := range p.rules() {
		if err := netops.AddRule(r); err != nil {
			return cni.Wrap(cni.CodeInternal, err, "add the rule for %s", p.addr)
		}
	}
	crashpoint.At(stepRules)
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

// podAddresses are the pod addresses routed to host veth l: its on-link
// IPv4 /32 routes in main. With vpcnetd down, they are how DEL and GC know
// which rules are the pod's.
func podAddresses(l netlink.Link) ([]netip.Addr, error) {
	routes, err := netops.TableRoutes(0, l.Attrs().Index)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "read the routes of host veth %s", l.Attrs().Name)
	}
	var out []netip.Addr
	for _, r := range routes {
		if !r.Gw.IsValid() && r.Dst.Addr().Is4() && r.Dst.Bits() == 32 {
			out = append(out, r.Dst.Addr())
		}
	}
	return out, nil
}

// removeVeth removes a pod's host side: the rules of the addresses routed
// to the veth, then the veth, which takes its routes and the pod end with
// it. It returns the addresses it found.
func removeVeth(v netlink.Link) ([]netip.Addr, error) {
	addrs, err := podAddresses(v)
	if err != nil {
		return nil, err
	}
	if err := removeRulesFor(addrs...); err != nil {
		return nil, err
	}
	crashpoint.At(stepRulesRemoved)
	deleted, err := netops.DeleteLink(v)
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "delete host veth %s", v.Attrs().Name)
	}
	if deleted {
		slog.Info("deleted host veth", "veth", v.Attrs().Name, "alias", v.Attrs().Alias, "addresses", addrs)
	}
	return addrs, nil
}

// removeAttachmentVeth removes the attachment's host side, if any. A
// foreign link with the veth's name is left alone. The pod end is never
// looked up by name: it goes with the host end, wherever it is.
func removeAttachmentVeth(a attachment) ([]netip.Addr, error) {
	v, foreign, err := attachmentVeth(a)
	if foreign != nil {
		slog.Warn("a host link has the name of the attachment's veth but is not it; leaving it",
			"link", foreign.Attrs().Name, "type", foreign.Type(), "alias", foreign.Attrs().Alias, "attachment", a.alias())
	}
	if err != nil || v == nil {
		return nil, err
	}
	return removeVeth(v)
}

// removeRulesFor deletes vpc-pod's rules for the given pod addresses.
func removeRulesFor(addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	rules, err := netops.Rules(RuleProtocol)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "list the policy rules")
	}
	for _, addr := range addrs {
		for _, r := range rulesOf(rules, addr) {
			if err := netops.DeleteRule(r); err != nil {
				return cni.Wrap(cni.CodeInternal, err, "remove the rules of %s", addr)
			}
		}
	}
	return nil
}

// sweepOrphanRules deletes vpc-pod's rules whose pod has no host route:
// when a pod's namespace goes, its veth and route go with it, its rules
// stay. The rules are read before the routes: a rule an ADD installs comes
// after its route, so a rule seen here with no route is not one in use.
func sweepOrphanRules(lock string) error {
	unlock, err := lockRules(lock)
	if err != nil {
		return err
	}
	defer unlock()
	rules, err := netops.Rules(RuleProtocol)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "list the policy rules")
	}
	if len(rules) == 0 {
		return nil
	}
	routes, err := netops.TableRoutes(0, 0)
	if err != nil {
		return cni.Wrap(cni.CodeInternal, err, "list the main routing table")
	}
	routed := make(map[netip.Prefix]bool, len(routes))
	for _, r := range routes {
		routed[r.Dst] = true
	}
	for _, r := range orphanRules(rules, routed) {
		if err := netops.DeleteRule(r); err != nil {
			return cni.Wrap(cni.CodeInternal, err, "remove orphaned rule %s", r)
		}
		slog.Info("removed the rule of a pod whose veth is gone", "rule", r.String())
	}
	return nil
}

// staleVeths returns the host veths of the network whose attachment is not
// among keep: those a GC removes. A labelled veth is the network's if its
// label says so; an unlabelled one (an ADD crashed before labelling it) if
// its name starts with the prefix and its MAC with the network's prefix,
// and it is stale unless it carries the name of a valid attachment.
func staleVeths(network, prefix string, keep map[cni.Attachment]bool) ([]netlink.Link, error) {
	links, err := netops.ListLinks()
	if err != nil {
		return nil, cni.Wrap(cni.CodeInternal, err, "list host veths")
	}
	validAlias := make(map[string]bool, len(keep))
	validName := make(map[string]bool, len(keep))
	for k := range keep {
		a := newAttachment(network, k.ContainerID, k.IfName, prefix)
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
		case attrs.Alias == "" && strings.HasPrefix(attrs.Name, prefix) && inNetwork(attrs.HardwareAddr, network):
			if !validName[attrs.Name] {
				stale = append(stale, l)
			}
		}
	}
	return stale, nil
}
