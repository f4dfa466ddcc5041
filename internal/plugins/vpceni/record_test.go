package vpceni

import (
	"net"
	"strings"
	"testing"
)

func TestHostRecordRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 240)
	tests := []struct {
		name  string
		rec   hostRecord
		alias string
		back  hostRecord // what parsing the alias gives
	}{
		{"plain", hostRecord{Name: "eth1", MTU: 9001}, "vpc-eni host=eth1 mtu=9001", hostRecord{Name: "eth1", MTU: 9001}},
		{"old alias kept", hostRecord{Name: "ens6", MTU: 1500, Alias: "uplink to rack 4"},
			"vpc-eni host=ens6 mtu=1500 alias=uplink to rack 4", hostRecord{Name: "ens6", MTU: 1500, Alias: "uplink to rack 4"}},
		{"old alias with key=value inside", hostRecord{Name: "eth2", MTU: 1500, Alias: "host=evil mtu=1"},
			"vpc-eni host=eth2 mtu=1500 alias=host=evil mtu=1", hostRecord{Name: "eth2", MTU: 1500, Alias: "host=evil mtu=1"}},
		{"old alias too long to fit is dropped", hostRecord{Name: "eth3", MTU: 9001, Alias: long},
			"vpc-eni host=eth3 mtu=9001", hostRecord{Name: "eth3", MTU: 9001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alias := tt.rec.String()
			if alias != tt.alias {
				t.Errorf("String() = %q, want %q", alias, tt.alias)
			}
			if len(alias) > maxAliasLen {
				t.Errorf("alias is %d bytes, the kernel takes %d", len(alias), maxAliasLen)
			}
			back, ok := parseHostRecord(alias)
			if !ok || back != tt.back {
				t.Errorf("parseHostRecord(%q) = %+v, %v; want %+v, true", alias, back, ok, tt.back)
			}
		})
	}
}

func TestParseHostRecordRejectsForeignAliases(t *testing.T) {
	for _, alias := range []string{"", "uplink", "vpc-eni", "vpc-eni mtu=9001", "vpc-eni host=eth1 mtu=lots", "vpc-enix host=eth1"} {
		if rec, ok := parseHostRecord(alias); ok {
			t.Errorf("parseHostRecord(%q) = %+v, true; want false", alias, rec)
		}
	}
}

func TestFallbackHostName(t *testing.T) {
	mac, _ := net.ParseMAC("0a:1b:2c:3d:4e:5f")
	name := fallbackHostName(mac)
	if name != "eni0a1b2c3d4e5f" || len(name) > 15 {
		t.Errorf("fallbackHostName = %q (%d bytes), want eni0a1b2c3d4e5f within 15 bytes", name, len(name))
	}
}
