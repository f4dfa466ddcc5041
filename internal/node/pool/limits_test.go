package pool

import (
	"errors"
	"strings"
	"testing"
)

// TestNewLimits checks max pods against the EKS AMI's max-pods-calculator.sh
// (--show-max-allowed) and the published eni-max-pods.txt values.
func TestNewLimits(t *testing.T) {
	tests := []struct {
		name        string
		it          InstanceType
		set         func(*Config)
		enis, slots int
		maxPods     int
		recommended int
	}{
		{"t3.small", t3small, nil, 3, 3, 11, 11},
		{"m5.large", m5large, nil, 3, 9, 29, 29},
		{"m5.xlarge", m5xlarge, nil, 4, 14, 58, 58},
		{"c5.4xlarge", c54xlarge, nil, 8, 29, 234, 110},
		{"m5.large, prefixes: 3 x 9 x 16 + 2", m5large, func(c *Config) { c.PrefixDelegation = true }, 3, 9, 434, 110},
		{"m5.24xlarge, prefixes: above 30 vCPUs the ceiling is 250", m524xlarge, func(c *Config) { c.PrefixDelegation = true }, 15, 49, 11762, 250},
		{"m5.large, custom networking: the primary carries none", m5large, func(c *Config) { c.CustomNetworking = true }, 3, 9, 20, 20},
		{"m5.large, MAX_ENI=2", m5large, func(c *Config) { c.MaxENI = 2 }, 2, 9, 20, 20},
		{"m5.large, MAX_ENI=5 is above the type's 3", m5large, func(c *Config) { c.MaxENI = 5 }, 3, 9, 29, 29},
		{"m4.large (not Nitro), no prefixes asked", m4large, nil, 2, 9, 20, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewLimits(tt.it, with(tt.set))
			if err != nil {
				t.Fatal(err)
			}
			if l.ENIs != tt.enis || l.TypeENIs != tt.it.ENIs || l.SlotsPerENI != tt.slots || l.MaxPods != tt.maxPods {
				t.Errorf("NewLimits = %+v, want %d ENIs, %d slots, max pods %d", l, tt.enis, tt.slots, tt.maxPods)
			}
			if got := RecommendedMaxPods(tt.it, l); got != tt.recommended {
				t.Errorf("RecommendedMaxPods = %d, want %d", got, tt.recommended)
			}
		})
	}
}

func TestNewLimitsRefuses(t *testing.T) {
	_, err := NewLimits(m4large, with(func(c *Config) { c.PrefixDelegation = true }))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Name != "ENABLE_PREFIX_DELEGATION" || !strings.Contains(err.Error(), "m4.large") {
		t.Errorf("prefixes on m4.large: %v, want an ENABLE_PREFIX_DELEGATION error naming the type", err)
	}
	if _, err := NewLimits(InstanceType{Name: "x.bad", ENIs: 1, IPv4PerENI: 1}, DefaultConfig()); err == nil || !strings.Contains(err.Error(), "x.bad") {
		t.Errorf("1 address per ENI: %v, want an error naming the type", err)
	}
}
