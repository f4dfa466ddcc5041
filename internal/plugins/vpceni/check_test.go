package vpceni

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func TestExpectedState(t *testing.T) {
	const head = `{"cniVersion":"1.0.0","name":"n","mac":"0a:1b:2c:3d:4e:5f","gatewayIPAddresses":["10.0.1.1"],`
	otherRoute := &types.Route{Dst: net.IPNet{IP: net.IPv4(169, 254, 170, 2).To4(), Mask: net.CIDRMask(32, 32)}}
	tests := []struct {
		name       string
		conf       string
		mutatePrev func(*types100.Result)
		want       eniState
		wantErr    string
	}{
		{
			name: "address inside the gateway's subnet",
			conf: head + `"ipAddresses":["10.0.1.5/24"],"mtu":1500,"blockInstanceMetadata":true}`,
			want: eniState{Name: "eth0", MAC: "0a:1b:2c:3d:4e:5f", Up: true, MTU: 1500,
				Addresses:  []netip.Prefix{netip.MustParsePrefix("10.0.1.5/24")},
				Routes:     []route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.0.1.1")}},
				Blackholes: instanceMetadata},
		},
		{
			name: "a /32 needs the on-link route to the gateway",
			conf: head + `"ipAddresses":["10.0.1.5/32"]}`,
			want: eniState{Name: "eth0", MAC: "0a:1b:2c:3d:4e:5f", Up: true,
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/32")},
				Routes: []route{
					{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.0.1.1")},
					{Dst: netip.MustParsePrefix("10.0.1.1/32")},
				}},
		},
		{
			name: "another plugin's route is not ours to check",
			conf: head + `"ipAddresses":["10.0.1.5/24"]}`,
			mutatePrev: func(r *types100.Result) {
				r.Routes = append(r.Routes, otherRoute)
			},
			want: eniState{Name: "eth0", MAC: "0a:1b:2c:3d:4e:5f", Up: true,
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.1.5/24")},
				Routes:    []route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.0.1.1")}}},
		},
		{
			name: "stayDown checks the link only",
			conf: head + `"ipAddresses":["10.0.1.5/24"],"stayDown":true,"mtu":1500}`,
			want: eniState{Name: "eth0", MAC: "0a:1b:2c:3d:4e:5f"},
		},
		{
			name:       "prevResult without the interface",
			conf:       head + `"ipAddresses":["10.0.1.5/24"]}`,
			mutatePrev: func(r *types100.Result) { r.Interfaces[0].Name = "net1" },
			wantErr:    "no interface named eth0",
		},
		{
			name:       "prevResult with another MAC",
			conf:       head + `"ipAddresses":["10.0.1.5/24"]}`,
			mutatePrev: func(r *types100.Result) { r.Interfaces[0].Mac = "0a:1b:2c:3d:4e:60" },
			wantErr:    "MAC",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := mustConf(t, tt.conf)
			// The prevResult of an ADD with this config.
			prev := buildResult(&Config{NetConf: conf.NetConf, MAC: conf.MAC, Addresses: conf.Addresses, Gateways: conf.Gateways}, nil, "eth0", "/ns")
			if tt.mutatePrev != nil {
				tt.mutatePrev(prev)
			}
			got, err := expectedState(conf, prev, "eth0")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("expectedState error = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equalState(got, tt.want) {
				t.Errorf("expectedState =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func equalState(a, b eniState) bool {
	return a.Name == b.Name && a.MAC == b.MAC && a.Up == b.Up && a.MTU == b.MTU &&
		slices.Equal(a.Addresses, b.Addresses) && slices.Equal(a.Routes, b.Routes) && slices.Equal(a.Blackholes, b.Blackholes)
}

func TestCompareState(t *testing.T) {
	want := eniState{Name: "eth0", MAC: "0a:1b:2c:3d:4e:5f", Up: true, MTU: 1500,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.0.1.5/24")},
		Routes:     []route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("10.0.1.1")}},
		Blackholes: instanceMetadata}
	tests := []struct {
		name   string
		mutate func(*eniState)
		says   []string // one per expected problem
	}{
		{"as it should be", func(*eniState) {}, nil},
		{"extra addresses and routes are someone else's", func(s *eniState) {
			s.Addresses = append(s.Addresses, netip.MustParsePrefix("10.0.9.9/32"))
			s.Routes = append(s.Routes, route{Dst: netip.MustParsePrefix("10.0.1.0/24")})
		}, nil},
		{"renamed", func(s *eniState) { s.Name = "eth9" }, []string{"named eth9 in the container, not eth0"}},
		{"down", func(s *eniState) { s.Up = false }, []string{"is down, want up"}},
		{"MTU", func(s *eniState) { s.MTU = 9001 }, []string{"MTU 9001, the config says 1500"}},
		{"address gone", func(s *eniState) { s.Addresses = nil }, []string{"address 10.0.1.5/24 is missing"}},
		{"route gone", func(s *eniState) { s.Routes = nil }, []string{"route 0.0.0.0/0 via 10.0.1.1 is missing"}},
		{"blackholes gone", func(s *eniState) { s.Blackholes = nil }, []string{"169.254.169.254/32 is missing", "fd00:ec2::254/128 is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := want
			got.Addresses = slices.Clone(want.Addresses)
			got.Routes = slices.Clone(want.Routes)
			tt.mutate(&got)
			problems := compareState(want, got)
			if len(problems) != len(tt.says) {
				t.Fatalf("compareState = %q, want %d problems like %q", problems, len(tt.says), tt.says)
			}
			for i, s := range tt.says {
				if !strings.Contains(problems[i], s) {
					t.Errorf("problem %q does not say %q", problems[i], s)
				}
			}
		})
	}
}
