package netops

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNameTaken is returned (wrapped) when the name asked for the peer end of
// a veth already belongs to a link in the peer's namespace.
var ErrNameTaken = errors.New("interface name already taken")

// vethNameAttempts bounds the retries on a clash of the random host name.
const vethNameAttempts = 8

// VethSpec describes a veth pair with one end (the host end) in the current
// namespace and the other (the peer) in another namespace.
type VethSpec struct {
	// HostPrefix starts the host end's name; random hex completes it.
	HostPrefix string
	// HostAlias is stored as the host end's alias (IFLA_IFALIAS), so that
	// the pair can be found and removed from the host alone, when the
	// peer's namespace is forgotten. A crash between the creation and the
	// labelling leaves an unlabelled pair, which only the peer's name finds.
	HostAlias string
	PeerNS    ns.NetNS
	PeerName  string
	MTU       int
}

// CreateVeth creates the pair in one netlink request, the peer directly in
// its namespace, so that no crash can leave it half moved, then labels the
// host end. Both ends are left down. A clash of the random host name is retried with another; a
// taken peer name is an error wrapping ErrNameTaken.
func CreateVeth(spec VethSpec) (*netlink.Veth, error) {
	for range vethNameAttempts {
		name, err := RandomName(spec.HostPrefix)
		if err != nil {
			return nil, err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = spec.MTU
		err = netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     attrs,
			PeerName:      spec.PeerName,
			PeerNamespace: netlink.NsFd(int(spec.PeerNS.Fd())),
		})
		if err == nil {
			return labelVeth(name, spec.HostAlias)
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
	}
	return nil, fmt.Errorf("failed to find a free host veth name with prefix %q after %d attempts", spec.HostPrefix, vethNameAttempts)
}

// labelVeth sets the alias of the new veth called name and returns it. The
// kernel ignores an alias given at creation, hence a second request; if it
// fails, the veth is deleted rather than left unlabelled.
func labelVeth(name, alias string) (*netlink.Veth, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("failed to look up new veth %s: %w", name, err)
	}
	v, ok := l.(*netlink.Veth)
	if !ok {
		return nil, fmt.Errorf("link %s is a %s, not a veth", name, l.Type())
	}
	if alias == "" {
		return v, nil
	}
	if err := netlink.LinkSetAlias(v, alias); err != nil {
		_, _ = DeleteLink(v)
		return nil, fmt.Errorf("failed to label veth %s with %q: %w", name, alias, err)
	}
	v.Alias = alias
	return v, nil
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
	links, err := retryInterruptedDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
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
