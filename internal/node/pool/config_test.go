package pool

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env is a fake environment for LoadConfig.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want func(*Config)
	}{
		{name: "nothing set: defaults"},
		{name: "the aws-node variables", env: []string{
			"WARM_ENI_TARGET", "2", "WARM_IP_TARGET", "5", "MINIMUM_IP_TARGET", "10", "WARM_PREFIX_TARGET", "3",
			"ENABLE_PREFIX_DELEGATION", "true", "MAX_ENI", "4", "IP_COOLDOWN_PERIOD", "45",
			"AWS_VPC_K8S_CNI_EXTERNALSNAT", "true", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "172.16.0.0/12, 192.168.1.7/24",
			"AWS_VPC_ENI_MTU", "1500", "AWS_VPC_K8S_CNI_VETHPREFIX", "eni", "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "1",
			"DISABLE_LEAKED_ENI_CLEANUP", "TRUE",
		}, want: func(c *Config) {
			c.WarmENITarget, c.WarmIPTarget, c.MinimumIPTarget, c.WarmPrefixTarget = 2, 5, 10, 3
			c.PrefixDelegation, c.MaxENI, c.IPCooldown = true, 4, 45*time.Second
			c.ExternalSNAT = true
			c.ExcludeSNATCIDRs = []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.1.0/24")}
			c.MTU, c.VethPrefix, c.CustomNetworking, c.DisableLeakedENICleanup = 1500, "eni", true, true
		}},
		{name: "vpcnetd's own variables, durations as Go durations", env: []string{
			"VPCNET_MIN_ENI_AGE", "90s", "VPCNET_LEAKED_ENI_AGE", "10m", "VPCNET_RECONCILE_INTERVAL", "2m",
			"VPCNET_ADD_WAIT", "15", "VPCNET_CLUSTER_NAME", "prod", "IP_COOLDOWN_PERIOD", "1m30s",
			"VPCNET_ENI_CONFIGS", `{"us-east-1a": {"subnet": "subnet-0abc", "securityGroups": ["sg-01", "sg-02"]}}`,
		}, want: func(c *Config) {
			c.MinENIAge, c.LeakedENIAge, c.ReconcileInterval, c.AddWait = 90*time.Second, 10*time.Minute, 2*time.Minute, 15*time.Second
			c.ClusterName, c.IPCooldown = "prod", 90*time.Second
			c.ENIConfigs = map[string]ENIConfig{"us-east-1a": {Subnet: "subnet-0abc", SecurityGroups: []string{"sg-01", "sg-02"}}}
		}},
		{name: "the file, camelCase, numbers and strings alike", file: `{
			"warmIPTarget": 3, "minimumIPTarget": "12", "enablePrefixDelegation": true, "ipCooldownPeriod": 20,
			"minENIAge": "2m", "excludeSNATCIDRs": ["10.200.0.0/16"], "mtu": 9001, "clusterName": "dev",
			"eniConfigs": {"eu-west-1b": {"subnet": "subnet-0def"}}, "maxENI": null
		}`, want: func(c *Config) {
			c.WarmIPTarget, c.MinimumIPTarget, c.PrefixDelegation, c.IPCooldown = 3, 12, true, 20*time.Second
			c.MinENIAge, c.ClusterName = 2*time.Minute, "dev"
			c.ExcludeSNATCIDRs = []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16")}
			c.ENIConfigs = map[string]ENIConfig{"eu-west-1b": {Subnet: "subnet-0def"}}
		}},
		{name: "the environment overrides the file", file: `{"warmENITarget": 3, "ipCooldownPeriod": "5s", "clusterName": "file"}`,
			env:  []string{"WARM_ENI_TARGET", "0", "VPCNET_CLUSTER_NAME", "env"},
			want: func(c *Config) { c.WarmENITarget, c.IPCooldown, c.ClusterName = 0, 5*time.Second, "env" }},
		{name: "an empty variable is unset, as in aws-node", file: `{"warmENITarget": 3}`, env: []string{"WARM_ENI_TARGET", "", "WARM_IP_TARGET", " "},
			want: func(c *Config) { c.WarmENITarget = 3 }},
		{name: "MINIMUM_IP_TARGET with WARM_IP_TARGET=0 caps the node on purpose", env: []string{"MINIMUM_IP_TARGET", "8", "WARM_IP_TARGET", "0"},
			want: func(c *Config) { c.MinimumIPTarget = 8 }},
		{name: "MINIMUM_IP_TARGET from the env, WARM_IP_TARGET from the file", file: `{"warmIPTarget": 1}`, env: []string{"MINIMUM_IP_TARGET", "8"},
			want: func(c *Config) { c.MinimumIPTarget, c.WarmIPTarget = 8, 1 }},
		{name: "MAX_ENI=-1 (aws-node's default) is no cap", env: []string{"MAX_ENI", "-1"}},
		{name: "prefixes with only WARM_IP_TARGET", env: []string{"ENABLE_PREFIX_DELEGATION", "true", "WARM_PREFIX_TARGET", "0", "WARM_IP_TARGET", "4"},
			want: func(c *Config) { c.PrefixDelegation, c.WarmPrefixTarget, c.WarmIPTarget = true, 0, 4 }},
		{name: "an empty file", file: " \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadConfig([]byte(tt.file), env(tt.env...))
			if err != nil {
				t.Fatal(err)
			}
			want := with(tt.want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("LoadConfig =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

// TestLoadConfigRefuses: every bad value is an error that names the variable
// or field and says what is wrong.
func TestLoadConfigRefuses(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		env       []string
		wantName  string
		wantWords string
	}{
		{"not a number", "", []string{"WARM_IP_TARGET", "abc"}, "WARM_IP_TARGET", `"abc" is not a whole number`},
		{"negative", "", []string{"WARM_ENI_TARGET", "-1"}, "WARM_ENI_TARGET", "0 or above"},
		{"a fraction", "", []string{"MINIMUM_IP_TARGET", "2.5"}, "MINIMUM_IP_TARGET", "whole number"},
		{"not a boolean", "", []string{"ENABLE_PREFIX_DELEGATION", "yes"}, "ENABLE_PREFIX_DELEGATION", "true or false"},
		{"MTU too small", "", []string{"AWS_VPC_ENI_MTU", "575"}, "AWS_VPC_ENI_MTU", "576 to 9001"},
		{"MTU too large", "", []string{"AWS_VPC_ENI_MTU", "9002"}, "AWS_VPC_ENI_MTU", "576 to 9001"},
		{"veth prefix too long", "", []string{"AWS_VPC_K8S_CNI_VETHPREFIX", "vpcnet"}, "AWS_VPC_K8S_CNI_VETHPREFIX", "longer than 4"},
		{"veth prefix reserved", "", []string{"AWS_VPC_K8S_CNI_VETHPREFIX", "eth"}, "AWS_VPC_K8S_CNI_VETHPREFIX", "reserved"},
		{"veth prefix with a slash", "", []string{"AWS_VPC_K8S_CNI_VETHPREFIX", "a/b"}, "AWS_VPC_K8S_CNI_VETHPREFIX", "letters, digits"},
		{"cooldown not a duration", "", []string{"IP_COOLDOWN_PERIOD", "soon"}, "IP_COOLDOWN_PERIOD", "whole seconds"},
		{"cooldown negative", "", []string{"IP_COOLDOWN_PERIOD", "-5"}, "IP_COOLDOWN_PERIOD", "above 0"},
		{"reconcile interval 0", "", []string{"VPCNET_RECONCILE_INTERVAL", "0"}, "VPCNET_RECONCILE_INTERVAL", "above 0"},
		{"bad CIDR", "", []string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,10.1.2.3"}, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", `"10.1.2.3" is not an IPv4 CIDR`},
		{"IPv6 CIDR", "", []string{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "fd00::/8"}, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "IPv4"},
		{"MAX_ENI not a number", "", []string{"MAX_ENI", "four"}, "MAX_ENI", "whole number"},
		{"ENI configs not JSON", "", []string{"VPCNET_ENI_CONFIGS", "subnet-1"}, "VPCNET_ENI_CONFIGS", `want {"ZONE"`},
		{"ENI config subnet", "", []string{"VPCNET_ENI_CONFIGS", `{"us-east-1a": {"subnet": "sn-1"}}`}, "VPCNET_ENI_CONFIGS", `zone us-east-1a: subnet "sn-1"`},
		{"ENI config group", "", []string{"VPCNET_ENI_CONFIGS", `{"us-east-1a": {"subnet": "subnet-1", "securityGroups": ["default"]}}`}, "VPCNET_ENI_CONFIGS", `"default" is not a security group ID`},
		{"ENI config unknown field", "", []string{"VPCNET_ENI_CONFIGS", `{"us-east-1a": {"subnetId": "subnet-1"}}`}, "VPCNET_ENI_CONFIGS", "unknown field"},
		{"cluster name too long", "", []string{"VPCNET_CLUSTER_NAME", strings.Repeat("x", 257)}, "VPCNET_CLUSTER_NAME", "256"},
		// aws-node's entrypoint refuses these two (cmd/aws-vpc-cni/main.go).
		{"MINIMUM_IP_TARGET without WARM_IP_TARGET", "", []string{"MINIMUM_IP_TARGET", "10"}, "MINIMUM_IP_TARGET", "requires WARM_IP_TARGET"},
		{"minimumIPTarget in the file without warmIPTarget", `{"minimumIPTarget": 10}`, nil, "config file field minimumIPTarget", "requires WARM_IP_TARGET"},
		{"prefixes with every target 0", "", []string{"ENABLE_PREFIX_DELEGATION", "true", "WARM_PREFIX_TARGET", "0"}, "WARM_PREFIX_TARGET", "keep nothing free"},
		{"file: unknown field", `{"warmIpTarget": 1}`, nil, "config file field warmIpTarget", "unknown field"},
		{"file: not an object", `[1, 2]`, nil, "config file", "not a JSON object"},
		{"file: broken JSON", `{"mtu": }`, nil, "config file", "not a JSON object"},
		{"file: bad value", `{"mtu": 100000}`, nil, "config file field mtu", "576 to 9001"},
		{"file: a list where a number goes", `{"warmIPTarget": [1]}`, nil, "config file field warmIPTarget", "single value"},
		{"file: a fractional cooldown", `{"ipCooldownPeriod": 1.5}`, nil, "config file field ipCooldownPeriod", "whole seconds"},
		{"file: CIDRs not strings", `{"excludeSNATCIDRs": [10]}`, nil, "config file field excludeSNATCIDRs", "list of CIDRs"},
		{"file value fine, env value bad", `{"mtu": 1500}`, []string{"AWS_VPC_ENI_MTU", "big"}, "AWS_VPC_ENI_MTU", `"big"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig([]byte(tt.file), env(tt.env...))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("LoadConfig: %v, want a ConfigError", err)
			}
			if ce.Name != tt.wantName || !strings.Contains(err.Error(), tt.wantWords) {
				t.Errorf("LoadConfig: %q (name %q), want name %q and %q", err, ce.Name, tt.wantName, tt.wantWords)
			}
		})
	}
}
