package vpcipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/netops"
)

// Where the store is and how long to wait for its lock, when the config does
// not say. The ECS agent's variables are read too, after ours.
const (
	EnvStore           = "VPCNET_IPAM_STORE"
	EnvLockTimeout     = "VPCNET_IPAM_LOCK_TIMEOUT"
	EnvECSStore        = "IPAM_DB_PATH"
	EnvECSLockTimeout  = "IPAM_DB_CONNECTION_TIMEOUT"
	DefaultStore       = "/var/lib/vpcnet/ipam.db"
	DefaultLockTimeout = 5 * time.Second
	// ECSNetwork is the network of an ECS-format config without a name.
	ECSNetwork = "ecs-ipam"
)

// Config is a network config for vpc-ipam after decoding and validation: the
// same whichever spelling it arrived in.
type Config struct {
	CNIVersion string
	Pool       ipam.Pool // Pool.Network is the CNI network name
	Routes     []*types.Route
	// ID is the ECS agent's allocation id ("ipam.id"); when set, it and not
	// the attachment owns the allocation.
	ID string
	// Requests are the addresses asked for in the config, in order.
	Requests    []Request
	StorePath   string
	LockTimeout time.Duration
}

// rawConfig is the network config as it arrives on stdin.
type rawConfig struct {
	CNIVersion    string   `json:"cniVersion"`
	Name          string   `json:"name"`
	IPAM          *rawIPAM `json:"ipam"`
	RuntimeConfig struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// rawIPAM is the "ipam" section. The single-subnet fields come in our
// spelling and in the ECS agent's (ecs-ipam's); giving both with different
// values is an error.
type rawIPAM struct {
	Type        string        `json:"type"`
	Ranges      [][]rangeConf `json:"ranges"`
	Routes      []routeConf   `json:"routes"`
	IPs         []string      `json:"ips"`
	ID          string        `json:"id"`
	Store       string        `json:"store"`
	LockTimeout string        `json:"lockTimeout"`

	IPv4Subnet     *string      `json:"ipv4Subnet"`
	ECSIPv4Subnet  *string      `json:"ipv4-subnet"`
	IPv4Address    *string      `json:"ipv4Address"`
	ECSIPv4Address *string      `json:"ipv4-address"`
	IPv4Gateway    *string      `json:"ipv4Gateway"`
	ECSIPv4Gateway *string      `json:"ipv4-gateway"`
	IPv4Routes     *[]routeConf `json:"ipv4Routes"`
	ECSIPv4Routes  *[]routeConf `json:"ipv4-routes"`

	IPv6Subnet     *string      `json:"ipv6Subnet"`
	ECSIPv6Subnet  *string      `json:"ipv6-subnet"`
	IPv6Address    *string      `json:"ipv6Address"`
	ECSIPv6Address *string      `json:"ipv6-address"`
	IPv6Gateway    *string      `json:"ipv6Gateway"`
	ECSIPv6Gateway *string      `json:"ipv6-gateway"`
	IPv6Routes     *[]routeConf `json:"ipv6Routes"`
	ECSIPv6Routes  *[]routeConf `json:"ipv6-routes"`
}

// ecsSpelled reports whether the section uses ecs-ipam's field names.
func (ic *rawIPAM) ecsSpelled() bool {
	for _, f := range []any{ic.ECSIPv4Subnet, ic.ECSIPv4Address, ic.ECSIPv4Gateway, ic.ECSIPv4Routes,
		ic.ECSIPv6Subnet, ic.ECSIPv6Address, ic.ECSIPv6Gateway, ic.ECSIPv6Routes} {
		if !reflect.ValueOf(f).IsNil() {
			return true
		}
	}
	return false
}

type rangeConf struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

type routeConf struct {
	Dst      string `json:"dst"`
	GW       string `json:"gw"`
	MTU      int    `json:"mtu"`
	AdvMSS   int    `json:"advmss"`
	Priority int    `json:"priority"`
	Table    *int   `json:"table"`
	Scope    *int   `json:"scope"`
}

// family is the single-subnet form for one address family, with the field
// names as the user spelled them.
type family struct {
	name                     string // "IPv4", "IPv6"
	is4                      bool
	subnet, gateway, address cni.Merged[string]
	routes                   cni.Merged[[]routeConf]
}

// pick resolves a field given in our spelling, the ECS spelling, or both.
func pick[T any](own, ecs *T, ownName, ecsName string) (cni.Merged[T], error) {
	return cni.MergeSpellings(
		func(a, b T) bool { return reflect.DeepEqual(a, b) },
		func(v T) string { b, _ := json.Marshal(v); return string(b) },
		cni.Spelling[T]{Field: "ipam." + ownName, Value: own},
		cni.Spelling[T]{Field: "ipam." + ecsName, Value: ecs})
}

// decodeConfig decodes and validates a network config. getenv supplies the
// environment (os.Getenv in the plugin) for the store path and lock
// timeout. Errors name the field at fault as the user wrote it.
func decodeConfig(stdin []byte, getenv func(string) string) (*Config, error) {
	var raw rawConfig
	if err := cni.DecodeConfig(stdin, &raw); err != nil {
		return nil, err
	}
	if raw.IPAM == nil {
		return nil, cni.FieldError("ipam", "missing")
	}
	c := &Config{CNIVersion: raw.CNIVersion, ID: raw.IPAM.ID}
	if c.Pool.Network = raw.Name; c.Pool.Network == "" {
		// The ECS agent's ecs-bridge config has no name, and it releases
		// through a network it names "ecs-ipam": that is where ecs-ipam's
		// allocations go. Our own format must name its network.
		if !raw.IPAM.ecsSpelled() {
			return nil, cni.FieldError("name", "missing")
		}
		c.Pool.Network = ECSNetwork
	}
	fams, err := families(raw.IPAM)
	if err != nil {
		return nil, err
	}
	if c.Pool.Sets, err = rangeSets(raw.IPAM, fams); err != nil {
		return nil, err
	}
	if c.Routes, err = routes(raw.IPAM, fams); err != nil {
		return nil, err
	}
	if c.Requests, err = requests(&raw, fams); err != nil {
		return nil, err
	}
	if c.StorePath, err = storePath(raw.IPAM.Store, getenv); err != nil {
		return nil, err
	}
	if c.LockTimeout, err = lockTimeout(raw.IPAM.LockTimeout, getenv); err != nil {
		return nil, err
	}
	return c, nil
}

func families(ic *rawIPAM) ([]family, error) {
	v4 := family{name: "IPv4", is4: true}
	v6 := family{name: "IPv6"}
	var err error
	for _, f := range []struct {
		dst              *cni.Merged[string]
		own, ecs         *string
		ownName, ecsName string
	}{
		{&v4.subnet, ic.IPv4Subnet, ic.ECSIPv4Subnet, "ipv4Subnet", "ipv4-subnet"},
		{&v4.gateway, ic.IPv4Gateway, ic.ECSIPv4Gateway, "ipv4Gateway", "ipv4-gateway"},
		{&v4.address, ic.IPv4Address, ic.ECSIPv4Address, "ipv4Address", "ipv4-address"},
		{&v6.subnet, ic.IPv6Subnet, ic.ECSIPv6Subnet, "ipv6Subnet", "ipv6-subnet"},
		{&v6.gateway, ic.IPv6Gateway, ic.ECSIPv6Gateway, "ipv6Gateway", "ipv6-gateway"},
		{&v6.address, ic.IPv6Address, ic.ECSIPv6Address, "ipv6Address", "ipv6-address"},
	} {
		if *f.dst, err = pick(f.own, f.ecs, f.ownName, f.ecsName); err != nil {
			return nil, err
		}
	}
	if v4.routes, err = pick(ic.IPv4Routes, ic.ECSIPv4Routes, "ipv4Routes", "ipv4-routes"); err != nil {
		return nil, err
	}
	if v6.routes, err = pick(ic.IPv6Routes, ic.ECSIPv6Routes, "ipv6Routes", "ipv6-routes"); err != nil {
		return nil, err
	}
	return []family{v4, v6}, nil
}

// rangeSets builds the pool from "ranges" or from the single-subnet form.
func rangeSets(ic *rawIPAM, fams []family) ([]ipam.RangeSet, error) {
	simple := fams[0].subnet.Set() || fams[1].subnet.Set()
	switch {
	case len(ic.Ranges) > 0 && simple:
		f := fams[0].subnet
		if !f.Set() {
			f = fams[1].subnet
		}
		return nil, cni.FieldError(f.Field, "cannot be combined with ipam.ranges; give one or the other")
	case len(ic.Ranges) > 0:
		return parseRanges(ic.Ranges)
	case simple:
		return familySets(fams)
	}
	return nil, cni.FieldError("ipam.ranges", "missing: give ipam.ranges, or ipam.ipv4Subnet and/or ipam.ipv6Subnet (ECS: ipv4-subnet, ipv6-subnet)")
}

func parseRanges(in [][]rangeConf) ([]ipam.RangeSet, error) {
	sets := make([]ipam.RangeSet, len(in))
	for si, set := range in {
		if len(set) == 0 {
			return nil, cni.FieldError(fmt.Sprintf("ipam.ranges[%d]", si), "is empty; a range set needs at least one range")
		}
		for ri, rc := range set {
			field := fmt.Sprintf("ipam.ranges[%d][%d]", si, ri)
			r, err := parseRange(field, rc)
			if err != nil {
				return nil, err
			}
			sets[si] = append(sets[si], r)
		}
	}
	if err := ipam.ValidateSets(sets); err != nil {
		se := err.(*ipam.SetsError)
		return nil, cni.FieldError(fmt.Sprintf("ipam.ranges[%d][%d].%s", se.Set, se.Range, se.Part), "%s", se.Msg)
	}
	return sets, nil
}

func parseRange(field string, rc rangeConf) (ipam.Range, error) {
	if rc.Subnet == "" {
		return ipam.Range{}, cni.FieldError(field+".subnet", "missing")
	}
	subnet, err := cni.ParsePrefix(field+".subnet", rc.Subnet)
	if err != nil {
		return ipam.Range{}, err
	}
	var addrs [3]netip.Addr
	for i, p := range []struct{ name, val string }{{"rangeStart", rc.RangeStart}, {"rangeEnd", rc.RangeEnd}, {"gateway", rc.Gateway}} {
		if p.val == "" {
			continue
		}
		if addrs[i], err = parseAddr(field+"."+p.name, p.val); err != nil {
			return ipam.Range{}, err
		}
	}
	r, err := ipam.NewRange(subnet, addrs[0], addrs[1], addrs[2])
	if err != nil {
		re := err.(*ipam.RangeError)
		return ipam.Range{}, cni.FieldError(field+"."+re.Part, "%s", re.Msg)
	}
	return r, nil
}

// familySets turns ipv4Subnet/ipv6Subnet (and gateways) into one range set
// each, IPv4 first.
func familySets(fams []family) ([]ipam.RangeSet, error) {
	var sets []ipam.RangeSet
	for _, f := range fams {
		if !f.subnet.Set() {
			if f.gateway.Set() {
				return nil, cni.FieldError(f.gateway.Field, "needs a subnet (ipam.%sSubnet)", strings.ToLower(f.name))
			}
			continue
		}
		subnet, err := cni.ParsePrefix(f.subnet.Field, f.subnet.Value)
		if err != nil {
			return nil, err
		}
		if subnet.Addr().Is4() != f.is4 {
			return nil, cni.FieldError(f.subnet.Field, "%s is not an %s subnet", subnet, f.name)
		}
		var gw netip.Addr
		if f.gateway.Set() {
			if gw, err = parseAddr(f.gateway.Field, f.gateway.Value); err != nil {
				return nil, err
			}
		}
		r, err := ipam.NewRange(subnet, netip.Addr{}, netip.Addr{}, gw)
		if err != nil {
			re := err.(*ipam.RangeError)
			field := f.subnet.Field
			if re.Part == "gateway" {
				field = f.gateway.Field
			}
			return nil, cni.FieldError(field, "%s", re.Msg)
		}
		sets = append(sets, ipam.RangeSet{r})
	}
	return sets, nil
}

// routes gathers "routes" and the per-family route lists, in that order.
func routes(ic *rawIPAM, fams []family) ([]*types.Route, error) {
	var out []*types.Route
	add := func(field string, list []routeConf, only func(netip.Addr) bool, famName string) error {
		for i, rc := range list {
			r, err := parseRoute(fmt.Sprintf("%s[%d]", field, i), rc, only, famName)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	}
	if err := add("ipam.routes", ic.Routes, nil, ""); err != nil {
		return nil, err
	}
	for _, f := range fams {
		is4 := f.is4
		only := func(a netip.Addr) bool { return a.Is4() == is4 }
		if err := add(f.routes.Field, f.routes.Value, only, f.name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parseRoute(field string, rc routeConf, only func(netip.Addr) bool, famName string) (*types.Route, error) {
	if rc.Dst == "" {
		return nil, cni.FieldError(field+".dst", "missing")
	}
	dst, err := cni.ParsePrefix(field+".dst", rc.Dst)
	if err != nil {
		return nil, err
	}
	if only != nil && !only(dst.Addr()) {
		return nil, cni.FieldError(field+".dst", "%s is not an %s destination", dst, famName)
	}
	r := &types.Route{Dst: *netops.IPNet(dst.Masked()), MTU: rc.MTU, AdvMSS: rc.AdvMSS, Priority: rc.Priority, Table: rc.Table, Scope: rc.Scope}
	if rc.GW != "" {
		gw, err := parseAddr(field+".gw", rc.GW)
		if err != nil {
			return nil, err
		}
		if gw.Is4() != dst.Addr().Is4() {
			return nil, cni.FieldError(field+".gw", "%s and destination %s are of different address families", gw, dst)
		}
		r.GW = netops.IP(gw)
	}
	return r, nil
}

func storePath(fromConf string, getenv func(string) string) (string, error) {
	field := "ipam.store"
	path := fromConf
	for _, env := range []string{EnvStore, EnvECSStore} {
		if path == "" {
			path, field = getenv(env), env
		}
	}
	if path == "" {
		return DefaultStore, nil
	}
	if !filepath.IsAbs(path) {
		if field == "ipam.store" {
			return "", cni.FieldError(field, "%q is not an absolute path", path)
		}
		return "", cni.EnvError(field, "%q is not an absolute path", path)
	}
	return filepath.Clean(path), nil
}

func lockTimeout(fromConf string, getenv func(string) string) (time.Duration, error) {
	field, val := "ipam.lockTimeout", fromConf
	for _, env := range []string{EnvLockTimeout, EnvECSLockTimeout} {
		if val == "" {
			field, val = env, getenv(env)
		}
	}
	if val == "" {
		return DefaultLockTimeout, nil
	}
	d, err := time.ParseDuration(val)
	if err == nil && d > 0 {
		return d, nil
	}
	msg := fmt.Sprintf("%q is not a positive duration such as \"5s\" or \"500ms\"", val)
	if field == "ipam.lockTimeout" {
		return 0, cni.FieldError(field, "%s", msg)
	}
	return 0, cni.EnvError(field, "%s", msg)
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, cni.FieldError(field, "%q is not an IP address", s)
	}
	return a.Unmap(), nil
}
