package netops

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is a unicast route in the main table out of the device called Dev,
// through the gateway Via, or on-link when Via is the zero Addr. It is the
// form in which routes are read back and compared with what is wanted
// (see DiffRoutes).
type Route struct {
	Dst netip.Prefix
	Dev string
	Via netip.Addr
}

func (r Route) String() string {
	if !r.Via.IsValid() {
		return r.Dst.String() + " dev " + r.Dev
	}
	return r.Dst.String() + " via " + r.Via.String() + " dev " + r.Dev
}

// RouteOptions are the attributes of a route beyond its destination and
// gateway that a CNI result may ask for (spec 1.1.0). Zero values leave the
// kernel's defaults; Table 0 is the main table, Scope 0 universe.
type RouteOptions struct {
	MTU, AdvMSS, Priority, Table, Scope int
}

// ErrRouteExists is returned (wrapped) by AddRoute when the table already
// has a route to the destination.
var ErrRouteExists = errors.New("a route to the destination exists")

// NeedsOnLinkRoute reports whether a route via gw out of a link holding
// addrs needs a host route to gw on that link first. The kernel accepts a
// gateway only if it can already reach it directly: when gw is inside the
// prefix of one of the link's addresses of its family, or is IPv6
// link-local. An ENI address given as a /32, or a VPC router outside the
// address's prefix, needs the on-link route.
func NeedsOnLinkRoute(gw netip.Addr, addrs []netip.Prefix) bool {
	gw = gw.Unmap()
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return false
	}
	for _, a := range addrs {
		if a.Addr().Is4() == gw.Is4() && a.Contains(gw) {
			return false
		}
	}
	return true
}

// HostPrefix returns a as a one-address prefix: a/32 or a/128.
func HostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// DefaultDestination returns the default route's destination in the family
// of a: 0.0.0.0/0 or ::/0.
func DefaultDestination(a netip.Addr) netip.Prefix {
	if a.Unmap().Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// AddRouteVia routes dst via gw out of link, in the main table of the
// current namespace, replacing any route to dst there: a retried call
// converges instead of failing with "file exists". When gw is not directly
// reachable (see NeedsOnLinkRoute) a host route to gw on link is added
// first. The link must be up.
func AddRouteVia(link netlink.Link, dst netip.Prefix, gw netip.Addr) error {
	addrs, err := Addresses(link)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if NeedsOnLinkRoute(gw, addrs) {
		onLink := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       IPNet(HostPrefix(gw)),
			Scope:     netlink.SCOPE_LINK,
		}
		if err := netlink.RouteReplace(onLink); err != nil {
			return fmt.Errorf("failed to add on-link route to gateway %s on %s: %w", gw, name, err)
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: IPNet(dst), Gw: IP(gw)}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("failed to add route to %s via %s on %s: %w", dst, gw, name, err)
	}
	return nil
}

// AddDefaultRoute routes everything of gw's family via gw out of link; see
// AddRouteVia.
func AddDefaultRoute(link netlink.Link, gw netip.Addr) error {
	return AddRouteVia(link, DefaultDestination(gw), gw)
}

// AddRoute adds a route to dst out of link, via gw unless gw is the zero
// Addr, with opts. Unlike AddRouteVia it never replaces a route: when the
// table already routes dst (someone else's route) it fails with an error
// wrapping ErrRouteExists.
func AddRoute(link netlink.Link, dst netip.Prefix, gw netip.Addr, opts RouteOptions) error {
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       IPNet(dst),
		Gw:        IP(gw),
		MTU:       opts.MTU,
		AdvMSS:    opts.AdvMSS,
		Priority:  opts.Priority,
		Table:     opts.Table,
		Scope:     netlink.Scope(opts.Scope),
	}
	err := netlink.RouteAdd(r)
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("failed to add route to %s on %s: %w", dst, link.Attrs().Name, ErrRouteExists)
	case err != nil:
		return fmt.Errorf("failed to add route to %s on %s: %w", dst, link.Attrs().Name, err)
	}
	return nil
}

// Routes returns the main-table routes out of link in the current
// namespace, IPv4 and IPv6, including those the kernel adds for the
// link's addresses. A default route has Dst 0.0.0.0/0 or ::/0.
func Routes(link netlink.Link) ([]Route, error) {
	routes, err := linkRoutes(link)
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		out = append(out, Route{Dst: routeDst(r), Dev: link.Attrs().Name, Via: AddrOf(r.Gw)})
	}
	return out, nil
}

func linkRoutes(link netlink.Link) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: link.Attrs().Index}
	routes, err := retryInterruptedDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list routes of %s: %w", link.Attrs().Name, err)
	}
	return routes, nil
}

// routeDst is a route's destination as a prefix; netlink leaves Dst nil
// for a default route in some versions.
func routeDst(r netlink.Route) netip.Prefix {
	if p := PrefixOf(r.Dst); p.IsValid() {
		return p
	}
	if r.Family == netlink.FAMILY_V6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// FlushRoutes removes the main-table routes out of link. Routes the kernel
// derives from the link's addresses come back with the addresses.
func FlushRoutes(link netlink.Link) error {
	routes, err := linkRoutes(link)
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
func AddBlackhole(dst netip.Prefix) error {
	if err := netlink.RouteReplace(blackhole(dst)); err != nil {
		return fmt.Errorf("failed to add blackhole route to %s: %w", dst, err)
	}
	return nil
}

// DeleteBlackhole removes the blackhole route to dst; one that is not there
// is not an error.
func DeleteBlackhole(dst netip.Prefix) error {
	err := netlink.RouteDel(blackhole(dst))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("failed to remove blackhole route to %s: %w", dst, err)
	}
	return nil
}

// Blackholes returns the destinations of the main-table blackhole routes
// in the current namespace, IPv4 and IPv6.
func Blackholes() ([]netip.Prefix, error) {
	filter := &netlink.Route{Type: unix.RTN_BLACKHOLE}
	routes, err := retryInterruptedDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list blackhole routes: %w", err)
	}
	out := make([]netip.Prefix, 0, len(routes))
	for _, r := range routes {
		out = append(out, routeDst(r))
	}
	return out, nil
}

func blackhole(dst netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: IPNet(dst), Type: unix.RTN_BLACKHOLE}
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
