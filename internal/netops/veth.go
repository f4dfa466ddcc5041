package netops

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNameTaken is returned (wrapped) when a name asked for a link (the peer
// end of a veth, a rename) already belongs to another link in that
// namespace.
var ErrNameTaken = errors.New("interface name already taken")

// ErrHostNameTaken is returned (wrapped) when the fixed name asked for the
// host end of a veth already belongs to a link in the current namespace.
var ErrHostNameTaken = errors.New("host interface name already taken")

// vethNameAttempts bounds the retries on a clash of a random host name.
const vethNameAttempts = 8

// VethSpec describes a veth pair with one end (the host end) in the current
// namespace and the other (the peer) in another namespace.
type VethSpec struct {
	// HostName is the host end's name. When empty, HostPrefix followed by
	// random hex names it.
	HostName   string
	HostPrefix string
	// HostMAC, when set, is the host end's hardware address.
	HostMAC  net.HardwareAddr
	PeerNS   ns.NetNS
	PeerName string
	MTU      int
}

// CreateVeth creates the pair in one netlink request: both names, the host
// end's MAC, the MTU and the peer's namespace are given at creation, so a
// crash leaves either no pair or the whole pair as specified, never one
// half moved or misnamed. Both ends are left down and unlabelled: the
// kernel ignores an alias (IFLA_IFALIAS) in a request that creates a link,
// so a caller that must find the pair after a crash gives it a HostName (or
// HostMAC) it can recompute, and labels it afterwards with LabelVeth.
//
// A taken peer name is an error wrapping ErrNameTaken, a taken HostName
// one wrapping ErrHostNameTaken; a clash of a random host name is retried
// with another.
func CreateVeth(spec VethSpec) (*netlink.Veth, error) {
	attempts := vethNameAttempts
	if spec.HostName != "" {
		attempts = 1
	}
	for range attempts {
		name := spec.HostName
		if name == "" {
			var err error
			if name, err = RandomName(spec.HostPrefix); err != nil {
				return nil, err
			}
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = spec.MTU
		attrs.HardwareAddr = spec.HostMAC
		err := netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     attrs,
			PeerName:      spec.PeerName,
			PeerNamespace: netlink.NsFd(int(spec.PeerNS.Fd())),
		})
		if err == nil {
			return lookupVeth(name)
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("failed to create veth %s with peer %s in %s: %w", name, spec.PeerName, spec.PeerNS.Path(), err)
		}
		// EEXIST names neither end: find out which one clashed.
		taken, lerr := linkExistsIn(spec.PeerNS, spec.PeerName)
		if lerr != nil {
			return nil, lerr
		}
		if taken {
			return nil, fmt.Errorf("cannot create %s in %s: %w", spec.PeerName, spec.PeerNS.Path(), ErrNameTaken)
		}
		if spec.HostName != "" {
			return nil, fmt.Errorf("cannot create veth %s: %w", name, ErrHostNameTaken)
		}
	}
	return nil, fmt.Errorf("failed to find a free host veth name with prefix %q after %d attempts", spec.HostPrefix, vethNameAttempts)
}

// lookupVeth returns the veth called name in the current namespace.
func lookupVeth(name string) (*netlink.Veth, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("failed to look up veth %s: %w", name, err)
	}
	v, ok := l.(*netlink.Veth)
	if !ok {
		return nil, fmt.Errorf("link %s is a %s, not a veth", name, l.Type())
	}
	return v, nil
}

// LabelVeth stores alias (IFLA_IFALIAS) on the host end v and on its peer,
// called peerName in peerNS, so that either end says whose it is. The host
// end is labelled first: it is the one found from the host alone. The peer
// is labelled only if it is v's peer: a link of that name that is not is
// someone else's, and an error.
func LabelVeth(v *netlink.Veth, alias string, peerNS ns.NetNS, peerName string) error {
	if err := netlink.LinkSetAlias(v, alias); err != nil {
		return fmt.Errorf("failed to label veth %s with %q: %w", v.Name, alias, err)
	}
	v.Alias = alias
	return peerNS.Do(func(ns.NetNS) error {
		peer, err := netlink.LinkByName(peerName)
		if err != nil {
			return fmt.Errorf("failed to find %s, the peer of %s, in %s: %w", peerName, v.Name, peerNS.Path(), err)
		}
		if _, ok := peer.(*netlink.Veth); !ok || peer.Attrs().ParentIndex != v.Index {
			return fmt.Errorf("%s in %s is not the peer of veth %s", peerName, peerNS.Path(), v.Name)
		}
		if err := netlink.LinkSetAlias(peer, alias); err != nil {
			return fmt.Errorf("failed to label %s in %s with %q: %w", peerName, peerNS.Path(), alias, err)
		}
		return nil
	})
}

// linkExistsIn reports whether a link called name exists in target.
func linkExistsIn(target ns.NetNS, name string) (bool, error) {
	var exists bool
	err := target.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(name)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			exists = true
		case errors.As(err, &nf):
		default:
			return fmt.Errorf("failed to look up %s in %s: %w", name, target.Path(), err)
		}
		return nil
	})
	return exists, err
}

// LinksByAliasPrefix returns the links of the current namespace whose alias
// starts with prefix.
func LinksByAliasPrefix(prefix string) ([]netlink.Link, error) {
	links, err := ListLinks()
	if err != nil {
		return nil, err
	}
	var found []netlink.Link
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, prefix) {
			found = append(found, l)
		}
	}
	return found, nil
}

// DeleteLink deletes link from the current namespace. A link that is
// already gone is not an error: deleting one end of a veth removes the
// other, and DELs are repeated. Reports whether this call deleted it.
func DeleteLink(link netlink.Link) (bool, error) {
	err := netlink.LinkDel(link)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("failed to delete link %s: %w", link.Attrs().Name, err)
}

// OwnVeth finds the host veth called name that a plugin made for one
// attachment: labelled alias, or unlabelled when an ADD crashed between
// creating and labelling it. It returns nil, nil, nil when there is none,
// and as foreign a link of that name that is not a veth or carries another
// label (someone else's: never to be touched).
func OwnVeth(name, alias string) (v *netlink.Veth, foreign netlink.Link, err error) {
	l, err := LinkByName(name)
	if errors.Is(err, ErrLinkNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("look up host veth %s: %w", name, err)
	}
	v, ok := l.(*netlink.Veth)
	if !ok || (v.Alias != alias && v.Alias != "") {
		return nil, l, nil
	}
	return v, nil, nil
}
