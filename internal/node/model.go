package node

import (
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// ENI is what the agent knows of one of its node's ENIs. Its addresses are
// the ones EC2 confirmed (a describe or an assign reply), never instance
// metadata's view, which lags behind EC2.
type ENI struct {
	ID           string           `json:"id"`
	MAC          net.HardwareAddr `json:"-"`
	MACString    string           `json:"mac"`
	DeviceIndex  int              `json:"deviceIndex"`
	AttachmentID string           `json:"attachmentID,omitempty"`
	Primary      bool             `json:"primary"`
	SubnetID     string           `json:"subnetID"`
	SubnetCIDR   netip.Prefix     `json:"subnetCIDR"`
	Groups       []string         `json:"securityGroups"`
	PrimaryIP    netip.Addr       `json:"primaryIP"`
	Secondary    []netip.Addr     `json:"secondaryIPs"`
	Prefixes     []netip.Prefix   `json:"prefixes"`
	Ours         bool             `json:"createdByAgent"` // tagged vpcnet:node for this node
	Unmanaged    bool             `json:"unmanaged"`      // tagged vpcnet:no-manage
	CreatedAt    time.Time        `json:"createdAt"`      // vpcnet:created-at, else first seen
	Attached     bool             `json:"attached"`
	// AttachStatus is EC2's attachment status: attaching, attached,
	// detaching.
	AttachStatus string `json:"attachStatus,omitempty"`
	// DeleteOnTermination: EC2 deletes the ENI when the instance ends.
	DeleteOnTermination bool `json:"deleteOnTermination"`
}

// pendingENI is an ENI attached to the node in EC2 that carries no pods
// yet or any more: its attachment is attaching or detaching, or its device
// has not shown up. It still holds one of the instance's ENI slots and its
// device index, so the pool policy must see it, as an ENI it may not use.
type pendingENI struct {
	*ENI
	// arriving: it will carry pods once its device is up (not detaching).
	arriving bool
}

// PodAddresses are the addresses of the ENI that pods may take: its
// secondary addresses and every address of its prefixes, in order.
func (e *ENI) PodAddresses() []netip.Addr {
	out := append([]netip.Addr(nil), e.Secondary...)
	for _, p := range e.Prefixes {
		for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
			out = append(out, a)
		}
	}
	return out
}

// RouteTable is the routing table of the ENI's device: 0 (main) for the
// primary ENI, device index + 1 otherwise, as aws-node numbers them.
func (e *ENI) RouteTable() int {
	if e.Primary {
		return 0
	}
	return e.DeviceIndex + 1
}

// Gateway is the subnet's router (its network address + 1), which AWS
// answers on every subnet.
func (e *ENI) Gateway() netip.Addr {
	return e.SubnetCIDR.Masked().Addr().Next()
}

func sortedENIs(m map[string]*ENI) []*ENI {
	out := make([]*ENI, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceIndex < out[j].DeviceIndex })
	return out
}

// subnetFlags is what EC2 said recently about a subnet's space.
type subnetFlags struct {
	noPrefixesUntil  time.Time // InsufficientCidrBlocks
	noAddressesUntil time.Time // InsufficientFreeAddressesInSubnet
}

// poolStateLocked is the node as the pool policy sees it at now: the ENIs
// with every pod address marked assigned or cooling, and the ADDs waiting
// for an address. Callers hold mu.
func (a *Agent) poolStateLocked(now time.Time) pool.State {
	s := pool.State{
		Zone:             a.id.Zone,
		CustomNetworking: a.cfg.Pool.CustomNetworking,
		Subnets:          map[string]pool.SubnetState{},
		Throttled:        now.Before(a.throttledUntil),
		Waiting:          a.waiting,
	}
	for id, f := range a.subnets {
		s.Subnets[id] = pool.SubnetState{NoFreePrefixes: now.Before(f.noPrefixesUntil), NoFreeAddresses: now.Before(f.noAddressesUntil)}
	}
	addr := func(ip netip.Addr) pool.Address {
		pa := pool.Address{IP: ip}
		if _, ok := a.assigned[ip]; ok {
			pa.Assigned = true
		} else if t, ok := a.cooldowns[ip]; ok {
			pa.CooldownUntil = t.Add(a.cfg.Pool.IPCooldown)
		}
		return pa
	}
	eni := func(e *ENI) pool.ENI {
		pe := pool.ENI{ID: e.ID, DeviceIndex: e.DeviceIndex, Primary: e.Primary, AttachedAt: e.CreatedAt,
			Ours: e.Ours, Unmanaged: e.Unmanaged, SubnetID: e.SubnetID}
		for _, ip := range e.Secondary {
			pe.Addresses = append(pe.Addresses, addr(ip))
		}
		for _, p := range e.Prefixes {
			pp := pool.Prefix{Prefix: p}
			for ip := p.Masked().Addr(); p.Contains(ip); ip = ip.Next() {
				if pa := addr(ip); pa.Assigned || pa.CooldownUntil.After(now) {
					pp.Addresses = append(pp.Addresses, pa)
				}
			}
			pe.Prefixes = append(pe.Prefixes, pp)
		}
		return pe
	}
	for _, e := range sortedENIs(a.enis) {
		s.ENIs = append(s.ENIs, eni(e))
	}
	for _, p := range a.pending {
		if p.arriving && p.Ours && !p.Unmanaged {
			// Its addresses are coming: the pool counts them, uses none.
			pe := eni(p.ENI)
			pe.Arriving = true
			s.ENIs = append(s.ENIs, pe)
			continue
		}
		s.ENIs = append(s.ENIs, pool.ENI{ID: p.ID, DeviceIndex: p.DeviceIndex, Primary: p.Primary,
			AttachedAt: p.CreatedAt, Ours: p.Ours, Unmanaged: true, SubnetID: p.SubnetID})
	}
	return s
}

// arrivingLocked says whether an ENI is attaching to the node: a pool that
// looks full will grow when it is up. Callers hold mu.
func (a *Agent) arrivingLocked() bool {
	for _, p := range a.pending {
		if p.arriving {
			return true
		}
	}
	return false
}

// addrStateLocked names an address's state for reports: free, assigned,
// cooldown. Callers hold mu.
func (a *Agent) addrStateLocked(ip netip.Addr, now time.Time) (string, time.Time) {
	if _, ok := a.assigned[ip]; ok {
		return "assigned", time.Time{}
	}
	if t, ok := a.cooldowns[ip]; ok && now.Before(t.Add(a.cfg.Pool.IPCooldown)) {
		return "cooldown", t.Add(a.cfg.Pool.IPCooldown)
	}
	return "free", time.Time{}
}

// freeLocked says whether ip is free now (on the node, not assigned, not
// cooling). Callers hold mu.
func (a *Agent) freeLocked(ip netip.Addr, now time.Time) bool {
	st, _ := a.addrStateLocked(ip, now)
	return st == "free"
}
