package vpceni

import (
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// TestBadInput: each bad ADD fails with the spec's code and a message that
// names what is wrong, and changes nothing in the host or the container.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name       string
		change     func(t *testing.T, w *world, e testENI, c *call)
		binaryOnly bool // skel checks it before the plugin's code runs
		code       uint
		says       []string
	}{
		{name: "mac missing", change: setConf(confMap{"mac": nil}), code: cni.CodeInvalidConfig, says: []string{`"mac"`}},
		{name: "mac malformed", change: setConf(confMap{"mac": "02:00:0a"}), code: cni.CodeInvalidConfig, says: []string{`"mac"`, "02:00:0a"}},
		{name: "addresses missing", change: setConf(confMap{"ipAddresses": nil}), code: cni.CodeInvalidConfig, says: []string{`"ipAddresses"`}},
		{name: "address not parseable", change: setConf(confMap{"ipAddresses": []string{"10.77.1.500/24"}}), code: cni.CodeInvalidConfig, says: []string{`"ipAddresses"`, "10.77.1.500/24"}},
		{name: "gateway malformed", change: setConf(confMap{"gatewayIPAddresses": []string{"10.77.1"}}), code: cni.CodeInvalidConfig, says: []string{`"gatewayIPAddresses"`}},
		{name: "mtu of the wrong type", change: setConf(confMap{"mtu": "big"}), code: cni.CodeInvalidConfig, says: []string{`"mtu"`}},
		{name: "both spellings, different values", change: setConf(confMap{"block-instance-metadata": false}), code: cni.CodeInvalidConfig, says: []string{`"blockInstanceMetadata"`, `"block-instance-metadata"`}},
		{name: "config not JSON", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.conf = []byte(`{"cniVersion":`) }, code: cni.CodeDecodingFailure, says: []string{"unexpected end of JSON"}},
		{name: "MAC not found", change: setConf(confMap{"mac": "02:00:0a:4d:00:99"}), code: cni.CodeTryAgainLater, says: []string{"02:00:0a:4d:00:99", "host network namespace", "CNI_NETNS"}},
		{name: "netns does not exist", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.netns = "/var/run/netns/vpct-eni-absent" }, code: cni.CodeInvalidNetNS, says: []string{"CNI_NETNS", "vpct-eni-absent"}},
		{name: "netns is the host's", change: func(_ *testing.T, w *world, _ testENI, c *call) { c.netns = w.host.Path() }, code: cni.CodeInvalidNetNS, says: []string{"CNI_NETNS", "own network namespace"}},
		{name: "netns empty", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.netns = "" }, code: cni.CodeInvalidEnvironment, says: []string{"CNI_NETNS"}},
		{name: "ifname too long", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.ifName = "eth0123456789abc" }, code: cni.CodeInvalidEnvironment, says: []string{"interface name", "long"}},
		{name: "ifname with a slash", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.ifName = "eth/0" }, code: cni.CodeInvalidEnvironment, says: []string{"interface name"}},
		{name: "ifname taken in the container", change: func(t *testing.T, w *world, _ testENI, _ *call) {
			err := w.ctr().Do(func(ns.NetNS) error {
				return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"})
			})
			if err != nil {
				t.Fatal(err)
			}
		}, code: cni.CodeInvalidEnvironment, says: []string{"CNI_IFNAME", "eth0", "already taken"}},
		{name: "CNI_ARGS with an unknown key", change: func(_ *testing.T, _ *world, _ testENI, c *call) { c.cniArgs = "FOO=bar" }, code: cni.CodeInvalidEnvironment, says: []string{"CNI_ARGS", "FOO"}},
		// A key given twice is refused whichever value comes last (here the
		// right one), at the top level and in nested objects.
		{name: "key given twice", change: withMember(`"mac":"02:00:0a:4d:00:99"`), code: cni.CodeInvalidConfig, says: []string{`"mac"`, "more than once"}},
		{name: "key given twice, nested", change: withMember(`"dns":{"nameservers":["10.77.0.2"],"nameservers":["10.77.0.3"]}`), code: cni.CodeInvalidConfig, says: []string{`"dns.nameservers"`, "more than once"}},
		{name: "unsupported cniVersion", change: setConf(confMap{"cniVersion": "0.2.0"}), binaryOnly: true, code: cni.CodeIncompatibleVersion, says: []string{"0.2.0"}},
	}
	for _, r := range allRunners(t) {
		for _, tt := range tests {
			if tt.binaryOnly && r.name() != "binary" {
				continue
			}
			t.Run(r.name()+"/"+tt.name, func(t *testing.T) {
				w := newWorld(t, 1)
				e := w.enis[0]
				c := w.attachCall(e, 0, nil)
				c.conf = e.baseConf("1.0.0").bytes(t)
				tt.change(t, w, e, &c)
				before := w.snapshot(t)

				o := r.run(t, w, c)
				if o.killed || o.err == nil {
					t.Fatalf("ADD succeeded, want code %d; result: %s", tt.code, o.out)
				}
				if o.err.Code != tt.code {
					t.Errorf("code = %d, want %d (%s)", o.err.Code, tt.code, o.err.Msg)
				}
				msg := o.err.Msg + " " + o.err.Details
				for _, s := range tt.says {
					if !strings.Contains(msg, s) {
						t.Errorf("message %q does not say %s", msg, s)
					}
				}
				w.assertUnchanged(t, before, "after the rejected ADD")
				if l := eniIn(t, w.host, e); l == nil || l.Attrs().Name != e.hostName {
					t.Errorf("the ENI is not in the host as %s any more", e.hostName)
				}
			})
		}
	}
}

// setConf changes fields of the call's config.
func setConf(fields confMap) func(*testing.T, *world, testENI, *call) {
	return func(t *testing.T, _ *world, e testENI, c *call) {
		c.conf = e.baseConf("1.0.0").with(fields).bytes(t)
	}
}

// withMember puts a raw JSON member in front of the base config's own, so
// that a key the base config has is given twice, the base's value last.
func withMember(member string) func(*testing.T, *world, testENI, *call) {
	return func(t *testing.T, _ *world, e testENI, c *call) {
		base := e.baseConf("1.0.0").bytes(t)
		c.conf = append([]byte("{"+member+","), base[1:]...)
	}
}

// TestECSAgentConfigs attaches an ENI with each config format the ECS agent
// and amazon-vpc-cni-plugins write, through the binary.
func TestECSAgentConfigs(t *testing.T) {
	tests := []struct {
		name  string
		conf  func(e testENI) confMap
		addrs func(e testENI) []string
	}{
		{
			name: "ecs-eni, current",
			conf: func(e testENI) confMap {
				return confMap{"cniVersion": "0.3.0", "name": "ecs-task", "type": "ecs-eni", "eni": "eni-0abc",
					"mac": e.mac.String(), "ip-addresses": []string{e.addr4, e.addr6}, "gateway-ip-addresses": []string{e.gw4},
					"block-instance-metadata": true, "stay-down": false, "mtu": 1500}
			},
			addrs: func(e testENI) []string { return []string{e.addr4, e.addr6} },
		},
		{
			name: "ecs-eni, older",
			conf: func(e testENI) confMap {
				return confMap{"cniVersion": "0.3.0", "name": "ecs-task", "type": "ecs-eni", "eni": "eni-0abc",
					"mac": e.mac.String(), "ipv4-address": strings.TrimSuffix(e.addr4, "/24"), "ipv6-address": strings.TrimSuffix(e.addr6, "/64"),
					"subnetgateway-ipv4-address": e.gw4 + "/24", "block-instance-metadata": true}
			},
			addrs: func(e testENI) []string { return []string{e.addr4, e.addr6} },
		},
		{
			name: "amazon-vpc-cni-plugins vpc-eni",
			conf: func(e testENI) confMap {
				return confMap{"cniVersion": "0.3.1", "name": "vpc", "type": "vpc-eni", "eniName": e.hostName,
					"eniMACAddress": e.mac.String(), "eniIPAddresses": []string{e.addr4}, "gatewayIPAddresses": []string{e.gw4},
					"useExistingNetwork": "false", "blockInstanceMetadata": true}
			},
			addrs: func(e testENI) []string { return []string{e.addr4} },
		},
	}
	bin := newBinary(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			add := w.attachCall(e, 0, tt.conf(e).bytes(t))
			mustSucceed(t, bin.run(t, w, add), "ADD")
			want := attached{name: "eth0", up: true, addrs: tt.addrs(e), routes: []string{"0.0.0.0/0 via " + e.gw4}, blackholes: true}
			assertAttached(t, w, w.ctr(), e, want)
			if err := ping(t, w.ctr(), e.gw4); err != nil {
				t.Error(err)
			}
			mustSucceed(t, bin.run(t, w, add.as("DEL")), "DEL")
			w.assertUnchanged(t, before, "after DEL")
		})
	}
}
