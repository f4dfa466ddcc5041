package netops_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// upVeth creates a veth pair in n and brings the end named name up, so
// that addresses and routes on it behave as on a working ENI.
func upVeth(t *testing.T, n ns.NetNS, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	err := n.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		for _, l := range []string{name, name + "p"} {
			if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: l}}); err != nil {
				return err
			}
		}
		var err error
		link, err = netlink.LinkByName(name)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return link
}

func cidr(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func prefixStrings(list []netip.Prefix) []string {
	out := make([]string, len(list))
	for i, p := range list {
		out[i] = p.String()
	}
	slices.Sort(out)
	return out
}

// TestAddressesConverge adds, re-adds, replaces and flushes addresses and
// checks what the kernel holds after each step.
func TestAddressesConverge(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eni0")
	err := n.Do(func(ns.NetNS) error {
		v4, v6 := cidr(t, "10.9.0.5/24"), cidr(t, "fd00:9::5/64")
		for range 2 { // the second round must change nothing
			for _, a := range []netip.Prefix{v4, v6} {
				if err := netops.AddAddress(link, a); err != nil {
					return err
				}
			}
		}
		got, err := netops.Addresses(link)
		if err != nil {
			return err
		}
		if want := []string{"10.9.0.5/24", "fd00:9::5/64"}; !slices.Equal(prefixStrings(got), want) {
			t.Errorf("addresses after adding twice = %v, want %v", prefixStrings(got), want)
		}

		// The IPv6 address is usable at once: not tentative.
		all, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range all {
			if netops.AddrOf(a.IP) == v6.Addr() && a.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Errorf("%s is tentative (flags %#x): DAD was not skipped", a.IPNet, a.Flags)
			}
		}

		want := []netip.Prefix{cidr(t, "10.9.0.6/32"), v6, cidr(t, "fd00:9::6/128")}
		for range 2 {
			if err := netops.SetAddresses(link, want); err != nil {
				return err
			}
		}
		got, err = netops.Addresses(link)
		if err != nil {
			return err
		}
		if !slices.Equal(prefixStrings(got), prefixStrings(want)) {
			t.Errorf("addresses after SetAddresses = %v, want %v", prefixStrings(got), prefixStrings(want))
		}

		if err := netops.FlushAddresses(link); err != nil {
			return err
		}
		got, err = netops.Addresses(link)
		if err != nil {
			return err
		}
		if len(got) != 0 {
			t.Errorf("addresses after flush = %v, want none", prefixStrings(got))
		}
		// The kernel's link-local address stays.
		all, err = netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(all, func(a netlink.Addr) bool { return a.IP.IsLinkLocalUnicast() }) {
			t.Errorf("flush removed the IPv6 link-local address: %v", all)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAddAddressRejected shows the kernel's refusal reaches the caller with
// the address named.
func TestAddAddressRejected(t *testing.T) {
	n := testenv.NewNS(t, "netops")
	link := upVeth(t, n, "eni0")
	err := n.Do(func(ns.NetNS) error {
		return netops.AddAddress(link, cidr(t, "ff02::5/64"))
	})
	if err == nil {
		t.Fatal("adding a multicast address succeeded; want the kernel's error")
	}
	if want := "ff02::5/64"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}
