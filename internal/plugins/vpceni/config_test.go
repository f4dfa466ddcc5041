package vpceni

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// TestParseConfigFormats decodes each accepted format into the same kind
// of Config.
func TestParseConfigFormats(t *testing.T) {
	type want struct {
		eniID    string
		mac      string
		addrs    []string
		gws      []string
		mtu      int
		block    bool
		stayDown bool
	}
	tests := []struct {
		name string
		json string
		want want
	}{
		{
			name: "ours",
			json: `{"cniVersion":"1.0.0","name":"n","type":"vpc-eni","eniID":"eni-1","mac":"0A:1B:2C:3D:4E:5F",
				"ipAddresses":["10.0.1.5/24","2600:1f14::5/64"],"gatewayIPAddresses":["10.0.1.1","2600:1f14::1"],
				"mtu":9001,"blockInstanceMetadata":true}`,
			want: want{"eni-1", "0a:1b:2c:3d:4e:5f", []string{"10.0.1.5/24", "2600:1f14::5/64"}, []string{"10.0.1.1", "2600:1f14::1"}, 9001, true, false},
		},
		{
			name: "ECS agent (ecs-eni, current)",
			json: `{"cniVersion":"0.3.0","name":"ecs","type":"ecs-eni","eni":"eni-2","mac":"0a:1b:2c:3d:4e:5f",
				"ip-addresses":["10.0.1.5/24"],"gateway-ip-addresses":["10.0.1.1"],"block-instance-metadata":true,
				"stay-down":false,"mtu":1500}`,
			want: want{"eni-2", "0a:1b:2c:3d:4e:5f", []string{"10.0.1.5/24"}, []string{"10.0.1.1"}, 1500, true, false},
		},
		{
			name: "ECS agent (ecs-eni, older: single addresses, gateway with the subnet's prefix)",
			json: `{"cniVersion":"0.3.0","name":"ecs","type":"ecs-eni","eni":"eni-3","mac":"0a:1b:2c:3d:4e:5f",
				"ipv4-address":"10.0.1.5","ipv6-address":"2600:1f14::5","subnetgateway-ipv4-address":"10.0.1.1/20",
				"block-instance-metadata":true,"stay-down":true}`,
			want: want{"eni-3", "0a:1b:2c:3d:4e:5f", []string{"10.0.1.5/20", "2600:1f14::5/64"}, []string{"10.0.1.1"}, 0, true, true},
		},
		{
			name: "ECS agent (ecs-eni, oldest: CIDR address, no gateway)",
			json: `{"cniVersion":"0.3.0","name":"ecs","type":"ecs-eni","eni":"eni-4","ipv4-address":"172.31.31.65/20","mac":"0a:1b:2c:3d:4e:5f"}`,
			want: want{"eni-4", "0a:1b:2c:3d:4e:5f", []string{"172.31.31.65/20"}, nil, 0, false, false},
		},
		{
			name: "amazon-vpc-cni-plugins vpc-eni",
			json: `{"cniVersion":"0.3.1","name":"vpc","type":"vpc-eni","eniName":"eth1","eniMACAddress":"0a:1b:2c:3d:4e:5f",
				"eniIPAddresses":["192.168.1.42/24"],"gatewayIPAddresses":["192.168.1.1"],"useExistingNetwork":"false",
				"blockInstanceMetadata":true}`,
			want: want{"", "0a:1b:2c:3d:4e:5f", []string{"192.168.1.42/24"}, []string{"192.168.1.1"}, 0, true, false},
		},
		{
			name: "two spellings that agree",
			json: `{"cniVersion":"1.0.0","name":"n","mac":"0a:1b:2c:3d:4e:5f","eniMACAddress":"0A-1B-2C-3D-4E-5F",
				"ipAddresses":["10.0.1.5/24","2600:1f14::5/64"],"ip-addresses":["2600:1f14::5/64","10.0.1.5/24"],
				"ipv4-address":"10.0.1.5/24","gatewayIPAddresses":["10.0.1.1"],"subnetgateway-ipv4-address":"10.0.1.1/24",
				"stayDown":false,"stay-down":false,"eniID":"eni-5","eni":"eni-5","ipv6-address":"2600:1f14::5"}`,
			want: want{"eni-5", "0a:1b:2c:3d:4e:5f", []string{"10.0.1.5/24", "2600:1f14::5/64"}, []string{"10.0.1.1"}, 0, false, false},
		},
		{
			name: "stayDown needs no addresses",
			json: `{"cniVersion":"1.1.0","name":"n","mac":"0a:1b:2c:3d:4e:5f","stayDown":true}`,
			want: want{"", "0a:1b:2c:3d:4e:5f", nil, nil, 0, false, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := decodeConfig([]byte(tt.json))
			if err != nil {
				t.Fatalf("decodeConfig: %v", err)
			}
			var addrs, gws []string
			for _, p := range conf.Addresses {
				addrs = append(addrs, p.String())
			}
			for _, g := range conf.Gateways {
				gws = append(gws, g.String())
			}
			got := want{conf.ENIID, conf.MAC.String(), addrs, gws, conf.MTU, conf.BlockInstanceMetadata, conf.StayDown}
			if got.eniID != tt.want.eniID || got.mac != tt.want.mac || !slices.Equal(got.addrs, tt.want.addrs) ||
				!slices.Equal(got.gws, tt.want.gws) || got.mtu != tt.want.mtu || got.block != tt.want.block || got.stayDown != tt.want.stayDown {
				t.Errorf("decodeConfig =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// TestParseConfigErrors: each bad config fails with the spec's code and a
// message that names the field as the user spelled it.
func TestParseConfigErrors(t *testing.T) {
	const head = `"cniVersion":"1.0.0","name":"n","type":"vpc-eni",`
	const mac = `"mac":"0a:1b:2c:3d:4e:5f",`
	const addrs = `"ipAddresses":["10.0.1.5/24"],`
	tests := []struct {
		name string
		json string
		code uint
		says []string // substrings of the message
	}{
		{"not JSON", `{` + head, cni.CodeDecodingFailure, []string{"decode"}},
		{"mtu of the wrong type", `{` + head + mac + addrs + `"mtu":"1500"}`, cni.CodeInvalidConfig, []string{`"mtu"`}},
		{"list given as a string", `{` + head + mac + `"ipAddresses":"10.0.1.5/24"}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`}},
		{"mac missing", `{` + head + addrs + `"mtu":1500}`, cni.CodeInvalidConfig, []string{`"mac"`, "missing"}},
		{"mac malformed", `{` + head + addrs + `"mac":"0a:1b:2c"}`, cni.CodeInvalidConfig, []string{`"mac"`, "not a MAC"}},
		{"mac of 8 bytes", `{` + head + addrs + `"mac":"0a:1b:2c:3d:4e:5f:60:71"}`, cni.CodeInvalidConfig, []string{`"mac"`, "6-byte"}},
		{"mac multicast", `{` + head + addrs + `"mac":"01:00:5e:00:00:01"}`, cni.CodeInvalidConfig, []string{`"mac"`, "multicast"}},
		{"eniMACAddress malformed", `{` + head + addrs + `"eniMACAddress":"zz"}`, cni.CodeInvalidConfig, []string{`"eniMACAddress"`}},
		{"addresses missing", `{` + head + mac + `"mtu":1500}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, "missing"}},
		{"addresses empty", `{` + head + mac + `"ip-addresses":[]}`, cni.CodeInvalidConfig, []string{`"ip-addresses"`, "empty"}},
		{"address without prefix", `{` + head + mac + `"ipAddresses":["10.0.1.5"]}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, "no prefix length"}},
		{"address not parseable", `{` + head + mac + `"eniIPAddresses":["10.0.1.300/24"]}`, cni.CodeInvalidConfig, []string{`"eniIPAddresses"`, "10.0.1.300/24"}},
		{"loopback address", `{` + head + mac + `"ipAddresses":["127.0.0.5/8"]}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, "127.0.0.5/8"}},
		{"address twice", `{` + head + mac + `"ipAddresses":["10.0.1.5/24","10.0.1.5/32"]}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, "twice"}},
		{"legacy IPv4 without any prefix", `{` + head + mac + `"ipv4-address":"10.0.1.5"}`, cni.CodeInvalidConfig, []string{`"ipv4-address"`, "subnetgateway-ipv4-address"}},
		{"legacy IPv4 that is IPv6", `{` + head + mac + `"ipv4-address":"2600::5/64"}`, cni.CodeInvalidConfig, []string{`"ipv4-address"`, "not an IPv4"}},
		{"legacy IPv6 that is IPv4", `{` + head + mac + addrs + `"ipv6-address":"10.0.1.5"}`, cni.CodeInvalidConfig, []string{`"ipv6-address"`, "not an IPv6"}},
		{"gateway with a prefix", `{` + head + mac + addrs + `"gatewayIPAddresses":["10.0.1.1/24"]}`, cni.CodeInvalidConfig, []string{`"gatewayIPAddresses"`, "without a prefix"}},
		{"gateway malformed", `{` + head + mac + addrs + `"gateway-ip-addresses":["gw"]}`, cni.CodeInvalidConfig, []string{`"gateway-ip-addresses"`, "not an IP"}},
		{"gateway multicast", `{` + head + mac + addrs + `"gatewayIPAddresses":["224.0.0.1"]}`, cni.CodeInvalidConfig, []string{`"gatewayIPAddresses"`, "cannot be a gateway"}},
		{"two IPv4 gateways", `{` + head + mac + addrs + `"gatewayIPAddresses":["10.0.1.1","10.0.1.2"]}`, cni.CodeInvalidConfig, []string{`"gatewayIPAddresses"`, "at most one per family"}},
		{"IPv6 gateway without an IPv6 address", `{` + head + mac + addrs + `"gatewayIPAddresses":["fd00::1"]}`, cni.CodeInvalidConfig, []string{`"gatewayIPAddresses"`, "no IPv6 address"}},
		{"legacy gateway that is IPv6", `{` + head + mac + addrs + `"subnetgateway-ipv4-address":"fd00::1/64"}`, cni.CodeInvalidConfig, []string{`"subnetgateway-ipv4-address"`}},
		{"mtu too small", `{` + head + mac + addrs + `"mtu":50}`, cni.CodeInvalidConfig, []string{`"mtu"`, "out of range"}},
		{"mtu too large", `{` + head + mac + addrs + `"mtu":70000}`, cni.CodeInvalidConfig, []string{`"mtu"`, "out of range"}},
		{"mtu too small for IPv6", `{` + head + mac + `"ipAddresses":["fd00::5/64"],"mtu":1000}`, cni.CodeInvalidConfig, []string{`"mtu"`, "1280"}},
		{"mac in two spellings", `{` + head + addrs + `"mac":"0a:1b:2c:3d:4e:5f","eniMACAddress":"0a:1b:2c:3d:4e:60"}`, cni.CodeInvalidConfig, []string{`"mac"`, `"eniMACAddress"`}},
		{"addresses in two spellings", `{` + head + mac + addrs + `"ip-addresses":["10.0.1.6/24"]}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, `"ip-addresses"`}},
		{"list and legacy address", `{` + head + mac + addrs + `"ipv4-address":"10.0.1.6/24"}`, cni.CodeInvalidConfig, []string{`"ipAddresses"`, `"ipv4-address"`}},
		{"gateways in two spellings", `{` + head + mac + addrs + `"gatewayIPAddresses":["10.0.1.1"],"subnetgateway-ipv4-address":"10.0.1.254/24"}`, cni.CodeInvalidConfig, []string{`"gatewayIPAddresses"`, `"subnetgateway-ipv4-address"`}},
		{"blocking in two spellings", `{` + head + mac + addrs + `"blockInstanceMetadata":true,"block-instance-metadata":false}`, cni.CodeInvalidConfig, []string{`"blockInstanceMetadata"`, `"block-instance-metadata"`}},
		{"stayDown in two spellings", `{` + head + mac + addrs + `"stayDown":true,"stay-down":false}`, cni.CodeInvalidConfig, []string{`"stayDown"`, `"stay-down"`}},
		{"ENI id in two spellings", `{` + head + mac + addrs + `"eniID":"eni-1","eni":"eni-2"}`, cni.CodeInvalidConfig, []string{`"eniID"`, `"eni"`}},
		{"an IPAM plugin", `{` + head + mac + addrs + `"ipam":{"type":"host-local"}}`, cni.CodeInvalidConfig, []string{`"ipam"`}},
		{"useExistingNetwork", `{` + head + mac + addrs + `"useExistingNetwork":true}`, cni.CodeInvalidConfig, []string{`"useExistingNetwork"`}},
		{"useExistingNetwork as a string", `{` + head + mac + addrs + `"useExistingNetwork":"true"}`, cni.CodeInvalidConfig, []string{`"useExistingNetwork"`}},
		{"prevResult malformed", `{` + head + mac + addrs + `"prevResult":{"ips":[{"address":"bad"}]}}`, cni.CodeInvalidConfig, []string{`"prevResult"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeConfig([]byte(tt.json))
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("decodeConfig error = %v, want a CNI error with code %d", err, tt.code)
			}
			if e.Code != tt.code {
				t.Errorf("code = %d, want %d (%s)", e.Code, tt.code, e.Msg)
			}
			for _, s := range tt.says {
				if !strings.Contains(e.Msg, s) {
					t.Errorf("message %q does not say %s", e.Msg, s)
				}
			}
		})
	}
}

func TestLegacyIPv6PrefixIsTheVPCs(t *testing.T) {
	conf, err := decodeConfig([]byte(`{"cniVersion":"0.3.0","name":"n","mac":"0a:1b:2c:3d:4e:5f","ipv4-address":"10.0.0.5/24","ipv6-address":"2600:1f14::5"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("2600:1f14::5/64"); !slices.Contains(conf.Addresses, want) {
		t.Errorf("addresses = %v, want %s among them", conf.Addresses, want)
	}
}
