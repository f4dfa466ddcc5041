package vpcpod

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestChainPortmapBandwidth runs vpc-pod with the reference portmap and
// bandwidth plugins (Debian's containernetworking-plugins) through libcni,
// as a kubelet's runtime does: a host port of the node reaches the pod,
// the pod's ingress is shaped on the host veth, CHECK of the whole chain
// passes, and DEL of the chain takes it all away. Only ingress shaping is
// asked for: egress shaping needs a tc classifier (mirred to an ifb),
// which this kernel lacks.
func TestChainPortmapBandwidth(t *testing.T) {
	for _, p := range []string{"portmap", "bandwidth"} {
		testenv.Tool(t, filepath.Join("/usr/lib/cni", p))
	}
	testenv.Tool(t, "iptables")
	nd := newNode(t, "|", "10.0.2.20")
	before := snapshot(t, nd.ns)
	p := nd.newPod(t, "chained", "1.0.0")

	list, err := libcni.ConfListFromBytes(mustJSON(t, map[string]any{
		"cniVersion": "1.0.0",
		"name":       network,
		"plugins": []map[string]any{
			{"type": "vpc-pod", "socket": nd.agent.socket},
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(testenv.Binary(t, "vpc-pod")), "/usr/lib/cni"}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: p.c.containerID,
		NetNS:       p.c.netns,
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "chained"}},
		CapabilityArgs: map[string]any{
			"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 7000, "protocol": "tcp"}},
			"bandwidth":    map[string]any{"ingressRate": 8_000_000, "ingressBurst": 1_000_000},
		},
	}
	err = nd.do(func() error {
		res, err := cniConf.AddNetworkList(context.Background(), list, rt)
		if err != nil {
			return err
		}
		p.res = asCurrent(t, res)
		return nil
	})
	if err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}
	nd.verifyAttached(t, p, "10.0.2.20", secondaryTable)
	serve(t, p.ns, "10.0.2.20", "through the host port")
	if got, err := dial(nd.ns, net.JoinHostPort(nodeIP, "8080")); err != nil || got != "through the host port" {
		t.Errorf("node %s:8080 -> pod 7000 through portmap: %q, %v", nodeIP, got, err)
	}
	err = nd.do(func() error {
		l, err := netlink.LinkByName(p.res.Interfaces[0].Name)
		if err != nil {
			return err
		}
		qdiscs, err := netlink.QdiscList(l)
		if err != nil {
			return err
		}
		for _, q := range qdiscs {
			if q.Type() == "tbf" {
				return nil
			}
		}
		t.Errorf("no tbf qdisc on host veth %s (bandwidth's ingress shaping): %v", l.Attrs().Name, qdiscs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// vpc-pod's CHECK takes the chain's final result as its prevResult.
	check := p.c
	check.conf = withPrevResult(t, p.c.conf, p.res)
	if err := nd.check(check); err != nil {
		t.Errorf("vpc-pod CHECK with the chain's result: %v", err)
	}
	// The whole chain's CHECK: Debian's portmap 1.1.1 fails it for any
	// IPv4-only pod on an iptables-nft host ("could not check ipv6 dnat:
	// chain CNI-DN-... not found"), whatever plugin comes first; so only
	// an error of another plugin fails the test.
	if err := nd.do(func() error { return cniConf.CheckNetworkList(context.Background(), list, rt) }); err != nil {
		if strings.Contains(err.Error(), "could not check ipv6 dnat") {
			t.Logf("portmap's CHECK fails on its own, as for any IPv4-only pod here: %v", err)
		} else {
			t.Errorf("CHECK of the chain: %v", err)
		}
	}
	for range 2 {
		if err := nd.do(func() error { return cniConf.DelNetworkList(context.Background(), list, rt) }); err != nil {
			t.Fatalf("DEL of the chain: %v", err)
		}
	}
	nd.verifyGone(t, before)
	// The host port is gone with the pod: the node refuses the connection
	// at once (nothing listens on 8080 and nothing rewrites it any more).
	_, err = dial(nd.ns, net.JoinHostPort(nodeIP, "8080"))
	if !isRefused(err) {
		t.Errorf("node %s:8080 after DEL: %v, want connection refused", nodeIP, err)
	}
	var out []byte
	_ = nd.do(func() error {
		out, _ = exec.Command("iptables", "-t", "nat", "-S").CombinedOutput()
		return nil
	})
	if strings.Contains(string(out), "10.0.2.20") {
		t.Errorf("portmap left rules for the pod after DEL:\n%s", out)
	}
}

func isRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), syscall.ECONNREFUSED.Error())
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
