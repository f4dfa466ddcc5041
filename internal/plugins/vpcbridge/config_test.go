package vpcbridge

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// ecsAgentConfig is the config the ECS agent writes for ecs-bridge (agent
// ecscni: BridgeConfig marshalled with every field, then name and
// cniVersion injected by libcni).
const ecsAgentConfig = `{
	"type": "ecs-bridge", "cniVersion": "0.3.0", "name": "ecs-task-network",
	"bridge": "ecs-bridge", "isGateway": false, "isDefaultGateway": false,
	"forceAddress": false, "ipMasq": false, "mtu": 0, "hairpinMode": false,
	"ipam": {"type": "ecs-ipam", "id": "task-1", "cniVersion": "0.3.0",
		"ipv4-subnet": "169.254.172.0/22",
		"ipv4-routes": [{"dst": "169.254.170.2/32"}]}
}`

func TestDecodeConfig(t *testing.T) {
	t.Run("ours", func(t *testing.T) {
		conf, err := decodeConfig([]byte(`{"cniVersion":"1.1.0","name":"meta","type":"vpc-bridge",
			"bridge":"vpcbr0","mtu":9001,"ipam":{"type":"vpc-ipam"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if conf.Bridge != "vpcbr0" || conf.MTU != 9001 || conf.IPAM.Type != "vpc-ipam" || conf.Name != "meta" {
			t.Errorf("decoded %+v", conf)
		}
		args := &skel.CmdArgs{IfName: "eth0"}
		if got := conf.containerIfName(args); got != "eth0" {
			t.Errorf("containerIfName without the field = %q, want CNI_IFNAME", got)
		}
		conf.ContainerIfName = "ecs-eth0"
		if got := conf.containerIfName(args); got != "ecs-eth0" {
			t.Errorf("containerIfName = %q, want the field's", got)
		}
	})
	t.Run("chained", func(t *testing.T) {
		conf, err := decodeConfig([]byte(`{"cniVersion":"1.0.0","name":"task","type":"vpc-bridge",
			"bridge":"ecs-bridge","containerIfName":"ecs-eth0","ipam":{"type":"vpc-ipam"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if conf.ContainerIfName != "ecs-eth0" {
			t.Errorf("decoded %+v", conf)
		}
	})
	t.Run("ECS agent", func(t *testing.T) {
		conf, err := decodeConfig([]byte(ecsAgentConfig))
		if err != nil {
			t.Fatal(err)
		}
		if conf.Bridge != "ecs-bridge" || conf.MTU != DefaultMTU || conf.IPAM.Type != "ecs-ipam" || conf.CNIVersion != "0.3.0" {
			t.Errorf("decoded %+v", conf)
		}
	})
	t.Run("ECS agent DEL without ipam", func(t *testing.T) {
		conf, err := decodeConfig([]byte(strings.Replace(ecsAgentConfig, `"ipam": {`, `"ipam": {}, "x": {`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if conf.IPAM.Type != "" {
			t.Errorf("ipam.type = %q, want empty", conf.IPAM.Type)
		}
		if err := requireIPAM(conf); !isCode(err, cni.CodeInvalidConfig) || !strings.Contains(err.Error(), `"ipam.type"`) {
			t.Errorf("requireIPAM: %v", err)
		}
	})
}

func TestDecodeConfigErrors(t *testing.T) {
	base := `"name":"meta","type":"vpc-bridge","ipam":{"type":"vpc-ipam"}`
	cases := []struct {
		name  string
		conf  string
		code  uint
		field string // quoted in the message
	}{
		{"malformed JSON", `{"cniVersion":"1.0.0",`, cni.CodeDecodingFailure, ""},
		{"no bridge", `{"cniVersion":"1.0.0",` + base + `}`, cni.CodeInvalidConfig, `"bridge"`},
		{"bridge name too long", `{"cniVersion":"1.0.0","bridge":"a-very-long-bridge-name",` + base + `}`, cni.CodeInvalidConfig, `"bridge"`},
		{"bridge name with slash", `{"cniVersion":"1.0.0","bridge":"br/0",` + base + `}`, cni.CodeInvalidConfig, `"bridge"`},
		{"bridge not a string", `{"cniVersion":"1.0.0","bridge":7,` + base + `}`, cni.CodeInvalidConfig, `"bridge"`},
		{"mtu not a number", `{"cniVersion":"1.0.0","bridge":"br0","mtu":"1500",` + base + `}`, cni.CodeInvalidConfig, `"mtu"`},
		{"mtu too small", `{"cniVersion":"1.0.0","bridge":"br0","mtu":60,` + base + `}`, cni.CodeInvalidConfig, `"mtu"`},
		{"mtu too large", `{"cniVersion":"1.0.0","bridge":"br0","mtu":70000,` + base + `}`, cni.CodeInvalidConfig, `"mtu"`},
		{"ipMasq", `{"cniVersion":"1.0.0","bridge":"br0","ipMasq":true,` + base + `}`, cni.CodeInvalidConfig, `"ipMasq"`},
		{"isDefaultGateway", `{"cniVersion":"1.0.0","bridge":"br0","isDefaultGateway":true,` + base + `}`, cni.CodeInvalidConfig, `"isDefaultGateway"`},
		{"hairpinMode", `{"cniVersion":"1.0.0","bridge":"br0","hairpinMode":true,` + base + `}`, cni.CodeInvalidConfig, `"hairpinMode"`},
		{"forceAddress", `{"cniVersion":"1.0.0","bridge":"br0","forceAddress":true,` + base + `}`, cni.CodeInvalidConfig, `"forceAddress"`},
		{"unsupported cniVersion", `{"cniVersion":"0.2.0","bridge":"br0",` + base + `}`, cni.CodeIncompatibleVersion, `"cniVersion"`},
		{"no cniVersion", `{"bridge":"br0",` + base + `}`, cni.CodeIncompatibleVersion, `"cniVersion"`},
		{"containerIfName too long", `{"cniVersion":"1.0.0","bridge":"br0","containerIfName":"a-very-long-ifname",` + base + `}`, cni.CodeInvalidConfig, `"containerIfName"`},
		{"containerIfName with slash", `{"cniVersion":"1.0.0","bridge":"br0","containerIfName":"eth/1",` + base + `}`, cni.CodeInvalidConfig, `"containerIfName"`},
		{"containerIfName not a string", `{"cniVersion":"1.0.0","bridge":"br0","containerIfName":1,` + base + `}`, cni.CodeInvalidConfig, `"containerIfName"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeConfig([]byte(c.conf))
			if !isCode(err, c.code) {
				t.Fatalf("got %v, want code %d", err, c.code)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Errorf("message %q does not name %s", err, c.field)
			}
		})
	}
}

func TestParsePrevResult(t *testing.T) {
	conf, err := decodeConfig([]byte(`{"cniVersion":"1.0.0","name":"n","bridge":"br0","ipam":{"type":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cni.PrevResult(&conf.NetConf, true); !isCode(err, cni.CodeInvalidConfig) || !strings.Contains(err.Error(), `"prevResult"`) {
		t.Errorf("CHECK without prevResult: %v", err)
	}
	if prev, err := cni.PrevResult(&conf.NetConf, false); prev != nil || err != nil {
		t.Errorf("ADD without prevResult: %v, %v; want none and no error", prev, err)
	}
	// A 0.3.0 prevResult (the ECS agent's version) is read, its interface
	// index included.
	conf, err = decodeConfig([]byte(`{"cniVersion":"0.3.0","name":"n","bridge":"br0","ipam":{"type":"x"},
		"prevResult":{"cniVersion":"0.3.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/ns"}],
		"ips":[{"version":"4","interface":0,"address":"10.0.0.5/24","gateway":"10.0.0.1"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	prev, err := cni.PrevResult(&conf.NetConf, false)
	if err != nil || len(prev.IPs) != 1 || *prev.IPs[0].Interface != 0 || prev.Interfaces[0].Name != "eth0" {
		t.Errorf("0.3.0 prevResult: %+v, %v", prev, err)
	}
}

func isCode(err error, code uint) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code == code
}
