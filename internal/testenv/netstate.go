package testenv

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetState describes what the kernel holds in namespace n, one sorted line
// per fact: each link (type, MAC, master, state, MTU, alias), each address,
// each route of every table. Two equal states mean the namespace is as it
// was, which is how tests check that a failed or interrupted verb left
// nothing behind. skip, when not nil, leaves out addresses and routes
// (by device and address) that the kernel adds on its own in its own time.
func NetState(t testing.TB, n ns.NetNS, skip func(dev string, ip net.IP) bool) string {
	t.Helper()
	if skip == nil {
		skip = func(string, net.IP) bool { return false }
	}
	var lines []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range links {
			a := l.Attrs()
			lines = append(lines, fmt.Sprintf("link %s type=%s mac=%s master=%s up=%v mtu=%d alias=%q",
				a.Name, l.Type(), a.HardwareAddr, names[a.MasterIndex], a.Flags&net.FlagUp != 0, a.MTU, a.Alias))
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, ad := range addrs {
				if !skip(a.Name, ad.IP) {
					lines = append(lines, fmt.Sprintf("addr %s %s", a.Name, ad.IPNet))
				}
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && skip(names[r.LinkIndex], r.Dst.IP) {
				continue
			}
			lines = append(lines, fmt.Sprintf("route table=%d type=%d %v via %v dev %s scope %v", r.Table, r.Type, r.Dst, r.Gw, names[r.LinkIndex], r.Scope))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("state of namespace %s: %v", n.Path(), err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// LineDiff lists the lines only in before ("- ") and only in after ("+ "),
// for failure messages comparing two multi-line descriptions.
func LineDiff(before, after string) string {
	bl, al := strings.Split(before, "\n"), strings.Split(after, "\n")
	var out []string
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, different order)"
	}
	return strings.Join(out, "\n")
}
