package vpcpod

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

func TestDecodeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want func(*Config) string // "" when as expected
	}{
		{"defaults", `{"cniVersion":"1.1.0","name":"pods","type":"vpc-pod"}`, func(c *Config) string {
			if c.Socket != nodeapi.DefaultSocket || c.VethPrefix != "vpc" || c.MTU != 0 || c.addTimeout != DefaultAddTimeout || c.logFile != "" || c.logLevel != slog.LevelInfo {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
		// aws-cni's conflist entry, type changed: mtu as a string, its log
		// field names, a field of its own vpc-pod ignores.
		{"aws-cni entry", `{"cniVersion":"0.4.0","name":"aws-cni","type":"vpc-pod","vethPrefix":"eni","mtu":"9001",
			"pluginLogFile":"/var/log/aws-routed-eni/plugin.log","pluginLogLevel":"DEBUG","podSGEnforcingMode":"strict"}`, func(c *Config) string {
			if c.VethPrefix != "eni" || c.MTU != 9001 || c.logFile != "/var/log/aws-routed-eni/plugin.log" || c.logLevel != slog.LevelDebug {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
		{"own names", `{"cniVersion":"1.0.0","name":"pods","type":"vpc-pod","socket":"/run/x.sock","mtu":1500,"addTimeout":"2m","logFile":"stderr","logLevel":"warn"}`, func(c *Config) string {
			if c.Socket != "/run/x.sock" || c.MTU != 1500 || c.addTimeout != 2*time.Minute || c.logFile != "stderr" || c.logLevel != slog.LevelWarn {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
		{"both spellings agreeing", `{"cniVersion":"1.0.0","name":"pods","logFile":"/l","pluginLogFile":"/l","mtu":""}`, func(c *Config) string {
			if c.logFile != "/l" || c.MTU != 0 {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeConfig([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.want(c); msg != "" {
				t.Errorf("decoded %s", msg)
			}
		})
	}
}

func TestDecodeConfigErrors(t *testing.T) {
	const base = `"cniVersion":"1.0.0","name":"pods","type":"vpc-pod"`
	for _, tc := range []struct {
		json  string
		code  uint
		field string
	}{
		{`{"cniVersion":`, cni.CodeDecodingFailure, ""},
		{`{"name":"pods"}`, cni.CodeIncompatibleVersion, `"cniVersion"`},
		{`{"cniVersion":"0.2.0","name":"pods"}`, cni.CodeIncompatibleVersion, `"cniVersion"`},
		{`{` + base + `,"socket":"run/vpcnetd.sock"}`, cni.CodeInvalidConfig, `"socket"`},
		{`{` + base + `,"socket":7}`, cni.CodeInvalidConfig, `"socket"`},
		{`{` + base + `,"vethPrefix":"toolong"}`, cni.CodeInvalidConfig, `"vethPrefix"`},
		{`{` + base + `,"vethPrefix":"eth"}`, cni.CodeInvalidConfig, `"vethPrefix"`},
		{`{` + base + `,"vethPrefix":"a/b"}`, cni.CodeInvalidConfig, `"vethPrefix"`},
		{`{` + base + `,"mtu":100}`, cni.CodeInvalidConfig, `"mtu"`},
		{`{` + base + `,"mtu":"big"}`, cni.CodeInvalidConfig, `"mtu"`},
		{`{` + base + `,"mtu":9002}`, cni.CodeInvalidConfig, `"mtu"`},
		{`{` + base + `,"addTimeout":"soon"}`, cni.CodeInvalidConfig, `"addTimeout"`},
		{`{` + base + `,"addTimeout":"-1s"}`, cni.CodeInvalidConfig, `"addTimeout"`},
		{`{` + base + `,"addTimeout":15}`, cni.CodeInvalidConfig, `"addTimeout"`},
		{`{` + base + `,"logFile":"stdout"}`, cni.CodeInvalidConfig, `"logFile"`},
		{`{` + base + `,"logFile":"relative.log"}`, cni.CodeInvalidConfig, `"logFile"`},
		{`{` + base + `,"logFile":"/a","pluginLogFile":"/b"}`, cni.CodeInvalidConfig, `"logFile"`},
		{`{` + base + `,"pluginLogLevel":"loud"}`, cni.CodeInvalidConfig, `"pluginLogLevel"`},
	} {
		_, err := decodeConfig([]byte(tc.json))
		var e *types.Error
		if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Msg, tc.field) {
			t.Errorf("%s: got %v, want code %d naming %s", tc.json, err, tc.code, tc.field)
		}
	}
}

func TestParsePodArgs(t *testing.T) {
	p, err := parsePodArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;OTHER=x")
	if err != nil {
		t.Fatal(err)
	}
	if p != (podArgs{namespace: "kube-system", name: "coredns-1", uid: "u-1", infraContainerID: "abc"}) {
		t.Errorf("parsed %+v", p)
	}
	for _, empty := range []string{"", " ", "K8S_POD_NAME="} {
		if _, err := parsePodArgs(empty); err != nil {
			t.Errorf("%q: %v", empty, err)
		}
	}
	_, err = parsePodArgs("K8S_POD_NAME")
	var e *types.Error
	if !errors.As(err, &e) || e.Code != cni.CodeInvalidEnvironment || !strings.Contains(e.Msg, "CNI_ARGS") {
		t.Errorf("malformed CNI_ARGS: %v", err)
	}
}

// TestCNIError follows the mapping in nodeapi.proto's header.
func TestCNIError(t *testing.T) {
	dialErr := errors.New("dial unix /run/vpcnet/vpcnetd.sock: connect: no such file or directory")
	for _, tc := range []struct {
		name    string
		dialErr error
		err     error
		code    uint
		says    []string
	}{
		{"socket missing", dialErr, status.Error(codes.Unavailable, "connection error"), 11, []string{"/run/vpcnet/vpcnetd.sock", "no such file"}},
		{"invalid argument", nil, status.Error(codes.InvalidArgument, "pod_name is empty"), 7, []string{"pod_name is empty"}},
		{"pool exhausted", nil, status.Error(codes.ResourceExhausted, "node at its address limit"), 11, []string{"address limit"}},
		{"agent starting", nil, status.Error(codes.Unavailable, "starting"), 11, []string{"starting"}},
		{"too slow", nil, status.Error(codes.DeadlineExceeded, "waited 15s for EC2"), 11, []string{"EC2"}},
		{"no assignment", nil, status.Error(codes.NotFound, "no such attachment"), 999, []string{"no address"}},
		{"other", nil, status.Error(codes.Internal, "store is corrupt"), 999, []string{"store is corrupt"}},
	} {
		e := cniError("AddNetwork", "/run/vpcnet/vpcnetd.sock", tc.dialErr, tc.err)
		if e.Code != tc.code {
			t.Errorf("%s: code %d, want %d (%s)", tc.name, e.Code, tc.code, e.Msg)
		}
		for _, s := range tc.says {
			if !strings.Contains(e.Msg, s) {
				t.Errorf("%s: %q does not say %q", tc.name, e.Msg, s)
			}
		}
	}
}

func TestPlanPod(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reply   *nodeapi.AddNetworkReply
		confMTU int
		want    podPlan
		err     string
	}{
		{"primary ENI", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.1.5", Mtu: 9001}, 0, podPlan{addr: netip.MustParseAddr("10.0.1.5"), mtu: 9001}, ""},
		{"secondary ENI", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.2.5", RouteTable: 3, Mtu: 9001}, 0, podPlan{addr: netip.MustParseAddr("10.0.2.5"), table: 3, mtu: 9001}, ""},
		{"config MTU wins", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.1.5", Mtu: 9001}, 1500, podPlan{addr: netip.MustParseAddr("10.0.1.5"), mtu: 1500}, ""},
		{"no MTU anywhere", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.1.5"}, 0, podPlan{addr: netip.MustParseAddr("10.0.1.5"), mtu: FallbackMTU}, ""},
		{"MTU out of range", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.1.5", Mtu: 65000}, 0, podPlan{}, "MTU 65000"},
		{"not an address", &nodeapi.AddNetworkReply{Ipv4Address: "ten"}, 0, podPlan{}, `"ten"`},
		{"IPv6", &nodeapi.AddNetworkReply{Ipv4Address: "fd00::5"}, 0, podPlan{}, "IPv4"},
		{"unspecified", &nodeapi.AddNetworkReply{Ipv4Address: "0.0.0.0"}, 0, podPlan{}, "unicast"},
		{"table main by number", &nodeapi.AddNetworkReply{Ipv4Address: "10.0.1.5", RouteTable: 254}, 0, podPlan{}, "table 254"},
	} {
		got, err := planPod(tc.reply, tc.confMTU)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one saying %s", tc.name, err, tc.err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%s: plan %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestRulesOfAPlan(t *testing.T) {
	p := podPlan{addr: netip.MustParseAddr("10.0.2.5"), table: 3}
	got := p.rules()
	want := []netops.Rule{
		{Priority: 512, Dst: netip.MustParsePrefix("10.0.2.5/32"), Protocol: RuleProtocol},
		{Priority: 1536, Src: netip.MustParsePrefix("10.0.2.5/32"), Table: 3, Protocol: RuleProtocol},
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules %v, want %v", got, want)
	}
	if got := (podPlan{addr: netip.MustParseAddr("10.0.1.5")}).rules(); len(got) != 1 {
		t.Errorf("primary ENI address: rules %v, want only the to-rule", got)
	}

	foreign := netops.Rule{Priority: 512, Dst: netip.MustParsePrefix("10.0.2.5/32"), Protocol: 4}
	other := netops.Rule{Priority: 512, Dst: netip.MustParsePrefix("10.0.1.9/32"), Protocol: RuleProtocol}
	// vpcnetd's rules carry the same protocol; none is ever a pod's.
	agents := []netops.Rule{
		{Priority: 1024, Dst: netip.MustParsePrefix("10.0.0.0/16"), Invert: true, Protocol: RuleProtocol},
		{Priority: 1024, Dst: netip.MustParsePrefix("10.0.2.5/32"), Invert: true, Protocol: RuleProtocol},
		{Priority: 512, Dst: netip.MustParsePrefix("10.0.2.0/24"), Protocol: RuleProtocol},
		{Priority: 1536, Src: netip.MustParsePrefix("10.0.2.5/32"), Dst: netip.MustParsePrefix("10.9.0.0/16"), Table: 3, Protocol: RuleProtocol},
	}
	all := append(slices.Clone(want), foreign, other)
	all = append(all, agents...)
	if got := rulesOf(all, p.addr); !slices.Equal(got, want) {
		t.Errorf("rulesOf = %v, want %v", got, want)
	}
	routed := map[netip.Prefix]bool{netip.MustParsePrefix("10.0.1.9/32"): true}
	if got := orphanRules(all, routed); !slices.Equal(got, want) {
		t.Errorf("orphanRules = %v, want the unrouted pod's %v (not the routed pod's, the foreign one or the agent's)", got, want)
	}
}

func TestHostVethIdentity(t *testing.T) {
	a := newAttachment("pods", "ctr-1", "eth0", "vpc")
	b := newAttachment("pods", "ctr-2", "eth0", "vpc")
	other := newAttachment("other", "ctr-1", "eth0", "vpc")
	if a.hostVethName() != nodeapi.HostVethName("vpc", a.api) || len(a.hostVethName()) != 15 {
		t.Errorf("host veth name %q is not nodeapi's", a.hostVethName())
	}
	if a.hostVethName() == b.hostVethName() || a.hostVethMAC().String() == b.hostVethMAC().String() {
		t.Error("two attachments share a veth name or MAC")
	}
	mac := a.hostVethMAC()
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("%s is not a locally administered unicast MAC", mac)
	}
	if !inNetwork(a.hostVethMAC(), "pods") || !inNetwork(b.hostVethMAC(), "pods") || inNetwork(other.hostVethMAC(), "pods") {
		t.Error("the MAC prefix does not tell the network")
	}
	if a.alias() != "vpc-pod pods ctr-1 eth0" {
		t.Errorf("alias %q", a.alias())
	}
	long := newAttachment("pods", strings.Repeat("c", 300), "eth0", "vpc")
	if al := long.alias(); len(al) > maxAlias || !strings.HasPrefix(al, "vpc-pod pods sha256:") {
		t.Errorf("alias of a long container ID: %q", al)
	}
}
