package task

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
)

// TestENINetworkConfig checks the vpc-eni config a task's ENI gets: its
// addresses with the subnet's prefix length (not /32: the subnet is on
// link, as on an instance), the subnet gateway, metadata blocked.
func TestENINetworkConfig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		r         Record
		addresses []any
		gateways  []any
	}{
		{"IPv4", Record{MAC: "02:00:00:00:00:01", ENIID: "eni-1", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5")},
			SubnetCIDR: netip.MustParsePrefix("10.0.0.0/20"), Gateway: netip.MustParseAddr("10.0.0.1")},
			[]any{"10.0.0.5/20"}, []any{"10.0.0.1"}},
		{"dual stack", Record{MAC: "02:00:00:00:00:02", ENIID: "eni-2", Addresses: []netip.Addr{netip.MustParseAddr("10.0.16.9")},
			SubnetCIDR: netip.MustParsePrefix("10.0.16.0/24"), Gateway: netip.MustParseAddr("10.0.16.1"),
			IPv6: []netip.Addr{netip.MustParseAddr("fd00::9")}, SubnetIPv6: netip.MustParsePrefix("fd00::/64")},
			[]any{"10.0.16.9/24", "fd00::9/64"}, []any{"10.0.16.1"}},
		{"no gateway known", Record{MAC: "02:00:00:00:00:03", ENIID: "eni-3", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")},
			SubnetCIDR: netip.MustParsePrefix("10.0.0.0/20")},
			[]any{"10.0.0.7/20"}, nil},
	} {
		list, err := Networks{}.eniList(&tc.r)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var conf map[string]any
		if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
			t.Fatal(err)
		}
		gws, _ := conf["gatewayIPAddresses"].([]any)
		if conf["type"] != "vpc-eni" || conf["mac"] != tc.r.MAC || conf["eniID"] != tc.r.ENIID || conf["blockInstanceMetadata"] != true ||
			!reflect.DeepEqual(conf["ipAddresses"], tc.addresses) || !reflect.DeepEqual(gws, tc.gateways) {
			t.Errorf("%s: config %v; want addresses %v, gateways %v, the MAC, the ENI ID and metadata blocked", tc.name, conf, tc.addresses, tc.gateways)
		}
	}
}
