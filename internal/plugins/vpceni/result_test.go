package vpceni

import (
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func mustConf(t *testing.T, js string) *Config {
	t.Helper()
	conf, err := decodeConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestBuildResult(t *testing.T) {
	const head = `{"cniVersion":"1.0.0","name":"n","mac":"0a:1b:2c:3d:4e:5f",`
	_, bridgeNet, _ := net.ParseCIDR("169.254.172.2/22")
	prev := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{{Name: "ecs-eth0", Sandbox: "/ns"}},
		IPs:        []*types100.IPConfig{{Interface: types100.Int(0), Address: *bridgeNet}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4(169, 254, 170, 2), Mask: net.CIDRMask(32, 32)}}},
	}
	tests := []struct {
		name string
		conf string
		prev *types100.Result
		want string // the result as JSON
	}{
		{
			name: "dual stack",
			conf: head + `"ipAddresses":["10.0.1.5/24","fd00::5/64"],"gatewayIPAddresses":["fd00::1","10.0.1.1"]}`,
			want: `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:1b:2c:3d:4e:5f","sandbox":"/ns"}],` +
				`"ips":[{"interface":0,"address":"10.0.1.5/24","gateway":"10.0.1.1"},{"interface":0,"address":"fd00::5/64","gateway":"fd00::1"}],` +
				`"routes":[{"dst":"::/0","gw":"fd00::1"},{"dst":"0.0.0.0/0","gw":"10.0.1.1"}]}`,
		},
		{
			name: "no gateway",
			conf: head + `"ipAddresses":["10.0.1.5/32"]}`,
			want: `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:1b:2c:3d:4e:5f","sandbox":"/ns"}],` +
				`"ips":[{"interface":0,"address":"10.0.1.5/32"}]}`,
		},
		{
			name: "stayDown reports the interface only",
			conf: head + `"ipAddresses":["10.0.1.5/24"],"gatewayIPAddresses":["10.0.1.1"],"stayDown":true}`,
			want: `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:1b:2c:3d:4e:5f","sandbox":"/ns"}]}`,
		},
		{
			name: "chained after another plugin",
			conf: head + `"ipAddresses":["10.0.1.5/24"],"gatewayIPAddresses":["10.0.1.1"],"dns":{"nameservers":["10.0.0.2"]}}`,
			prev: prev,
			want: `{"cniVersion":"1.1.0","interfaces":[{"name":"ecs-eth0","sandbox":"/ns"},{"name":"eth0","mac":"0a:1b:2c:3d:4e:5f","sandbox":"/ns"}],` +
				`"ips":[{"interface":0,"address":"169.254.172.0/22"},{"interface":1,"address":"10.0.1.5/24","gateway":"10.0.1.1"}],` +
				`"routes":[{"dst":"169.254.170.2/32"},{"dst":"0.0.0.0/0","gw":"10.0.1.1"}],"dns":{"nameservers":["10.0.0.2"]}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := buildResult(mustConf(t, tt.conf), tt.prev, "eth0", "/ns")
			got, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var gotV, wantV any
			if err := json.Unmarshal(got, &gotV); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &wantV); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("result =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestResultVersions converts the result for each spec version: before
// 1.0.0 every IP carries its version.
func TestResultVersions(t *testing.T) {
	conf := mustConf(t, `{"cniVersion":"1.0.0","name":"n","mac":"0a:1b:2c:3d:4e:5f","ipAddresses":["10.0.1.5/24","fd00::5/64"],"gatewayIPAddresses":["10.0.1.1"]}`)
	res := buildResult(conf, nil, "eth0", "/ns")
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			conv, err := res.GetAsVersion(ver)
			if err != nil {
				t.Fatal(err)
			}
			js, err := json.Marshal(conv)
			if err != nil {
				t.Fatal(err)
			}
			s := string(js)
			hasVersion := strings.Contains(s, `"version":"4"`) && strings.Contains(s, `"version":"6"`)
			if want := ver < "1.0.0"; hasVersion != want {
				t.Errorf("%s result %s: per-IP versions present = %v, want %v", ver, s, hasVersion, want)
			}
			if !strings.Contains(s, `"cniVersion":"`+ver+`"`) {
				t.Errorf("%s result %s does not carry its version", ver, s)
			}
		})
	}
}
