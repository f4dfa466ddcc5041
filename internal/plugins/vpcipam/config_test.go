package vpcipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/netops"
)

func noEnv(string) string { return "" }

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// describe renders a Config in one line for table comparisons.
func describe(c *Config) string {
	var sets, routes, reqs []string
	for _, s := range c.Pool.Sets {
		sets = append(sets, s.String())
	}
	for _, r := range c.Routes {
		gw := "-"
		if r.GW != nil {
			gw = r.GW.String()
		}
		routes = append(routes, r.Dst.String()+" via "+gw)
	}
	for _, r := range c.Requests {
		reqs = append(reqs, r.Addr.String()+"@"+r.Field)
	}
	return fmt.Sprintf("net=%s sets=[%s] routes=[%s] reqs=[%s] id=%q store=%s timeout=%s",
		c.Pool.Network, strings.Join(sets, " "), strings.Join(routes, ", "), strings.Join(reqs, ", "), c.ID, c.StorePath, c.LockTimeout)
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name, conf, want string
	}{
		{
			"host-local style ranges, dual stack",
			`{"cniVersion":"1.1.0","name":"net1","type":"vpc-bridge","ipam":{"type":"vpc-ipam",
			  "ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.20"},{"subnet":"10.0.1.0/24","gateway":"10.0.1.254"}],[{"subnet":"fd00::/64"}]],
			  "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::1"}],
			  "ips":["10.0.0.12/24"],"store":"/run/x/ipam.db","lockTimeout":"750ms"},
			  "runtimeConfig":{"ips":["fd00::9/64"]},"args":{"cni":{"ips":["10.0.1.7"]}}}`,
			"net=net1 sets=[10.0.0.0/24[10.0.0.10-10.0.0.20 gw 10.0.0.1],10.0.1.0/24[10.0.1.1-10.0.1.254 gw 10.0.1.254] fd00::/64[fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1]] " +
				"routes=[0.0.0.0/0 via -, ::/0 via fd00::1] reqs=[10.0.0.12@ipam.ips[0], fd00::9@runtimeConfig.ips[0], 10.0.1.7@args.cni.ips[0]] id=\"\" store=/run/x/ipam.db timeout=750ms",
		},
		{
			"single-subnet form, our spelling",
			`{"cniVersion":"1.0.0","name":"net2","ipam":{"ipv4Subnet":"169.254.172.0/22","ipv4Gateway":"169.254.172.1","ipv4Routes":[{"dst":"169.254.170.2/32"}],
			  "ipv6Subnet":"fd00:ec2::/120","ipv6Routes":[{"dst":"fd00:ec2::254/128"}],"ipv6Address":"fd00:ec2::5"}}`,
			"net=net2 sets=[169.254.172.0/22[169.254.172.1-169.254.175.254 gw 169.254.172.1] fd00:ec2::/120[fd00:ec2::1-fd00:ec2::ff gw fd00:ec2::1]] " +
				"routes=[169.254.170.2/32 via -, fd00:ec2::254/128 via -] reqs=[fd00:ec2::5@ipam.ipv6Address] id=\"\" store=/var/lib/vpcnet/ipam.db timeout=5s",
		},
		{
			"the ECS agent's ecs-bridge config",
			`{"cniVersion":"0.3.0","name":"ecs-bridge","type":"ecs-bridge","bridge":"ecs-bridge","isGateway":false,"mtu":0,
			  "ipam":{"type":"ecs-ipam","id":"0a:1b:2c:3d:4e:5f","cniVersion":"0.3.0","ipv4-subnet":"169.254.172.0/22",
			  "ipv4-address":"169.254.172.9/22","ipv4-routes":[{"dst":"169.254.170.2/32"}]}}`,
			"net=ecs-bridge sets=[169.254.172.0/22[169.254.172.1-169.254.175.254 gw 169.254.172.1]] routes=[169.254.170.2/32 via -] " +
				"reqs=[169.254.172.9@ipam.ipv4-address] id=\"0a:1b:2c:3d:4e:5f\" store=/var/lib/vpcnet/ipam.db timeout=5s",
		},
		{
			"ECS config without a name, as the agent's ecs-bridge config comes",
			`{"cniVersion":"0.3.0","type":"ecs-bridge","ipam":{"type":"ecs-ipam","id":"m","ipv4-subnet":"169.254.172.0/22"}}`,
			"net=ecs-ipam sets=[169.254.172.0/22[169.254.172.1-169.254.175.254 gw 169.254.172.1]] routes=[] reqs=[] id=\"m\" store=/var/lib/vpcnet/ipam.db timeout=5s",
		},
		{
			"ECS dual stack, both spellings agreeing",
			`{"cniVersion":"0.3.0","name":"ecs","ipam":{"id":"x","ipv4-subnet":"10.0.0.0/24","ipv4Subnet":"10.0.0.0/24","ipv4-gateway":"10.0.0.254",
			  "ipv6-subnet":"2001:db8::/64","ipv6-gateway":"2001:db8::1","ipv6-routes":[{"dst":"fd00:ec2::254/128"}]}}`,
			"net=ecs sets=[10.0.0.0/24[10.0.0.1-10.0.0.254 gw 10.0.0.254] 2001:db8::/64[2001:db8::1-2001:db8::ffff:ffff:ffff:ffff gw 2001:db8::1]] " +
				"routes=[fd00:ec2::254/128 via -] reqs=[] id=\"x\" store=/var/lib/vpcnet/ipam.db timeout=5s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := decodeConfig([]byte(tt.conf), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(c); got != tt.want {
				t.Fatalf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// cniError asserts that err is a CNI error with the code and message.
func cniError(t *testing.T, err error, code uint, msg string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want CNI error %d %q", err, err, code, msg)
	}
	if e.Code != code || !strings.HasPrefix(e.Msg, msg) {
		t.Fatalf("got code %d %q\nwant code %d %q", e.Code, e.Msg, code, msg)
	}
}

func TestDecodeConfigErrors(t *testing.T) {
	ranges := func(r string) string { return `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":` + r + `}}` }
	ipamOnly := func(i string) string { return `{"cniVersion":"1.0.0","name":"n","ipam":{` + i + `}}` }
	v4 := `"ipv4Subnet":"10.0.0.0/24"`
	tests := []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"cniVersion":"1.0.0","name":`, cni.CodeDecodingFailure, "failed to decode network config"},
		{`{"cniVersion":"1.0.0","ipam":{` + v4 + `}}`, 7, `invalid config: field "name": missing`},
		{`{"cniVersion":"1.0.0","name":"n"}`, 7, `invalid config: field "ipam": missing`},
		{ipamOnly(`"type":"vpc-ipam"`), 7, `invalid config: field "ipam.ranges": missing: give ipam.ranges, or ipam.ipv4Subnet`},
		{ipamOnly(`"ranges":"10.0.0.0/24"`), 7, `invalid config: field "ipam.ranges": expected`},
		{ranges(`[[{"subnet":"10.0.0.0/33"}]]`), 7, `invalid config: field "ipam.ranges[0][0].subnet": "10.0.0.0/33" is not a CIDR`},
		{ranges(`[[{"rangeStart":"10.0.0.5"}]]`), 7, `invalid config: field "ipam.ranges[0][0].subnet": missing`},
		{ranges(`[[{"subnet":"10.0.0.1/24"}]]`), 7, `invalid config: field "ipam.ranges[0][0].subnet": 10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)`},
		{ranges(`[[{"subnet":"10.0.0.0/32"}]]`), 7, `invalid config: field "ipam.ranges[0][0].subnet": 10.0.0.0/32 has no address to hand out`},
		{ranges(`[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.x"}]]`), 7, `invalid config: field "ipam.ranges[0][0].rangeStart": "10.0.0.x" is not an IP address`},
		{ranges(`[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.9"}]]`), 7, `invalid config: field "ipam.ranges[0][0].rangeEnd": 10.0.1.9 is outside subnet 10.0.0.0/24`},
		{ranges(`[[{"subnet":"10.0.0.0/24","gateway":"10.0.0.255"}]]`), 7, `invalid config: field "ipam.ranges[0][0].gateway": 10.0.0.255 is the broadcast address of 10.0.0.0/24`},
		{ranges(`[[{"subnet":"10.0.0.0/24"}],[]]`), 7, `invalid config: field "ipam.ranges[1]": is empty`},
		{ranges(`[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]`), 7, `invalid config: field "ipam.ranges[1][0].subnet": 10.0.0.0/25[10.0.0.1-10.0.0.126 gw 10.0.0.1] overlaps ranges[0][0]`},
		{ranges(`[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]`), 7, `invalid config: field "ipam.ranges[0][1].subnet": fd00::/64 mixes address families`},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]],"ipv4-subnet":"10.0.0.0/24"}}`, 7, `invalid config: field "ipam.ipv4-subnet": cannot be combined with ipam.ranges`},
		{ipamOnly(v4 + `,"ipv4-subnet":"10.1.0.0/24"`), 7, `invalid config: field "ipam.ipv4-subnet": differs from ipam.ipv4Subnet; give one of the two`},
		{ipamOnly(v4 + `,"ipv4Routes":[{"dst":"1.0.0.0/8"}],"ipv4-routes":[]`), 7, `invalid config: field "ipam.ipv4-routes": differs from ipam.ipv4Routes`},
		{ipamOnly(`"ipv4-subnet":"fd00::/64"`), 7, `invalid config: field "ipam.ipv4-subnet": fd00::/64 is not an IPv4 subnet`},
		{ipamOnly(`"ipv6Subnet":"fd00::/64","ipv4-gateway":"10.0.0.1"`), 7, `invalid config: field "ipam.ipv4-gateway": needs a subnet (ipam.ipv4Subnet)`},
		{ipamOnly(`"ipv4-subnet":"10.0.0.0/24","ipv4-gateway":"10.0.1.1"`), 7, `invalid config: field "ipam.ipv4-gateway": 10.0.1.1 is outside subnet 10.0.0.0/24`},
		{ipamOnly(v4 + `,"ipv4-address":"fd00::5"`), 7, `invalid config: field "ipam.ipv4-address": fd00::5 is not an IPv4 address`},
		{ipamOnly(v4 + `,"ipv4-address":"10.0.0.300/24"`), 7, `invalid config: field "ipam.ipv4-address": "10.0.0.300/24" is not an IP address`},
		{ipamOnly(v4 + `,"routes":[{"dst":"10.0.0.0/99"}]`), 7, `invalid config: field "ipam.routes[0].dst": "10.0.0.0/99" is not a CIDR`},
		{ipamOnly(v4 + `,"routes":[{"dst":"0.0.0.0/0"},{"gw":"10.0.0.1"}]`), 7, `invalid config: field "ipam.routes[1].dst": missing`},
		{ipamOnly(v4 + `,"routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]`), 7, `invalid config: field "ipam.routes[0].gw": fd00::1 and destination 0.0.0.0/0 are of different address families`},
		{ipamOnly(v4 + `,"ipv6-routes":[{"dst":"10.0.0.0/8"}]`), 7, `invalid config: field "ipam.ipv6-routes[0].dst": 10.0.0.0/8 is not an IPv6 destination`},
		{ipamOnly(v4 + `,"ips":["10.0.0.5","nope"]`), 7, `invalid config: field "ipam.ips[1]": "nope" is not an IP address`},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{` + v4 + `},"runtimeConfig":{"ips":["10.0.0.5/2x"]}}`, 7, `invalid config: field "runtimeConfig.ips[0]": "10.0.0.5/2x" is not an IP address`},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{` + v4 + `},"args":{"cni":{"ips":["fe80::1%eth0"]}}}`, 7, `invalid config: field "args.cni.ips[0]": "fe80::1%eth0" is not an IP address`},
		{ipamOnly(v4 + `,"lockTimeout":"soon"`), 7, `invalid config: field "ipam.lockTimeout": "soon" is not a positive duration`},
		{ipamOnly(v4 + `,"lockTimeout":"-1s"`), 7, `invalid config: field "ipam.lockTimeout": "-1s" is not a positive duration`},
		{ipamOnly(v4 + `,"store":"ipam.db"`), 7, `invalid config: field "ipam.store": "ipam.db" is not an absolute path`},
	}
	for _, tt := range tests {
		_, err := decodeConfig([]byte(tt.conf), noEnv)
		t.Run(tt.msg, func(t *testing.T) { cniError(t, err, tt.code, tt.msg) })
	}
}

func TestStoreAndLockTimeoutPrecedence(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","ipam":{"ipv4Subnet":"10.0.0.0/24"%s}}`
	tests := []struct {
		name, ipam string
		env        func(string) string
		store      string
		timeout    time.Duration
		errCode    uint
		errMsg     string
	}{
		{"defaults", "", noEnv, DefaultStore, DefaultLockTimeout, 0, ""},
		{"ECS variables", "", envOf(EnvECSStore, "/data/eni-ipam.db", EnvECSLockTimeout, "10s"), "/data/eni-ipam.db", 10 * time.Second, 0, ""},
		{"ours before ECS's", "", envOf(EnvStore, "/a/ipam.db", EnvECSStore, "/b/ipam.db", EnvLockTimeout, "2s", EnvECSLockTimeout, "10s"), "/a/ipam.db", 2 * time.Second, 0, ""},
		{"config before environment", `,"store":"/c/ipam.db","lockTimeout":"1s"`, envOf(EnvStore, "/a/ipam.db", EnvLockTimeout, "2s"), "/c/ipam.db", time.Second, 0, ""},
		{"relative path in the environment", "", envOf(EnvECSStore, "data/ipam.db"), "", 0, cni.CodeInvalidEnvironment, `invalid environment: IPAM_DB_PATH: "data/ipam.db" is not an absolute path`},
		{"bad timeout in the environment", "", envOf(EnvECSLockTimeout, "5"), "", 0, cni.CodeInvalidEnvironment, `invalid environment: IPAM_DB_CONNECTION_TIMEOUT: "5" is not a positive duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := decodeConfig([]byte(fmt.Sprintf(base, tt.ipam)), tt.env)
			if tt.errMsg != "" {
				cniError(t, err, tt.errCode, tt.errMsg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.StorePath != tt.store || c.LockTimeout != tt.timeout {
				t.Fatalf("store %s timeout %s, want %s %s", c.StorePath, c.LockTimeout, tt.store, tt.timeout)
			}
		})
	}
}

func TestWant(t *testing.T) {
	conf := func(extra string) *Config {
		c, err := decodeConfig([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"ipv4Subnet":"10.0.0.0/24","ipv6Subnet":"fd00::/64"`+extra+`}}`), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name, extra, args string
		want              string // per set, comma-separated; "-" = next-fit
		code              uint
		msg               string
	}{
		{"nothing", "", "", "-,-", 0, ""},
		{"CNI_ARGS, both families", "", "IgnoreUnknown=1;IP=fd00::7,10.0.0.7;K8S_POD_NAME=web", "10.0.0.7,fd00::7", 0, ""},
		{"config and CNI_ARGS agree", `,"ips":["10.0.0.7/24"]`, "IP=10.0.0.7", "10.0.0.7,-", 0, ""},
		{"CNI_ARGS outside the subnets", "", "IP=10.9.9.9", "", 7, `invalid config: field "CNI_ARGS IP": 10.9.9.9 is outside every subnet of the network (10.0.0.0/24, fd00::/64)`},
		{"CNI_ARGS malformed", "", "IP=10.0.0.x", "", 7, `invalid config: field "CNI_ARGS IP": "10.0.0.x" is not an IP address`},
		{"CNI_ARGS not KEY=VALUE", "", "IgnoreUnknown", "", cni.CodeInvalidEnvironment, `invalid environment: CNI_ARGS: "IgnoreUnknown" is not KEY=VALUE`},
		{"the gateway", `,"ipv4Address":"10.0.0.1"`, "", "", 7, `invalid config: field "ipam.ipv4Address": 10.0.0.1 is the gateway of 10.0.0.0/24`},
		{"two for one set", `,"ipv4-address":"10.0.0.7"`, "IP=10.0.0.8", "", 7, `invalid config: field "CNI_ARGS IP": 10.0.0.8 and 10.0.0.7 are both requested`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, _, err := conf(tt.extra).Want(tt.args)
			if tt.msg != "" {
				cniError(t, err, tt.code, tt.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range want {
				s := "-"
				if a.IsValid() {
					s = a.String()
				}
				got = append(got, s)
			}
			if strings.Join(got, ",") != tt.want {
				t.Fatalf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestCheckHeld(t *testing.T) {
	c, err := decodeConfig([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"ipv4Subnet":"10.0.0.0/24","ipv6Subnet":"fd00::/64"}}`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	held := func(addrs ...string) ipam.Allocation {
		a := ipam.Allocation{Owner: ipam.Owner{ContainerID: "c1", IfName: "eth0"}}
		for _, s := range addrs {
			a.IPs = append(a.IPs, ipam.Address{Address: netip.MustParsePrefix(s)})
		}
		return a
	}
	prev := func(addrs ...string) *types100.Result {
		r := &types100.Result{}
		for _, s := range addrs {
			r.IPs = append(r.IPs, &types100.IPConfig{Address: *netops.IPNet(netip.MustParsePrefix(s))})
		}
		return r
	}
	tests := []struct {
		name string
		held ipam.Allocation
		prev *types100.Result
		msg  string
	}{
		{"same addresses", held("10.0.0.2/24", "fd00::2/64"), prev("fd00::2/64", "10.0.0.2/24"), ""},
		{"addresses of other networks are not ours to check", held("10.0.0.2/24"), prev("10.0.0.2/24", "192.168.0.9/24"), ""},
		{"different address", held("10.0.0.2/24"), prev("10.0.0.3/24"), `invalid config: field "prevResult.ips": reports 10.0.0.3 of network "n", but c1/eth0 holds 10.0.0.2`},
		{"one missing", held("10.0.0.2/24", "fd00::2/64"), prev("10.0.0.2/24"), `invalid config: field "prevResult.ips": reports 10.0.0.2 of network "n", but c1/eth0 holds 10.0.0.2, fd00::2`},
		{"nothing held", held(), prev("10.0.0.2/24"), `invalid config: field "prevResult.ips": reports 10.0.0.2 of network "n", but c1/eth0 holds no address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHeld(c.Pool, tt.held, tt.prev)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			cniError(t, err, cni.CodeInvalidConfig, tt.msg)
		})
	}
}
