package netops

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TableMain is the kernel's main routing table (RT_TABLE_MAIN), the one a
// TableRoute or Rule with Table 0 means.
const TableMain = unix.RT_TABLE_MAIN

// TableRoute is a unicast route in any routing table of the current
// namespace: the host routes to pods in main, the per-ENI tables of a node
// agent. A route without a gateway is on-link (scope link): its
// destination is reached directly over the link.
type TableRoute struct {
	Table     int // 0 means main
	Dst       netip.Prefix
	Gw        netip.Addr // zero: on-link
	LinkIndex int
}

func (r TableRoute) String() string {
	via := "on-link"
	if r.Gw.IsValid() {
		via = "via " + r.Gw.String()
	}
	return fmt.Sprintf("%s %s dev #%d table %d", r.Dst, via, r.LinkIndex, tableOrMain(r.Table))
}

func tableOrMain(t int) int {
	if t == 0 {
		return TableMain
	}
	return t
}

func (r TableRoute) kernel() (*netlink.Route, error) {
	if !r.Dst.IsValid() {
		return nil, fmt.Errorf("route %s has no destination", r)
	}
	if r.Gw.IsValid() && r.Gw.Is4() != r.Dst.Addr().Is4() {
		return nil, fmt.Errorf("route %s: gateway and destination are of different families", r)
	}
	kr := &netlink.Route{
		LinkIndex: r.LinkIndex,
		Dst:       IPNet(r.Dst.Masked()),
		Table:     tableOrMain(r.Table),
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if r.Gw.IsValid() {
		kr.Gw = IP(r.Gw)
	} else {
		kr.Scope = netlink.SCOPE_LINK
	}
	return kr, nil
}

// ReplaceTableRoute installs r, replacing a route to the same destination
// in the same table: a retried call converges.
func ReplaceTableRoute(r TableRoute) error {
	kr, err := r.kernel()
	if err != nil {
		return err
	}
	if err := netlink.RouteReplace(kr); err != nil {
		return fmt.Errorf("failed to add route %s: %w", r, err)
	}
	return nil
}

// DeleteTableRoute removes r; a route that is not there is not an error.
func DeleteTableRoute(r TableRoute) error {
	kr, err := r.kernel()
	if err != nil {
		return err
	}
	if err := netlink.RouteDel(kr); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("failed to remove route %s: %w", r, err)
	}
	return nil
}

// TableRoutes returns the unicast routes of table (0: main) in the current
// namespace, IPv4 and IPv6, out of the link with index linkIndex or, when
// it is 0, out of any link. Routes the kernel derives from addresses are
// included; multipath routes are not reported.
func TableRoutes(table, linkIndex int) ([]TableRoute, error) {
	filter := &netlink.Route{Table: tableOrMain(table), LinkIndex: linkIndex}
	mask := netlink.RT_FILTER_TABLE
	if linkIndex != 0 {
		mask |= netlink.RT_FILTER_OIF
	}
	routes, err := retryInterruptedDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, mask)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the routes of table %d: %w", tableOrMain(table), err)
	}
	out := make([]TableRoute, 0, len(routes))
	for _, kr := range routes {
		if kr.Type != unix.RTN_UNICAST || kr.LinkIndex == 0 {
			continue
		}
		r := TableRoute{Table: table, LinkIndex: kr.LinkIndex, Dst: PrefixOf(kr.Dst), Gw: AddrOf(kr.Gw)}
		if kr.Dst == nil { // netlink's form of the default route
			r.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if kr.Family == unix.AF_INET6 {
				r.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		}
		out = append(out, r)
	}
	return out, nil
}
