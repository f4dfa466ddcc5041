package vpceni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcnet/vpcnet/internal/cni"
)

// Config is a decoded and validated vpc-eni network configuration. Every
// spelling the plugin accepts has been folded into these fields.
type Config struct {
	types.NetConf

	// ENIID is the EC2 id of the ENI ("eni-0123..."). Only logged: the
	// ENI is found by MAC.
	ENIID string
	// ENIName is the ENI's name as amazon-vpc-cni-plugins knew it. Only
	// logged.
	ENIName string
	// MAC finds the ENI, in the host namespace or, on a retried ADD, in
	// the container.
	MAC net.HardwareAddr
	// Addresses are given to the ENI in the container, with their prefix
	// lengths, IPv4 and IPv6.
	Addresses []netip.Prefix
	// Gateways hold at most one address per family; each gets a default
	// route.
	Gateways []netip.Addr
	// MTU of the ENI in the container; 0 leaves it as it is.
	MTU int
	// BlockInstanceMetadata adds blackhole routes to the instance
	// metadata service in the container.
	BlockInstanceMetadata bool
	// StayDown moves and renames the ENI but leaves it down and
	// unconfigured.
	StayDown bool
}

// rawConfig is the JSON as users and the ECS agent write it. Fields that
// have several spellings are pointers, so that "absent" and "empty" differ.
type rawConfig struct {
	types.NetConf

	ENIID    *string `json:"eniID"`
	ECSENIID *string `json:"eni"`
	ENIName  string  `json:"eniName"`

	MAC    *string `json:"mac"`
	VPCMAC *string `json:"eniMACAddress"`

	IPAddresses    *[]string `json:"ipAddresses"`
	ECSIPAddresses *[]string `json:"ip-addresses"`
	VPCIPAddresses *[]string `json:"eniIPAddresses"`
	LegacyIPv4     *string   `json:"ipv4-address"`
	LegacyIPv6     *string   `json:"ipv6-address"`

	Gateways      *[]string `json:"gatewayIPAddresses"`
	ECSGateways   *[]string `json:"gateway-ip-addresses"`
	LegacyGateway *string   `json:"subnetgateway-ipv4-address"`

	MTU *int `json:"mtu"`

	BlockIMDS    *bool `json:"blockInstanceMetadata"`
	ECSBlockIMDS *bool `json:"block-instance-metadata"`

	StayDown    *bool `json:"stayDown"`
	ECSStayDown *bool `json:"stay-down"`

	// amazon-vpc-cni-plugins writes it as a bool or a string.
	UseExistingNetwork json.RawMessage `json:"useExistingNetwork"`
}

// Field names, as users write them, for error messages.
const (
	fieldMAC       = "mac"
	fieldAddresses = "ipAddresses"
	fieldGateways  = "gatewayIPAddresses"
	fieldMTU       = "mtu"
)

// legacyIPv6PrefixLen is the prefix length of an "ipv6-address" given
// without one: every IPv6 subnet of a VPC is a /64.
const legacyIPv6PrefixLen = 64

// decodeConfig decodes and validates the network configuration on stdin.
// Every problem is a CNI error (code 6 or 7, 1 for the version) naming the
// field as the user spelled it.
func decodeConfig(stdin []byte) (*Config, error) { return decodeConfigFor(stdin, true) }

// decodeDelConfig is decodeConfig for DEL, which needs only the MAC:
// moving the ENI home does not use its addresses, and a caller that lost
// them (GC of an ENI found by its tags) must still be able to give it back.
func decodeDelConfig(stdin []byte) (*Config, error) { return decodeConfigFor(stdin, false) }

func decodeConfigFor(stdin []byte, needAddresses bool) (*Config, error) {
	var raw rawConfig
	if err := cni.DecodeConfig(stdin, &raw); err != nil {
		return nil, err
	}
	if _, err := cni.PrevResult(&raw.NetConf, false); err != nil {
		return nil, err
	}
	if raw.IPAM.Type != "" {
		return nil, cni.FieldError("ipam", "vpc-eni does not use an IPAM plugin; list the ENI's addresses in %q", fieldAddresses)
	}
	if err := checkUseExistingNetwork(raw.UseExistingNetwork); err != nil {
		return nil, err
	}

	conf := &Config{NetConf: raw.NetConf, ENIName: raw.ENIName}
	var err error
	if conf.ENIID, err = mergeENIID(raw); err != nil {
		return nil, err
	}
	if conf.MAC, err = mergeMAC(raw); err != nil {
		return nil, err
	}
	addrs, err := mergeAddresses(raw)
	if err != nil {
		return nil, err
	}
	gws, err := mergeGateways(raw)
	if err != nil {
		return nil, err
	}
	conf.BlockInstanceMetadata, err = mergeBool(
		cni.Spelling[bool]{Field: "blockInstanceMetadata", Value: raw.BlockIMDS},
		cni.Spelling[bool]{Field: "block-instance-metadata", Value: raw.ECSBlockIMDS})
	if err != nil {
		return nil, err
	}
	conf.StayDown, err = mergeBool(
		cni.Spelling[bool]{Field: "stayDown", Value: raw.StayDown},
		cni.Spelling[bool]{Field: "stay-down", Value: raw.ECSStayDown})
	if err != nil {
		return nil, err
	}
	if raw.MTU != nil {
		conf.MTU = *raw.MTU
	}
	if !needAddresses && len(addrs.Value) == 0 {
		conf.Gateways = gws.Value
		return conf, nil
	}
	if err := validate(conf, addrs.Field, addrs.Value, gws.Field, gws.Value); err != nil {
		return nil, err
	}
	conf.Addresses, conf.Gateways = addrs.Value, gws.Value
	return conf, nil
}

// validate checks what no single field shows: that addresses are given,
// that gateways match them, that the MTU suits them.
func validate(conf *Config, addrField string, addrs []netip.Prefix, gwField string, gws []netip.Addr) error {
	if len(addrs) == 0 && !conf.StayDown {
		if addrField == "" {
			return cni.FieldError(fieldAddresses, `missing: list the ENI's addresses in CIDR notation, e.g. ["10.0.1.5/24"] (also accepted as "ip-addresses", "eniIPAddresses" or "ipv4-address")`)
		}
		return cni.FieldError(addrField, "is empty: list the ENI's addresses in CIDR notation")
	}
	if err := checkDuplicateAddresses(addrField, addrs); err != nil {
		return err
	}
	for _, family := range []struct {
		name string
		is4  bool
	}{{"IPv4", true}, {"IPv6", false}} {
		var same []netip.Addr
		for _, g := range gws {
			if g.Is4() == family.is4 {
				same = append(same, g)
			}
		}
		if len(same) > 1 {
			return cni.FieldError(gwField, "has %d %s gateways (%s); give at most one per family: each becomes the default route", len(same), family.name, joinAddrs(same))
		}
		if len(same) == 1 && !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is4() == family.is4 }) && !conf.StayDown {
			return cni.FieldError(gwField, "gateway %s has no %s address in %q to go with it", same[0], family.name, orDefault(addrField, fieldAddresses))
		}
	}
	if conf.MTU != 0 {
		if conf.MTU < 68 || conf.MTU > 65535 {
			return cni.FieldError(fieldMTU, "%d is out of range: an MTU is between 68 and 65535 (0 or absent keeps the ENI's own)", conf.MTU)
		}
		if conf.MTU < 1280 && slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			return cni.FieldError(fieldMTU, "%d is below 1280, the least IPv6 works with, and the ENI has IPv6 addresses", conf.MTU)
		}
	}
	return nil
}

func mergeBool(choices ...cni.Spelling[bool]) (bool, error) {
	m, err := cni.MergeSpellings(func(a, b bool) bool { return a == b }, func(b bool) string { return fmt.Sprint(b) }, choices...)
	return m.Value, err
}

func mergeENIID(raw rawConfig) (string, error) {
	m, err := cni.MergeSpellings(func(a, b string) bool { return a == b }, quote,
		cni.Spelling[string]{Field: "eniID", Value: raw.ENIID}, cni.Spelling[string]{Field: "eni", Value: raw.ECSENIID})
	return m.Value, err
}

func mergeMAC(raw rawConfig) (net.HardwareAddr, error) {
	var choices []cni.Spelling[net.HardwareAddr]
	for _, s := range []cni.Spelling[string]{{Field: fieldMAC, Value: raw.MAC}, {Field: "eniMACAddress", Value: raw.VPCMAC}} {
		if s.Value == nil {
			continue
		}
		mac, err := parseMAC(s.Field, *s.Value)
		if err != nil {
			return nil, err
		}
		choices = append(choices, cni.Spelling[net.HardwareAddr]{Field: s.Field, Value: &mac})
	}
	merged, err := cni.MergeSpellings(func(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) },
		func(m net.HardwareAddr) string { return m.String() }, choices...)
	if err != nil {
		return nil, err
	}
	mac := merged.Value
	if mac == nil {
		return nil, cni.FieldError(fieldMAC, `missing: the ENI's MAC address finds it, e.g. "0a:1b:2c:3d:4e:5f" (also accepted as "eniMACAddress")`)
	}
	return mac, nil
}

func parseMAC(field, s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil:
		return nil, cni.FieldError(field, "%q is not a MAC address", s)
	case len(mac) != 6:
		return nil, cni.FieldError(field, "%q is not a 6-byte Ethernet MAC address", s)
	case mac[0]&1 == 1:
		return nil, cni.FieldError(field, "%q is a multicast MAC address; an ENI's is unicast", s)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return nil, cni.FieldError(field, "%q is the all-zero MAC address", s)
	}
	return mac, nil
}

// mergeAddresses folds the address lists of every spelling into one: ours,
// the ECS agent's current "ip-addresses", amazon-vpc-cni-plugins'
// "eniIPAddresses", and the ECS agent's older single "ipv4-address" and
// "ipv6-address". Lists given twice must hold the same addresses.
func mergeAddresses(raw rawConfig) (cni.Merged[[]netip.Prefix], error) {
	var choices []cni.Spelling[[]netip.Prefix]
	for _, s := range []cni.Spelling[[]string]{
		{Field: fieldAddresses, Value: raw.IPAddresses},
		{Field: "ip-addresses", Value: raw.ECSIPAddresses},
		{Field: "eniIPAddresses", Value: raw.VPCIPAddresses},
	} {
		if s.Value == nil {
			continue
		}
		list, err := parsePrefixList(s.Field, *s.Value)
		if err != nil {
			return cni.Merged[[]netip.Prefix]{}, err
		}
		choices = append(choices, cni.Spelling[[]netip.Prefix]{Field: s.Field, Value: &list})
	}
	legacyName, legacy, err := legacyAddresses(raw)
	if err != nil {
		return cni.Merged[[]netip.Prefix]{}, err
	}
	if legacyName != "" {
		choices = append(choices, cni.Spelling[[]netip.Prefix]{Field: legacyName, Value: &legacy})
	}
	return cni.MergeSpellings(samePrefixSet, showPrefixes, choices...)
}

func parsePrefixList(field string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := parsePrefix(field, s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// parsePrefix reads an interface address in CIDR notation.
func parsePrefix(field, s string) (netip.Prefix, error) {
	p, err := cni.ParsePrefix(field, s)
	if err != nil {
		return p, err
	}
	if p.Addr().IsUnspecified() || p.Addr().IsLoopback() {
		return netip.Prefix{}, cni.FieldError(field, "%q cannot be an interface address", s)
	}
	return p, nil
}

// legacyAddresses reads the older ECS agent's "ipv4-address" and
// "ipv6-address". They were written without a prefix length: the IPv4 one
// takes it from "subnetgateway-ipv4-address" (the gateway in CIDR form),
// the IPv6 one is a /64 as every VPC IPv6 subnet is.
func legacyAddresses(raw rawConfig) (string, []netip.Prefix, error) {
	if raw.LegacyIPv4 == nil && raw.LegacyIPv6 == nil {
		return "", nil, nil
	}
	var (
		name string
		out  []netip.Prefix
	)
	if raw.LegacyIPv4 != nil {
		name = "ipv4-address"
		bits := -1
		if raw.LegacyGateway != nil {
			if gw, err := netip.ParsePrefix(*raw.LegacyGateway); err == nil {
				bits = gw.Bits()
			}
		}
		p, err := parseLegacyAddress(name, *raw.LegacyIPv4, true, bits)
		if err != nil {
			return "", nil, err
		}
		out = append(out, p)
	}
	if raw.LegacyIPv6 != nil {
		if name == "" {
			name = "ipv6-address"
		}
		p, err := parseLegacyAddress("ipv6-address", *raw.LegacyIPv6, false, legacyIPv6PrefixLen)
		if err != nil {
			return "", nil, err
		}
		out = append(out, p)
	}
	return name, out, nil
}

// parseLegacyAddress parses an address with or without a prefix length;
// without one it gets bits, and bits < 0 means there is none to give.
func parseLegacyAddress(field, s string, want4 bool, bits int) (netip.Prefix, error) {
	family := map[bool]string{true: "IPv4", false: "IPv6"}[want4]
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = parsePrefix(field, s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4() != want4 {
			return netip.Prefix{}, cni.FieldError(field, "%q is not an %s address", s, family)
		}
		if bits < 0 {
			return netip.Prefix{}, cni.FieldError(field, "%q has no prefix length; write it in CIDR notation or give the subnet in \"subnetgateway-ipv4-address\" (e.g. \"10.0.1.1/24\")", s)
		}
		p = netip.PrefixFrom(a, bits)
	}
	if p.Addr().Is4() != want4 {
		return netip.Prefix{}, cni.FieldError(field, "%q is not an %s address", s, family)
	}
	return p, nil
}

// mergeGateways folds "gatewayIPAddresses", the ECS agent's
// "gateway-ip-addresses" and its older "subnetgateway-ipv4-address".
func mergeGateways(raw rawConfig) (cni.Merged[[]netip.Addr], error) {
	var choices []cni.Spelling[[]netip.Addr]
	for _, s := range []cni.Spelling[[]string]{
		{Field: fieldGateways, Value: raw.Gateways},
		{Field: "gateway-ip-addresses", Value: raw.ECSGateways},
	} {
		if s.Value == nil {
			continue
		}
		var list []netip.Addr
		for _, g := range *s.Value {
			a, err := parseGateway(s.Field, g)
			if err != nil {
				return cni.Merged[[]netip.Addr]{}, err
			}
			list = append(list, a)
		}
		choices = append(choices, cni.Spelling[[]netip.Addr]{Field: s.Field, Value: &list})
	}
	if raw.LegacyGateway != nil {
		const name = "subnetgateway-ipv4-address"
		s := *raw.LegacyGateway
		if p, err := netip.ParsePrefix(s); err == nil {
			s = p.Addr().String()
		}
		a, err := parseGateway(name, s)
		if err != nil {
			return cni.Merged[[]netip.Addr]{}, err
		}
		if !a.Is4() {
			return cni.Merged[[]netip.Addr]{}, cni.FieldError(name, "%q is not an IPv4 address", *raw.LegacyGateway)
		}
		choices = append(choices, cni.Spelling[[]netip.Addr]{Field: name, Value: &[]netip.Addr{a}})
	}
	return cni.MergeSpellings(sameAddrSet, joinAddrs, choices...)
}

func parseGateway(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		if _, perr := netip.ParsePrefix(s); perr == nil {
			return netip.Addr{}, cni.FieldError(field, "%q: a gateway is an address without a prefix length", s)
		}
		return netip.Addr{}, cni.FieldError(field, "%q is not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, cni.FieldError(field, "%q: no zone is needed, the route goes out of the ENI", s)
	case a.Is4In6():
		return netip.Addr{}, cni.FieldError(field, "%q is an IPv4-mapped IPv6 address; write the IPv4 address itself", s)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return netip.Addr{}, cni.FieldError(field, "%q cannot be a gateway", s)
	}
	return a, nil
}

func checkDuplicateAddresses(field string, addrs []netip.Prefix) error {
	seen := map[netip.Addr]netip.Prefix{}
	for _, p := range addrs {
		if q, ok := seen[p.Addr()]; ok {
			return cni.FieldError(field, "lists %s twice (%s and %s)", p.Addr(), q, p)
		}
		seen[p.Addr()] = p
	}
	return nil
}

// checkUseExistingNetwork accepts amazon-vpc-cni-plugins' flag only when it
// is off: an existing network is a Windows (HNS) notion.
func checkUseExistingNetwork(raw json.RawMessage) error {
	switch strings.TrimSpace(string(raw)) {
	case "", "null", "false", `"false"`:
		return nil
	}
	return cni.FieldError("useExistingNetwork", "%s is not supported: vpc-eni on Linux always moves the ENI into the container", raw)
}

func samePrefixSet(a, b []netip.Prefix) bool {
	return slices.Equal(sortedPrefixes(a), sortedPrefixes(b))
}

func sortedPrefixes(list []netip.Prefix) []netip.Prefix {
	out := slices.Clone(list)
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return out
}

func sameAddrSet(a, b []netip.Addr) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

func showPrefixes(list []netip.Prefix) string {
	s := make([]string, len(list))
	for i, p := range list {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func joinAddrs(list []netip.Addr) string {
	s := make([]string, len(list))
	for i, a := range list {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
