package vpcpod

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// TestSpecVersions runs the whole life of two pods on one node for every
// spec version, one through the verbs in-process, the other through the
// binary; the second gets an address of the secondary ENI. Both reach
// each other and the node, and the node reaches both; CHECK, GC and STATUS
// pass where the version has them; two DELs each leave the node as it was
// and the agent holding nothing.
func TestSpecVersions(t *testing.T) {
	for _, version := range specVersions {
		t.Run(version, func(t *testing.T) {
			n := newNode(t, "10.0.1.10", "|", "10.0.2.20")
			before := snapshot(t, n.ns)

			a := n.newPod(t, "pod-a", version)
			r, err := n.add(a.c)
			if err != nil {
				t.Fatalf("in-process ADD: %v", err)
			}
			if r.Version() != version {
				t.Errorf("in-process result has version %s, want %s", r.Version(), version)
			}
			a.res = asCurrent(t, r)

			b := n.newPod(t, "pod-b", version)
			out, err := n.exec("ADD", b.c)
			if err != nil {
				t.Fatalf("binary ADD: %v", err)
			}
			if !strings.Contains(string(out), `"cniVersion": "`+version+`"`) {
				t.Errorf("binary result is not in version %s: %s", version, out)
			}
			b.res = parseResult(t, out)

			n.verifyAttached(t, a, "10.0.1.10", 0)
			n.verifyAttached(t, b, "10.0.2.20", secondaryTable)
			n.verifyTraffic(t, a, b)

			if version >= "0.4.0" {
				ca, cb := a.c, b.c
				ca.conf, cb.conf = withPrevResult(t, a.c.conf, a.res), withPrevResult(t, b.c.conf, b.res)
				if err := n.check(ca); err != nil {
					t.Errorf("in-process CHECK: %v", err)
				}
				if _, err := n.exec("CHECK", cb); err != nil {
					t.Errorf("binary CHECK: %v", err)
				}
			}
			if version == "1.1.0" {
				gc := a.c
				gc.conf = withField(t, a.c.conf, "cni.dev/valid-attachments", []map[string]string{
					{"containerID": "pod-a", "ifname": "eth0"}, {"containerID": "pod-b", "ifname": "eth0"}})
				if err := n.gc(gc); err != nil {
					t.Errorf("in-process GC: %v", err)
				}
				if _, err := n.exec("GC", gc); err != nil {
					t.Errorf("binary GC: %v", err)
				}
				if held := n.agent.holdings(); len(held) != 2 {
					t.Errorf("GC with both pods valid released some: agent holds %v", held)
				}
				n.verifyTraffic(t, a, b)
				if err := n.status(a.c); err != nil {
					t.Errorf("in-process STATUS: %v", err)
				}
				if _, err := n.exec("STATUS", b.c); err != nil {
					t.Errorf("binary STATUS: %v", err)
				}
			}

			for range 2 {
				if err := n.del(a.c); err != nil {
					t.Fatalf("in-process DEL: %v", err)
				}
				if _, err := n.exec("DEL", b.c); err != nil {
					t.Fatalf("binary DEL: %v", err)
				}
			}
			n.verifyGone(t, before)
		})
	}
}

// verifyAttached checks what ADD promised, in the result and in the
// kernel, and records the pod's address.
func (n *node) verifyAttached(t *testing.T, p *pod, wantIP string, table int) {
	t.Helper()
	r := p.res
	a := newAttachment(network, p.c.containerID, p.c.ifName, "vpc")
	if len(r.Interfaces) != 2 {
		t.Fatalf("result has %d interfaces, want host veth and pod interface: %v", len(r.Interfaces), r.Interfaces)
	}
	host, podIf := r.Interfaces[0], r.Interfaces[1]
	if host.Name != a.hostVethName() || host.Mac != a.hostVethMAC().String() || host.Sandbox != "" {
		t.Errorf("host veth in result: %+v, want %s %s", host, a.hostVethName(), a.hostVethMAC())
	}
	if podIf.Name != "eth0" || podIf.Sandbox != p.ns.Path() || podIf.Mac == "" {
		t.Errorf("pod interface in result: %+v", podIf)
	}
	if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 1 {
		t.Fatalf("result IPs do not point at the pod interface: %v", r.IPs)
	}
	if got := r.IPs[0].Address.String(); got != wantIP+"/32" || r.IPs[0].Gateway.String() != "169.254.1.1" {
		t.Errorf("result address %s gateway %s, want %s/32 via 169.254.1.1", got, r.IPs[0].Gateway, wantIP)
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != "169.254.1.1" {
		t.Errorf("result routes %v, want the default via 169.254.1.1", r.Routes)
	}
	p.ip = netip.MustParseAddr(wantIP)

	// The node: the veth up with the MTU, labelled, the /32 route, the
	// rules.
	var hostMAC net.HardwareAddr
	err := n.do(func() error {
		v, err := netlink.LinkByName(host.Name)
		if err != nil {
			return err
		}
		at := v.Attrs()
		hostMAC = at.HardwareAddr
		if at.Flags&net.FlagUp == 0 || at.MTU != 9001 || at.Alias != a.alias() {
			t.Errorf("host veth: flags %v mtu %d alias %q", at.Flags, at.MTU, at.Alias)
		}
		routes, err := netops.TableRoutes(0, at.Index)
		if err != nil {
			return err
		}
		if !slices.Contains(routes, netops.TableRoute{Dst: netip.MustParsePrefix(wantIP + "/32"), LinkIndex: at.Index}) {
			t.Errorf("no on-link route %s/32 dev %s: %v", wantIP, host.Name, routes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rules := n.podRules(t)
	want := []string{fmt.Sprintf("512: from all to %s/32 lookup 254 proto %d", wantIP, RuleProtocol)}
	if table != 0 {
		want = append(want, fmt.Sprintf("1536: from %s/32 to all lookup %d proto %d", wantIP, table, RuleProtocol))
	}
	for _, w := range want {
		if !slices.Contains(rules, w) {
			t.Errorf("rule %q missing; vpc-pod's rules: %v", w, rules)
		}
	}
	if table == 0 && slices.ContainsFunc(rules, func(r string) bool { return strings.HasPrefix(r, "1536: from "+wantIP+"/32") }) {
		t.Errorf("an address of the primary ENI has a from-rule: %v", rules)
	}

	// The pod: the /32, the two routes and nothing else, the permanent
	// gateway entry.
	err = p.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		at := l.Attrs()
		if at.HardwareAddr.String() != podIf.Mac || at.MTU != 9001 || at.Flags&net.FlagUp == 0 {
			t.Errorf("pod eth0: mac %s (result %s) mtu %d flags %v", at.HardwareAddr, podIf.Mac, at.MTU, at.Flags)
		}
		addrs, err := netops.Addresses(l)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].String() != wantIP+"/32" {
			t.Errorf("pod addresses %v, want %s/32", addrs, wantIP)
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, rt := range routes {
			got = append(got, fmt.Sprintf("%v>%v scope %v", rt.Dst, rt.Gw, rt.Scope))
		}
		slices.Sort(got)
		if want := []string{"0.0.0.0/0>169.254.1.1 scope universe", "169.254.1.1/32><nil> scope link"}; !slices.Equal(got, want) {
			t.Errorf("pod IPv4 routes %v, want exactly %v", got, want)
		}
		neigh, err := netops.Neighbors(l)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(neigh, func(e netops.Neighbor) bool {
			return e.IP == podGateway && e.Permanent && e.MAC.String() == hostMAC.String()
		}) {
			t.Errorf("pod neighbours %+v: no permanent 169.254.1.1 -> %s", neigh, hostMAC)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// verifyTraffic proves the routes work: each pod pings the node and the
// other pod, the node pings both, and TCP connects both ways.
func (n *node) verifyTraffic(t *testing.T, a, b *pod) {
	t.Helper()
	for _, p := range []*pod{a, b} {
		if err := ping(t, p.ns, nodeIP); err != nil {
			t.Error(err)
		}
		if err := ping(t, n.ns, p.ip.String()); err != nil {
			t.Error(err)
		}
	}
	if err := ping(t, a.ns, b.ip.String()); err != nil {
		t.Error(err)
	}
	for _, pair := range [][2]*pod{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		greeting := "hello from " + to.c.containerID
		serveOnce(t, to, greeting)
		got, err := dial(from.ns, net.JoinHostPort(to.ip.String(), "7000"))
		if err != nil || got != greeting {
			t.Errorf("TCP %s -> %s: %q, %v", from.c.containerID, to.ip, got, err)
		}
	}
	if got, err := dial(n.ns, net.JoinHostPort(a.ip.String(), "7000")); err != nil || got != a.serving {
		t.Errorf("TCP node -> %s: %q, %v", a.ip, got, err)
	}
}

// serveOnce starts the pod's TCP listener, once per pod.
func serveOnce(t *testing.T, p *pod, text string) {
	t.Helper()
	if p.serving == "" {
		serve(t, p.ns, p.ip.String(), text)
		p.serving = text
	}
}

// verifyGone checks that the node is as before and the agent holds
// nothing.
func (n *node) verifyGone(t *testing.T, before string) {
	t.Helper()
	if after := snapshot(t, n.ns); after != before {
		t.Errorf("node differs from before:\n%s", testenv.LineDiff(before, after))
	}
	if held := n.agent.holdings(); len(held) != 0 {
		t.Errorf("agent still holds %v", held)
	}
}
