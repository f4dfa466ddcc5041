package netops

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddAddress assigns addr (address and prefix length) to link in the
// current namespace. An address already there is left as it is, so a
// retried call changes nothing. IPv6 addresses skip duplicate address
// detection: the VPC gives each address to one interface only, and DAD
// would keep the address tentative, unusable as a source, for a second or
// more after the link comes up.
func AddAddress(link netlink.Link, addr netip.Prefix) error {
	return addAddress(link, addr, 0)
}

// AddAddressWithoutPrefixRoute is AddAddress without the route to the
// address's prefix that the kernel would otherwise add: the prefix is then
// not on-link, and only the routes the caller adds lead anywhere (a
// container on a shared bridge must not reach the bridge's whole subnet).
func AddAddressWithoutPrefixRoute(link netlink.Link, addr netip.Prefix) error {
	return addAddress(link, addr, unix.IFA_F_NOPREFIXROUTE)
}

func addAddress(link netlink.Link, addr netip.Prefix, flags int) error {
	a := &netlink.Addr{IPNet: IPNet(addr), Flags: flags}
	if addr.Addr().Is6() {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("failed to add address %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

// SetAddresses makes want the addresses of link, IPv4 and IPv6: it adds
// those missing and removes any other, except IPv6 link-local addresses,
// which the kernel manages. A second call with the same want changes
// nothing.
func SetAddresses(link netlink.Link, want []netip.Prefix) error {
	have, err := Addresses(link)
	if err != nil {
		return err
	}
	for _, h := range have {
		if !slices.Contains(want, h) {
			if err := deleteAddress(link, h); err != nil {
				return err
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			if err := AddAddress(link, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// Addresses returns the addresses of link with their prefix lengths, IPv4
// and IPv6, leaving out IPv6 link-local ones.
func Addresses(link netlink.Link) ([]netip.Prefix, error) {
	addrs, err := retryInterruptedDump(func() ([]netlink.Addr, error) {
		return netlink.AddrList(link, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		p := PrefixOf(a.IPNet)
		if !p.IsValid() || p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// FlushAddresses removes every address of link except IPv6 link-local ones.
func FlushAddresses(link netlink.Link) error {
	return SetAddresses(link, nil)
}

func deleteAddress(link netlink.Link, addr netip.Prefix) error {
	err := netlink.AddrDel(link, &netlink.Addr{IPNet: IPNet(addr)})
	// Already gone: removing an IPv4 primary address takes its secondaries
	// in the same subnet with it.
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("failed to remove address %s from %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}
