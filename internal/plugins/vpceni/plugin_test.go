package vpceni

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// attached is what the container must hold after an ADD.
type attached struct {
	name       string
	up         bool
	mtu        int
	addrs      []string // CIDR
	routes     []string // "dst via gw", routes with a gateway only
	onLink     []string // destinations of on-link routes without a gateway that must exist
	blackholes bool
}

func dualStack(e testENI) attached {
	return attached{
		name: "eth0", up: true, mtu: 1500,
		addrs:      []string{e.addr4, e.addr6},
		routes:     []string{"0.0.0.0/0 via " + e.gw4, "::/0 via " + e.gw6},
		blackholes: true,
	}
}

// assertAttached reads the container with netlink and compares it with
// want; the ENI must have left the host.
func assertAttached(t *testing.T, w *world, ctr ns.NetNS, e testENI, want attached) {
	t.Helper()
	if l := eniIn(t, w.host, e); l != nil {
		t.Errorf("the ENI is still in the host namespace as %s", l.Attrs().Name)
	}
	err := ctr.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(want.name)
		if err != nil {
			return fmt.Errorf("no %s in the container: %v", want.name, err)
		}
		a := link.Attrs()
		if a.HardwareAddr.String() != e.mac.String() {
			t.Errorf("%s has MAC %s, want %s", want.name, a.HardwareAddr, e.mac)
		}
		if up := a.Flags&net.FlagUp != 0; up != want.up {
			t.Errorf("%s up = %v, want %v", want.name, up, want.up)
		}
		if want.mtu != 0 && a.MTU != want.mtu {
			t.Errorf("%s MTU = %d, want %d", want.name, a.MTU, want.mtu)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var got []string
		for _, ad := range addrs {
			if !ad.IP.IsLinkLocalUnicast() {
				got = append(got, ad.IPNet.String())
			}
		}
		slices.Sort(got)
		wantAddrs := slices.Sorted(slices.Values(want.addrs))
		if !slices.Equal(got, wantAddrs) {
			t.Errorf("addresses of %s = %v, want %v", want.name, got, wantAddrs)
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var gotRoutes, gotOnLink []string
		for _, r := range routes {
			if r.Gw != nil {
				gotRoutes = append(gotRoutes, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
			} else {
				gotOnLink = append(gotOnLink, r.Dst.String())
			}
		}
		slices.Sort(gotRoutes)
		wantRoutes := slices.Sorted(slices.Values(want.routes))
		if !slices.Equal(gotRoutes, wantRoutes) {
			t.Errorf("routes via gateways on %s = %v, want %v", want.name, gotRoutes, wantRoutes)
		}
		for _, d := range want.onLink {
			if !slices.Contains(gotOnLink, d) {
				t.Errorf("on-link route to %s missing; on-link routes: %v", d, gotOnLink)
			}
		}
		all, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Type: unix.RTN_BLACKHOLE}, netlink.RT_FILTER_TYPE)
		if err != nil {
			return err
		}
		var holes []string
		for _, r := range all {
			holes = append(holes, r.Dst.String())
		}
		slices.Sort(holes)
		var wantHoles []string
		if want.blackholes {
			wantHoles = []string{"169.254.169.254/32", "fd00:ec2::254/128"}
		}
		if !slices.Equal(holes, wantHoles) {
			t.Errorf("blackholes = %v, want %v", holes, wantHoles)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertResultShape checks the JSON result as a runtime of that version
// reads it.
func assertResultShape(t *testing.T, ver string, out []byte, e testENI, netns string, wantIPs int) {
	t.Helper()
	var res struct {
		CNIVersion string           `json:"cniVersion"`
		Interfaces []map[string]any `json:"interfaces"`
		IPs        []map[string]any `json:"ips"`
		Routes     []map[string]any `json:"routes"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, out)
	}
	if res.CNIVersion != ver {
		t.Errorf("result cniVersion = %q, want %q", res.CNIVersion, ver)
	}
	wantIface := map[string]any{"name": "eth0", "mac": e.mac.String(), "sandbox": netns}
	if len(res.Interfaces) != 1 || fmt.Sprint(res.Interfaces[0]) != fmt.Sprint(wantIface) {
		t.Errorf("interfaces = %v, want [%v]", res.Interfaces, wantIface)
	}
	if len(res.IPs) != wantIPs {
		t.Fatalf("result has %d ips, want %d:\n%s", len(res.IPs), wantIPs, out)
	}
	before1 := ver != "1.0.0" && ver != "1.1.0"
	for _, ip := range res.IPs {
		v, hasVersion := ip["version"]
		if before1 != hasVersion {
			t.Errorf("ip %v: has \"version\" = %v, want %v for %s", ip, hasVersion, before1, ver)
		}
		is4 := strings.Contains(ip["address"].(string), ".")
		if hasVersion && (v == "4") != is4 {
			t.Errorf("ip %v: version %v does not match its address", ip, v)
		}
		if ip["interface"] != float64(0) {
			t.Errorf("ip %v: interface = %v, want 0", ip, ip["interface"])
		}
		wantGW := map[bool]string{true: e.gw4, false: e.gw6}[is4]
		if ip["gateway"] != wantGW {
			t.Errorf("ip %v: gateway = %v, want %s", ip, ip["gateway"], wantGW)
		}
	}
	if wantIPs > 0 {
		var routes []string
		for _, r := range res.Routes {
			routes = append(routes, fmt.Sprintf("%v via %v", r["dst"], r["gw"]))
		}
		want := []string{"0.0.0.0/0 via " + e.gw4, "::/0 via " + e.gw6}
		if !slices.Equal(routes, want) {
			t.Errorf("result routes = %v, want %v", routes, want)
		}
	}
}

// TestAddCheckDel is the whole life of an attachment for every spec
// version, in-process and as the binary: ADD, the result's shape, the
// container's addresses and routes, the gateway answering, the metadata
// service blocked, CHECK, DEL twice, and the host as it was.
func TestAddCheckDel(t *testing.T) {
	for _, r := range allRunners(t) {
		for _, ver := range specVersions {
			t.Run(r.name()+"/"+ver, func(t *testing.T) {
				w := newWorld(t, 1)
				e := w.enis[0]
				before := w.snapshot(t)
				conf := e.baseConf(ver)
				add := w.attachCall(e, 0, conf.bytes(t))

				out := mustSucceed(t, r.run(t, w, add), "ADD")
				assertResultShape(t, ver, out, e, w.ctr().Path(), 2)
				assertAttached(t, w, w.ctr(), e, dualStack(e))
				for _, gw := range []string{e.gw4, e.gw6} {
					if err := ping(t, w.ctr(), gw); err != nil {
						t.Error(err)
					}
				}
				for _, imds := range []string{imds4, imds6} {
					if err := dial(w.ctr(), imds); err == nil {
						t.Errorf("the container reached the metadata service at %s through the blackhole", imds)
					}
				}

				withPrev := conf.withPrevResult(t, out).bytes(t)
				if gte, _ := version.GreaterThanOrEqualTo(ver, "0.4.0"); gte {
					mustSucceed(t, r.run(t, w, add.as("CHECK").withConf(withPrev)), "CHECK")
				}
				mustSucceed(t, r.run(t, w, add.as("DEL").withConf(withPrev)), "DEL")
				w.assertUnchanged(t, before, "after DEL")
				mustSucceed(t, r.run(t, w, add.as("DEL")), "second DEL")
				w.assertUnchanged(t, before, "after the second DEL")
			})
		}
	}
}

// TestMetadataReachableUnlessBlocked shows that the blackhole, not the
// test's network, keeps the container from the metadata service.
func TestMetadataReachableUnlessBlocked(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	conf := e.baseConf("1.0.0").with(confMap{"blockInstanceMetadata": false})
	mustSucceed(t, inProcess{}.run(t, w, w.attachCall(e, 0, conf.bytes(t))), "ADD")
	want := dualStack(e)
	want.blackholes = false
	assertAttached(t, w, w.ctr(), e, want)
	for _, imds := range []string{imds4, imds6} {
		if err := dial(w.ctr(), imds); err != nil {
			t.Errorf("without blocking, the metadata service at %s is unreachable: %v", imds, err)
		}
	}
}

// TestStayDown moves and renames the ENI but leaves it down and bare.
func TestStayDown(t *testing.T) {
	for _, r := range allRunners(t) {
		t.Run(r.name(), func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			conf := e.baseConf("1.1.0").with(confMap{"stayDown": true})
			add := w.attachCall(e, 0, conf.bytes(t))
			out := mustSucceed(t, r.run(t, w, add), "ADD")
			assertResultShape(t, "1.1.0", out, e, w.ctr().Path(), 0)
			assertAttached(t, w, w.ctr(), e, attached{name: "eth0", up: false, mtu: hostMTU})
			withPrev := conf.withPrevResult(t, out).bytes(t)
			mustSucceed(t, r.run(t, w, add.as("CHECK").withConf(withPrev)), "CHECK")
			mustSucceed(t, r.run(t, w, add.as("DEL").withConf(withPrev)), "DEL")
			w.assertUnchanged(t, before, "after DEL")
		})
	}
}

// TestGatewayOutsideThePrefix gives the ENI /32 and /128 addresses, so that
// neither gateway is inside an address's prefix: the plugin must route to
// the gateways on-link first, and the gateways must answer.
func TestGatewayOutsideThePrefix(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	w.addReturnRoute(t, e, "10.88.1.5/32")
	w.addReturnRoute(t, e, "fd00:88:1::5/128")
	conf := e.baseConf("1.0.0").with(confMap{"ipAddresses": []string{"10.88.1.5/32", "fd00:88:1::5/128"}})
	add := w.attachCall(e, 0, conf.bytes(t))
	out := mustSucceed(t, inProcess{}.run(t, w, add), "ADD")
	want := dualStack(e)
	want.addrs = []string{"10.88.1.5/32", "fd00:88:1::5/128"}
	want.onLink = []string{e.gw4 + "/32", e.gw6 + "/128"}
	assertAttached(t, w, w.ctr(), e, want)
	for _, gw := range []string{e.gw4, e.gw6} {
		if err := ping(t, w.ctr(), gw); err != nil {
			t.Error(err)
		}
	}
	mustSucceed(t, inProcess{}.run(t, w, add.as("CHECK").withConf(conf.withPrevResult(t, out).bytes(t))), "CHECK")
}

// TestRetriedAddConverges runs ADD twice, and once more after someone
// renamed the ENI in the container: same result, nothing doubled.
func TestRetriedAddConverges(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
	first := mustSucceed(t, inProcess{}.run(t, w, add), "ADD")
	second := mustSucceed(t, inProcess{}.run(t, w, add), "second ADD")
	if string(first) != string(second) {
		t.Errorf("a retried ADD returned another result:\n%s\nthen\n%s", first, second)
	}
	err := w.ctr().Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return err
		}
		return netlink.LinkSetName(l, "renamed")
	})
	if err != nil {
		t.Fatal(err)
	}
	third := mustSucceed(t, inProcess{}.run(t, w, add), "ADD after a rename")
	if string(first) != string(third) {
		t.Errorf("ADD after a rename returned another result:\n%s\nthen\n%s", first, third)
	}
	assertAttached(t, w, w.ctr(), e, dualStack(e))
}

// TestFailedAddLeavesENIHome makes the kernel refuse a step and checks that
// the ENI is back in the host as it was, and the container bare.
func TestFailedAddLeavesENIHome(t *testing.T) {
	tests := []struct {
		name    string
		fields  confMap
		inError string
	}{
		{
			name:    "address the kernel rejects",
			fields:  confMap{"ipAddresses": []string{"10.77.1.5/24", "ff02::5/64"}, "gatewayIPAddresses": []string{"10.77.1.1"}},
			inError: "ff02::5/64",
		},
		{
			name:    "gateway route the kernel rejects",
			fields:  confMap{"gatewayIPAddresses": []string{"10.77.1.255", "fd00:77:1::1"}},
			inError: "10.77.1.255",
		},
	}
	for _, r := range allRunners(t) {
		for _, tt := range tests {
			t.Run(r.name()+"/"+tt.name, func(t *testing.T) {
				w := newWorld(t, 1)
				e := w.enis[0]
				before := w.snapshot(t)
				o := r.run(t, w, w.attachCall(e, 0, e.baseConf("1.0.0").with(tt.fields).bytes(t)))
				if o.err == nil {
					t.Fatalf("ADD succeeded, want the kernel's refusal; result:\n%s", o.out)
				}
				if o.err.Code != cni.CodeInternal || !strings.Contains(o.err.Msg, tt.inError) || !strings.Contains(o.err.Msg, "back in the host") {
					t.Errorf("error code %d %q: want code %d naming %s and saying the ENI is back in the host", o.err.Code, o.err.Msg, cni.CodeInternal, tt.inError)
				}
				w.assertUnchanged(t, before, "after the failed ADD")
			})
		}
	}
}

// TestDelToleratesMissingThings: DEL succeeds with nothing to do, and
// tidies the host when the container namespace has gone away.
func TestDelToleratesMissingThings(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	before := w.snapshot(t)
	del := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t)).as("DEL")

	mustSucceed(t, inProcess{}.run(t, w, del), "DEL of an ENI never attached")
	noNetns := del
	noNetns.netns = ""
	mustSucceed(t, inProcess{}.run(t, w, noNetns), "DEL with an empty CNI_NETNS")
	gone := del
	gone.netns = "/var/run/netns/vpct-eni-never-existed"
	mustSucceed(t, newBinary(t).run(t, w, gone), "DEL with a namespace that is gone")
	notNS := del
	notNS.netns = os.TempDir()
	mustSucceed(t, newBinary(t).run(t, w, notNS), "DEL with a CNI_NETNS that is no namespace")
	w.assertUnchanged(t, before, "after DELs with nothing to do")

	// A container namespace that dies holding the ENI: on EC2 the device
	// comes back to the host. Here the veth dies with it; DEL must not
	// mind either way.
	mustSucceed(t, inProcess{}.run(t, w, del.as("ADD")), "ADD")
	gone.netns = w.ctr().Path()
	if err := netops.DeleteNamedNS(testenv.NSName(w.ctr())); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, inProcess{}.run(t, w, gone), "DEL after the namespace went away")
}

// TestCheckFindsEachMismatch breaks the container one way at a time and
// expects CHECK to say what broke; a retried ADD repairs it.
func TestCheckFindsEachMismatch(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	conf := e.baseConf("1.0.0")
	add := w.attachCall(e, 0, conf.bytes(t))
	out := mustSucceed(t, inProcess{}.run(t, w, add), "ADD")
	check := add.as("CHECK").withConf(conf.withPrevResult(t, out).bytes(t))

	breakages := []struct {
		name    string
		breakIt func(link netlink.Link) error
		inError string
	}{
		{"address removed", func(l netlink.Link) error {
			a, _ := netlink.ParseAddr(e.addr4)
			return netlink.AddrDel(l, a)
		}, "address " + e.addr4 + " is missing"},
		{"default route removed", func(l netlink.Link) error {
			_, dst, _ := net.ParseCIDR("::/0")
			return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP(e.gw6)})
		}, "route ::/0 via " + e.gw6 + " is missing"},
		{"blackhole removed", func(netlink.Link) error {
			_, dst, _ := net.ParseCIDR("169.254.169.254/32")
			return netlink.RouteDel(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE})
		}, "blackhole route to 169.254.169.254/32 is missing"},
		{"link down", func(l netlink.Link) error { return netlink.LinkSetDown(l) }, "eth0 is down, want up"},
		{"MTU changed", func(l netlink.Link) error { return netlink.LinkSetMTU(l, 1400) }, "MTU 1400, the config says 1500"},
		{"link renamed", func(l netlink.Link) error {
			if err := netlink.LinkSetDown(l); err != nil {
				return err
			}
			return netlink.LinkSetName(l, "other0")
		}, "named other0 in the container, not eth0"},
	}
	for _, b := range breakages {
		t.Run(b.name, func(t *testing.T) {
			mustSucceed(t, inProcess{}.run(t, w, check), "CHECK before breaking")
			err := w.ctr().Do(func(ns.NetNS) error {
				l, err := findByMAC(e.mac)
				if err != nil {
					return err
				}
				return b.breakIt(l)
			})
			if err != nil {
				t.Fatal(err)
			}
			o := inProcess{}.run(t, w, check)
			if o.err == nil || !strings.Contains(o.err.Msg, b.inError) {
				t.Errorf("CHECK after %s: got %v, want an error saying %q", b.name, o.err, b.inError)
			}
			mustSucceed(t, inProcess{}.run(t, w, add), "ADD to repair")
		})
	}

	mustSucceed(t, inProcess{}.run(t, w, add.as("DEL")), "DEL")
	o := inProcess{}.run(t, w, check)
	if o.err == nil || !strings.Contains(o.err.Msg, "host namespace as "+e.hostName) {
		t.Errorf("CHECK after DEL: got %v, want an error saying the ENI is in the host as %s", o.err, e.hostName)
	}
}

// TestGCAndStatus: GC succeeds with nothing to collect and rejects a bad
// attachment list; STATUS reports the plugin available.
func TestGCAndStatus(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	bin := newBinary(t)
	conf := e.baseConf("1.1.0").with(confMap{"cni.dev/valid-attachments": []map[string]string{{"containerID": "ctr-1", "ifname": "eth0"}}})
	for _, r := range []runner{inProcess{}, bin} {
		mustSucceed(t, r.run(t, w, call{verb: "GC", conf: conf.bytes(t)}), r.name()+" GC")
		mustSucceed(t, r.run(t, w, call{verb: "STATUS", conf: conf.bytes(t)}), r.name()+" STATUS")
	}
	bad := conf.with(confMap{"cni.dev/valid-attachments": []map[string]string{{"ifname": "eth0"}}})
	o := bin.run(t, w, call{verb: "GC", conf: bad.bytes(t)})
	if o.err == nil || o.err.Code != cni.CodeInvalidConfig {
		t.Errorf("GC with an attachment without containerID: got %v, want code %d", o.err, cni.CodeInvalidConfig)
	}
}

// TestHalfMovedENI starts from what a crash inside a move leaves in the
// host: the ENI under a temporary name, with its record and the
// container's MTU. ADD must keep the record it finds, and DEL must give the
// ENI its real name and MTU back.
func TestHalfMovedENI(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	before := w.snapshot(t)
	err := w.host.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(e.hostName)
		if err != nil {
			return err
		}
		rec := hostRecord{Name: e.hostName, MTU: hostMTU}
		if err := netlink.LinkSetAlias(l, rec.String()); err != nil {
			return err
		}
		if err := netlink.LinkSetMTU(l, 1500); err != nil {
			return err
		}
		return netlink.LinkSetName(l, "vpctmp0123abcd")
	})
	if err != nil {
		t.Fatal(err)
	}

	del := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t)).as("DEL")
	mustSucceed(t, inProcess{}.run(t, w, del), "DEL")
	w.assertUnchanged(t, before, "after DEL of a half-moved ENI")

	// Back to the half-moved state, and ADD from there.
	err = w.host.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(e.hostName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetAlias(l, hostRecord{Name: e.hostName, MTU: hostMTU}.String()); err != nil {
			return err
		}
		return netlink.LinkSetName(l, "vpctmp0123abcd")
	})
	if err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, inProcess{}.run(t, w, del.as("ADD")), "ADD")
	assertAttached(t, w, w.ctr(), e, dualStack(e))
	mustSucceed(t, inProcess{}.run(t, w, del), "DEL")
	w.assertUnchanged(t, before, "after ADD and DEL of a half-moved ENI")
}

// TestHostNameTakenMeanwhile: while the ENI is in the container another
// link takes its host name; DEL brings the ENI home under a name made from
// its MAC rather than fail.
func TestHostNameTakenMeanwhile(t *testing.T) {
	w := newWorld(t, 1)
	e := w.enis[0]
	add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
	mustSucceed(t, inProcess{}.run(t, w, add), "ADD")
	err := w.host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.hostName}, PeerName: "squatter"})
	})
	if err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, inProcess{}.run(t, w, add.as("DEL")), "DEL")
	l := eniIn(t, w.host, e)
	if l == nil {
		t.Fatal("the ENI is not back in the host")
	}
	if want := fallbackHostName(e.mac); l.Attrs().Name != want {
		t.Errorf("the ENI came back as %s, want %s", l.Attrs().Name, want)
	}
	if l.Attrs().MTU != hostMTU || l.Attrs().Alias != "" {
		t.Errorf("the ENI came back with MTU %d and alias %q, want %d and none", l.Attrs().MTU, l.Attrs().Alias, hostMTU)
	}
}

// TestDelWithOnlyTheMAC: a DEL whose config has the MAC and nothing else
// (no addresses, no gateways: what GC knows of an ENI found by its tags)
// moves the ENI home, leaving the host as before the ADD, in-process and
// through the binary. ADD still refuses a config without addresses.
func TestDelWithOnlyTheMAC(t *testing.T) {
	for _, r := range allRunners(t) {
		t.Run(r.name(), func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
			mustSucceed(t, r.run(t, w, add), "ADD")
			if l := eniIn(t, w.ctr(), e); l == nil {
				t.Fatal("after ADD, the ENI is not in the container")
			}
			macOnly := e.baseConf("1.0.0").with(confMap{"ipAddresses": nil, "gatewayIPAddresses": nil}).bytes(t)
			mustSucceed(t, r.run(t, w, add.as("DEL").withConf(macOnly)), "DEL with only the MAC")
			if l := eniIn(t, w.host, e); l == nil || l.Attrs().Name != e.hostName {
				t.Errorf("after DEL with only the MAC, the ENI is not home as %s", e.hostName)
			}
			w.assertUnchanged(t, before, "after DEL with only the MAC")
			if o := r.run(t, w, add.withConf(macOnly)); o.err == nil || o.err.Code != cni.CodeInvalidConfig {
				t.Errorf("ADD without addresses: %+v, want code %d", o.err, cni.CodeInvalidConfig)
			}
		})
	}
}
