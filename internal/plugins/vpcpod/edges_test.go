package vpcpod

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestRetriedAddConverges: an ADD repeated, in-process and through the
// binary, gives the same address, the same host veth and MAC, one set of
// rules, one assignment, and a pod that still works.
func TestRetriedAddConverges(t *testing.T) {
	n := newNode(t, "|", "10.0.2.20", "10.0.2.21")
	before := snapshot(t, n.ns)
	p := n.newPod(t, "retried", "1.0.0")
	r, err := n.add(p.c)
	if err != nil {
		t.Fatal(err)
	}
	first := asCurrent(t, r)
	for _, how := range []string{"in-process", "binary"} {
		var again types.Result
		if how == "binary" {
			out, err := n.exec("ADD", p.c)
			if err != nil {
				t.Fatalf("%s retry: %v", how, err)
			}
			again = parseResult(t, out)
		} else if again, err = n.add(p.c); err != nil {
			t.Fatalf("%s retry: %v", how, err)
		}
		cur := asCurrent(t, again)
		if cur.IPs[0].Address.String() != first.IPs[0].Address.String() || cur.Interfaces[0].Name != first.Interfaces[0].Name || cur.Interfaces[0].Mac != first.Interfaces[0].Mac {
			t.Errorf("%s retry: result %v, first %v", how, cur, first)
		}
		p.res = cur
		n.verifyAttached(t, p, "10.0.2.20", secondaryTable)
		if rules := n.podRules(t); len(rules) != 2 {
			t.Errorf("%s retry: vpc-pod's rules %v, want exactly two", how, rules)
		}
		if veths := n.podVeths(t); len(veths) != 1 {
			t.Errorf("%s retry: host veths %v, want one", how, veths)
		}
		if held := n.agent.holdings(); len(held) != 1 {
			t.Errorf("%s retry: agent holds %v, want one address", how, held)
		}
		if err := ping(t, p.ns, nodeIP); err != nil {
			t.Error(err)
		}
	}
	if err := n.del(p.c); err != nil {
		t.Fatal(err)
	}
	n.verifyGone(t, before)
}

// TestFailedAddUndoes: an ADD that fails after the veth, the host route and
// both rules exist (the pod already has a default route, which vpc-pod
// does not replace) removes them all and releases the address.
func TestFailedAddUndoes(t *testing.T) {
	n := newNode(t, "|", "10.0.2.20")
	p := n.newPod(t, "doomed", "1.0.0")
	err := p.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		t.Fatal(err)
	}
	nodeBefore, podBefore := snapshot(t, n.ns), snapshot(t, p.ns)
	for _, how := range []string{"in-process", "binary"} {
		if how == "binary" {
			_, err = n.exec("ADD", p.c)
		} else {
			_, err = n.add(p.c)
		}
		wantCode(t, err, 999, "already has a default route")
		if after := snapshot(t, n.ns); after != nodeBefore {
			t.Errorf("%s: the failed ADD changed the node:\n%s", how, testenv.LineDiff(nodeBefore, after))
		}
		if after := snapshot(t, p.ns); after != podBefore {
			t.Errorf("%s: the failed ADD changed the pod:\n%s", how, testenv.LineDiff(podBefore, after))
		}
		if held := n.agent.holdings(); len(held) != 0 {
			t.Errorf("%s: the failed ADD left the agent holding %v", how, held)
		}
	}
	calls := n.agent.callLog()
	if want := []string{"AddNetwork pods/doomed/eth0 pod=default/doomed", "DelNetwork pods/doomed/eth0"}; !slices.Equal(calls, append(slices.Clone(want), want...)) {
		t.Errorf("agent calls %v, want AddNetwork then DelNetwork, twice", calls)
	}
}

// killNetns deletes a pod's namespace the way a runtime does and waits for
// the kernel to take its veth (the host end dies with it).
func (n *node) killNetns(t *testing.T, p *pod) {
	t.Helper()
	name := testenv.NSName(p.ns)
	p.ns.Close()
	if err := netops.DeleteNamedNS(name); err != nil {
		t.Fatal(err)
	}
	veth := newAttachment(network, p.c.containerID, p.c.ifName, "vpc").hostVethName()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var gone bool
		_ = n.do(func() error {
			_, err := netlink.LinkByName(veth)
			gone = err != nil
			return nil
		})
		if gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host veth %s outlived its pod's namespace", veth)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newPodOwnNS is newPod with a namespace the test deletes itself.
func (n *node) newPodOwnNS(t *testing.T, id string) *pod {
	t.Helper()
	name := testenv.NSPrefix + tag + "-" + testenv.RandomHex(4)
	netns, err := netops.CreateNamedNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Close(); _ = netops.DeleteNamedNS(name) })
	p := n.newPod(t, id, "1.0.0")
	p.ns, p.c.netns = netns, netns.Path()
	return p
}

// TestDelEdgeCases: DEL succeeds and leaves the node clean with no netns,
// after the namespace is gone, with vpcnetd down (then the agent keeps the
// address until its GC), with both, twice, and for an attachment never
// added.
func TestDelEdgeCases(t *testing.T) {
	cases := []struct {
		name         string
		netnsGone    bool
		vethGone     bool // deleted by someone else; the namespace stays
		emptyNetns   bool
		agentDown    bool
		wantReleased bool
	}{
		{name: "no netns", emptyNetns: true, wantReleased: true},
		{name: "netns gone", netnsGone: true, wantReleased: true},
		{name: "veth gone", vethGone: true, wantReleased: true},
		{name: "agent down, veth gone", agentDown: true, vethGone: true},
		{name: "agent down", agentDown: true},
		{name: "agent down, netns gone", agentDown: true, netnsGone: true},
		{name: "agent down, no netns", agentDown: true, emptyNetns: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "|", "10.0.2.20", "10.0.2.21")
			// vpcnetd's own rule, marked as vpc-pod's are: no sweep of
			// orphaned pod rules may take it.
			testenv.Run(t, "ip", "-n", testenv.NSName(n.ns), "rule", "add", "not", "to", "10.0.0.0/16", "lookup", "main", "priority", "1024", "protocol", fmt.Sprint(RuleProtocol))
			before := snapshot(t, n.ns)
			// A bystander whose rules and veth must survive.
			other := n.newPod(t, "bystander", "1.0.0")
			if _, err := n.add(other.c); err != nil {
				t.Fatal(err)
			}
			withOther := snapshot(t, n.ns)
			p := n.newPodOwnNS(t, "leaving")
			if _, err := n.add(p.c); err != nil {
				t.Fatal(err)
			}
			if tc.netnsGone {
				n.killNetns(t, p)
			}
			if tc.vethGone {
				testenv.Run(t, "ip", "-n", testenv.NSName(n.ns), "link", "del", newAttachment(network, p.c.containerID, p.c.ifName, "vpc").hostVethName())
			}
			if tc.agentDown {
				n.agent.stop()
			}
			c := p.c
			if tc.emptyNetns {
				c.netns = ""
			}
			for i := range 2 {
				if _, err := n.exec("DEL", c); err != nil {
					t.Fatalf("DEL %d: %v", i+1, err)
				}
			}
			if after := snapshot(t, n.ns); after != withOther {
				t.Errorf("node after DEL differs from before the ADD:\n%s", testenv.LineDiff(withOther, after))
			}
			held := n.agent.holdings()
			if tc.wantReleased && !slices.Equal(held, []string{"pods/bystander/eth0=10.0.2.20"}) {
				t.Errorf("agent holds %v, want only the bystander's address", held)
			}
			if tc.agentDown {
				if len(held) != 2 {
					t.Errorf("agent holds %v; it was down, so it should still hold both", held)
				}
				// Back up, its GC (here: the runtime's) releases the address.
				n.agent.start(t)
				gc := p.c
				gc.conf = withField(t, p.c.conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "bystander", "ifname": "eth0"}})
				if err := n.gc(gc); err != nil {
					t.Fatal(err)
				}
				if held := n.agent.holdings(); !slices.Equal(held, []string{"pods/bystander/eth0=10.0.2.20"}) {
					t.Errorf("after GC the agent holds %v", held)
				}
			}
			if err := ping(t, other.ns, nodeIP); err != nil {
				t.Errorf("the bystander lost its network: %v", err)
			}
			if err := n.del(other.c); err != nil {
				t.Fatal(err)
			}
			n.verifyGone(t, before)
		})
	}
	t.Run("never added", func(t *testing.T) {
		n := newNode(t, "10.0.1.10")
		before := snapshot(t, n.ns)
		p := n.newPod(t, "ghost", "1.1.0")
		if err := n.del(p.c); err != nil {
			t.Fatal(err)
		}
		n.verifyGone(t, before)
	})
}

// TestCheckDetectsDrift breaks one thing at a time after an ADD and shows
// CHECK names it with code 999; then repairs it with a retried ADD.
func TestCheckDetectsDrift(t *testing.T) {
	n := newNode(t, "|", "10.0.2.20")
	p := n.newPod(t, "drift", "1.1.0")
	r, err := n.add(p.c)
	if err != nil {
		t.Fatal(err)
	}
	check := p.c
	check.conf = withPrevResult(t, p.c.conf, r)
	if err := n.check(check); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	ip := func(args ...string) func(t *testing.T) {
		return func(t *testing.T) {
			testenv.Run(t, "ip", args...)
		}
	}
	podNS, nodeNS := testenv.NSName(p.ns), testenv.NSName(n.ns)
	cases := []struct {
		name   string
		break_ func(t *testing.T)
		says   string
	}{
		{"neighbour deleted", ip("-n", podNS, "neigh", "del", "169.254.1.1", "dev", "eth0"), "no neighbour entry for 169.254.1.1"},
		{"default route deleted", ip("-n", podNS, "route", "del", "default"), "default route via 169.254.1.1 missing"},
		{"from-rule deleted", ip("-n", nodeNS, "rule", "del", "priority", "1536"), `rule "1536: from 10.0.2.20/32`},
		{"host route deleted", ip("-n", nodeNS, "route", "del", "10.0.2.20/32"), "no route 10.0.2.20/32"},
		{"agent forgot the pod", func(t *testing.T) {
			n.agent.set(func(a *fakeAgent) { a.releaseLocked("pods/drift/eth0") })
		}, "holds no address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.break_(t)
			_, err := n.exec("CHECK", check)
			wantCode(t, err, 999, tc.says)
			if _, err := n.add(p.c); err != nil {
				t.Fatalf("repairing ADD: %v", err)
			}
			if err := n.check(check); err != nil {
				t.Fatalf("CHECK after the repairing ADD: %v", err)
			}
		})
	}
	t.Run("no prevResult", func(t *testing.T) {
		wantCode(t, n.check(p.c), 7, "prevResult")
	})
	t.Run("prevResult with another address", func(t *testing.T) {
		cur := asCurrent(t, r)
		cur.IPs[0].Address.IP = net.ParseIP("10.0.2.99").To4()
		c := p.c
		c.conf = withPrevResult(t, p.c.conf, cur)
		wantCode(t, n.check(c), 999, "no address 10.0.2.20")
	})
}

// TestGC: with two pods, a GC listing one removes the other's veth and
// rules and has the agent release its address; the listed pod keeps
// working. The older key cni.dev/attachments counts too. With the agent
// down, GC cleans the node and fails with 11.
func TestGC(t *testing.T) {
	n := newNode(t, "10.0.1.10", "|", "10.0.2.20", "10.0.2.21")
	before := snapshot(t, n.ns)
	keep, drop := n.newPod(t, "keep", "1.1.0"), n.newPod(t, "drop", "1.1.0")
	for _, p := range []*pod{keep, drop} {
		if _, err := n.add(p.c); err != nil {
			t.Fatal(err)
		}
	}
	// The runtime's view of another network must not matter here.
	foreign := n.newPod(t, "foreign", "1.1.0")
	foreign.c.conf = withField(t, foreign.c.conf, "name", "other")
	if _, err := n.add(foreign.c); err != nil {
		t.Fatal(err)
	}
	gc := keep.c
	gc.conf = withField(t, keep.c.conf, "cni.dev/attachments", []map[string]string{{"containerID": "keep", "ifname": "eth0"}})
	if _, err := n.exec("GC", gc); err != nil {
		t.Fatal(err)
	}
	if held := n.agent.holdings(); !slices.Equal(held, []string{"other/foreign/eth0=10.0.2.21", "pods/keep/eth0=10.0.1.10"}) {
		t.Errorf("after GC the agent holds %v", held)
	}
	if veths := n.podVeths(t); len(veths) != 2 {
		t.Errorf("host veths after GC: %v, want keep's and foreign's", veths)
	}
	if rules := n.podRules(t); len(rules) != 3 || slices.ContainsFunc(rules, func(r string) bool { return strings.Contains(r, "10.0.2.20/") }) {
		t.Errorf("vpc-pod's rules after GC: %v, want keep's one and foreign's two", rules)
	}
	if err := ping(t, keep.ns, nodeIP); err != nil {
		t.Errorf("the kept pod lost its network: %v", err)
	}

	n.agent.stop()
	gc.conf = withField(t, keep.c.conf, "cni.dev/valid-attachments", []map[string]string{})
	_, err := n.exec("GC", gc)
	wantCode(t, err, 11, n.agent.socket)
	if veths := n.podVeths(t); len(veths) != 1 {
		t.Errorf("GC with the agent down left host veths %v, want only the other network's", veths)
	}
	n.agent.start(t)
	if err := n.gc(gc); err != nil {
		t.Fatal(err)
	}
	foreign.c.conf = withField(t, foreign.c.conf, "cni.dev/valid-attachments", []map[string]string{})
	if err := n.gc(foreign.c); err != nil {
		t.Fatal(err)
	}
	n.verifyGone(t, before)
}

// TestStatus: ready is success; a node that does not forward is 51; not
// ready is 50 with the agent's reason; an agent that cannot be reached is
// 50 naming the socket.
func TestStatus(t *testing.T) {
	n := newNode(t, "10.0.1.10")
	p := n.newPod(t, "status", "1.1.0")
	if _, err := n.exec("STATUS", p.c); err != nil {
		t.Fatalf("STATUS of a ready agent: %v", err)
	}
	setForward := func(v string) {
		t.Helper()
		if err := n.do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644) }); err != nil {
			t.Fatal(err)
		}
	}
	setForward("0")
	_, err := n.exec("STATUS", p.c)
	wantCode(t, err, 51, "does not forward IPv4")
	setForward("1")
	n.agent.set(func(a *fakeAgent) { a.ready, a.reason = false, "node at its ENI limit and no address free" })
	_, err = n.exec("STATUS", p.c)
	wantCode(t, err, 50, "node at its ENI limit")
	n.agent.stop()
	wantCode(t, n.status(p.c), 50, n.agent.socket)
}

// TestBadInput: ADDs that fail with a code and a message naming what is
// wrong, and change nothing: no veth, no rule, no address held.
func TestBadInput(t *testing.T) {
	n := newNode(t, "10.0.1.10", "10.0.1.11")
	good := n.newPod(t, "bad", "1.0.0")
	// The pod already has a link called taken0.
	if err := good.ns.Do(func(ns.NetNS) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "taken0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "taken0p"})
	}); err != nil {
		t.Fatal(err)
	}
	conf := func(extra ...any) []byte { return n.conf("1.0.0", extra...) }
	cases := []struct {
		name   string
		change func(c *call)
		agent  func(a *fakeAgent)
		code   uint
		says   []string
	}{
		{name: "malformed JSON", change: func(c *call) { c.conf = []byte(`{"cniVersion":`) }, code: 6},
		{name: "unsupported cniVersion", change: func(c *call) { c.conf = n.conf("0.2.0") }, code: 1, says: []string{"incompatible CNI versions"}},
		{name: "mtu out of range", change: func(c *call) { c.conf = conf("mtu", 100) }, code: 7, says: []string{`"mtu"`}},
		{name: "vethPrefix too long", change: func(c *call) { c.conf = conf("vethPrefix", "podveth") }, code: 7, says: []string{`"vethPrefix"`}},
		{name: "addTimeout not a duration", change: func(c *call) { c.conf = conf("addTimeout", "later") }, code: 7, says: []string{`"addTimeout"`}},
		{name: "socket relative", change: func(c *call) { c.conf = conf("socket", "vpcnetd.sock") }, code: 7, says: []string{`"socket"`}},
		{name: "prevResult on ADD", change: func(c *call) {
			c.conf = withField(t, c.conf, "prevResult", map[string]any{"cniVersion": "1.0.0", "ips": []any{}})
		}, code: 7, says: []string{`"prevResult"`, "first plugin"}},
		{name: "malformed CNI_ARGS", change: func(c *call) { c.args = "K8S_POD_NAME" }, code: 4, says: []string{"CNI_ARGS"}},
		{name: "empty netns", change: func(c *call) { c.netns = "" }, code: 4, says: []string{"CNI_NETNS"}},
		{name: "no such netns", change: func(c *call) { c.netns = "/var/run/netns/vpct-hp-missing" }, code: 8, says: []string{"CNI_NETNS", "vpct-hp-missing"}},
		{name: "ifname too long", change: func(c *call) { c.ifName = "a-very-long-ifname" }, code: 4, says: []string{"interface name"}},
		{name: "ifname taken in the pod", change: func(c *call) { c.ifName = "taken0" }, code: 4, says: []string{"CNI_IFNAME", "taken0", "already exists"}},
		{name: "agent not running", change: func(c *call) { c.conf = conf("socket", "/run/vpct-hp-none.sock") }, code: 11, says: []string{"/run/vpct-hp-none.sock"}},
		{name: "agent has no address", agent: func(a *fakeAgent) { a.addErr = status.Error(codes.ResourceExhausted, "subnet full") }, code: 11, says: []string{"subnet full"}},
		{name: "agent refuses the request", agent: func(a *fakeAgent) { a.addErr = status.Error(codes.InvalidArgument, "network name is empty") }, code: 7, says: []string{"network name is empty"}},
		{name: "agent slower than addTimeout", change: func(c *call) { c.conf = conf("addTimeout", "100ms") },
			agent: func(a *fakeAgent) { a.delay = time.Minute }, code: 11, says: []string{"in time"}},
		{name: "agent replies nonsense", agent: func(a *fakeAgent) { a.free = []string{"not-an-ip"} }, code: 999, says: []string{"not-an-ip"}},
		{name: "agent replies a huge MTU", agent: func(a *fakeAgent) { a.mtu = 65000 }, code: 999, says: []string{"MTU 65000", `"mtu"`}},
	}
	nodeBefore, podBefore := snapshot(t, n.ns), snapshot(t, good.ns)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			saved := n.agent.snapshotState()
			t.Cleanup(func() { n.agent.restoreState(saved) })
			if tc.agent != nil {
				n.agent.set(tc.agent)
			}
			c := good.c
			if tc.change != nil {
				tc.change(&c)
			}
			_, err := n.exec("ADD", c)
			t.Logf("error: %v", err)
			wantCode(t, err, tc.code, tc.says...)
			if after := snapshot(t, n.ns); after != nodeBefore {
				t.Errorf("failed ADD changed the node:\n%s", testenv.LineDiff(nodeBefore, after))
			}
			if after := snapshot(t, good.ns); after != podBefore {
				t.Errorf("failed ADD changed the pod:\n%s", testenv.LineDiff(podBefore, after))
			}
			if held := n.agent.holdings(); len(held) != 0 {
				t.Errorf("failed ADD left the agent holding %v", held)
			}
		})
	}
}

// TestSecondaryENIEgress proves the from-rule: the node reaches 203.0.113.1
// only through a secondary ENI (a veth to a "VPC" namespace) whose table 2
// routes there; main has no route to it. The pod with that ENI's address
// reaches it, the pod on the primary ENI is refused by the node.
func TestSecondaryENIEgress(t *testing.T) {
	n := newNode(t, "10.0.1.10", "|", "10.0.2.20")
	vpc := testenv.NewNS(t, tag)
	if err := netops.LoopbackUp(vpc); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-n", testenv.NSName(n.ns), "link", "add", "eni1", "type", "veth", "peer", "name", "vpc1", "netns", testenv.NSName(vpc)},
		{"-n", testenv.NSName(n.ns), "addr", "add", "10.0.2.5/24", "dev", "eni1"},
		{"-n", testenv.NSName(n.ns), "link", "set", "eni1", "up"},
		{"-n", testenv.NSName(n.ns), "route", "add", "default", "via", "10.0.2.1", "dev", "eni1", "table", fmt.Sprint(secondaryTable)},
		{"-n", testenv.NSName(vpc), "addr", "add", "10.0.2.1/24", "dev", "vpc1"},
		{"-n", testenv.NSName(vpc), "addr", "add", "203.0.113.1/32", "dev", "lo"},
		{"-n", testenv.NSName(vpc), "link", "set", "vpc1", "up"},
		// The VPC routes each address to the ENI that holds it.
		{"-n", testenv.NSName(vpc), "route", "add", "10.0.2.20/32", "via", "10.0.2.5"},
	} {
		testenv.Run(t, "ip", args...)
	}
	primary, secondary := n.newPod(t, "primary", "1.0.0"), n.newPod(t, "secondary", "1.0.0")
	for _, p := range []*pod{primary, secondary} {
		if _, err := n.add(p.c); err != nil {
			t.Fatal(err)
		}
	}
	if err := ping(t, secondary.ns, "203.0.113.1"); err != nil {
		t.Errorf("the secondary ENI's pod cannot leave through its ENI: %v", err)
	}
	// The node answers at once that it has no route: a positive signal,
	// not a timeout.
	var out []byte
	_ = primary.ns.Do(func(ns.NetNS) error {
		out, _ = exec.Command(testenv.Tool(t, "ping"), "-c", "1", "-W", "5", "203.0.113.1").CombinedOutput()
		return nil
	})
	if !strings.Contains(string(out), "Unreachable") {
		t.Errorf("the primary ENI's pod got through to 203.0.113.1, or no unreachable from the node:\n%s", out)
	}
	for _, p := range []*pod{primary, secondary} {
		if err := n.del(p.c); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLogFile: the config's logFile gets JSON lines at the config's level
// (aws-cni's spellings here), stdout only the result.
func TestLogFile(t *testing.T) {
	n := newNode(t, "10.0.1.10")
	p := n.newPod(t, "logged", "1.0.0")
	logPath := filepath.Join(t.TempDir(), "plugin.log")
	p.c.conf = withField(t, withField(t, p.c.conf, "pluginLogFile", logPath), "pluginLogLevel", "DEBUG")
	out, err := n.exec("ADD", p.c)
	if err != nil {
		t.Fatal(err)
	}
	if r := parseResult(t, out); r.IPs[0].Address.String() != "10.0.1.10/32" {
		t.Errorf("stdout is not only the result: %s", out)
	}
	if _, err := n.exec("DEL", p.c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var sawConnected bool
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["msg"] == "pod connected" && rec["address"] == "10.0.1.10" && rec["pod"] == "default/logged" {
			sawConnected = true
		}
	}
	if !sawConnected {
		t.Errorf("no \"pod connected\" record with the address and pod in %s:\n%s", logPath, data)
	}
}

// TestVethPrefix: aws-cni's "eni" prefix names the host veths, and GC and
// DEL find them by it.
func TestVethPrefix(t *testing.T) {
	n := newNode(t, "10.0.1.10", "10.0.1.11")
	before := snapshot(t, n.ns)
	a, b := n.newPod(t, "prefixed-a", "1.1.0"), n.newPod(t, "prefixed-b", "1.1.0")
	for _, p := range []*pod{a, b} {
		p.c.conf = withField(t, p.c.conf, "vethPrefix", "eni")
		out, err := n.exec("ADD", p.c)
		if err != nil {
			t.Fatal(err)
		}
		name := parseResult(t, out).Interfaces[0].Name
		if want := newAttachment(network, p.c.containerID, "eth0", "eni").hostVethName(); name != want || !strings.HasPrefix(name, "eni") {
			t.Errorf("host veth %s, want %s", name, want)
		}
		if err := ping(t, p.ns, nodeIP); err != nil {
			t.Error(err)
		}
	}
	gc := a.c
	gc.conf = withField(t, a.c.conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "prefixed-a", "ifname": "eth0"}})
	if _, err := n.exec("GC", gc); err != nil {
		t.Fatal(err)
	}
	if veths := n.podVeths(t); len(veths) != 1 || veths[0] != newAttachment(network, "prefixed-a", "eth0", "eni").hostVethName() {
		t.Errorf("after GC: host veths %v, want only prefixed-a's", veths)
	}
	if _, err := n.exec("DEL", a.c); err != nil {
		t.Fatal(err)
	}
	n.verifyGone(t, before)
}
