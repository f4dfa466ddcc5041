package vpcbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// task is one container attached by a test.
type task struct {
	ns  ns.NetNS
	c   call
	res *current.Result
	ip  net.IP
}

// TestSpecVersions runs the whole life of two tasks on one bridge for every
// spec version: one task through the verbs in-process, the other through
// the binary. Both reach the endpoint; neither reaches the other, neither
// by route nor, once the test adds one, through the bridge.
func TestSpecVersions(t *testing.T) {
	for _, version := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			h := newHost(t)
			ip := vpcIPAM(t)
			conf := netConf(version, "meta", ip.section("", ""))
			path := cniPath(t)

			a := &task{ns: testenv.NewNS(t, tag)}
			a.c = call{netns: a.ns.Path(), containerID: "task-a", ifName: "ecs-eth0", conf: conf, path: path}
			r, err := h.add(a.c)
			if err != nil {
				t.Fatalf("in-process ADD: %v", err)
			}
			if r.Version() != version {
				t.Errorf("in-process result has version %s, want %s", r.Version(), version)
			}
			a.res, _ = current.NewResultFromResult(r)

			b := &task{ns: testenv.NewNS(t, tag)}
			b.c = call{netns: b.ns.Path(), containerID: "task-b", ifName: "ecs-eth0", conf: conf, path: path}
			out, err := h.exec("ADD", b.c)
			if err != nil {
				t.Fatalf("binary ADD: %v", err)
			}
			if !strings.Contains(string(out), `"cniVersion": "`+version+`"`) {
				t.Errorf("binary result is not in version %s: %s", version, out)
			}
			b.res = parseResult(t, out)

			for _, tk := range []*task{a, b} {
				tk.ip = h.verifyAttached(t, tk)
				h.reachesEndpoint(tk.ns)
			}
			if a.ip.Equal(b.ip) {
				t.Fatalf("both tasks got %s", a.ip)
			}
			h.verifyIsolated(t, a, b)

			if version >= "0.4.0" {
				if err := h.check(call{netns: a.c.netns, containerID: a.c.containerID, ifName: a.c.ifName, conf: withPrevResult(t, conf, a.res), path: path}); err != nil {
					t.Errorf("in-process CHECK: %v", err)
				}
				checkB := b.c
				checkB.conf = withPrevResult(t, conf, b.res)
				if _, err := h.exec("CHECK", checkB); err != nil {
					t.Errorf("binary CHECK: %v", err)
				}
			}

			for range 2 {
				if err := h.del(a.c); err != nil {
					t.Fatalf("in-process DEL: %v", err)
				}
				if _, err := h.exec("DEL", b.c); err != nil {
					t.Fatalf("binary DEL: %v", err)
				}
			}
			h.verifyGone(t, ip, "meta", a, b)
		})
	}
}

// verifyAttached checks what ADD promised, in the result and in the kernel,
// and returns the task's IPv4 address.
func (h *host) verifyAttached(t *testing.T, tk *task) net.IP {
	t.Helper()
	r := tk.res
	if len(r.Interfaces) != 3 {
		t.Fatalf("result has %d interfaces, want bridge, host veth, container veth: %v", len(r.Interfaces), r.Interfaces)
	}
	br, hostVeth, ctr := r.Interfaces[0], r.Interfaces[1], r.Interfaces[2]
	if br.Name != bridgeName || br.Mac != netops.BridgeMAC(bridgeName).String() || br.Sandbox != "" {
		t.Errorf("bridge interface in result: %+v", br)
	}
	if ctr.Name != tk.c.ifName || ctr.Sandbox != tk.ns.Path() {
		t.Errorf("container interface in result: %+v", ctr)
	}
	if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 2 {
		t.Fatalf("result IPs do not point at the container interface: %v", r.IPs)
	}
	addr := r.IPs[0].Address
	_, sub, _ := net.ParseCIDR(subnet)
	if !sub.Contains(addr.IP) || addr.String() != addr.IP.String()+"/22" || !r.IPs[0].Gateway.Equal(net.ParseIP(gatewayIP)) {
		t.Errorf("result address %s gateway %s", addr.String(), r.IPs[0].Gateway)
	}
	var dsts []string
	for _, rt := range r.Routes {
		dsts = append(dsts, fmt.Sprintf("%s>%v", rt.Dst.String(), rt.GW))
	}
	if want := []string{gatewayIP + "/32><nil>", endpointIP + "/32>" + gatewayIP}; !slices.Equal(dsts, want) {
		t.Errorf("result routes %v, want %v", dsts, want)
	}

	// Host: the bridge with its static MAC, MTU and gateway; the host veth
	// an isolated, up port of it.
	err := h.do(func() error {
		b, err := netops.LookupBridge(bridgeName)
		if err != nil {
			return err
		}
		if b.HardwareAddr.String() != br.Mac || b.MTU != 1400 {
			t.Errorf("bridge MAC %s MTU %d", b.HardwareAddr, b.MTU)
		}
		addrs, err := netops.Addresses(b)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(addrs, func(a netip.Prefix) bool { return a.String() == gatewayIP+"/22" }) {
			t.Errorf("bridge addresses %v lack the gateway %s/22", addrs, gatewayIP)
		}
		v, err := netlink.LinkByName(hostVeth.Name)
		if err != nil {
			return fmt.Errorf("host veth %s from the result: %w", hostVeth.Name, err)
		}
		if v.Attrs().MasterIndex != b.Index || v.Attrs().HardwareAddr.String() != hostVeth.Mac || v.Attrs().MTU != 1400 {
			t.Errorf("host veth %s: master %d (bridge %d), mac %s, mtu %d", hostVeth.Name, v.Attrs().MasterIndex, b.Index, v.Attrs().HardwareAddr, v.Attrs().MTU)
		}
		pi, err := netlink.LinkGetProtinfo(v)
		if err != nil {
			return err
		}
		if !pi.Isolated {
			t.Errorf("bridge port %s is not isolated", hostVeth.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Container: the address, a route to the gateway and to the endpoint,
	// and nothing to the subnet.
	err = tk.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(tk.c.ifName)
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != ctr.Mac || l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("container veth: mac %s (result %s) mtu %d flags %v", l.Attrs().HardwareAddr, ctr.Mac, l.Attrs().MTU, l.Attrs().Flags)
		}
		addrs, err := netops.Addresses(l)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].String() != addr.String() {
			t.Errorf("container addresses %v, want %s", addrs, addr.String())
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, rt := range routes {
			got = append(got, fmt.Sprintf("%v>%v", rt.Dst, rt.Gw))
		}
		slices.Sort(got)
		if want := []string{endpointIP + "/32>" + gatewayIP, gatewayIP + "/32><nil>"}; !slices.Equal(got, want) {
			t.Errorf("container IPv4 routes %v, want exactly %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return addr.IP.To4()
}

// verifyIsolated proves that a cannot reach b: first because a has no
// route to it; then, with on-link routes to the subnet added by the test
// in both, because the bridge does not forward between isolated ports. The
// control: with isolation turned off, the same connection succeeds.
func (h *host) verifyIsolated(t *testing.T, a, b *task) {
	t.Helper()
	var ln net.Listener
	err := b.ns.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", b.ip.String()+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go greet(ln, "task-b")
	target := ln.Addr().String()

	if _, err := dial(a.ns, target); err == nil {
		t.Fatalf("task a reached task b at %s with the plugin's routes", target)
	} else if !strings.Contains(err.Error(), "network is unreachable") {
		t.Errorf("dial b without a route: %v (want: network is unreachable)", err)
	}

	_, sub, _ := net.ParseCIDR(subnet)
	for _, tk := range []*task{a, b} {
		err := tk.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(tk.c.ifName)
			if err != nil {
				return err
			}
			// Give up on ARP after 3 x 100 ms instead of 3 s.
			if err := os.WriteFile("/proc/sys/net/ipv4/neigh/"+tk.c.ifName+"/retrans_time_ms", []byte("100"), 0o644); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_LINK})
		})
		if err != nil {
			t.Fatalf("add the subnet route in %s: %v", testenv.NSName(tk.ns), err)
		}
	}
	if err := unreachable(a.ns, target, b.ip); err != nil {
		t.Fatalf("through the bridge with a route added: %v", err)
	}

	// The control. Where br_netfilter is loaded (Docker and Kubernetes
	// hosts, this machine), bridged IP packets also pass the forward hook,
	// where vpc-bridge's nftables rule refuses them too: it goes for the
	// control and comes back with the next ADD.
	h.setIsolated(t, false, a, b)
	h.removeL3Isolation(t)
	err = a.ns.Do(func(ns.NetNS) error {
		// Forget the failed ARP entry so the next connection asks again.
		neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			_ = netlink.NeighDel(&n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := dial(a.ns, target); err != nil || got != "task-b" {
		t.Fatalf("control failed: without isolation task a should reach task b: %q, %v", got, err)
	}
	h.setIsolated(t, true, a, b)
	h.restoreL3Isolation(t)
	for _, tk := range []*task{a, b} {
		err := tk.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(tk.c.ifName)
			if err != nil {
				return err
			}
			return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_LINK})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// unreachable dials target from n and returns nil once it is clear that
// the connection cannot succeed: the dial fails, or n's neighbour entry for
// ip is FAILED (no ARP reply: nothing on the link answered for it). Linux
// keeps retrying a SYN to an on-link address whose ARP failed until the
// dial times out, so the neighbour state is the quicker verdict.
func unreachable(n ns.NetNS, target string, ip net.IP) error {
	return blocked(n, target, func() (bool, error) {
		failed := false
		err := n.Do(func(ns.NetNS) error {
			neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
			for _, nb := range neighs {
				if nb.IP.Equal(ip) && nb.State == netlink.NUD_FAILED {
					failed = true
				}
			}
			return err
		})
		return failed, err
	})
}

// blocked dials target from n and returns nil once it is clear that the
// connection cannot succeed: the dial fails, or lost reports that its
// packets are being lost, which the dial itself would only notice on
// timing out. It fails if the dial connects.
func blocked(n ns.NetNS, target string, lost func() (bool, error)) error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := dialContext(ctx, n, target)
		done <- err
	}()
	// Never leave the dial behind: the namespace closes with the test.
	defer func() {
		cancel()
		<-done
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			done <- err // for the deferred wait
			if err == nil {
				return fmt.Errorf("connected to %s", target)
			}
			return nil
		case <-tick.C:
			isLost, err := lost()
			if err != nil {
				return err
			}
			if isLost {
				// The dial may have connected meanwhile.
				cancel()
				if err := <-done; err == nil {
					done <- err
					return fmt.Errorf("connected to %s", target)
				}
				done <- nil
				return nil
			}
		}
	}
}

// setIsolated sets the isolation flag of the tasks' bridge ports.
func (h *host) setIsolated(t *testing.T, on bool, tasks ...*task) {
	t.Helper()
	err := h.do(func() error {
		for _, tk := range tasks {
			l, err := netlink.LinkByName(tk.res.Interfaces[hostVethIndex].Name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetIsolated(l, on); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// verifyGone checks that the tasks left nothing: no veth in the host or
// the containers, no bridge port, no address held.
func (h *host) verifyGone(t *testing.T, ip ipamKind, network string, tasks ...*task) {
	t.Helper()
	if links := h.attachmentLinks(t); len(links) != 0 {
		t.Errorf("host veths left: %v", linkNames(links))
	}
	if n := h.bridgePorts(t); n != 0 {
		t.Errorf("bridge has %d ports left", n)
	}
	for _, tk := range tasks {
		if l := linkIn(t, tk.ns, tk.c.ifName); l != nil {
			t.Errorf("%s still in %s", tk.c.ifName, testenv.NSName(tk.ns))
		}
	}
	if held := ip.allocations(t, network); len(held) != 0 {
		t.Errorf("addresses still allocated: %v", held)
	}
}

func linkNames(links []netlink.Link) []string {
	var out []string
	for _, l := range links {
		out = append(out, l.Attrs().Name+"("+l.Attrs().Alias+")")
	}
	return out
}

// TestAnyIPAMPlugin runs the chain with Debian's host-local instead of
// vpc-ipam: vpc-bridge depends only on the IPAM result.
func TestAnyIPAMPlugin(t *testing.T) {
	testenv.Tool(t, "/usr/lib/cni/host-local")
	h := newHost(t)
	ip := hostLocal(t)
	conf := netConf("1.0.0", "meta-hl", ip.section("", ""))
	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "hl-1", ifName: "eth1", conf: conf, path: cniPath(t)}
	out, err := h.exec("ADD", tk.c)
	if err != nil {
		t.Fatal(err)
	}
	tk.res = parseResult(t, out)
	tk.ip = h.verifyAttached(t, tk)
	h.reachesEndpoint(tk.ns)
	if held := ip.allocations(t, "meta-hl"); !slices.Equal(held, []string{tk.ip.String()}) {
		t.Errorf("host-local holds %v, want [%s]", held, tk.ip)
	}
	check := tk.c
	check.conf = withPrevResult(t, conf, tk.res)
	if _, err := h.exec("CHECK", check); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for range 2 {
		if _, err := h.exec("DEL", tk.c); err != nil {
			t.Fatal(err)
		}
	}
	h.verifyGone(t, ip, "meta-hl", tk)
}

// TestECSAgentConfig feeds the plugin the config the ECS agent writes for
// ecs-bridge, with vpc-ipam installed under ecs-ipam's name, and follows
// the agent's teardown: a bridge DEL with an empty ipam section, then a
// release through the IPAM plugin alone.
func TestECSAgentConfig(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	store := ip.store
	dir := t.TempDir()
	if err := os.Symlink(testenv.Binary(t, "vpc-ipam"), filepath.Join(dir, "ecs-ipam")); err != nil {
		t.Fatal(err)
	}
	path := dir + ":" + cniPath(t)
	ecsConf := func(ipamSection string) []byte {
		return []byte(`{"type":"ecs-bridge","cniVersion":"0.3.0","name":"ecs-task-network",
			"bridge":"` + bridgeName + `","isGateway":false,"isDefaultGateway":false,"forceAddress":false,
			"ipMasq":false,"mtu":0,"hairpinMode":false,"ipam":` + ipamSection + `}`)
	}
	ipamSection := `{"type":"ecs-ipam","id":"eni-mac-1","cniVersion":"0.3.0","ipv4-subnet":"` + subnet +
		`","ipv4-routes":[{"dst":"` + endpointIP + `/32"}],"store":"` + store + `"}`
	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "ecs-task-1", ifName: "ecs-eth0", conf: ecsConf(ipamSection), path: path}
	out, err := h.exec("ADD", tk.c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"cniVersion": "0.3.0"`) {
		t.Errorf("result not in 0.3.0: %s", out)
	}
	h.reachesEndpoint(tk.ns)
	var mtu int
	_ = tk.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("ecs-eth0")
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	})
	if mtu != DefaultMTU {
		t.Errorf("mtu 0 gave MTU %d, want the default %d", mtu, DefaultMTU)
	}

	del := tk.c
	del.conf = ecsConf(`{}`)
	if _, err := h.exec("DEL", del); err != nil {
		t.Fatalf("DEL with an empty ipam section: %v", err)
	}
	if l := linkIn(t, tk.ns, "ecs-eth0"); l != nil {
		t.Error("ecs-eth0 left after DEL")
	}
	if links := h.attachmentLinks(t); len(links) != 0 {
		t.Errorf("host veths left: %v", linkNames(links))
	}
	// The address is still held: the agent releases it itself, through the
	// IPAM plugin; a DEL with the ipam section does the same here.
	if held := ip.allocations(t, "ecs-task-network"); len(held) != 1 {
		t.Errorf("after a DEL without ipam, want the address still held, have %v", held)
	}
	if _, err := h.exec("DEL", tk.c); err != nil {
		t.Fatalf("DEL with the ipam section: %v", err)
	}
	h.verifyGone(t, ip, "ecs-task-network", tk)
}

// TestRetriedAddConverges: a second ADD for the same attachment succeeds
// with the same address and leaves one veth, as after one ADD.
func TestRetriedAddConverges(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "retry", ifName: "eth1", conf: netConf("1.0.0", "meta", ip.section("", "")), path: cniPath(t)}
	first, err := h.add(tk.c)
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.add(tk.c)
	if err != nil {
		t.Fatalf("retried ADD: %v", err)
	}
	if a, b := containerIP(t, first), containerIP(t, second); !a.Equal(b) {
		t.Errorf("retried ADD moved the task from %s to %s", a, b)
	}
	tk.res, _ = current.NewResultFromResult(second)
	h.verifyAttached(t, tk)
	h.reachesEndpoint(tk.ns)
	if links := h.attachmentLinks(t); len(links) != 1 {
		t.Errorf("want one host veth, have %v", linkNames(links))
	}
	if held := ip.allocations(t, "meta"); len(held) != 1 {
		t.Errorf("want one allocation, have %v", held)
	}
	if err := h.del(tk.c); err != nil {
		t.Fatal(err)
	}
	h.verifyGone(t, ip, "meta", tk)
}

// TestDelEdgeCases: DEL without a namespace (the veth is found from the
// host), after the namespace is gone, without an ipam section, and never
// touching a link of the same name that is not a veth.
func TestDelEdgeCases(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	path := cniPath(t)
	conf := netConf("1.0.0", "meta", ip.section("", ""))
	noIPAM := netConf("1.0.0", "meta", nil)

	t.Run("empty CNI_NETNS, namespace alive", func(t *testing.T) {
		tk := &task{ns: testenv.NewNS(t, tag)}
		tk.c = call{netns: tk.ns.Path(), containerID: "del-1", ifName: "eth1", conf: conf, path: path}
		if _, err := h.add(tk.c); err != nil {
			t.Fatal(err)
		}
		del := tk.c
		del.netns = ""
		if _, err := h.exec("DEL", del); err != nil {
			t.Fatal(err)
		}
		h.verifyGone(t, ip, "meta", tk)
	})
	t.Run("namespace gone", func(t *testing.T) {
		n, err := netops.CreateNamedNS(testenv.NSPrefix + tag + "-" + testenv.RandomHex(4))
		if err != nil {
			t.Fatal(err)
		}
		c := call{netns: n.Path(), containerID: "del-2", ifName: "eth1", conf: conf, path: path}
		if _, err := h.add(c); err != nil {
			t.Fatal(err)
		}
		n.Close()
		if err := netops.DeleteNamedNS(filepath.Base(n.Path())); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := h.exec("DEL", c); err != nil {
				t.Fatalf("DEL after the namespace is gone: %v", err)
			}
		}
		h.verifyGone(t, ip, "meta")
	})
	t.Run("no ipam section", func(t *testing.T) {
		tk := &task{ns: testenv.NewNS(t, tag)}
		tk.c = call{netns: tk.ns.Path(), containerID: "del-3", ifName: "eth1", conf: conf, path: path}
		if _, err := h.add(tk.c); err != nil {
			t.Fatal(err)
		}
		del := tk.c
		del.conf = noIPAM
		if _, err := h.exec("DEL", del); err != nil {
			t.Fatal(err)
		}
		if linkIn(t, tk.ns, "eth1") != nil || len(h.attachmentLinks(t)) != 0 {
			t.Error("DEL without ipam left the veth")
		}
		if held := ip.allocations(t, "meta"); len(held) != 1 {
			t.Errorf("DEL without ipam should not release: held %v", held)
		}
		if err := h.del(tk.c); err != nil {
			t.Fatal(err)
		}
		h.verifyGone(t, ip, "meta", tk)
	})
	t.Run("same name, not a veth", func(t *testing.T) {
		ctr := testenv.NewNS(t, tag)
		err := ctr.Do(func(ns.NetNS) error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "eth1"
			return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.exec("DEL", call{netns: ctr.Path(), containerID: "del-4", ifName: "eth1", conf: conf, path: path}); err != nil {
			t.Fatal(err)
		}
		if linkIn(t, ctr, "eth1") == nil {
			t.Error("DEL deleted a link that is not its veth")
		}
	})
}

// TestCheckDetectsDrift: CHECK fails, naming what is wrong, when the
// container or the bridge port no longer match the ADD's result.
func TestCheckDetectsDrift(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "drift", ifName: "eth1", conf: conf, path: cniPath(t)}
	r, err := h.add(tk.c)
	if err != nil {
		t.Fatal(err)
	}
	tk.res, _ = current.NewResultFromResult(r)
	check := tk.c
	check.conf = withPrevResult(t, conf, r)
	if err := h.check(check); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	inCtr := func(f func(l netlink.Link) error) {
		t.Helper()
		err := tk.ns.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("eth1")
			if err != nil {
				return err
			}
			return f(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	endpoint := &netlink.Route{Dst: netops.IPNet(netops.HostPrefix(netip.MustParseAddr(endpointIP))), Gw: net.ParseIP(gatewayIP)}
	inCtr(func(l netlink.Link) error { endpoint.LinkIndex = l.Attrs().Index; return netlink.RouteDel(endpoint) })
	wantCode(t, h.check(check), 999, "route "+endpointIP+"/32 via "+gatewayIP+" missing")
	inCtr(func(netlink.Link) error { return netlink.RouteAdd(endpoint) })

	_, sub, _ := net.ParseCIDR(subnet)
	inCtr(func(l netlink.Link) error {
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_LINK})
	})
	wantCode(t, h.check(check), 999, "unexpected route to the bridge subnet")
	inCtr(func(l netlink.Link) error {
		return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_LINK})
	})

	h.setIsolated(t, false, tk)
	wantCode(t, h.check(check), 999, "not isolated")
	h.setIsolated(t, true, tk)

	h.removeL3Isolation(t)
	wantCode(t, h.check(check), 999, "nftables does not refuse routing", bridgeName)
	h.restoreL3Isolation(t)

	inCtr(func(l netlink.Link) error { return netlink.LinkSetAlias(l, "") })
	wantCode(t, h.check(check), 999, "eth1 in the container is labelled \"\"")
	inCtr(func(l netlink.Link) error {
		return netlink.LinkSetAlias(l, attachmentOf(&Config{NetConf: types.NetConf{Name: "meta"}}, tk.c.args()).alias())
	})
	if err := h.check(check); err != nil {
		t.Fatalf("CHECK after repairs: %v", err)
	}
	// Release the address behind the plugin's back: the IPAM's CHECK
	// notices, and its error comes through.
	ipamDel := tk.c
	ipamDel.conf = []byte(strings.Replace(string(conf), `"type":"vpc-bridge"`, `"type":"vpc-ipam"`, 1))
	p, err := findIPAM(&Config{NetConf: types.NetConf{IPAM: types.IPAM{Type: "vpc-ipam"}}}, ipamDel.args())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.run(t.Context(), "DEL"); err != nil {
		t.Fatal(err)
	}
	err = h.check(check)
	if e, ok := err.(*types.Error); !ok || !strings.Contains(e.Msg, `IPAM plugin "vpc-ipam" CHECK`) {
		t.Errorf("CHECK after the address was released: %v, want the IPAM plugin's error", err)
	}
	if err := h.del(tk.c); err != nil {
		t.Fatal(err)
	}
	wantCode(t, h.check(check), 999, "host veth")
}

// TestGC: GC keeps the valid attachments and removes the others' veths and
// addresses.
func TestGC(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	path := cniPath(t)
	var tasks []*task
	for _, id := range []string{"gc-keep", "gc-drop"} {
		tk := &task{ns: testenv.NewNS(t, tag)}
		tk.c = call{netns: tk.ns.Path(), containerID: id, ifName: "eth1", conf: conf, path: path}
		if _, err := h.add(tk.c); err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, tk)
	}
	// Another network on the same bridge is not this GC's business.
	other := &task{ns: testenv.NewNS(t, tag)}
	other.c = call{netns: other.ns.Path(), containerID: "gc-other", ifName: "eth1", conf: netConf("1.1.0", "other", ip.section("", "")), path: path}
	if _, err := h.add(other.c); err != nil {
		t.Fatal(err)
	}

	gcConf := strings.Replace(string(conf), "{", `{"cni.dev/valid-attachments":[{"containerID":"gc-keep","ifname":"eth1"}],`, 1)
	if _, err := h.exec("GC", call{conf: []byte(gcConf), path: path}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if linkIn(t, tasks[0].ns, "eth1") == nil {
		t.Error("GC removed a valid attachment's veth")
	}
	h.reachesEndpoint(tasks[0].ns)
	if linkIn(t, tasks[1].ns, "eth1") != nil {
		t.Error("GC left the veth of an attachment that is not valid")
	}
	if linkIn(t, other.ns, "eth1") == nil {
		t.Error("GC of one network removed another network's veth")
	}
	held := ip.allocations(t, "meta")
	if len(held) != 1 || !strings.HasPrefix(held[0], "gc-keep/") {
		t.Errorf("after GC the network holds %v, want only gc-keep's address", held)
	}
}

// TestStatus: ready with no bridge yet or a bridge with room; not ready
// when nftables cannot be used or the bridge's name is taken by another
// kind of link.
func TestStatus(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	c := call{conf: netConf("1.1.0", "meta", ip.section("", "")), path: cniPath(t)}
	if _, err := h.exec("STATUS", c); err != nil {
		t.Errorf("STATUS before any bridge: %v", err)
	}
	broken := vpcIPAM(t).section("", "")
	broken["store"] = "/proc/version/ipam.db" // cannot be created
	_, err := h.exec("STATUS", call{conf: netConf("1.1.0", "meta", broken), path: c.path})
	var e *types.Error
	if !errors.As(err, &e) || !strings.Contains(e.Msg, `IPAM plugin "vpc-ipam" STATUS`) {
		t.Errorf("STATUS with an unusable IPAM store: %v, want the IPAM plugin's error", err)
	}
	err = h.do(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = bridgeName
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "peer0"})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Without CAP_NET_ADMIN the kernel refuses nftables (and an ADD could
	// not isolate its container): not available.
	noNftables := c
	noNftables.wrap = []string{testenv.Tool(t, "setpriv"), "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"}
	_, err = h.exec("STATUS", noNftables)
	wantCode(t, err, 50, "nftables", bridgeName)

	_, err = h.exec("STATUS", c)
	wantCode(t, err, 50, bridgeName, "not a bridge")
	tk := call{netns: testenv.NewNS(t, tag).Path(), containerID: "st", ifName: "eth1", conf: c.conf, path: c.path}
	_, err = h.exec("ADD", tk)
	wantCode(t, err, 999, bridgeName, "not a bridge")
}

// TestFullBridge: with every port number of the bridge taken, ADD fails
// with a message naming the bridge and the limit and leaves nothing
// behind; STATUS says the plugin is not available; a freed port is used.
func TestFullBridge(t *testing.T) {
	ipTool := testenv.Tool(t, "ip")
	h := newHost(t)
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	path := cniPath(t)
	if err := h.do(func() error { _, err := netops.EnsureBridge(bridgeName, 1400); return err }); err != nil {
		t.Fatal(err)
	}
	// Fill the bridge with tap devices, the cheapest port there is.
	var batch strings.Builder
	for i := range netops.MaxBridgePorts {
		fmt.Fprintf(&batch, "tuntap add mode tap name fill%d\nlink set fill%d master %s\n", i, i, bridgeName)
	}
	batchFile := filepath.Join(t.TempDir(), "fill.batch")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, ipTool, "-n", testenv.NSName(h.ns), "-batch", batchFile)
	if n := h.bridgePorts(t); n != netops.MaxBridgePorts {
		t.Fatalf("filled the bridge with %d ports, want %d", n, netops.MaxBridgePorts)
	}

	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "full", ifName: "eth1", conf: conf, path: path}
	before := snapshot(t, tk.ns)
	_, err := h.exec("ADD", tk.c)
	wantCode(t, err, 11, bridgeName, fmt.Sprint(netops.MaxBridgePorts), "ports")
	if links := h.attachmentLinks(t); len(links) != 0 {
		t.Errorf("failed ADD left host veths %v", linkNames(links))
	}
	if after := snapshot(t, tk.ns); after != before {
		t.Errorf("failed ADD changed the container:\n%s", testenv.LineDiff(before, after))
	}
	if held := ip.allocations(t, "meta"); len(held) != 0 {
		t.Errorf("failed ADD left allocations %v", held)
	}
	_, err = h.exec("STATUS", tk.c)
	wantCode(t, err, 50, bridgeName, "full")

	testenv.Run(t, ipTool, "-n", testenv.NSName(h.ns), "link", "del", "fill7")
	if _, err := h.exec("STATUS", tk.c); err != nil {
		t.Errorf("STATUS with a free port: %v", err)
	}
	if _, err := h.exec("ADD", tk.c); err != nil {
		t.Fatalf("ADD with a free port: %v", err)
	}
	h.reachesEndpoint(tk.ns)
}

// badInputs are ADDs that must fail with a code and a message naming what
// is wrong, changing nothing.
func TestBadInput(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	path := cniPath(t)
	good := netConf("1.0.0", "meta", ip.section("", ""))
	edit := func(from, to string) []byte { return []byte(strings.Replace(string(good), from, to, 1)) }

	// A first task makes the bridge and its gateway exist, as on a host
	// that already runs tasks, and holds the only address of the small
	// range used by the exhaustion case.
	small := netConf("1.0.0", "small", ip.section("169.254.173.10", "169.254.173.10"))
	first := call{netns: testenv.NewNS(t, tag).Path(), containerID: "first", ifName: "eth1", conf: small, path: path}
	if _, err := h.exec("ADD", first); err != nil {
		t.Fatal(err)
	}
	fakeIPAM := t.TempDir()
	fakeLog := filepath.Join(fakeIPAM, "calls")
	script := "#!/bin/sh\necho \"$CNI_COMMAND\" >> " + fakeLog + "\n" +
		"[ \"$CNI_COMMAND\" = ADD ] && echo '{\"cniVersion\":\"1.0.0\",\"ips\":[]}'\nexit 0\n"
	if err := os.WriteFile(filepath.Join(fakeIPAM, "empty-ipam"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	// The container already has a link called taken0, and a route to the
	// endpoint through it, which the plugin must not replace.
	ctr := testenv.NewNS(t, tag)
	if err := ctr.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "taken0"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("taken0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: netops.IPNet(netops.HostPrefix(netip.MustParseAddr(endpointIP))), Scope: netlink.SCOPE_LINK})
	}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		c        call
		code     uint
		mentions []string
	}{
		{"malformed JSON", call{conf: []byte(`{"cniVersion":`)}, 6, nil},
		{"no bridge", call{conf: edit(`"bridge":"`+bridgeName+`",`, ``)}, 7, []string{`"bridge"`}},
		{"mtu not a number", call{conf: edit(`"mtu":1400`, `"mtu":"1400"`)}, 7, []string{`"mtu"`}},
		{"no ipam type", call{conf: edit(`,"type":"vpc-ipam"`, ``)}, 7, []string{`"ipam.type"`}},
		{"unknown ipam plugin", call{conf: edit(`"type":"vpc-ipam"`, `"type":"no-such-ipam"`)}, 7, []string{`"ipam.type"`, "no-such-ipam"}},
		{"unsupported cniVersion", call{conf: edit(`"cniVersion":"1.0.0"`, `"cniVersion":"0.2.0"`)}, 1, []string{"incompatible CNI versions"}},
		// A key given twice is refused even when the last value, the one
		// a plain decoder keeps, is right: at the top level and nested.
		{"key given twice", call{conf: edit(`"mtu":1400`, `"mtu":9000,"mtu":1400`)}, 7, []string{`"mtu"`, "more than once"}},
		{"key given twice in ipam", call{conf: edit(`"type":"vpc-ipam"`, `"type":"no-such-ipam","type":"vpc-ipam"`)}, 7, []string{`"ipam.type"`, "more than once"}},
		{"key given twice in a range", call{conf: edit(`"gateway":"`+gatewayIP+`"`, `"gateway":"169.254.172.9","gateway":"`+gatewayIP+`"`)}, 7, []string{`"ipam.ranges[0][0].gateway"`, "more than once"}},
		{"no such netns", call{netns: "/var/run/netns/vpct-bridge-missing"}, 4, []string{"CNI_NETNS"}},
		{"ifname too long", call{ifName: "a-very-long-ifname"}, 4, []string{"interface name"}},
		{"ifname taken", call{ifName: "taken0"}, 4, []string{"CNI_IFNAME", "taken0", "already exists"}},
		{"range exhausted", call{conf: small}, 100, []string{"vpc-ipam"}},
		{"endpoint already routed in the container", call{}, 999, []string{"already has a route to " + endpointIP + "/32"}},
		{"IPAM result without address", call{conf: edit(`"type":"vpc-ipam"`, `"type":"empty-ipam"`), path: fakeIPAM + ":" + path}, 999, []string{"empty-ipam", "no IP address"}},
	}
	hostBefore := snapshot(t, h.ns)
	ctrBefore := snapshot(t, ctr)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := call{netns: ctr.Path(), containerID: "bad", ifName: "eth1", conf: good, path: path}
			if tc.c.conf != nil {
				c.conf = tc.c.conf
			}
			if tc.c.netns != "" {
				c.netns = tc.c.netns
			}
			if tc.c.ifName != "" {
				c.ifName = tc.c.ifName
			}
			if tc.c.path != "" {
				c.path = tc.c.path
			}
			_, err := h.exec("ADD", c)
			t.Logf("error: %v", err)
			var e *types.Error
			wantCode(t, err, tc.code)
			if e, _ = err.(*types.Error); e != nil {
				for _, m := range tc.mentions {
					if !strings.Contains(e.Msg+" "+e.Details, m) {
						t.Errorf("error %q (%s) does not mention %s", e.Msg, e.Details, m)
					}
				}
			}
			if after := snapshot(t, h.ns); after != hostBefore {
				t.Errorf("failed ADD changed the host:\n%s", testenv.LineDiff(hostBefore, after))
			}
			if after := snapshot(t, ctr); after != ctrBefore {
				t.Errorf("failed ADD changed the container:\n%s", testenv.LineDiff(ctrBefore, after))
			}
			if held := ip.allocations(t, "meta"); len(held) != 0 {
				t.Errorf("failed ADD left allocations %v", held)
			}
		})
	}
	calls, _ := os.ReadFile(fakeLog)
	if got := strings.Fields(string(calls)); !slices.Equal(got, []string{"ADD", "DEL"}) {
		t.Errorf("the IPAM plugin whose result was unusable got %v, want ADD then DEL (the release)", got)
	}
}

// TestDualStack: with an IPv4 and an IPv6 range, the task gets both
// addresses, the bridge both gateways, and the task reaches the endpoint
// over both families.
func TestDualStack(t *testing.T) {
	const endpoint6 = "fd00:ec2::254"
	h := newHost(t)
	var ln net.Listener
	err := h.do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netops.AddAddress(lo, netops.HostPrefix(netip.MustParseAddr(endpoint6))); err != nil {
			return err
		}
		ln, err = net.Listen("tcp6", "["+endpoint6+"]:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go greet(ln, "metadata6")

	ip := vpcIPAM(t)
	sec := ip.section("", "")
	sec["ranges"] = [][]map[string]any{
		{{"subnet": subnet, "gateway": gatewayIP}},
		{{"subnet": "fd00:172::/64", "gateway": "fd00:172::1"}},
	}
	sec["routes"] = []map[string]any{{"dst": endpointIP + "/32"}, {"dst": endpoint6 + "/128"}}
	conf := netConf("1.1.0", "dual", sec)
	tk := &task{ns: testenv.NewNS(t, tag)}
	tk.c = call{netns: tk.ns.Path(), containerID: "dual", ifName: "eth1", conf: conf, path: cniPath(t)}
	r, err := h.add(tk.c)
	if err != nil {
		t.Fatal(err)
	}
	tk.res, _ = current.NewResultFromResult(r)
	if len(tk.res.IPs) != 2 || len(tk.res.Routes) != 4 {
		t.Fatalf("result: ips %v routes %v", tk.res.IPs, tk.res.Routes)
	}
	h.reachesEndpoint(tk.ns)
	port := ln.Addr().(*net.TCPAddr).Port
	if got, err := dial(tk.ns, fmt.Sprintf("[%s]:%d", endpoint6, port)); err != nil || got != "metadata6" {
		t.Fatalf("IPv6 endpoint: %q, %v", got, err)
	}
	err = tk.ns.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, rt := range routes {
			if rt.Dst != nil && rt.Dst.String() == "fd00:172::/64" {
				t.Errorf("IPv6 subnet route in the container: %v", rt)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check := tk.c
	check.conf = withPrevResult(t, conf, r)
	if err := h.check(check); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := h.del(tk.c); err != nil {
		t.Fatal(err)
	}
	h.verifyGone(t, ip, "dual", tk)
}

// TestResultFieldsByVersion: the binary's result carries the route fields
// of spec 1.1.0 (scope on the on-link route to the gateway, an IPAM route's
// mtu) only in a 1.1.0 result; runtimes of older versions (podman 4.3 and
// containerd 1.6 take up to 1.0.0) get none of them.
func TestResultFieldsByVersion(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	path := cniPath(t)
	section := ip.section("", "")
	section["routes"] = []map[string]any{{"dst": endpointIP + "/32", "mtu": 1300}}
	for _, tt := range []struct {
		version string
		want11  bool
	}{
		{"0.3.0", false}, {"0.3.1", false}, {"0.4.0", false}, {"1.0.0", false}, {"1.1.0", true},
	} {
		t.Run(tt.version, func(t *testing.T) {
			c := call{netns: testenv.NewNS(t, tag).Path(), containerID: "fields", ifName: "eth1",
				conf: netConf(tt.version, "fields", section), path: path}
			out, err := h.exec("ADD", c)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			t.Cleanup(func() {
				if _, err := h.exec("DEL", c); err != nil {
					t.Errorf("DEL: %v", err)
				}
			})
			var res struct {
				Routes []map[string]any `json:"routes"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("result %s: %v", out, err)
			}
			var scoped, withMTU int
			for _, r := range res.Routes {
				if s, ok := r["scope"]; ok {
					scoped++
					if s != float64(253) || r["dst"] != gatewayIP+"/32" {
						t.Errorf("route %v has scope %v; only the on-link route to the gateway has one, 253 (link)", r, s)
					}
				}
				if m, ok := r["mtu"]; ok {
					withMTU++
					if m != float64(1300) {
						t.Errorf("route %v has mtu %v, want 1300 from the ipam section", r, m)
					}
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.want11]; scoped != want || withMTU != want {
				t.Errorf("%d routes with scope and %d with mtu, want %d each: %s", scoped, withMTU, want, out)
			}
		})
	}
}
