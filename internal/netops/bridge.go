package netops

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// MaxBridgePorts is how many ports a Linux bridge takes: port numbers are
// 10 bits (BR_MAX_PORTS = 1024) and number 0 is reserved.
const MaxBridgePorts = 1023

// ErrBridgeFull is returned (wrapped) when a bridge has no free port number.
var ErrBridgeFull = errors.New("bridge has no free port")

// BridgeMAC returns the hardware address vpcnet gives the bridge called name:
// locally administered, unicast, and the same every time. A bridge without an
// address of its own takes the lowest MAC of its ports, so its address would
// change as containers come and go and every container's ARP entry for the
// gateway would go stale.
func BridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("vpcnet-bridge:" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// LookupBridge returns the bridge called name in the current namespace. It
// wraps ErrLinkNotFound when there is no such link, and fails when the name
// belongs to a link that is not a bridge.
func LookupBridge(name string) (*netlink.Bridge, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("no bridge %s: %w", name, ErrLinkNotFound)
		}
		return nil, fmt.Errorf("failed to look up bridge %s: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("link %s exists and is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

// EnsureBridge returns the bridge called name in the current namespace,
// creating it with the MTU and BridgeMAC(name) if it is missing, and brings
// it up. Concurrent callers may race to create it: the loser's EEXIST is
// expected and it adopts the winner's bridge. A bridge that exists is given
// the static MAC if it has another one, but keeps its MTU, which ports
// already rely on.
func EnsureBridge(name string, mtu int) (*netlink.Bridge, error) {
	mac := BridgeMAC(name)
	br, err := LookupBridge(name)
	if errors.Is(err, ErrLinkNotFound) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		attrs.HardwareAddr = mac
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("failed to create bridge %s: %w", name, err)
		}
		br, err = LookupBridge(name)
	}
	if err != nil {
		return nil, err
	}
	if bytes.Equal(br.HardwareAddr, mac) && br.Flags&net.FlagUp != 0 {
		return br, nil
	}
	if !bytes.Equal(br.HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
			return nil, fmt.Errorf("failed to set the static MAC %s on bridge %s: %w", mac, name, err)
		}
	}
	if br.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("failed to bring bridge %s up: %w", name, err)
		}
	}
	// Read it again: the caller reports its MAC and state.
	return LookupBridge(name)
}

// AttachToBridge makes link a port of br and brings it up. An isolated port
// forwards only to and from non-isolated ports and the bridge itself (the
// host), never to another isolated port: containers on one bridge then
// cannot reach each other at layer 2, whatever routes they add. A bridge
// without a free port number gives an error wrapping ErrBridgeFull.
func AttachToBridge(link netlink.Link, br *netlink.Bridge, isolated bool) error {
	name := link.Attrs().Name
	if err := netlink.LinkSetMaster(link, br); err != nil {
		if errors.Is(err, unix.EXFULL) {
			return fmt.Errorf("cannot attach %s to bridge %s: a Linux bridge has at most %d ports: %w",
				name, br.Name, MaxBridgePorts, ErrBridgeFull)
		}
		return fmt.Errorf("failed to attach %s to bridge %s: %w", name, br.Name, err)
	}
	if isolated {
		if err := netlink.LinkSetIsolated(link, true); err != nil {
			return fmt.Errorf("failed to isolate port %s of bridge %s: %w", name, br.Name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to bring %s up: %w", name, err)
	}
	return nil
}

// BridgePorts returns the links attached to br in the current namespace.
func BridgePorts(br *netlink.Bridge) ([]netlink.Link, error) {
	links, err := retryInterruptedDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
	}
	var ports []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Index {
			ports = append(ports, l)
		}
	}
	return ports, nil
}

// IsIsolatedPort reports whether link is an isolated bridge port (see
// AttachToBridge).
func IsIsolatedPort(link netlink.Link) (bool, error) {
	pi, err := netlink.LinkGetProtinfo(link)
	if err != nil {
		return false, fmt.Errorf("failed to read the bridge port flags of %s: %w", link.Attrs().Name, err)
	}
	return pi.Isolated, nil
}
