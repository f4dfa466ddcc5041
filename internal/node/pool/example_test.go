package pool_test

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// The agent's loop: decide, act, observe, until nothing is left to do. Here
// "act" is done on the state directly; vpcnetd calls EC2 and reads the node
// back instead.
func ExampleDecide() {
	cfg, err := pool.LoadConfig([]byte(`{"warmIPTarget": 2}`), func(k string) (string, bool) {
		if k == "MINIMUM_IP_TARGET" {
			return "5", true
		}
		return "", false
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	limits, err := pool.NewLimits(pool.InstanceType{Name: "t3.small", ENIs: 3, IPv4PerENI: 4, PrefixDelegation: true}, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	state := pool.State{Zone: "us-east-1a", ENIs: []pool.ENI{{ID: "eni-0", Primary: true, SubnetID: "subnet-a"}}}
	next := 1
	addrs := func(n int) (out []pool.Address) {
		for range n {
			out = append(out, pool.Address{IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(next)})})
			next++
		}
		return out
	}
	for {
		d := pool.Decide(state, cfg, limits, now)
		fmt.Println(d.Action, d.ENI, d.Count)
		switch d.Action {
		case pool.AssignAddresses:
			state.ENIs[0].Addresses = append(state.ENIs[0].Addresses, addrs(d.Count)...)
			continue
		case pool.CreateENI:
			state.ENIs = append(state.ENIs, pool.ENI{ID: "eni-1", DeviceIndex: d.DeviceIndex, Ours: true,
				AttachedAt: now, SubnetID: d.SubnetID, Addresses: addrs(d.Count)})
			continue
		}
		break
	}
	eni, addr, _ := pool.Pick(state, now)
	fmt.Println("max pods", limits.MaxPods, "first pod", eni, addr)
	// Output:
	// assign-addresses eni-0 3
	// create-eni  2
	// nothing  0
	// max pods 11 first pod eni-0 10.0.0.1
}
