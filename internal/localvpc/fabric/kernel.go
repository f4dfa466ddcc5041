package fabric

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// This file is the fabric's boundary with the kernel: it reads what exists
// into the values of state.go and carries out the plans computed there.

// routeProtocol marks the fabric's routes (iproute2 shows "proto 118"), so
// that Apply reads back its own routes and not the kernel's.
const routeProtocol netlink.RouteProtocol = 118

// fabricSysctls make the fabric namespace a router that answers ARP for
// what it routes elsewhere. Reverse path filtering is off: the source check
// is the firewall's job, with EC2's semantics, and strict filtering would
// drop what an ENI without the check forwards for others. Duplicate address
// detection is off so the fabric's link-local addresses, from which it
// sends proxy NDP answers, are usable at once.
var fabricSysctls = [][2]string{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv6/conf/all/forwarding", "1"},
	{"net/ipv4/conf/all/rp_filter", "0"},
	{"net/ipv4/conf/default/rp_filter", "0"},
	{"net/ipv4/conf/all/proxy_arp", "1"},
	{"net/ipv6/conf/all/proxy_ndp", "1"},
	{"net/ipv6/conf/all/accept_dad", "0"},
	{"net/ipv6/conf/default/accept_dad", "0"},
}

// fabricNS is an open fabric namespace.
type fabricNS struct {
	name string
	ns   ns.NetNS
	nl   *netlink.Handle
}

// openFabric creates the fabric namespace if needed and makes sure it is a
// router with its loopback up.
func openFabric(name string) (*fabricNS, error) {
	n, err := netops.EnsureNamedNS(name)
	if err != nil {
		return nil, fmt.Errorf("failed to create the fabric namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("failed to open netlink in namespace %s: %w", name, err)
	}
	f := &fabricNS{name: name, ns: n, nl: h}
	if err := n.Do(func(ns.NetNS) error { return ensureSysctls(fabricSysctls) }); err != nil {
		f.close()
		return nil, fmt.Errorf("failed to configure namespace %s as a router: %w", name, err)
	}
	return f, nil
}

func (f *fabricNS) close() {
	f.nl.Close()
	f.ns.Close()
}

// ensureLoopback brings the fabric's lo up and gives it exactly the fabric's
// own addresses: the subnets' gateways and the control plane's LocalAddrs.
// On lo they are local whichever ENI device a packet arrives on.
func (f *fabricNS) ensureLoopback(want []netip.Prefix) error {
	lo, err := f.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("failed to find lo in %s: %w", f.name, err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := f.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("failed to set lo up in %s: %w", f.name, err)
		}
	}
	addrs, err := f.nl.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("failed to list the addresses of lo in %s: %w", f.name, err)
	}
	var have []netip.Prefix
	for _, a := range addrs {
		p := netops.PrefixOf(a.IPNet)
		if p.Addr().IsLoopback() {
			continue // 127.0.0.1/8 and ::1 belong to lo itself
		}
		have = append(have, p)
	}
	add, remove := diffSets(want, have)
	for _, p := range remove {
		if err := f.nl.AddrDel(lo, &netlink.Addr{IPNet: netops.IPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("failed to remove %v from lo in %s: %w", p, f.name, err)
		}
	}
	for _, p := range add {
		if err := f.nl.AddrReplace(lo, &netlink.Addr{IPNet: netops.IPNet(p)}); err != nil {
			return fmt.Errorf("failed to add %v to lo in %s: %w", p, f.name, err)
		}
	}
	return nil
}

// reconcileDevices makes the fabric's devices match the attached ENIs. It
// returns one error per ENI it could not build and carries on with the
// rest.
func (f *fabricNS) reconcileDevices(ctx context.Context, want map[string]device) []error {
	links, err := f.nl.LinkList()
	if err != nil {
		return []error{fmt.Errorf("failed to list the devices of %s: %w", f.name, err)}
	}
	byName := map[string]netlink.Link{}
	var have []linkState
	for _, l := range links {
		a := l.Attrs()
		byName[a.Name] = l
		have = append(have, linkState{Name: a.Name, Alias: a.Alias, Up: a.Flags&net.FlagUp != 0, MTU: a.MTU})
	}
	plan := planLinks(want, have)

	var errs []error
	for _, name := range plan.Remove {
		if err := f.removeDevice(byName[name]); err != nil {
			errs = append(errs, err)
		}
	}
	for name, mtu := range plan.SetMTU {
		if err := f.nl.LinkSetMTU(byName[name], mtu); err != nil {
			errs = append(errs, fmt.Errorf("failed to set the MTU of %s to %d: %w", name, mtu, err))
		}
	}
	for _, d := range plan.Create {
		if err := ctx.Err(); err != nil {
			return append(errs, err)
		}
		if err := f.createDevice(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// createDevice builds an ENI's veth pair in one request, the instance end
// created directly in the instance's namespace under its final name and
// MAC, so the device appears there whole. The fabric end comes up last: a
// device that is down marks an interrupted build for the next Apply.
func (f *fabricNS) createDevice(d device) error {
	inst, err := ns.GetNS(netops.NamedNSPath(d.Namespace))
	if err != nil {
		return fmt.Errorf("failed to open instance namespace for %s: %w", d.ENI, err)
	}
	defer inst.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: d.Name, MTU: d.MTU},
		PeerName:         d.Peer,
		PeerHardwareAddr: d.MAC,
		PeerMTU:          uint32(d.MTU),
		PeerNamespace:    netlink.NsFd(inst.Fd()),
	}
	err = f.nl.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) && removeOrphan(inst, d) {
		err = f.nl.LinkAdd(veth)
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("failed to create the device of %s: %s already exists in %s", d.ENI, d.Peer, d.Namespace)
	}
	if err != nil {
		return fmt.Errorf("failed to create the device of %s (%s in %s): %w", d.ENI, d.Peer, d.Namespace, err)
	}
	// The kernel ignores an alias given at creation.
	if err := f.nl.LinkSetAlias(veth, d.Alias); err != nil {
		return fmt.Errorf("failed to label %s as the device of %s: %w", d.Name, d.ENI, err)
	}
	// Linux delays proxy ARP and NDP answers to broadcast requests by up
	// to 0.8 s by default, to let a real owner answer first. The fabric is
	// the only answerer.
	err = f.ns.Do(func(ns.NetNS) error {
		return ensureSysctls([][2]string{
			{"net/ipv4/neigh/" + d.Name + "/proxy_delay", "0"},
			{"net/ipv6/neigh/" + d.Name + "/proxy_delay", "0"},
		})
	})
	if err != nil {
		return fmt.Errorf("failed to configure %s: %w", d.Name, err)
	}
	if d.Host != nil {
		if err := configureHost(inst, d); err != nil {
			return err
		}
	}
	if err := f.nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("failed to set %s up: %w", d.Name, err)
	}
	return nil
}

// removeOrphan deletes the device named d.Peer in the instance if it carries
// d's MAC: an earlier incarnation of the same ENI whose fabric end is in a
// fabric namespace that was replaced while something still held it open.
// The ENI has no device in the current fabric, so that one is stale. It
// reports whether it deleted one.
func removeOrphan(inst ns.NetNS, d device) bool {
	h, err := netlink.NewHandleAt(netns.NsHandle(inst.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer h.Close()
	l, err := h.LinkByName(d.Peer)
	if err != nil || !bytes.Equal(l.Attrs().HardwareAddr, d.MAC) {
		return false
	}
	return h.LinkDel(l) == nil
}

// configureHost configures a primary ENI inside its instance, as EC2's DHCP
// and the instance's boot would: address with the subnet's length, device
// up, default routes through the subnet's gateway. Done once, when the
// device is built; later changes inside the instance are the instance's.
func configureHost(inst ns.NetNS, d device) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(inst.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("failed to open netlink in %s: %w", d.Namespace, err)
	}
	defer h.Close()
	fail := func(what string, err error) error {
		return fmt.Errorf("failed to %s in %s: %w", what, d.Namespace, err)
	}
	if lo, err := h.LinkByName("lo"); err != nil {
		return fail("find lo", err)
	} else if err := h.LinkSetUp(lo); err != nil {
		return fail("set lo up", err)
	}
	link, err := h.LinkByName(d.Peer)
	if err != nil {
		return fail("find "+d.Peer, err)
	}
	c := d.Host
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: netops.IPNet(c.IPv4)}); err != nil {
		return fail(fmt.Sprintf("add %v to %s", c.IPv4, d.Peer), err)
	}
	if c.IPv6.IsValid() {
		// No duplicate address detection: the VPC assigned the address to
		// this ENI alone, and a tentative address would not be usable yet.
		if err := h.AddrReplace(link, &netlink.Addr{IPNet: netops.IPNet(c.IPv6), Flags: unix.IFA_F_NODAD}); err != nil {
			return fail(fmt.Sprintf("add %v to %s", c.IPv6, d.Peer), err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fail("set "+d.Peer+" up", err)
	}
	def4 := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: netops.IPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: c.Gateway4.AsSlice()}
	if !c.Gateway4.IsValid() {
		def4.Scope = netlink.SCOPE_LINK
	}
	if err := h.RouteReplace(def4); err != nil {
		return fail("add the default route via "+c.Gateway4.String(), err)
	}
	if c.IPv6.IsValid() {
		def6 := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: netops.IPNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: c.Gateway6.AsSlice()}
		if err := h.RouteReplace(def6); err != nil {
			return fail("add the IPv6 default route via "+c.Gateway6.String(), err)
		}
	}
	return nil
}

// removeDevice deletes a fabric device, and so its peer wherever it is. The
// alias is rewritten first so that Watch, seeing it go, knows it was meant
// to.
func (f *fabricNS) removeDevice(l netlink.Link) error {
	if _, ok := interfaceOfAlias(l.Attrs().Alias); ok {
		_ = f.nl.LinkSetAlias(l, removedAlias)
	}
	if err := f.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("failed to remove device %s (%s) from %s: %w", l.Attrs().Name, l.Attrs().Alias, f.name, err)
	}
	return nil
}

// removeAllDevices deletes every device of a fabric namespace but lo.
func removeAllDevices(n ns.NetNS) []error {
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return []error{fmt.Errorf("failed to open netlink in %s: %w", n.Path(), err)}
	}
	f := &fabricNS{name: filepath.Base(n.Path()), ns: n, nl: h}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return []error{fmt.Errorf("failed to list the devices of %s: %w", f.name, err)}
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			if err := f.removeDevice(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// reconcileRouting makes the fabric's routes, static neighbour entries and
// proxy NDP entries match want. Routes go first: replacing a moved
// address's route switches it to its new ENI in one step. A failure of one
// entry does not stop the others; all are returned, joined.
func (f *fabricNS) reconcileRouting(want state) error {
	links, err := f.links()
	if err != nil {
		return err
	}
	return errors.Join(
		f.reconcileRoutes(want.Routes, links),
		f.reconcileNeighbours(want.Neighbours, links),
		f.reconcileProxies(want.Proxies, links),
	)
}

// fabricLinks is what the routing steps need to know of the fabric's
// devices: their indexes by name and back, and which are up (the kernel
// refuses routes through a device that is down).
type fabricLinks struct {
	index map[string]int
	name  map[int]string
	up    map[string]bool
}

func (f *fabricNS) links() (fabricLinks, error) {
	list, err := f.nl.LinkList()
	if err != nil {
		return fabricLinks{}, fmt.Errorf("failed to list the devices of %s: %w", f.name, err)
	}
	l := fabricLinks{index: map[string]int{}, name: map[int]string{}, up: map[string]bool{}}
	for _, link := range list {
		a := link.Attrs()
		l.index[a.Name], l.name[a.Index], l.up[a.Name] = a.Index, a.Name, a.Flags&net.FlagUp != 0
	}
	return l, nil
}

// reconcileRoutes makes the fabric's own routes (those of routeProtocol in
// the main table) match want.
func (f *fabricNS) reconcileRoutes(want map[netip.Prefix]route, links fabricLinks) error {
	var have []route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := f.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routeProtocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return fmt.Errorf("failed to list the routes of %s: %w", f.name, err)
		}
		for _, r := range rs {
			have = append(have, route{Dst: netops.PrefixOf(r.Dst), Dev: links.name[r.LinkIndex], Via: netops.AddrOf(r.Gw)})
		}
	}
	var errs []error
	replace, remove := netops.DiffRoutes(want, have)
	for _, r := range replace {
		if !links.up[r.Dev] {
			continue // its device failed to build; that error is reported already
		}
		nr := &netlink.Route{LinkIndex: links.index[r.Dev], Dst: netops.IPNet(r.Dst), Protocol: routeProtocol, Scope: netlink.SCOPE_LINK}
		if r.Via.IsValid() {
			nr.Scope = netlink.SCOPE_UNIVERSE
			nr.Gw = r.Via.AsSlice()
			if r.Via.Is4() {
				nr.Flags = int(netlink.FLAG_ONLINK)
			}
		}
		if err := f.nl.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("failed to route %v to %s: %w", r.Dst, r.Dev, err))
		}
	}
	for _, r := range remove {
		// Scope "nowhere" matches any scope; the kernel deletes only a
		// route whose scope matches otherwise.
		nr := &netlink.Route{LinkIndex: links.index[r.Dev], Dst: netops.IPNet(r.Dst), Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_NOWHERE}
		if err := f.nl.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("failed to remove the route of %v to %s: %w", r.Dst, r.Dev, err))
		}
	}
	return errors.Join(errs...)
}

// reconcileNeighbours makes the fabric's permanent neighbour entries (not
// the proxy ones) match want.
func (f *fabricNS) reconcileNeighbours(want []neighbour, links fabricLinks) error {
	var have []neighbour
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		entries, err := f.nl.NeighList(0, fam)
		if err != nil {
			return fmt.Errorf("failed to list the neighbour entries of %s: %w", f.name, err)
		}
		for _, n := range entries {
			if n.State&netlink.NUD_PERMANENT != 0 && n.Flags&netlink.NTF_PROXY == 0 {
				have = append(have, neighbour{Dev: links.name[n.LinkIndex], Addr: netops.AddrOf(n.IP), MAC: n.HardwareAddr.String()})
			}
		}
	}
	var errs []error
	set, drop := netops.DiffPermanentNeighbors(want, have)
	for _, n := range drop {
		nn := &netlink.Neigh{LinkIndex: links.index[n.Dev], Family: familyOf(n.Addr), IP: n.Addr.AsSlice()}
		if err := f.nl.NeighDel(nn); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("failed to remove the neighbour entry of %v on %s: %w", n.Addr, n.Dev, err))
		}
	}
	for _, n := range set {
		if !links.up[n.Dev] {
			continue
		}
		mac, _ := net.ParseMAC(n.MAC)
		nn := &netlink.Neigh{LinkIndex: links.index[n.Dev], Family: familyOf(n.Addr), State: netlink.NUD_PERMANENT, IP: n.Addr.AsSlice(), HardwareAddr: mac}
		if err := f.nl.NeighSet(nn); err != nil {
			errs = append(errs, fmt.Errorf("failed to pin %v to %s on %s: %w", n.Addr, n.MAC, n.Dev, err))
		}
	}
	return errors.Join(errs...)
}

// reconcileProxies makes the fabric's proxy NDP entries match want.
func (f *fabricNS) reconcileProxies(want []proxy, links fabricLinks) error {
	proxied, err := f.nl.NeighProxyList(0, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("failed to list the proxy NDP entries of %s: %w", f.name, err)
	}
	var have []proxy
	for _, n := range proxied {
		have = append(have, proxy{Dev: links.name[n.LinkIndex], Addr: netops.AddrOf(n.IP)})
	}
	var errs []error
	add, del := diffSets(want, have)
	for _, p := range del {
		nn := &netlink.Neigh{LinkIndex: links.index[p.Dev], Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: p.Addr.AsSlice()}
		if err := f.nl.NeighDel(nn); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("failed to stop answering NDP for %v on %s: %w", p.Addr, p.Dev, err))
		}
	}
	for _, p := range add {
		if !links.up[p.Dev] {
			continue
		}
		nn := &netlink.Neigh{LinkIndex: links.index[p.Dev], Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, State: netlink.NUD_PERMANENT, IP: p.Addr.AsSlice()}
		if err := f.nl.NeighAdd(nn); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("failed to answer NDP for %v on %s: %w", p.Addr, p.Dev, err))
		}
	}
	return errors.Join(errs...)
}

// loadedTables remembers, per fabric namespace, the table Apply loaded
// last, so that the next Apply sends only the difference. It is trusted
// only while the kernel's table carries the same fingerprint.
var loadedTables sync.Map // fabric namespace name -> loadedTable

type loadedTable struct {
	table       table
	fingerprint string
	stale       int // older fingerprints still in the fingerprint chain
}

// loadFirewall makes the fabric's table match want in one nft transaction:
// nothing when the kernel's fingerprint is want's, the difference when it
// is that of the table this process loaded last, the whole table
// otherwise (first Apply, another process, a table changed behind our
// back), and the whole table again if the difference does not apply.
//
// The nft command is used rather than netlink messages built by hand: the
// script is the same text `nft list ruleset` shows, which keeps the
// firewall reviewable, and nft resolves each match's protocol
// dependencies. The cost is one process per change, a few milliseconds
// for a difference (see the benchmarks).
func (f *fabricNS) loadFirewall(ctx context.Context, want table) error {
	fp := want.fingerprint()
	have := loadedFingerprint(f.ns)
	cached, ok := loadedTables.Load(f.name)
	prev, _ := cached.(loadedTable)
	switch {
	case have == fp && ok && prev.fingerprint == fp:
		return nil
	case have == fp:
		// Loaded by an earlier process; how many stale fingerprints it
		// left is unknown, so the next update flushes them.
		loadedTables.Store(f.name, loadedTable{want, fp, maxStaleFingerprints})
		return nil
	case ok && have != "" && prev.fingerprint == have:
		script, flushed := want.update(prev.table, prev.stale)
		if err := f.nft(ctx, script); err == nil {
			stale := prev.stale + 1
			if flushed {
				stale = 0
			}
			loadedTables.Store(f.name, loadedTable{want, fp, stale})
			return nil
		}
		// The table is not what this process loaded: replace it whole.
	}
	loadedTables.Delete(f.name)
	if err := f.nft(ctx, want.script()); err != nil {
		return err
	}
	loadedTables.Store(f.name, loadedTable{want, fp, 0})
	return nil
}

// nft runs an nft script in the fabric namespace.
func (f *fabricNS) nft(ctx context.Context, script string) error {
	return f.ns.Do(func(ns.NetNS) error {
		cmd := exec.CommandContext(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("failed to load the firewall of %s with nft: %w: %s", f.name, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	})
}

// loadedFingerprint reads the fingerprint of the table in namespace n: the
// comment of the first rule of its fingerprint chain, or "" when there is
// none. One small netlink dump, no process.
func loadedFingerprint(n ns.NetNS) string {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		return ""
	}
	rules, err := c.GetRules(&nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}, &nftables.Chain{Name: fingerprintChain})
	if err != nil || len(rules) == 0 {
		return ""
	}
	s, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	return s
}

// ensureSysctls writes each value whose current one differs. It runs in the
// calling thread's network namespace: /proc/sys/net is per namespace.
func ensureSysctls(kv [][2]string) error {
	for _, s := range kv {
		path := "/proc/sys/" + s[0]
		cur, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", path, err)
		}
		if strings.TrimSpace(string(cur)) == s[1] {
			continue
		}
		if err := os.WriteFile(path, []byte(s[1]), 0o644); err != nil {
			return fmt.Errorf("failed to set %s to %s: %w", path, s[1], err)
		}
	}
	return nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
