package localvpc

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"

	"github.com/vpcnet/vpcnet/internal/localvpc/ec2api"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// Config is what `vpcnet local up` asks for. The zero value of each field
// means its default: a VPC that just works.
type Config struct {
	Name         string         `json:"name"`
	Region       string         `json:"region"`
	VPCCIDR      netip.Prefix   `json:"vpcCidr"`
	Subnets      []SubnetConfig `json:"subnets"`
	Instances    int            `json:"instances"`
	InstanceType string         `json:"instanceType"`
	// KubernetesNode prepares every instance as an EKS AMI prepares a
	// node: net.ipv4.ip_forward=1 and loose reverse-path filtering (2) in
	// its network namespace, so pods' traffic can be routed through it.
	KubernetesNode bool `json:"kubernetesNode,omitempty"`
	// Kubernetes runs a cluster on the VPC (`up --kubernetes`): its API
	// server on an endpoint ENI inside the VPC, every instance a node
	// (KubernetesNode too). KubernetesListen is where the control plane
	// forwards the API server to in the root namespace, for kubectl on the
	// machine; port 0 picks a free one, which is then kept.
	Kubernetes       bool   `json:"kubernetes,omitempty"`
	KubernetesListen string `json:"kubernetesListen,omitempty"`
	// ExternalHost adds a host outside the VPC at ExternalHostAddr, in
	// namespace NAME-ext, routed from the fabric as the internet is
	// through an internet gateway (for tests of traffic leaving the VPC,
	// SNAT among them).
	ExternalHost bool `json:"externalHost,omitempty"`
	// Listen is the EC2 API's address in the root namespace; port 0 picks
	// a free one (control.json says which).
	Listen string        `json:"listen"`
	Faults ec2api.Faults `json:"faults"`
	// Throttle sizes the EC2 API's request token buckets; the zero value
	// means EC2's own (ec2api.DefaultThrottle).
	Throttle ec2api.ThrottleConfig `json:"throttle,omitzero"`
}

// SubnetConfig is one subnet to create.
type SubnetConfig struct {
	CIDR netip.Prefix `json:"cidr"`
	Zone string       `json:"zone"` // region + "a", "b", ... when empty
}

// Defaults of a local VPC.
const (
	DefaultRegion       = "us-east-1"
	DefaultInstanceType = "m5.large"
	DefaultInstances    = 2
	// InstanceRole is the IAM role every local instance has; its
	// credentials come from instance metadata.
	InstanceRole = "vpcnet-instance"
)

// ExternalHostAddr is the external host's address: in TEST-NET-2
// (RFC 5737), which no VPC and no real network uses.
var ExternalHostAddr = netip.MustParseAddr("198.51.100.10")

// Addresses the control plane answers on inside the VPC.
var (
	IMDSv4 = netip.MustParseAddr("169.254.169.254")
	IMDSv6 = netip.MustParseAddr("fd00:ec2::254")
)

// WithDefaults fills every zero field.
func (c Config) WithDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if !c.VPCCIDR.IsValid() {
		c.VPCCIDR = vpc.DefaultVPCCIDR
	}
	if len(c.Subnets) == 0 {
		// Two /20s in two zones: room for /28 prefixes and many tasks.
		base := c.VPCCIDR.Masked().Addr().As4()
		second := base
		second[2] += 16
		c.Subnets = []SubnetConfig{
			{CIDR: netip.PrefixFrom(netip.AddrFrom4(base), 20)},
			{CIDR: netip.PrefixFrom(netip.AddrFrom4(second), 20)},
		}
	}
	for i := range c.Subnets {
		if c.Subnets[i].Zone == "" {
			c.Subnets[i].Zone = c.Region + string(rune('a'+i%6))
		}
	}
	if c.Instances == 0 {
		c.Instances = DefaultInstances
	}
	if c.InstanceType == "" {
		c.InstanceType = DefaultInstanceType
	}
	if c.Kubernetes {
		c.KubernetesNode = true
		if c.KubernetesListen == "" {
			c.KubernetesListen = "127.0.0.1:0"
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	return c
}

// Validate reports a configuration that cannot work, naming the field.
func (c Config) Validate() error {
	if !c.VPCCIDR.Addr().Is4() || c.VPCCIDR.Bits() < 16 || c.VPCCIDR.Bits() > 28 {
		return fmt.Errorf("--vpc-cidr %s: a VPC's IPv4 block is between /16 and /28", c.VPCCIDR)
	}
	if c.Instances < 1 || c.Instances > 64 {
		return fmt.Errorf("--instances %d: between 1 and 64", c.Instances)
	}
	if _, err := vpc.LookupInstanceType(c.InstanceType); err != nil {
		return fmt.Errorf("--instance-type: %w", err)
	}
	if err := validName(c.Name); err != nil {
		return err
	}
	for _, s := range c.Subnets {
		if !c.VPCCIDR.Contains(s.CIDR.Addr()) || s.CIDR.Bits() < c.VPCCIDR.Bits() {
			return fmt.Errorf("--subnets %s: not inside the VPC's %s", s.CIDR, c.VPCCIDR)
		}
	}
	if c.ExternalHost && c.VPCCIDR.Contains(ExternalHostAddr) {
		return fmt.Errorf("--external-host: its address %s is inside the VPC's %s", ExternalHostAddr, c.VPCCIDR)
	}
	if err := c.Faults.Validate(); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	return nil
}

// conflicts lists what c asks for (its non-zero fields: the flags given)
// that the existing configuration stored does not have, as flags, for the
// message of an `up` that would have to replace a VPC to honour them.
func (c Config) conflicts(stored Config) []string {
	var out []string
	differs := func(flag string, asked, has any) {
		out = append(out, fmt.Sprintf("%s %v (it has %v)", flag, asked, has))
	}
	if c.Region != "" && c.Region != stored.Region {
		differs("--region", c.Region, stored.Region)
	}
	if c.VPCCIDR.IsValid() && c.VPCCIDR != stored.VPCCIDR {
		differs("--vpc-cidr", c.VPCCIDR, stored.VPCCIDR)
	}
	if len(c.Subnets) > 0 {
		asked := c.WithDefaults().Subnets
		if !slices.Equal(asked, stored.Subnets) {
			differs("--subnets", asked, stored.Subnets)
		}
	}
	if c.Instances != 0 && c.Instances != stored.Instances {
		differs("--instances", c.Instances, stored.Instances)
	}
	if c.InstanceType != "" && c.InstanceType != stored.InstanceType {
		differs("--instance-type", c.InstanceType, stored.InstanceType)
	}
	if c.KubernetesNode && !stored.KubernetesNode {
		differs("--kubernetes-node", true, false)
	}
	if c.Kubernetes && !stored.Kubernetes {
		differs("--kubernetes", true, false)
	}
	if c.ExternalHost && !stored.ExternalHost {
		differs("--external-host", true, false)
	}
	if c.Listen != "" && c.Listen != stored.Listen {
		differs("--listen", c.Listen, stored.Listen)
	}
	if !reflect.DeepEqual(c.Faults, ec2api.Faults{}) && !reflect.DeepEqual(c.Faults, stored.Faults) {
		differs("--faults", "(given)", "others")
	}
	if !reflect.DeepEqual(c.Throttle, ec2api.ThrottleConfig{}) && !reflect.DeepEqual(c.Throttle, stored.Throttle) {
		differs("--throttle", "(given)", "others")
	}
	return out
}

// nameRE is what a local VPC's name may be: it prefixes namespace names
// (at most 20 characters leave room for "-" and an instance ID) and names
// a directory under BaseStateDir (no "/", no "..").
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,19}$`)

func validName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("--name %q: 1 to 20 letters, digits, '_', '.' or '-', starting with a letter or digit (it prefixes namespace names)", name)
	}
	return nil
}

const configFile = "config.json"

func writeConfig(dir string, c Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, configFile), data, 0o644)
}

func readConfig(dir string) (Config, error) {
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return Config{}, fmt.Errorf("failed to read the local VPC's configuration: %w", err)
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("failed to decode %s: %w", configFile, err)
	}
	return c.WithDefaults(), nil
}

// VPCEndpointAddr is where instances reach the EC2 API: the first subnet's
// network address + 3, which EC2 reserves and never hands out, owned by the
// fabric like an interface endpoint.
func VPCEndpointAddr(c Config) netip.Addr {
	return c.Subnets[0].CIDR.Masked().Addr().Next().Next().Next()
}
