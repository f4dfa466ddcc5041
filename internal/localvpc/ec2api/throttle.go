package ec2api

import (
	"strings"
	"sync"
	"time"
)

// Bucket is a token bucket: Capacity requests at once, refilled at
// RefillPerSecond.
type Bucket struct {
	Capacity        float64 `json:"capacity"`
	RefillPerSecond float64 `json:"refillPerSecond"`
}

// ThrottleConfig sizes EC2's request token buckets. EC2 keeps one bucket
// per action, sized by the action's category; a describe call without
// filters and pagination draws from a second, smaller bucket of its own.
type ThrottleConfig struct {
	Disabled              bool   `json:"disabled,omitempty"`
	NonMutating           Bucket `json:"nonMutating"`
	UnfilteredNonMutating Bucket `json:"unfilteredNonMutating"`
	Mutating              Bucket `json:"mutating"`
	ResourceIntensive     Bucket `json:"resourceIntensive"`
	// Actions overrides the category for single actions (EC2's
	// "uncategorized actions").
	Actions map[string]Bucket `json:"actions,omitempty"`
}

// DefaultThrottle is EC2's documented request-rate limits ("Request token
// bucket sizes and refill rates") for the actions the local VPC serves.
func DefaultThrottle() ThrottleConfig {
	return ThrottleConfig{
		NonMutating:           Bucket{Capacity: 100, RefillPerSecond: 20},
		UnfilteredNonMutating: Bucket{Capacity: 50, RefillPerSecond: 10},
		Mutating:              Bucket{Capacity: 50, RefillPerSecond: 5},
		ResourceIntensive:     Bucket{Capacity: 50, RefillPerSecond: 5},
		Actions: map[string]Bucket{
			"AssignIpv6Addresses":             {Capacity: 100, RefillPerSecond: 5},
			"AssignPrivateIpAddresses":        {Capacity: 100, RefillPerSecond: 5},
			"CreateNetworkInterface":          {Capacity: 100, RefillPerSecond: 5},
			"DeleteNetworkInterface":          {Capacity: 100, RefillPerSecond: 5},
			"ModifyNetworkInterfaceAttribute": {Capacity: 100, RefillPerSecond: 5},
			"CreateTags":                      {Capacity: 100, RefillPerSecond: 10},
			"DeleteTags":                      {Capacity: 100, RefillPerSecond: 10},
		},
	}
}

// unfilteredActions are the describe actions that EC2 throttles harder when
// called with neither a filter nor pagination.
var unfilteredActions = map[string]bool{
	"DescribeInstances": true, "DescribeNetworkInterfaces": true, "DescribeSecurityGroups": true,
}

var resourceIntensiveActions = map[string]bool{
	"AuthorizeSecurityGroupIngress": true, "RevokeSecurityGroupIngress": true,
}

// bucketFor picks the bucket a request draws from: its key and its size.
// Pure, so that the categorisation is tested with a table.
func (c ThrottleConfig) bucketFor(action string, filtered bool) (string, Bucket) {
	if b, ok := c.Actions[action]; ok {
		return action, b
	}
	switch {
	case isNonMutating(action) && unfilteredActions[action] && !filtered:
		return action + "/unfiltered", c.UnfilteredNonMutating
	case isNonMutating(action):
		return action, c.NonMutating
	case resourceIntensiveActions[action]:
		return action, c.ResourceIntensive
	}
	return action, c.Mutating
}

func isNonMutating(action string) bool {
	for _, p := range []string{"Describe", "List", "Search", "Get"} {
		if strings.HasPrefix(action, p) {
			return true
		}
	}
	return false
}

// throttle holds the live buckets.
type throttle struct {
	mu      sync.Mutex
	cfg     ThrottleConfig
	buckets map[string]*tokens
	now     func() time.Time
}

type tokens struct {
	level float64
	last  time.Time
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	return &throttle{cfg: cfg, buckets: map[string]*tokens{}, now: now}
}

// allow takes a token for the request, or reports that it is throttled.
func (t *throttle) allow(action string, filtered bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cfg.Disabled {
		return true
	}
	key, size := t.cfg.bucketFor(action, filtered)
	now := t.now()
	b, ok := t.buckets[key]
	if !ok {
		b = &tokens{level: size.Capacity, last: now}
		t.buckets[key] = b
	}
	b.level = min(size.Capacity, b.level+now.Sub(b.last).Seconds()*size.RefillPerSecond)
	b.last = now
	if b.level < 1 {
		return false
	}
	b.level--
	return true
}
