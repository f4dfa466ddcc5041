package netops

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Neighbor is an entry of a link's neighbour (ARP or NDP) table.
type Neighbor struct {
	IP        netip.Addr
	MAC       net.HardwareAddr
	Permanent bool
}

// SetPermanentNeighbor makes ip resolve to mac on link for good: the
// kernel never asks for it, never ages it out, and a second call with the
// same values changes nothing. A routed pod's gateway (169.254.1.1) is
// such an entry: no host answers ARP for it, the host's veth takes every
// frame sent to its MAC.
func SetPermanentNeighbor(link netlink.Link, ip netip.Addr, mac net.HardwareAddr) error {
	n := &netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       addrFamily(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           IP(ip),
		HardwareAddr: mac,
	}
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("failed to set neighbour %s -> %s on %s: %w", ip, mac, link.Attrs().Name, err)
	}
	return nil
}

// DeleteNeighbor removes ip from link's neighbour table; an entry that is
// not there is not an error.
func DeleteNeighbor(link netlink.Link, ip netip.Addr) error {
	n := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: addrFamily(ip), IP: IP(ip)}
	if err := netlink.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to remove neighbour %s from %s: %w", ip, link.Attrs().Name, err)
	}
	return nil
}

// Neighbors returns link's neighbour entries, IPv4 and IPv6, those with a
// hardware address only (not failed or incomplete ones).
func Neighbors(link netlink.Link) ([]Neighbor, error) {
	var out []Neighbor
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		entries, err := retryInterruptedDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(link.Attrs().Index, fam) })
		if err != nil {
			return nil, fmt.Errorf("failed to list the neighbours of %s: %w", link.Attrs().Name, err)
		}
		for _, n := range entries {
			ip := AddrOf(n.IP)
			if !ip.IsValid() || len(n.HardwareAddr) == 0 {
				continue
			}
			out = append(out, Neighbor{IP: ip, MAC: n.HardwareAddr, Permanent: n.State&netlink.NUD_PERMANENT != 0})
		}
	}
	return out, nil
}

func addrFamily(ip netip.Addr) int {
	if ip.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
