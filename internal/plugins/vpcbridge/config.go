package vpcbridge

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// DefaultMTU is the MTU of the bridge and veths when the config has none
// (the ECS agent writes "mtu": 0).
const DefaultMTU = 1500

// Config is vpc-bridge's network configuration. Our field names and the
// ECS agent's ecs-bridge config coincide ("bridge", "mtu", "ipam"), so one
// struct reads both; the ipam section is passed whole to the IPAM plugin.
type Config struct {
	types.NetConf

	// Bridge is the name of the bridge in the host namespace.
	Bridge string `json:"bridge"`
	// MTU of the bridge (when this plugin creates it) and of both veth ends.
	MTU int `json:"mtu"`
	// ContainerIfName names the container side of the veth; by default it
	// is CNI_IFNAME. A runtime sends every plugin of a conflist the same
	// CNI_IFNAME, so vpc-bridge chained after a plugin that takes it (vpc-eni
	// takes eth0) needs a name of its own, e.g. "ecs-eth0". The attachment
	// (the host veth's label, the IPAM allocation) stays keyed by
	// CNI_IFNAME, as the spec defines attachments.
	ContainerIfName string `json:"containerIfName"`

	// The ECS agent writes these fields of the reference bridge plugin, all
	// false. IsGateway is ignored: the bridge always holds the gateway
	// address. The others would contradict what vpc-bridge is for, so they
	// are refused when true rather than silently ignored.
	IsGateway        bool `json:"isGateway"`
	IsDefaultGateway bool `json:"isDefaultGateway"`
	ForceAddress     bool `json:"forceAddress"`
	IPMasq           bool `json:"ipMasq"`
	HairpinMode      bool `json:"hairpinMode"`
}

// unsupportedTrue explains each field that is accepted only as false.
var unsupportedTrue = []struct {
	field  string
	set    func(*Config) bool
	reason string
}{
	{"isDefaultGateway", func(c *Config) bool { return c.IsDefaultGateway },
		"vpc-bridge never routes a default through the bridge; containers only reach the configured endpoints"},
	{"forceAddress", func(c *Config) bool { return c.ForceAddress },
		"vpc-bridge adds the gateway next to the bridge's other addresses and never replaces them"},
	{"ipMasq", func(c *Config) bool { return c.IPMasq },
		"vpc-bridge does not masquerade; the endpoints are on the host"},
	{"hairpinMode", func(c *Config) bool { return c.HairpinMode },
		"bridge ports are isolated so that containers cannot reach each other"},
}

// decodeConfig reads and validates the config on stdin, for every verb.
// Malformed JSON is code 6, a bad field or a key given twice code 7 naming
// it, an unsupported cniVersion code 1.
func decodeConfig(stdin []byte) (*Config, error) {
	var conf Config
	if err := cni.DecodeConfig(stdin, &conf); err != nil {
		return nil, err
	}
	if conf.Bridge == "" {
		return nil, cni.FieldError("bridge", "missing: name the host bridge, e.g. \"ecs-bridge\"")
	}
	if err := netops.ValidateIfName(conf.Bridge); err != nil {
		return nil, cni.FieldError("bridge", "%v", err)
	}
	if conf.ContainerIfName != "" {
		if err := netops.ValidateIfName(conf.ContainerIfName); err != nil {
			return nil, cni.FieldError("containerIfName", "%v", err)
		}
	}
	switch {
	case conf.MTU == 0:
		conf.MTU = DefaultMTU
	case conf.MTU < 68 || conf.MTU > 65535:
		return nil, cni.FieldError("mtu", "%d is out of range: use 68 to 65535, or leave it out for %d", conf.MTU, DefaultMTU)
	}
	for _, u := range unsupportedTrue {
		if u.set(&conf) {
			return nil, cni.FieldError(u.field, "true is not supported: %s", u.reason)
		}
	}
	return &conf, nil
}

// requireIPAM is for the verbs that cannot work without an address: ADD and
// CHECK. DEL, GC and STATUS skip the IPAM plugin when there is none (the
// ECS agent sends "ipam": {} on DEL and releases the address itself).
func requireIPAM(conf *Config) error {
	if conf.IPAM.Type == "" {
		return cni.FieldError("ipam.type", "missing: name the IPAM plugin, e.g. \"vpc-ipam\"")
	}
	return nil
}

// containerIfName is the name of the container side of the veth: the
// config's containerIfName, else CNI_IFNAME.
func (c *Config) containerIfName(args *skel.CmdArgs) string {
	if c.ContainerIfName != "" {
		return c.ContainerIfName
	}
	return args.IfName
}
