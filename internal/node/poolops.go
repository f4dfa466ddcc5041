package node

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// withdraw takes free addresses (or whole free prefixes) out of the pool
// before they are given back to EC2. It fails (false) if any of them is no
// longer free.
func (a *Agent) withdraw(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.enis[eniID]
	if e == nil {
		return false
	}
	now := time.Now()
	check := append([]netip.Addr(nil), addrs...)
	for _, p := range prefixes {
		for ip := p.Masked().Addr(); p.Contains(ip); ip = ip.Next() {
			check = append(check, ip)
		}
	}
	for _, ip := range check {
		if !a.freeLocked(ip, now) {
			return false
		}
	}
	e.Secondary = slices.DeleteFunc(e.Secondary, func(x netip.Addr) bool { return slices.Contains(addrs, x) })
	e.Prefixes = slices.DeleteFunc(e.Prefixes, func(p netip.Prefix) bool { return slices.Contains(prefixes, p) })
	a.broadcast()
	return true
}

// restore puts back what withdraw took when EC2 refused to take it.
func (a *Agent) restore(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.enis[eniID]; e != nil {
		e.Secondary = appendNew(e.Secondary, addrs...)
		e.Prefixes = appendNew(e.Prefixes, prefixes...)
	}
	a.broadcast()
}

// removeEmptyENI takes an ENI out of the pool if no pod holds or recently
// held one of its addresses, and returns it (nil if it may not go).
func (a *Agent) removeEmptyENI(eniID string) *ENI {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.enis[eniID]
	if e == nil || e.Primary || !e.Ours {
		return nil
	}
	now := time.Now()
	for _, ad := range e.PodAddresses() {
		if !a.freeLocked(ad, now) {
			return nil
		}
	}
	delete(a.enis, eniID)
	a.broadcast()
	return e
}

// expireCooldowns forgets cooldowns that are over (or whose address left
// the node), in the store and in memory.
func (a *Agent) expireCooldowns() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	onNode := map[netip.Addr]bool{}
	for _, e := range a.enis {
		for _, ad := range e.PodAddresses() {
			onNode[ad] = true
		}
	}
	var done []netip.Addr
	for ad, t := range a.cooldowns {
		if !now.Before(t.Add(a.cfg.Pool.IPCooldown)) || !onNode[ad] {
			done = append(done, ad)
		}
	}
	if len(done) == 0 {
		return
	}
	if err := a.store.EndCooldown(done...); err != nil {
		a.log.Warn("end cooldowns", "err", err)
		return
	}
	for _, ad := range done {
		delete(a.cooldowns, ad)
	}
	a.broadcast()
}

func (a *Agent) nextCooldownEnd() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var first time.Time
	for _, t := range a.cooldowns {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if first.IsZero() {
		return time.Time{}, false
	}
	return first.Add(a.cfg.Pool.IPCooldown), true
}

// resync reads the truth from EC2: the node's ENIs and their addresses
// replace the agent's view; assignments whose address left the node are
// dropped; assignments of pods whose host veth is gone (a DEL that never
// reached the agent) are released; new ENIs' devices are set up.
func (a *Agent) resync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.EC2CallTimeout)
	defer cancel()
	a.m.reconciles.Inc()
	enis, err := a.ec2.NodeENIs(ctx, a.id.InstanceID)
	if err != nil {
		return fmt.Errorf("list the node's ENIs: %w", err)
	}
	fresh := map[string]*ENI{}
	waiting := map[string]pendingENI{} // attached in EC2, not usable
	for _, e := range enis {
		if !e.Attached {
			// Attaching or detaching: not usable, but it holds its slot.
			waiting[e.ID] = pendingENI{ENI: e, arriving: e.AttachStatus != "detaching"}
			continue
		}
		e.Primary = e.DeviceIndex == 0
		if !e.Primary {
			if err := a.net.SetupENI(e, a.cfg.Pool.MTU); err != nil {
				// The device may not be there yet (attach delay); the
				// next resync tries again. Its addresses are not used.
				a.log.Info("ENI not ready", "eni", e.ID, "err", err)
				waiting[e.ID] = pendingENI{ENI: e, arriving: true}
				continue
			}
		}
		fresh[e.ID] = e
	}
	// The store is read under mu: ADDs and DELs write it under mu, and an
	// assignment made between a read outside and the mirror rebuilt below
	// would vanish from the mirror, so that the next ADD picked its address
	// again.
	a.mu.Lock()
	defer a.mu.Unlock()
	assignments, err := a.store.Assignments()
	if err != nil {
		return err
	}
	cooldowns, err := a.store.Cooldowns()
	if err != nil {
		return err
	}
	onNode := map[netip.Addr]string{}
	for _, e := range fresh {
		for _, ad := range e.PodAddresses() {
			onNode[ad] = e.ID
		}
	}
	// An ENI that was attached but whose device is not up yet still owns
	// its addresses in EC2: keep assignments on it rather than drop them.
	pending := map[netip.Addr]bool{}
	for _, e := range waiting {
		for _, ad := range e.PodAddresses() {
			pending[ad] = true
		}
	}
	a.enis = fresh
	a.pending = waiting
	a.assigned = map[netip.Addr]Key{}
	now := time.Now()
	for _, as := range assignments {
		eni, ok := onNode[as.Address]
		switch {
		case !ok && !pending[as.Address]:
			a.log.Warn("dropping an assignment whose address left the node", "attachment", as.Key.String(), "address", as.Address)
			if err := a.store.Drop(as.Key); err != nil {
				return err
			}
			continue
		case ok && eni != as.ENI:
			as.ENI = eni
		}
		if now.Sub(as.AssignedAt) > a.cfg.StaleAssignmentAge && !a.net.HasLink(nodeapi.HostVethName(a.cfg.Pool.VethPrefix, as.Key.Attachment())) {
			// The pod's veth is gone and its DEL never reached us (the
			// agent was down): finish the release now.
			a.log.Info("releasing the address of a pod whose veth is gone", "attachment", as.Key.String(), "address", as.Address)
			if _, _, err := a.store.Release(as.Key, now); err != nil {
				return err
			}
			cooldowns[as.Address] = now
			continue
		}
		a.assigned[as.Address] = as.Key
	}
	a.cooldowns = cooldowns
	a.ready = true
	a.broadcast()
	return nil
}

// ensureDeleteOnTermination marks the agent's attached ENIs
// DeleteOnTermination where an earlier attempt failed, so that the
// instance's end takes them along.
func (a *Agent) ensureDeleteOnTermination(ctx context.Context) {
	a.mu.Lock()
	var todo []*ENI
	for _, e := range a.enis {
		if e.Ours && !e.Primary && !e.DeleteOnTermination && e.AttachmentID != "" {
			todo = append(todo, e)
		}
	}
	a.mu.Unlock()
	for _, e := range todo {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.EC2CallTimeout)
		err := a.ec2.SetDeleteOnTermination(cctx, e.ID, e.AttachmentID)
		cancel()
		if err != nil {
			a.noteEC2Error("ModifyNetworkInterfaceAttribute", err)
			a.log.Warn("mark ENI DeleteOnTermination", "eni", e.ID, "err", err)
			return
		}
		a.mu.Lock()
		e.DeleteOnTermination = true
		a.mu.Unlock()
	}
}

// sweepLeaked deletes ENIs tagged for this node that are available (no
// longer attached) and older than the leaked age: an agent killed between
// create and attach, or a detach whose delete never came.
func (a *Agent) sweepLeaked(ctx context.Context) {
	if a.cfg.Pool.DisableLeakedENICleanup {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.EC2CallTimeout)
	defer cancel()
	enis, err := a.ec2.LeakedENIs(ctx, a.id.VPCID, a.id.InstanceID)
	if err != nil {
		a.noteEC2Error("DescribeNetworkInterfaces", err)
		a.log.Warn("list leaked ENIs", "err", err)
		return
	}
	for _, e := range enis {
		if time.Since(e.CreatedAt) < a.cfg.Pool.LeakedENIAge {
			continue
		}
		if err := a.ec2.DeleteENI(ctx, e.ID); err != nil {
			a.noteEC2Error("DeleteNetworkInterface", err)
			a.log.Warn("delete leaked ENI", "eni", e.ID, "err", err)
			continue
		}
		a.recordAs("delete-leaked-eni", "delete leaked ENI "+e.ID,
			fmt.Sprintf("available and tagged for this node since %s", e.CreatedAt.Format(time.RFC3339)), 0, nil)
	}
}
