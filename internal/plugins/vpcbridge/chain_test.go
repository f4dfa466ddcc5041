package vpcbridge

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The chain a containerd CRI node runs in one conflist: vpc-eni, then
// vpc-bridge. The runtime sends both CNI_IFNAME=eth0; vpc-eni takes it,
// vpc-bridge names its side from containerIfName.

const (
	chainNetwork = "task"
	bridgeIfName = "ecs-eth0"
	eniMAC       = "02:00:0a:4d:00:01"
	eniHostName  = "eth1"
	eniAddr      = "10.77.1.5/24"
	eniGateway   = "10.77.1.1"
)

// newENI plays an ENI on the local VPC: a veth in the host namespace,
// called eni and carrying eniMAC, whose peer in a VPC namespace holds the
// subnet's gateway.
func (h *host) newENI(t *testing.T) {
	t.Helper()
	vpc := testenv.NewNS(t, tag)
	mac, _ := net.ParseMAC(eniMAC)
	err := h.do(func() error {
		return netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: eniHostName, HardwareAddr: mac, MTU: 1500},
			PeerName:      "vpc1",
			PeerNamespace: netlink.NsFd(int(vpc.Fd())),
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = vpc.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("vpc1")
		if err != nil {
			return err
		}
		gw, _ := netlink.ParseAddr(eniGateway + "/24")
		if err := netlink.AddrAdd(l, gw); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func eniConf(version string) map[string]any {
	return map[string]any{
		"cniVersion":         version,
		"name":               chainNetwork,
		"type":               "vpc-eni",
		"mac":                eniMAC,
		"ipAddresses":        []string{eniAddr},
		"gatewayIPAddresses": []string{eniGateway},
		"mtu":                1500,
	}
}

// chained returns conf (a JSON object) with extra fields set, as libcni
// passes a conflist's plugin its prevResult.
func chained(t *testing.T, conf any, fields map[string]any) []byte {
	t.Helper()
	var c map[string]any
	switch v := conf.(type) {
	case []byte:
		if err := json.Unmarshal(v, &c); err != nil {
			t.Fatal(err)
		}
	case map[string]any:
		c = map[string]any{}
		for k, x := range v {
			c[k] = x
		}
	}
	for k, v := range fields {
		c[k] = v
	}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rawJSON keeps a plugin's stdout as it is, for a prevResult.
func rawJSON(b []byte) json.RawMessage { return json.RawMessage(b) }

// TestChainAfterVPCENI runs the chain as containerd does, for every spec
// version: ADD of vpc-eni then vpc-bridge with vpc-eni's result; CHECK of
// both with the merged result (from 0.4.0); DEL of vpc-bridge then vpc-eni
// with the netns and the result (crictl stopp), and again without either
// (crictl rmp). The merged result keeps the ENI's eth0 and address first;
// each plugin's CHECK passes and looks only at its part; vpc-bridge's DEL
// leaves the ENI, a veth named eth0 on the local VPC, where it is.
func TestChainAfterVPCENI(t *testing.T) {
	for _, version := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			h := newHost(t)
			h.newENI(t)
			ip := vpcIPAM(t)
			path := cniPath(t)
			ctr := testenv.NewNS(t, tag)
			cid := "chain-" + strings.ReplaceAll(version, ".", "")
			eni := call{netns: ctr.Path(), containerID: cid, ifName: "eth0", conf: chained(t, eniConf(version), nil), path: path}
			bridgeConf := chained(t, netConf(version, chainNetwork, ip.section("", "")), map[string]any{"containerIfName": bridgeIfName})

			eniOut, err := h.execPlugin("vpc-eni", "ADD", eni)
			if err != nil {
				t.Fatalf("vpc-eni ADD: %v", err)
			}
			br := call{netns: ctr.Path(), containerID: cid, ifName: "eth0", path: path,
				conf: chained(t, bridgeConf, map[string]any{"prevResult": rawJSON(eniOut)})}
			out, err := h.exec("ADD", br)
			if err != nil {
				t.Fatalf("vpc-bridge ADD after vpc-eni: %v", err)
			}
			if !strings.Contains(string(out), `"cniVersion": "`+version+`"`) {
				t.Errorf("result is not in version %s: %s", version, out)
			}
			res := parseResult(t, out)
			if got := ifaceNames(res); got != fmt.Sprintf("eth0@%s %s %s %s@%s", ctr.Path(), bridgeName, attachment{network: chainNetwork, Attachment: cni.Attachment{ContainerID: cid, IfName: "eth0"}}.hostVethName(), bridgeIfName, ctr.Path()) {
				t.Errorf("merged interfaces: %s", got)
			}
			if len(res.IPs) != 2 || *res.IPs[0].Interface != 0 || res.IPs[0].Address.String() != eniAddr || *res.IPs[1].Interface != 3 {
				t.Errorf("merged IPs %v: want the ENI's on eth0 first, vpc-bridge's on interface 3", res.IPs)
			}
			if len(res.Routes) != 3 || res.Routes[0].Dst.String() != "0.0.0.0/0" {
				t.Errorf("merged routes %v: want the ENI's default first, then vpc-bridge's two", res.Routes)
			}
			if res.Interfaces[0].Mac != eniMAC {
				t.Errorf("eth0 in the result has MAC %s", res.Interfaces[0].Mac)
			}

			// The container: the ENI is eth0, vpc-bridge's veth is ecs-eth0,
			// labelled with the attachment (keyed by CNI_IFNAME eth0).
			if l := linkIn(t, ctr, "eth0"); l == nil || l.Attrs().HardwareAddr.String() != eniMAC {
				t.Fatalf("eth0 in the container is %v, want the ENI", l)
			}
			l := linkIn(t, ctr, bridgeIfName)
			if l == nil || l.Type() != "veth" || l.Attrs().Alias != "vpc-bridge "+chainNetwork+" "+cid+" eth0" {
				t.Fatalf("%s in the container: %v", bridgeIfName, l)
			}
			h.reachesEndpoint(ctr)

			if version >= "0.4.0" {
				eniCheck := eni
				eniCheck.conf = chained(t, eniConf(version), map[string]any{"prevResult": rawJSON(out)})
				brCheck := br
				brCheck.conf = chained(t, bridgeConf, map[string]any{"prevResult": rawJSON(out)})
				if _, err := h.execPlugin("vpc-eni", "CHECK", eniCheck); err != nil {
					t.Errorf("vpc-eni CHECK with the merged result: %v", err)
				}
				if _, err := h.exec("CHECK", brCheck); err != nil {
					t.Errorf("vpc-bridge CHECK with the merged result: %v", err)
				}
				// Each CHECK looks at its own part: without the endpoint route
				// vpc-bridge's fails, vpc-eni's still passes.
				h.delEndpointRoute(t, ctr, bridgeIfName)
				_, err := h.exec("CHECK", brCheck)
				wantCode(t, err, 999, "route "+endpointIP+"/32 via "+gatewayIP+" missing")
				if _, err := h.execPlugin("vpc-eni", "CHECK", eniCheck); err != nil {
					t.Errorf("vpc-eni CHECK, vpc-bridge's route gone: %v", err)
				}
			}

			// crictl stopp: DEL in reverse order, with the netns and result.
			stopBr := br
			stopBr.conf = chained(t, bridgeConf, map[string]any{"prevResult": rawJSON(out)})
			if _, err := h.exec("DEL", stopBr); err != nil {
				t.Fatalf("vpc-bridge DEL: %v", err)
			}
			if l := linkIn(t, ctr, "eth0"); l == nil || l.Attrs().HardwareAddr.String() != eniMAC {
				t.Fatalf("vpc-bridge's DEL took the ENI: eth0 is now %v", l)
			}
			if linkIn(t, ctr, bridgeIfName) != nil {
				t.Errorf("%s left after vpc-bridge's DEL", bridgeIfName)
			}
			stopENI := eni
			stopENI.conf = chained(t, eniConf(version), map[string]any{"prevResult": rawJSON(out)})
			if _, err := h.execPlugin("vpc-eni", "DEL", stopENI); err != nil {
				t.Fatalf("vpc-eni DEL: %v", err)
			}
			// crictl rmp: again, with neither netns nor result.
			rmBr, rmENI := br, eni
			rmBr.netns, rmENI.netns = "", ""
			rmBr.conf = bridgeConf
			if _, err := h.exec("DEL", rmBr); err != nil {
				t.Fatalf("vpc-bridge DEL without netns: %v", err)
			}
			if _, err := h.execPlugin("vpc-eni", "DEL", rmENI); err != nil {
				t.Fatalf("vpc-eni DEL without netns: %v", err)
			}
			if l := linkIn(t, h.ns, eniHostName); l == nil || l.Attrs().HardwareAddr.String() != eniMAC {
				t.Errorf("the ENI is not back in the host as %s: %v", eniHostName, l)
			}
			h.verifyGone(t, ip, chainNetwork)
		})
	}
}

// delEndpointRoute removes the route to the endpoint from ifName in n.
func (h *host) delEndpointRoute(t *testing.T, n ns.NetNS, ifName string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: netops.IPNet(netops.HostPrefix(netip.MustParseAddr(endpointIP))), Gw: net.ParseIP(gatewayIP)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestForeignLinkSurvives is the situation the e2e run found: in the
// container, a veth named like vpc-bridge's container side (eth0) carries
// vpc-eni's label, because on the local VPC an ENI is a veth. Whatever
// vpc-bridge is asked, with or without containerIfName, with or without
// the namespace, it never deletes that link: DEL, a failed ADD and its
// undo, GC. Nor does GC touch an unlabelled host veth whose name looks
// like vpc-bridge's but whose MAC is not of its network.
func TestForeignLinkSurvives(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	path := cniPath(t)
	ctr := testenv.NewNS(t, tag)
	const eniAlias = "vpc-eni host=eth1 mtu=1500"
	err := h.do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eni-peer"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ctr.Fd()))}); err != nil {
			return err
		}
		// An unlabelled veth named like a host veth, with another MAC.
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vbr000000000000"}, PeerName: "vbr-foreign-p"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetAlias(l, eniAlias)
	})
	if err != nil {
		t.Fatal(err)
	}
	eniStillThere := func(after string) {
		t.Helper()
		if l := linkIn(t, ctr, "eth0"); l == nil || l.Attrs().Alias != eniAlias {
			t.Fatalf("after %s, eth0 (vpc-eni's) is %v", after, l)
		}
	}

	plain := netConf("1.0.0", chainNetwork, ip.section("", ""))
	withName := chained(t, plain, map[string]any{"containerIfName": bridgeIfName})
	for _, conf := range []struct {
		name string
		conf []byte
	}{{"without containerIfName", plain}, {"with containerIfName", withName}} {
		for _, netns := range []string{ctr.Path(), ""} {
			c := call{netns: netns, containerID: "foreign", ifName: "eth0", conf: conf.conf, path: path}
			for range 2 {
				if _, err := h.exec("DEL", c); err != nil {
					t.Fatalf("DEL %s, netns %q: %v", conf.name, netns, err)
				}
				eniStillThere(fmt.Sprintf("DEL %s, netns %q", conf.name, netns))
			}
		}
	}

	// An ADD chained without containerIfName cannot take eth0: it fails,
	// says what to set, and its undo leaves eth0 alone.
	_, err = h.exec("ADD", call{netns: ctr.Path(), containerID: "foreign", ifName: "eth0", conf: plain, path: path})
	wantCode(t, err, 4, "CNI_IFNAME", `"eth0" already exists`, "containerIfName")
	eniStillThere("a failed ADD")
	// With containerIfName set to the same taken name, the field is named.
	_, err = h.exec("ADD", call{netns: ctr.Path(), containerID: "foreign", ifName: "eth1", conf: chained(t, plain, map[string]any{"containerIfName": "eth0"}), path: path})
	wantCode(t, err, 7, `"containerIfName"`, `"eth0" already exists`)
	eniStillThere("a failed ADD with containerIfName")
	if held := ip.allocations(t, chainNetwork); len(held) != 0 {
		t.Errorf("failed ADDs left allocations %v", held)
	}

	gc := chained(t, netConf("1.1.0", chainNetwork, ip.section("", "")), map[string]any{"cni.dev/valid-attachments": []any{}})
	if _, err := h.exec("GC", call{conf: gc, path: path}); err != nil {
		t.Fatal(err)
	}
	eniStillThere("GC")
	if linkIn(t, h.ns, "vbr000000000000") == nil {
		t.Error("GC deleted an unlabelled veth that is not of its network")
	}
}
