package netops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrLinkNotFound is returned (wrapped) when no link matches.
var ErrLinkNotFound = errors.New("link not found")

// LinkByMAC returns the link in the current namespace whose hardware address
// is mac. Bridges are skipped: a bridge may borrow the MAC of a port.
func LinkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := ListLinks()
	if err != nil {
		return nil, err
	}
	var found []netlink.Link
	for _, l := range links {
		if l.Type() == "bridge" {
			continue
		}
		if bytes.Equal(l.Attrs().HardwareAddr, mac) {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no link with MAC %s: %w", mac, ErrLinkNotFound)
	case 1:
		return found[0], nil
	default:
		names := make([]string, len(found))
		for i, l := range found {
			names[i] = l.Attrs().Name
		}
		return nil, fmt.Errorf("MAC %s is shared by links %s", mac, strings.Join(names, ", "))
	}
}

// MoveLink moves link from the current namespace into target and names it
// newName there. The link is brought down first (the kernel requires it for a
// rename). It travels under a temporary name ("vpctmp..."), so a name taken
// in the target never makes the move fail. If the final rename fails, the
// link stays in target under the temporary name: callers that may retry
// must find it by MAC, not by name.
func MoveLink(link netlink.Link, target ns.NetNS, newName string) (netlink.Link, error) {
	if err := netlink.LinkSetDown(link); err != nil {
		return nil, fmt.Errorf("failed to set %s down: %w", link.Attrs().Name, err)
	}
	// A temporary name unlikely to exist anywhere avoids EEXIST in the
	// target when the current name is taken there (eth0 into a namespace
	// that already has an eth0, or back into a host that reused the name).
	tmp, err := RandomName("vpctmp")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetName(link, tmp); err != nil {
		return nil, fmt.Errorf("failed to rename %s to %s before moving it: %w", link.Attrs().Name, tmp, err)
	}
	if err := netlink.LinkSetNsFd(link, int(target.Fd())); err != nil {
		// Put the name back: the link is still here.
		_ = netlink.LinkSetName(link, link.Attrs().Name)
		return nil, fmt.Errorf("failed to move %s into namespace %s: %w", link.Attrs().Name, target.Path(), err)
	}
	var moved netlink.Link
	err = target.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(tmp)
		if err != nil {
			return fmt.Errorf("failed to find moved link %s: %w", tmp, err)
		}
		if err := netlink.LinkSetName(l, newName); err != nil {
			return fmt.Errorf("failed to rename %s to %s: %w", tmp, newName, err)
		}
		moved, err = netlink.LinkByName(newName)
		return err
	})
	if err != nil {
		return nil, err
	}
	return moved, nil
}

// ListLinks lists the links of the current namespace. A dump that the
// kernel interrupted (links changed meanwhile, which concurrent plugins
// cause) is retried: its result may miss links.
func ListLinks() ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		links, err = netlink.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("failed to list links: %w", err)
}

// RandomName returns prefix followed by random hex, at most 15 bytes long
// (IFNAMSIZ-1), for host-side veths and temporary names.
func RandomName(prefix string) (string, error) {
	n := (15 - len(prefix)) / 2
	if n < 3 {
		return "", fmt.Errorf("prefix %q too long for an interface name", prefix)
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("failed to read random bytes: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// ValidateIfName reports why name cannot be a Linux interface name, or nil.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > unix.IFNAMSIZ-1:
		return fmt.Errorf("interface name %q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("interface name %q contains '/', ':' or white space", name)
	}
	return nil
}

// WaitForLink waits until a link with the given MAC exists in the namespace
// at nsPath and returns it. It subscribes to link notifications before
// looking, so a link that appears between the two is not missed.
func WaitForLink(ctx context.Context, nsPath string, mac net.HardwareAddr) (netlink.Link, error) {
	handle, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("failed to open namespace %s: %w", nsPath, err)
	}
	defer handle.Close()
	nl, err := netlink.NewHandleAt(handle)
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink in %s: %w", nsPath, err)
	}
	defer nl.Close()

	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	subErr := make(chan error, 1)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: &handle,
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("failed to subscribe to links in %s: %w", nsPath, err)
	}

	find := func() netlink.Link {
		links, err := nl.LinkList()
		if err != nil {
			return nil // interrupted or failed: the next event or tick looks again
		}
		for _, l := range links {
			if l.Type() != "bridge" && bytes.Equal(l.Attrs().HardwareAddr, mac) {
				return l
			}
		}
		return nil
	}
	if l := find(); l != nil {
		return l, nil
	}
	// A slow safety net in case the notification socket overflows.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				return nil, fmt.Errorf("link notifications in %s ended", nsPath)
			}
			if u.Header.Type == unix.RTM_NEWLINK && u.Link != nil && bytes.Equal(u.Link.Attrs().HardwareAddr, mac) && u.Link.Type() != "bridge" {
				return u.Link, nil
			}
		case <-tick.C:
			if l := find(); l != nil {
				return l, nil
			}
		case err := <-subErr:
			return nil, fmt.Errorf("link notifications in %s failed: %w", nsPath, err)
		case <-ctx.Done():
			return nil, fmt.Errorf("no link with MAC %s appeared in %s: %w", mac, nsPath, ctx.Err())
		}
	}
}

// LinkByName returns the link called name in the current namespace, or an
// error wrapping ErrLinkNotFound when there is none.
func LinkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("no link %s: %w", name, ErrLinkNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to look up link %s: %w", name, err)
	}
	return l, nil
}

// LinkByIndex returns the link with the index in the current namespace, as
// the kernel has it now.
func LinkByIndex(index int) (netlink.Link, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("failed to look up link %d: %w", index, err)
	}
	return l, nil
}

// SetLinkUp brings link up.
func SetLinkUp(link netlink.Link) error {
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// SetLinkDown sets link down.
func SetLinkDown(link netlink.Link) error {
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("failed to set %s down: %w", link.Attrs().Name, err)
	}
	return nil
}

// SetMTU sets the MTU of link.
func SetMTU(link netlink.Link, mtu int) error {
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("failed to set the MTU of %s to %d: %w", link.Attrs().Name, mtu, err)
	}
	return nil
}

// SetAlias sets the alias (IFLA_IFALIAS) of link; the kernel keeps it
// across namespace moves, so it serves as a label that travels with the
// link. An empty alias removes it.
func SetAlias(link netlink.Link, alias string) error {
	if err := netlink.LinkSetAlias(link, alias); err != nil {
		return fmt.Errorf("failed to set the alias of %s to %q: %w", link.Attrs().Name, alias, err)
	}
	return nil
}

// RenameLink gives link the name newName in the current namespace and
// returns it as the kernel has it then. The kernel renames only links that
// are down, so a link with another name is set down first. A name that
// another link holds is an error wrapping ErrNameTaken.
func RenameLink(link netlink.Link, newName string) (netlink.Link, error) {
	name := link.Attrs().Name
	if name == newName {
		return link, nil
	}
	if err := SetLinkDown(link); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetName(link, newName); err != nil {
		if _, taken := netlink.LinkByName(newName); taken == nil {
			return nil, fmt.Errorf("failed to rename %s to %s: %w", name, newName, ErrNameTaken)
		}
		return nil, fmt.Errorf("failed to rename %s to %s: %w", name, newName, err)
	}
	renamed, err := netlink.LinkByName(newName)
	if err != nil {
		return nil, fmt.Errorf("failed to find %s after renaming it: %w", newName, err)
	}
	return renamed, nil
}
