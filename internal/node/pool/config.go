package pool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// Config is vpcnetd's configuration. The targets keep aws-node's names and
// meanings, so that an operator can move a node group over unchanged; the
// fields after CustomNetworking are vpcnetd's own.
//
// A zero WarmIPTarget or MinimumIPTarget means "not set", as in aws-node:
// when both are zero, WarmENITarget (or WarmPrefixTarget with prefix
// delegation) governs the pool.
type Config struct {
	// WarmENITarget (WARM_ENI_TARGET, default 1) keeps this many ENIs' worth
	// of free addresses. Ignored when WarmIPTarget or MinimumIPTarget is set,
	// and with prefix delegation.
	WarmENITarget int
	// WarmIPTarget (WARM_IP_TARGET) keeps this many free addresses.
	WarmIPTarget int
	// MinimumIPTarget (MINIMUM_IP_TARGET) keeps at least this many addresses
	// in all, free or assigned.
	MinimumIPTarget int
	// WarmPrefixTarget (WARM_PREFIX_TARGET, default 1, as aws-node's
	// manifest sets it) keeps this many /28s' worth of free addresses with
	// prefix delegation, unless WarmIPTarget or MinimumIPTarget is set.
	WarmPrefixTarget int
	// PrefixDelegation (ENABLE_PREFIX_DELEGATION) assigns /28 prefixes
	// instead of single secondary addresses (Nitro instance types only).
	PrefixDelegation bool
	// MaxENI (MAX_ENI) caps the ENIs the node uses, below the instance
	// type's limit; 0 (or any value below 1, as in aws-node) means no cap.
	MaxENI int
	// IPCooldown (IP_COOLDOWN_PERIOD, default 30s) is how long a released
	// address stays unused, so that kube-proxy and peers stop sending the old
	// pod's traffic to it.
	IPCooldown time.Duration
	// ExternalSNAT (AWS_VPC_K8S_CNI_EXTERNALSNAT): no SNAT rule for traffic
	// leaving the VPC; something outside the node translates it.
	ExternalSNAT bool
	// ExcludeSNATCIDRs (AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS) are destinations
	// outside the VPC that are reached without SNAT.
	ExcludeSNATCIDRs []netip.Prefix
	// MTU (AWS_VPC_ENI_MTU, default 9001, 576..9001) of the ENIs and pods.
	MTU int
	// VethPrefix (AWS_VPC_K8S_CNI_VETHPREFIX, default "vpc", at most 4
	// characters) starts every host veth's name.
	VethPrefix string
	// CustomNetworking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG): pods' ENIs are
	// created in the subnet and security groups of ENIConfigs[zone], and the
	// primary ENI carries no pods.
	CustomNetworking bool

	// ENIConfigs (VPCNET_ENI_CONFIGS, file field eniConfigs) maps an
	// availability zone to the subnet and groups of the ENIs created there
	// under custom networking: the role of aws-node's ENIConfig resources.
	ENIConfigs map[string]ENIConfig
	// DisableLeakedENICleanup (DISABLE_LEAKED_ENI_CLEANUP) stops the agent
	// from deleting leaked ENIs.
	DisableLeakedENICleanup bool
	// MinENIAge (VPCNET_MIN_ENI_AGE, default 1m): an ENI younger than this is
	// never deleted, so that a burst of pods does not see ENIs come and go.
	MinENIAge time.Duration
	// LeakedENIAge (VPCNET_LEAKED_ENI_AGE, default 5m): an available
	// (detached) ENI tagged for this node, or for a node gone from the
	// cluster, is deleted once it is this old.
	LeakedENIAge time.Duration
	// ReconcileInterval (VPCNET_RECONCILE_INTERVAL, default 60s) is the slow
	// timer that re-reads EC2 and instance metadata.
	ReconcileInterval time.Duration
	// AddWait (VPCNET_ADD_WAIT, default 10s) bounds how long an ADD waits
	// for the pool to grow before it fails with "try again".
	AddWait time.Duration
	// ClusterName (VPCNET_CLUSTER_NAME) is the value of the vpcnet:cluster
	// tag on the ENIs the agent creates.
	ClusterName string
}

// ENIConfig is where, under custom networking, the ENIs of one availability
// zone are created.
type ENIConfig struct {
	// Subnet is the subnet ID, e.g. "subnet-0a1b2c3d".
	Subnet string `json:"subnet"`
	// SecurityGroups are the group IDs of the new ENIs; empty means the
	// groups of the node's primary ENI.
	SecurityGroups []string `json:"securityGroups,omitempty"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		WarmENITarget:     1,
		WarmPrefixTarget:  1,
		IPCooldown:        30 * time.Second,
		MTU:               9001,
		VethPrefix:        nodeapi.DefaultVethPrefix,
		MinENIAge:         time.Minute,
		LeakedENIAge:      5 * time.Minute,
		ReconcileInterval: 60 * time.Second,
		AddWait:           10 * time.Second,
	}
}

// ConfigError is a configuration value that cannot be used. Name is where it
// came from: the environment variable ("WARM_IP_TARGET") or the file's field
// ("config file field warmIPTarget").
type ConfigError struct {
	Name    string
	Problem string
}

func (e *ConfigError) Error() string { return e.Name + ": " + e.Problem }

// setting is one configuration value: its environment variable, its field
// in the JSON file, and how it is read from text.
type setting struct {
	env, field string
	// parse reads the environment's text form, which the file's scalars
	// share (30, "30", true, "true").
	parse func(c *Config, s string) error
	// parseJSON, if set, reads a structured file value (a list, an object).
	parseJSON func(c *Config, raw json.RawMessage) error
}

// settings is the one table both sources are decoded through.
var settings = []setting{
	{env: "WARM_ENI_TARGET", field: "warmENITarget", parse: count(func(c *Config) *int { return &c.WarmENITarget })},
	{env: "WARM_IP_TARGET", field: "warmIPTarget", parse: count(func(c *Config) *int { return &c.WarmIPTarget })},
	{env: "MINIMUM_IP_TARGET", field: "minimumIPTarget", parse: count(func(c *Config) *int { return &c.MinimumIPTarget })},
	{env: "WARM_PREFIX_TARGET", field: "warmPrefixTarget", parse: count(func(c *Config) *int { return &c.WarmPrefixTarget })},
	{env: "ENABLE_PREFIX_DELEGATION", field: "enablePrefixDelegation", parse: boolean(func(c *Config) *bool { return &c.PrefixDelegation })},
	{env: "MAX_ENI", field: "maxENI", parse: func(c *Config, s string) error {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		c.MaxENI = max(n, 0) // aws-node ignores values below 1 (its own default is -1)
		return nil
	}},
	{env: "IP_COOLDOWN_PERIOD", field: "ipCooldownPeriod", parse: duration(func(c *Config) *time.Duration { return &c.IPCooldown }, false)},
	{env: "AWS_VPC_K8S_CNI_EXTERNALSNAT", field: "externalSNAT", parse: boolean(func(c *Config) *bool { return &c.ExternalSNAT })},
	{env: "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", field: "excludeSNATCIDRs", parse: func(c *Config, s string) error {
		return parseCIDRs(c, strings.Split(s, ","))
	}, parseJSON: func(c *Config, raw json.RawMessage) error {
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("want a list of CIDRs or one comma-separated string")
		}
		return parseCIDRs(c, list)
	}},
	{env: "AWS_VPC_ENI_MTU", field: "mtu", parse: func(c *Config, s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 576 || n > 9001 {
			return fmt.Errorf("%q is not an MTU from 576 to 9001", s)
		}
		c.MTU = n
		return nil
	}},
	{env: "AWS_VPC_K8S_CNI_VETHPREFIX", field: "vethPrefix", parse: func(c *Config, s string) error {
		switch {
		case len(s) > 4:
			return fmt.Errorf("%q is longer than 4 characters", s)
		case s == "eth" || s == "lo" || s == "vlan":
			return fmt.Errorf("%q is reserved (eth, lo and vlan are)", s)
		case !vethPrefixChars.MatchString(s):
			return fmt.Errorf("%q: use letters, digits, '-' and '_' only", s)
		}
		c.VethPrefix = s
		return nil
	}},
	{env: "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", field: "customNetworking", parse: boolean(func(c *Config) *bool { return &c.CustomNetworking })},
	{env: "VPCNET_ENI_CONFIGS", field: "eniConfigs", parse: func(c *Config, s string) error {
		return parseENIConfigs(c, json.RawMessage(s))
	}, parseJSON: func(c *Config, raw json.RawMessage) error { return parseENIConfigs(c, raw) }},
	{env: "DISABLE_LEAKED_ENI_CLEANUP", field: "disableLeakedENICleanup", parse: boolean(func(c *Config) *bool { return &c.DisableLeakedENICleanup })},
	{env: "VPCNET_MIN_ENI_AGE", field: "minENIAge", parse: duration(func(c *Config) *time.Duration { return &c.MinENIAge }, false)},
	{env: "VPCNET_LEAKED_ENI_AGE", field: "leakedENIAge", parse: duration(func(c *Config) *time.Duration { return &c.LeakedENIAge }, false)},
	{env: "VPCNET_RECONCILE_INTERVAL", field: "reconcileInterval", parse: duration(func(c *Config) *time.Duration { return &c.ReconcileInterval }, true)},
	{env: "VPCNET_ADD_WAIT", field: "addWait", parse: duration(func(c *Config) *time.Duration { return &c.AddWait }, true)},
	{env: "VPCNET_CLUSTER_NAME", field: "clusterName", parse: func(c *Config, s string) error {
		if len(s) > 256 {
			return fmt.Errorf("longer than 256 characters (an EC2 tag value)")
		}
		c.ClusterName = s
		return nil
	}},
}

var (
	vethPrefixChars = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	subnetID        = regexp.MustCompile(`^subnet-[0-9a-f]+$`)
	groupID         = regexp.MustCompile(`^sg-[0-9a-f]+$`)
)

// LoadConfig decodes the configuration: defaults, then the JSON file (nil or
// empty for none; camelCase field names, unknown fields refused), then the
// environment, read through lookupEnv (os.LookupEnv in the agent). A variable
// set in the environment overrides the file's field; an empty variable counts
// as unset, as in aws-node. Any error names the variable or field.
func LoadConfig(file []byte, lookupEnv func(string) (string, bool)) (Config, error) {
	c := DefaultConfig()
	// from records, for each setting given, the name to blame in a check
	// that involves several of them.
	from := map[string]string{}

	if len(bytes.TrimSpace(file)) > 0 {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(file, &fields); err != nil {
			return Config{}, &ConfigError{Name: "config file", Problem: "not a JSON object: " + err.Error()}
		}
		for name := range fields {
			if !slices.ContainsFunc(settings, func(s setting) bool { return s.field == name }) {
				return Config{}, &ConfigError{Name: "config file field " + name, Problem: "unknown field"}
			}
		}
		for _, s := range settings {
			raw, ok := fields[s.field]
			if !ok || string(bytes.TrimSpace(raw)) == "null" {
				continue
			}
			name := "config file field " + s.field
			if err := s.decodeJSON(&c, raw); err != nil {
				return Config{}, &ConfigError{Name: name, Problem: err.Error()}
			}
			from[s.field] = name
		}
	}
	for _, s := range settings {
		v, ok := lookupEnv(s.env)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		if err := s.parse(&c, strings.TrimSpace(v)); err != nil {
			return Config{}, &ConfigError{Name: s.env, Problem: err.Error()}
		}
		from[s.field] = s.env
	}
	return c, c.check(from)
}

// decodeJSON reads a file value: structured values through parseJSON,
// scalars through the same text parser as the environment.
func (s setting) decodeJSON(c *Config, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if s.parseJSON != nil && len(raw) > 0 && raw[0] != '"' {
		return s.parseJSON(c, raw)
	}
	if len(raw) > 0 && raw[0] == '"' {
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return err
		}
		return s.parse(c, strings.TrimSpace(text))
	}
	if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
		return fmt.Errorf("want a single value, not %s", raw)
	}
	return s.parse(c, string(raw))
}

// check refuses combinations that aws-node's entrypoint refuses
// (cmd/aws-vpc-cni/main.go, validateEnvVars), naming the settings involved.
func (c Config) check(from map[string]string) error {
	name := func(field, env string) string {
		if n, ok := from[field]; ok {
			return n
		}
		return env
	}
	// Since amazon-vpc-cni-k8s #2659: MINIMUM_IP_TARGET alone is refused.
	// WARM_IP_TARGET=0 with it stays allowed: that caps the node at
	// MINIMUM_IP_TARGET addresses, on purpose.
	if _, minSet := from["minimumIPTarget"]; minSet && c.MinimumIPTarget > 0 {
		if _, warmSet := from["warmIPTarget"]; !warmSet {
			return &ConfigError{Name: name("minimumIPTarget", "MINIMUM_IP_TARGET"),
				Problem: "requires WARM_IP_TARGET (warmIPTarget) to be set too; WARM_IP_TARGET=0 keeps the node at MINIMUM_IP_TARGET addresses"}
		}
	}
	if c.PrefixDelegation && c.WarmPrefixTarget == 0 && c.WarmIPTarget == 0 && c.MinimumIPTarget == 0 {
		return &ConfigError{Name: name("warmPrefixTarget", "WARM_PREFIX_TARGET"),
			Problem: "0 with prefix delegation and neither WARM_IP_TARGET nor MINIMUM_IP_TARGET set: the pool would keep nothing free; set one of them above 0"}
	}
	return nil
}

func count(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a whole number 0 or above", s)
		}
		*field(c) = n
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, s string) error {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*field(c) = b
		return nil
	}
}

// duration reads whole seconds (aws-node's form: "30") or a Go duration
// ("30s", "1m30s"). positive refuses 0.
func duration(field func(*Config) *time.Duration, positive bool) func(*Config, string) error {
	return func(c *Config, s string) error {
		var d time.Duration
		if n, err := strconv.ParseInt(s, 10, 32); err == nil {
			d = time.Duration(n) * time.Second
		} else if d, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("%q is neither whole seconds (30) nor a duration (30s, 2m)", s)
		}
		if d < 0 || (positive && d == 0) {
			return fmt.Errorf("%q must be above 0", s)
		}
		*field(c) = d
		return nil
	}
}

func parseCIDRs(c *Config, list []string) error {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("%q is not an IPv4 CIDR", s)
		}
		out = append(out, p.Masked())
	}
	c.ExcludeSNATCIDRs = out
	return nil
}

func parseENIConfigs(c *Config, raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var m map[string]ENIConfig
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf(`want {"ZONE": {"subnet": "subnet-...", "securityGroups": ["sg-..."]}}: %v`, err)
	}
	for zone, e := range m {
		if !subnetID.MatchString(e.Subnet) {
			return fmt.Errorf("zone %s: subnet %q is not a subnet ID (subnet-...)", zone, e.Subnet)
		}
		for _, g := range e.SecurityGroups {
			if !groupID.MatchString(g) {
				return fmt.Errorf("zone %s: %q is not a security group ID (sg-...)", zone, g)
			}
		}
		if len(e.SecurityGroups) > 16 {
			return fmt.Errorf("zone %s: %d security groups, an ENI takes at most 16", zone, len(e.SecurityGroups))
		}
	}
	c.ENIConfigs = m
	return nil
}
