package pool

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestChurn starts and stops pods at random, with time passing, under each
// kind of target, and checks after every event that the pool converges
// without flapping (no growth and shrink in one convergence), that apply's
// invariants hold throughout, and that a pod finds an address whenever the
// node is not at a limit.
func TestChurn(t *testing.T) {
	configs := []struct {
		name string
		it   InstanceType
		set  func(*Config)
	}{
		{"WARM_ENI_TARGET=1", m5large, nil},
		{"WARM_ENI_TARGET=2", t3small, func(c *Config) { c.WarmENITarget = 2 }},
		{"WARM_IP_TARGET=2 MINIMUM_IP_TARGET=23", m5large, func(c *Config) { c.WarmIPTarget, c.MinimumIPTarget = 2, 23 }},
		{"WARM_IP_TARGET=1", t3small, func(c *Config) { c.WarmIPTarget = 1 }},
		{"prefixes WARM_PREFIX_TARGET=1", m5large, func(c *Config) { c.PrefixDelegation = true }},
		{"prefixes WARM_IP_TARGET=5 MINIMUM_IP_TARGET=20", t3small, func(c *Config) { c.PrefixDelegation, c.WarmIPTarget, c.MinimumIPTarget = true, 5, 20 }},
		{"MAX_ENI=2", m5large, func(c *Config) { c.MaxENI = 2 }},
	}
	for _, tc := range configs {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			n := newNode(t, tc.it, with(tc.set))
			n.converge()
			for step := range 400 {
				switch {
				case rng.IntN(2) == 0 && len(n.pods) > 0:
					n.removePods(1 + rng.IntN(min(3, len(n.pods))))
				default:
					if _, _, ok := Pick(n.s, n.now); !ok {
						if x := Exhausted(n.s, n.cfg, n.lim, n.now); x.Cause == CauseGrowing {
							t.Fatalf("step %d: the pool converged but says it is growing: %s", step, x.Message)
						}
						break // at a limit: the pod waits
					}
					n.startPods(1)
				}
				n.now = n.now.Add(time.Duration(rng.IntN(20)) * time.Second)
				from := len(n.log)
				n.converge()
				// Deleting an ENI that holds no address is not a flap.
				grew, shrank := false, false
				for i, a := range n.log[from:] {
					grew = grew || a.Grows()
					shrank = shrank || n.freed[from+i] > 0
				}
				if grew && shrank {
					t.Fatalf("step %d: one convergence both grew and shrank: %v", step, n.log[from:])
				}
			}
		})
	}
}
