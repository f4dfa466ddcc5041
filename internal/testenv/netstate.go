package testenv

import (
	"fmt"
	"net"
	"os"
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
	return NetStateWith(t, n, NetStateOptions{Skip: skip})
}

// NetStateOptions add to or take from what NetStateWith describes; the
// zero value describes what NetState does.
type NetStateOptions struct {
	// Skip, when not nil, leaves out addresses and routes (by device and
	// address) that the kernel adds on its own in its own time.
	Skip func(dev string, ip net.IP) bool
	// NoMAC leaves out the links' MACs, for devices whose MACs the kernel
	// picks at random each time they are made.
	NoMAC bool
	// Flags adds each link's flags but "running": carrier follows a
	// device's peer asynchronously.
	Flags bool
	// Index adds each link's index, new each time a device is made: equal
	// states then prove that no device was rebuilt.
	Index bool
	// Protocol adds each route's protocol (who installed it).
	Protocol bool
	// Neighbours adds the permanent IPv4 and IPv6 neighbour entries and the
	// IPv6 proxy (NDP) entries.
	Neighbours bool
	// Sysctls adds the value of each of these files under /proc/sys (such
	// as "net/ipv4/ip_forward") as the namespace sees it.
	Sysctls []string
}

// NetStateWith is NetState with what opts adds or takes away.
func NetStateWith(t testing.TB, n ns.NetNS, opts NetStateOptions) string {
	t.Helper()
	skip := opts.Skip
	if skip == nil {
		skip = func(string, net.IP) bool { return false }
	}
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }
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
			var b strings.Builder
			fmt.Fprintf(&b, "link %s type=%s", a.Name, l.Type())
			if !opts.NoMAC {
				fmt.Fprintf(&b, " mac=%s", a.HardwareAddr)
			}
			fmt.Fprintf(&b, " master=%s up=%v mtu=%d alias=%q", names[a.MasterIndex], a.Flags&net.FlagUp != 0, a.MTU, a.Alias)
			if opts.Flags {
				fmt.Fprintf(&b, " flags=%v", a.Flags&^net.FlagRunning)
			}
			if opts.Index {
				fmt.Fprintf(&b, " index=%d", a.Index)
			}
			add("%s", b.String())
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, ad := range addrs {
				if !skip(a.Name, ad.IP) {
					add("addr %s %s", a.Name, ad.IPNet)
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
			line := fmt.Sprintf("route table=%d type=%d %v via %v dev %s scope %v", r.Table, r.Type, r.Dst, r.Gw, names[r.LinkIndex], r.Scope)
			if opts.Protocol {
				line += fmt.Sprintf(" proto %d", r.Protocol)
			}
			add("%s", line)
		}
		if opts.Neighbours {
			for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				neighs, err := netlink.NeighList(0, fam)
				if err != nil {
					return err
				}
				for _, ne := range neighs {
					if ne.State&netlink.NUD_PERMANENT != 0 {
						add("neigh %s %v %v", names[ne.LinkIndex], ne.IP, ne.HardwareAddr)
					}
				}
			}
			proxies, err := netlink.NeighProxyList(0, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			for _, p := range proxies {
				add("proxy %s %v", names[p.LinkIndex], p.IP)
			}
		}
		for _, name := range opts.Sysctls {
			v, err := os.ReadFile("/proc/sys/" + name)
			if err != nil {
				return err
			}
			add("sysctl %s=%s", name, strings.TrimSpace(string(v)))
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
