package netops

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NeedsOnLinkRoute reports whether a route via gw out of a link holding
// addrs needs a host route to gw on that link first. The kernel accepts a
// gateway only if it can already reach it directly: when gw is inside the
// prefix of one of the link's addresses of its family, or is IPv6
// link-local. An ENI address given as a /32, or a VPC router outside the
// address's prefix, needs the on-link route.
func NeedsOnLinkRoute(gw net.IP, addrs []*net.IPNet) bool {
	if gw.To4() == nil && gw.IsLinkLocalUnicast() {
		return false
	}
	for _, a := range addrs {
		if (a.IP.To4() == nil) != (gw.To4() == nil) {
			continue
		}
		if a.Contains(gw) {
			return false
		}
	}
	return true
}

// HostPrefix returns ip as a one-address prefix: ip/32 or ip/128.
func HostPrefix(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip.To16(), Mask: net.CIDRMask(128, 128)}
}

// DefaultDestination returns the default route's destination in the family
// of ip: 0.0.0.0/0 or ::/0.
func DefaultDestination(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// AddRouteVia routes dst via gw out of link, in the main table of the
// current namespace, replacing any route to dst there: a retried call
// converges instead of failing with "file exists". When gw is not directly
// reachable (see NeedsOnLinkRoute) a host route to gw on link is added
// first. The link must be up.
func AddRouteVia(link netlink.Link, dst *net.IPNet, gw net.IP) error {
	addrs, err := Addresses(link)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if NeedsOnLinkRoute(gw, addrs) {
		onLink := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       HostPrefix(gw),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteReplace(onLink); err != nil {
			return fmt.Errorf("failed to add on-link route to gateway %s on %s: %w", gw, name, err)
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("failed to add route to %s via %s on %s: %w", dst, gw, name, err)
	}
	return nil
}

// AddDefaultRoute routes everything of gw's family via gw out of link; see
// AddRouteVia.
func AddDefaultRoute(link netlink.Link, gw net.IP) error {
	return AddRouteVia(link, DefaultDestination(gw), gw)
}

// Routes returns the main-table routes out of link in the current
// namespace, IPv4 and IPv6, including those the kernel adds for the
// link's addresses. A default route has Dst 0.0.0.0/0 or ::/0, never nil.
func Routes(link netlink.Link) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: link.Attrs().Index}
	routes, err := retryInterruptedDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list routes of %s: %w", link.Attrs().Name, err)
	}
	return routes, nil
}

// FlushRoutes removes the main-table routes out of link. Routes the kernel
// derives from the link's addresses come back with the addresses.
func FlushRoutes(link netlink.Link) error {
	routes, err := Routes(link)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("failed to remove route to %s from %s: %w", r.Dst, link.Attrs().Name, err)
		}
	}
	return nil
}

// AddBlackhole makes the current namespace drop every packet to dst: the
// sender gets an error at once instead of a timeout. A blackhole already
// there is kept.
func AddBlackhole(dst *net.IPNet) error {
	if err := netlink.RouteReplace(blackhole(dst)); err != nil {
		return fmt.Errorf("failed to add blackhole route to %s: %w", dst, err)
	}
	return nil
}

// DeleteBlackhole removes the blackhole route to dst; one that is not there
// is not an error.
func DeleteBlackhole(dst *net.IPNet) error {
	err := netlink.RouteDel(blackhole(dst))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("failed to remove blackhole route to %s: %w", dst, err)
	}
	return nil
}

// Blackholes returns the destinations of the main-table blackhole routes
// in the current namespace, IPv4 and IPv6.
func Blackholes() ([]*net.IPNet, error) {
	filter := &netlink.Route{Type: unix.RTN_BLACKHOLE}
	routes, err := retryInterruptedDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list blackhole routes: %w", err)
	}
	out := make([]*net.IPNet, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.Dst)
	}
	return out, nil
}

func blackhole(dst *net.IPNet) *netlink.Route {
	return &netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}
}

// retryInterruptedDump repeats a netlink dump that the kernel interrupted
// because the table changed meanwhile, which is common while other
// processes move links: the partial answer of an interrupted dump may miss
// entries.
func retryInterruptedDump[T any](dump func() (T, error)) (T, error) {
	const attempts = 5
	var (
		v   T
		err error
	)
	for range attempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
