package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func codeOf(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// TestDecodeConfigDuplicateKeys: a key given twice in one object, at any
// depth, is refused with code 7 naming its path; the same key in different
// objects, or in another case, is not a duplicate.
func TestDecodeConfigDuplicateKeys(t *testing.T) {
	tests := []struct {
		name, conf string
		field      string // "" = accepted
	}{
		{"top level", `{"cniVersion":"1.0.0","mtu":1500,"name":"n","mtu":9001}`, "mtu"},
		{"top level, same value", `{"cniVersion":"1.0.0","name":"n","name":"n"}`, "name"},
		{"nested object", `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"a","subnet":"10.0.0.0/24","type":"b"}}`, "ipam.type"},
		{"object in a list", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.1.0/24","gateway":"10.0.1.1","subnet":"10.0.2.0/24"}]]}}`, "ipam.ranges[0][1].subnet"},
		{"in the prevResult", `{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24","address":"10.0.0.6/24"}]}}`, "prevResult.ips[0].address"},
		{"cniVersion itself", `{"cniVersion":"0.3.0","name":"n","cniVersion":"1.0.0"}`, "cniVersion"},
		{"same key in sibling objects", `{"cniVersion":"1.0.0","name":"n","a":{"type":"x"},"b":{"type":"y"},"ranges":[{"subnet":"1"},{"subnet":"2"}]}`, ""},
		{"keys differing in case", `{"cniVersion":"1.0.0","name":"n","args":{"ip":"1","IP":"2"}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			err := DecodeConfig([]byte(tt.conf), &v)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if codeOf(err) != CodeInvalidConfig {
				t.Fatalf("got %v, want code %d", err, CodeInvalidConfig)
			}
			if want := fmt.Sprintf("invalid config: field %q: given more than once", tt.field); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q, want it to start with %q", err, want)
			}
		})
	}
}

func TestDecodeConfigErrors(t *testing.T) {
	var v struct {
		MTU int `json:"mtu"`
	}
	tests := []struct {
		conf string
		code uint
		says string
	}{
		{`{"cniVersion":"1.0.0",`, CodeDecodingFailure, "failed to decode network config"},
		{`{"cniVersion":"1.0.0","mtu":"big"}`, CodeInvalidConfig, `field "mtu"`},
		{`{"cniVersion":"0.2.0"}`, CodeIncompatibleVersion, `field "cniVersion": "0.2.0" is not supported`},
		{`{"mtu":1}`, CodeIncompatibleVersion, `field "cniVersion": missing`},
		{`{"cniVersion":1.1}`, CodeInvalidConfig, `field "cniVersion": expected string`},
		{`["cniVersion"]`, CodeInvalidConfig, `field "(top level)"`},
	}
	for _, tt := range tests {
		err := DecodeConfig([]byte(tt.conf), &v)
		if codeOf(err) != tt.code || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: got %v, want code %d saying %s", tt.conf, err, tt.code, tt.says)
		}
	}
}

// TestMergeSpellings: one spelling or several that agree give the value and
// the name it came under; disagreeing ones are code 7 on the later name,
// naming both with their values.
func TestMergeSpellings(t *testing.T) {
	s := func(v string) *string { return &v }
	eq := func(a, b string) bool { return a == b }
	show := func(v string) string { return v }
	tests := []struct {
		name      string
		spellings []Spelling[string]
		field     string
		value     string
		err       string
	}{
		{"none", []Spelling[string]{{"ipv4Subnet", nil}, {"ipv4-subnet", nil}}, "", "", ""},
		{"ours", []Spelling[string]{{"ipv4Subnet", s("a")}, {"ipv4-subnet", nil}}, "ipv4Subnet", "a", ""},
		{"theirs", []Spelling[string]{{"ipv4Subnet", nil}, {"ipv4-subnet", s("b")}}, "ipv4-subnet", "b", ""},
		{"both agree", []Spelling[string]{{"ipv4Subnet", s("a")}, {"ipv4-subnet", s("a")}}, "ipv4Subnet", "a", ""},
		{"both differ", []Spelling[string]{{"ipv4Subnet", s("a")}, {"ipv4-subnet", s("b")}}, "", "",
			`invalid config: field "ipv4-subnet": differs from ipv4Subnet; give one of the two ("ipv4Subnet": a, "ipv4-subnet": b)`},
		{"third differs", []Spelling[string]{{"x", s("a")}, {"y", nil}, {"z", s("c")}}, "", "",
			`invalid config: field "z": differs from x; give one of the two ("x": a, "z": c)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := MergeSpellings(eq, show, tt.spellings...)
			if tt.err != "" {
				if codeOf(err) != CodeInvalidConfig || err.Error() != tt.err {
					t.Fatalf("got %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil || m.Field != tt.field || m.Value != tt.value || m.Set() != (tt.field != "") {
				t.Errorf("got %+v, %v; want field %q value %q", m, err, tt.field, tt.value)
			}
		})
	}
}

// TestAsVersion: a result printed for a version before 1.1.0 carries none
// of the fields 1.1.0 added; a 1.1.0 result keeps them; the input is left
// alone.
func TestAsVersion(t *testing.T) {
	scope, table := 253, 100
	_, dst, _ := net.ParseCIDR("169.254.170.2/32")
	_, gwDst, _ := net.ParseCIDR("169.254.172.1/32")
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "eth0", Mac: "02:00:00:00:00:01", Mtu: 1400, Sandbox: "/ns", SocketPath: "/s", PciID: "0000:00:01.0"}},
		IPs:        []*current.IPConfig{{Interface: current.Int(0), Address: net.IPNet{IP: net.IPv4(169, 254, 172, 5).To4(), Mask: net.CIDRMask(22, 32)}, Gateway: net.IPv4(169, 254, 172, 1)}},
		Routes: []*types.Route{
			{Dst: *gwDst, Scope: &scope},
			{Dst: *dst, GW: net.IPv4(169, 254, 172, 1), MTU: 1400, AdvMSS: 1360, Priority: 5, Table: &table},
		},
	}
	newer := []string{"mtu", "advmss", "priority", "table", "scope", "socketPath", "pciID"}
	for _, version := range SpecVersions.SupportedVersions() {
		t.Run(version, func(t *testing.T) {
			out, err := AsVersion(res, version)
			if err != nil {
				t.Fatal(err)
			}
			if out.Version() != version {
				t.Errorf("version %s", out.Version())
			}
			b, err := json.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range newer {
				has := strings.Contains(string(b), `"`+f+`"`)
				if want := version == "1.1.0"; has != want {
					t.Errorf("field %q present = %v, want %v: %s", f, has, want, b)
				}
			}
			for _, kept := range []string{`"dst":"169.254.170.2/32"`, `"gw":"169.254.172.1"`, `"dst":"169.254.172.1/32"`, `"169.254.172.5/22"`, `"sandbox":"/ns"`} {
				if !strings.Contains(string(b), kept) {
					t.Errorf("%s lost: %s", kept, b)
				}
			}
		})
	}
	if res.Routes[0].Scope == nil || res.Interfaces[0].Mtu != 1400 || res.Routes[1].Table == nil {
		t.Error("AsVersion changed its input")
	}
}

func TestPrevResult(t *testing.T) {
	decode := func(s string) *types.NetConf {
		var nc types.NetConf
		if err := DecodeConfig([]byte(s), &nc); err != nil {
			t.Fatal(err)
		}
		return &nc
	}
	none := `{"cniVersion":"1.0.0","name":"n"}`
	if prev, err := PrevResult(decode(none), false); prev != nil || err != nil {
		t.Errorf("no prevResult, not required: %v %v", prev, err)
	}
	if _, err := PrevResult(decode(none), true); codeOf(err) != CodeInvalidConfig || !strings.Contains(err.Error(), `"prevResult": missing`) {
		t.Errorf("no prevResult, required: %v", err)
	}
	old := decode(`{"cniVersion":"0.3.0","name":"n","prevResult":{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"version":"4","address":"10.0.0.5/24","interface":0}]}}`)
	for range 2 { // a second call reads the result parsed by the first
		prev, err := PrevResult(old, true)
		if err != nil || len(prev.IPs) != 1 || *prev.IPs[0].Interface != 0 || prev.Interfaces[0].Name != "eth0" {
			t.Fatalf("0.3.0 prevResult: %+v %v", prev, err)
		}
	}
	bad := decode(`{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"bad"}]}}`)
	if _, err := PrevResult(bad, false); codeOf(err) != CodeInvalidConfig || !strings.Contains(err.Error(), `"prevResult"`) {
		t.Errorf("malformed prevResult: %v", err)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"10.0.1.5/24", "10.0.1.5/24", ""},
		{"2001:db8::1/64", "2001:db8::1/64", ""},
		{"10.0.1.5", "", `field "f": "10.0.1.5" is not a CIDR: it has no prefix length; write it in CIDR notation, e.g. "10.0.1.5/24"`},
		{"10.0.0.0/33", "", `field "f": "10.0.0.0/33" is not a CIDR`},
		{"::ffff:10.0.0.1/120", "", `IPv4-mapped IPv6 address`},
	} {
		p, err := ParsePrefix("f", tc.in)
		switch {
		case tc.err == "" && (err != nil || p.String() != tc.want):
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || codeOf(err) != CodeInvalidConfig):
			t.Errorf("ParsePrefix(%q) = %v, %v; want an invalid-config error saying %q", tc.in, p, err, tc.err)
		}
	}
}
