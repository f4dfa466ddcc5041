package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// run is the reconciler: the agent's one EC2 worker. It wakes on events
// (an ADD, a release, a cooldown ending), on a slow timer that re-reads EC2,
// and after backoff; it then carries out pool decisions one at a time until
// the policy has nothing more to do.
func (a *Agent) run(ctx context.Context) {
	defer a.arrivals.Wait()
	defer a.background.Wait()
	resync := time.NewTimer(0)
	defer resync.Stop()
	// nextResync is when the resync timer fires; resyncWithin brings it
	// forward (never back, so that a stream of wakes cannot starve it).
	nextResync := time.Now()
	resyncWithin := func(d time.Duration) {
		if at := time.Now().Add(d); at.Before(nextResync) {
			resync.Reset(d)
			nextResync = at
		}
	}
	cooldown := time.NewTimer(time.Hour)
	defer cooldown.Stop()
	leaked := time.NewTimer(a.cfg.LeakedENIInterval)
	defer leaked.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-cooldown.C:
		case <-a.resyncNow:
			// An attaching ENI's device is up: take it into the pool
			// now (set up from EC2's view), not at the next recheck.
			if err := a.resync(ctx); err != nil {
				a.log.Warn("reconcile with EC2 after an ENI arrived failed", "err", err)
				a.noteEC2Error("DescribeNetworkInterfaces", err)
				resyncWithin(pendingRecheck)
			}
		case <-resync.C:
			a.syncKube(ctx)
			if err := a.resync(ctx); err != nil {
				a.log.Warn("reconcile with EC2 failed", "err", err)
				a.noteEC2Error("DescribeNetworkInterfaces", err)
				d := a.backoffAfter(err, &backoff)
				resync.Reset(d)
				nextResync = time.Now().Add(d)
				continue
			}
			resync.Reset(a.cfg.Pool.ReconcileInterval)
			nextResync = time.Now().Add(a.cfg.Pool.ReconcileInterval)
			a.ensureDeleteOnTermination(ctx)
		case <-leaked.C:
			a.sweepLeaked(ctx)
			leaked.Reset(a.cfg.LeakedENIInterval)
		}
		if !a.isReady() {
			continue
		}
		for steps := 0; steps < 100 && ctx.Err() == nil; steps++ {
			act := a.decide(time.Now())
			if act.Action == pool.Nothing {
				break
			}
			start := time.Now()
			err := a.carryOut(ctx, act)
			a.record(act, time.Since(start), err)
			if err != nil {
				a.log.Warn("pool action failed", "action", act.Action, "eni", act.ENI, "reason", act.Reason, "err", err)
				a.noteEC2Error(act.Action.String(), err)
				a.setSoftBlock(explainGrowth(act, err))
				wait := a.backoffAfter(err, &backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				if act.Action == pool.CreateENI || act.Action == pool.DeleteENI {
					// The ENI may be half made or half gone (created,
					// attached, detached): read EC2 before deciding again,
					// or the next decision works from a node that is not
					// there.
					if err := a.resync(ctx); err != nil {
						a.log.Warn("reconcile with EC2 after a failed action", "err", err)
					}
				}
				continue
			}
			backoff = 0
			a.setSoftBlock(nil)
		}
		a.expireCooldowns()
		if end, ok := a.nextCooldownEnd(); ok {
			cooldown.Reset(time.Until(end) + time.Millisecond)
		}
		if a.hasPending() {
			// An ENI is attaching or detaching: look again soon rather
			// than at the next slow resync.
			resyncWithin(pendingRecheck)
		}
	}
}

// pendingRecheck is how soon EC2 is read again while an ENI is attaching
// or detaching.
const pendingRecheck = 2 * time.Second

func (a *Agent) hasPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending) > 0
}

// backoffAfter is how long the worker rests after err: exponential with
// jitter from 250 ms to 20 s for throttling (EC2's token buckets refill
// slowly, and a node that keeps asking drains them for every other node
// of the account), 1 s for other errors.
func (a *Agent) backoffAfter(err error, cur *time.Duration) time.Duration {
	if !cloud.IsThrottled(err) {
		*cur = 0
		return time.Second
	}
	return throttleBackoff(cur)
}

// throttleBackoff doubles *cur from 250 ms up to 20 s and returns a wait
// drawn from its upper half, so that nodes throttled together do not come
// back together.
func throttleBackoff(cur *time.Duration) time.Duration {
	switch {
	case *cur == 0:
		*cur = 250 * time.Millisecond
	case *cur < 20*time.Second:
		*cur *= 2
	}
	return *cur/2 + time.Duration(rand.Int64N(int64(*cur/2)+1))
}

// explainGrowth turns a failed growth into what a waiting ADD is told.
func explainGrowth(act pool.Decision, err error) error {
	code := errorCode(err)
	switch cloud.Classify(err) {
	case cloud.KindThrottled:
		return fmt.Errorf("EC2 is throttling the agent's calls (%s on %s); it backs off and retries", code, act.Action)
	case cloud.KindSubnetFull:
		return fmt.Errorf("the subnet is full (%s on %s)", code, act.Action)
	case cloud.KindNoFreePrefix:
		return fmt.Errorf("the subnet has no free /28 for a prefix (%s); falling back to single addresses", code)
	case cloud.KindAddressLimit, cloud.KindAttachmentLimit:
		return fmt.Errorf("the node is at its instance type's limit (%s on %s)", code, act.Action)
	}
	return fmt.Errorf("%s failed: %w", act.Action, err)
}

func (a *Agent) isReady() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready
}

// setSoftBlock publishes why the last growth failed (nil: it did not).
// Waiting ADDs keep waiting, and are told this at their deadline.
func (a *Agent) setSoftBlock(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.softBlock = err
	a.broadcast()
}

// decide asks the pool policy for the next step.
func (a *Agent) decide(now time.Time) pool.Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	return pool.Decide(a.poolStateLocked(now), a.poolConfigLocked(), a.limits, now)
}

func (a *Agent) record(act pool.Decision, took time.Duration, err error) {
	a.recordAs(act.Action.String(), describeAction(act), act.Reason, took, err)
}

func (a *Agent) recordAs(kind, what, reason string, took time.Duration, err error) {
	a.m.decisions.WithLabelValues(kind).Inc()
	r := DecisionRecord{At: time.Now().UTC(), Action: what, Reason: reason, Took: took}
	if err != nil {
		r.Error = err.Error()
	}
	a.mu.Lock()
	a.history = append(a.history, r)
	if len(a.history) > historyLen {
		a.history = a.history[len(a.history)-historyLen:]
	}
	a.mu.Unlock()
	if err == nil {
		a.log.Info("pool action", "action", r.Action, "reason", reason, "took", took)
	}
}

func describeAction(act pool.Decision) string {
	switch act.Action {
	case pool.CreateENI:
		what := "addresses"
		if act.WithPrefixes {
			what = "prefixes"
		}
		return fmt.Sprintf("create an ENI in %s with %d %s at device %d", act.SubnetID, act.Count, what, act.DeviceIndex)
	case pool.AssignAddresses:
		return fmt.Sprintf("assign %s to %s", count(act.Count, "address", "addresses"), act.ENI)
	case pool.AssignPrefixes:
		return fmt.Sprintf("assign %s to %s", count(act.Count, "prefix", "prefixes"), act.ENI)
	case pool.UnassignAddresses:
		return fmt.Sprintf("unassign %s from %s", count(len(act.Addresses), "address", "addresses"), act.ENI)
	case pool.UnassignPrefixes:
		return fmt.Sprintf("unassign %s from %s", count(len(act.Prefixes), "prefix", "prefixes"), act.ENI)
	case pool.DeleteENI:
		return fmt.Sprintf("detach and delete %s", act.ENI)
	}
	return act.Action.String()
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func (a *Agent) noteEC2Error(action string, err error) {
	rec := EC2ErrorRecord{At: time.Now().UTC(), Action: action, Code: errorCode(err), Error: err.Error()}
	a.mu.Lock()
	a.lastErrs = append(a.lastErrs, rec)
	if len(a.lastErrs) > historyLen {
		a.lastErrs = a.lastErrs[len(a.lastErrs)-historyLen:]
	}
	a.mu.Unlock()
}

// carryOut makes one decision real. Addresses and ENIs that are leaving
// leave the pool before the EC2 call, so no ADD picks them meanwhile; new
// ones join only once EC2 confirmed them (and, for an ENI, once its device
// is up and routed).
func (a *Agent) carryOut(runCtx context.Context, act pool.Decision) error {
	ctx, cancel := context.WithTimeout(runCtx, a.cfg.EC2CallTimeout)
	defer cancel()
	switch act.Action {
	case pool.CreateENI:
		return a.createENI(runCtx, ctx, act)
	case pool.AssignAddresses:
		got, err := a.ec2.AssignIPv4(ctx, act.ENI, act.Count)
		if err != nil {
			a.noteSubnetError(a.subnetOf(act.ENI), err)
			return err
		}
		a.mu.Lock()
		if e := a.eniLocked(act.ENI); e != nil {
			e.Secondary = appendNew(e.Secondary, got...)
		}
		a.broadcast()
		a.mu.Unlock()
		return nil
	case pool.AssignPrefixes:
		got, err := a.ec2.AssignPrefixes(ctx, act.ENI, act.Count)
		if err != nil {
			a.noteSubnetError(a.subnetOf(act.ENI), err)
			return err
		}
		a.mu.Lock()
		if e := a.eniLocked(act.ENI); e != nil {
			e.Prefixes = appendNew(e.Prefixes, got...)
		}
		a.broadcast()
		a.mu.Unlock()
		return nil
	case pool.UnassignAddresses:
		if !a.withdraw(act.ENI, act.Addresses, nil) {
			return nil // a pod took one meanwhile: decide again
		}
		if err := a.ec2.UnassignIPv4(ctx, act.ENI, act.Addresses); err != nil {
			a.restore(act.ENI, act.Addresses, nil)
			return err
		}
		return nil
	case pool.UnassignPrefixes:
		if !a.withdraw(act.ENI, nil, act.Prefixes) {
			return nil
		}
		if err := a.ec2.UnassignPrefixes(ctx, act.ENI, act.Prefixes); err != nil {
			a.restore(act.ENI, nil, act.Prefixes)
			return err
		}
		return nil
	case pool.DeleteENI:
		e := a.removeEmptyENI(act.ENI)
		if e == nil {
			return nil
		}
		if err := a.net.TeardownENI(e); err != nil {
			a.log.Warn("tear down ENI routing", "eni", e.ID, "err", err)
		}
		if err := a.ec2.DetachAndDeleteENI(ctx, e.ID, e.AttachmentID); err != nil {
			// Still attached or still there: the next resync brings it
			// back into the pool, and the leaked-ENI sweep deletes it if
			// it ends up detached.
			return err
		}
		return nil
	}
	return fmt.Errorf("unknown pool action %v", act.Action)
}

func (a *Agent) subnetOf(eniID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.eniLocked(eniID); e != nil {
		return e.SubnetID
	}
	return ""
}

// eniLocked is the ENI with that ID, attached and set up or still
// arriving (growth may fill an ENI while it attaches); nil if neither.
// Callers hold mu.
func (a *Agent) eniLocked(id string) *ENI {
	if e := a.enis[id]; e != nil {
		return e
	}
	if p, ok := a.pending[id]; ok && p.arriving {
		return p.ENI
	}
	return nil
}

// noteSubnetError remembers what EC2 said of a subnet's space (and of its
// throttling), for the pool policy's next decisions.
func (a *Agent) noteSubnetError(subnet string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	f := a.subnets[subnet]
	switch cloud.Classify(err) {
	case cloud.KindNoFreePrefix:
		f.noPrefixesUntil = now.Add(a.cfg.NoCidrBackoff)
	case cloud.KindSubnetFull:
		f.noAddressesUntil = now.Add(a.cfg.NoCidrBackoff)
	case cloud.KindThrottled:
		a.throttledUntil = now.Add(5 * time.Second)
		return
	default:
		return
	}
	a.subnets[subnet] = f
}

// createENI creates, attaches and sets up an ENI. ctx bounds the calls;
// runCtx is the agent's life, which bounds the clean-up of a failed attach.
func (a *Agent) createENI(runCtx, ctx context.Context, act pool.Decision) error {
	groups := act.SecurityGroups
	if len(groups) == 0 {
		groups = a.id.Groups
	}
	in := CreateENI{
		SubnetID:    act.SubnetID,
		Groups:      groups,
		Description: fmt.Sprintf("vpcnet pod ENI of %s", a.id.InstanceID),
		Tags: map[string]string{
			TagNode:      a.id.InstanceID,
			TagCluster:   a.cfg.Pool.ClusterName,
			TagCreatedAt: time.Now().UTC().Format(time.RFC3339),
		},
	}
	if act.WithPrefixes {
		in.PrefixCount = act.Count
	} else {
		in.SecondaryCount = act.Count
	}
	e, err := a.ec2.CreateENI(ctx, in)
	if err != nil {
		a.noteSubnetError(act.SubnetID, err)
		return err
	}
	// From here on the ENI exists: if attaching fails, delete it rather
	// than leave it (the leaked-ENI sweep is the net for a crash here).
	attachment, err := a.ec2.AttachENI(ctx, e.ID, a.id.InstanceID, act.DeviceIndex)
	if attachment == "" {
		// Not attached, as far as the agent knows. The delete has a
		// deadline of its own (ctx may be what ended the attach) and ends
		// with the agent: an attach whose reply was lost may have worked,
		// and the delete of an attached ENI waits for a detach that never
		// comes. The resync after this failure then finds it attached.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.EC2CallTimeout)
		defer cancel()
		stop := context.AfterFunc(runCtx, cancel)
		defer stop()
		if derr := a.ec2.DeleteENI(dctx, e.ID); derr != nil {
			a.log.Warn("delete the ENI that failed to attach", "eni", e.ID, "err", derr)
		}
		return err
	}
	if err != nil {
		// Attached, but not DeleteOnTermination: the ENI serves pods all
		// the same, and a later resync sets the flag.
		a.log.Warn("attached ENI not marked DeleteOnTermination", "eni", e.ID, "err", err)
		a.noteEC2Error("ModifyNetworkInterfaceAttribute", err)
	}
	e.DeleteOnTermination = err == nil
	e.AttachmentID, e.DeviceIndex, e.Attached, e.Ours = attachment, act.DeviceIndex, true, true
	e.AttachStatus = "attaching"
	e.Primary = false
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now()
	}
	// EC2 attaches asynchronously (seconds on AWS). The reconciler does
	// not wait: the ENI is arriving, holding its slot and device index,
	// its addresses counted as coming, so that a burst that needs several
	// ENIs has them attach side by side. When its device shows, a resync
	// takes it into the pool; if it never does, the rechecks of pending
	// ENIs find out what EC2 says.
	a.mu.Lock()
	a.pending[e.ID] = pendingENI{ENI: e, arriving: true}
	a.broadcast()
	a.mu.Unlock()
	a.awaitDevice(runCtx, e)
	return nil
}

// awaitDevice waits (in the background, up to DeviceTimeout) for an
// attaching ENI's device, then asks the reconciler for a resync.
func (a *Agent) awaitDevice(ctx context.Context, e *ENI) {
	mac := e.MAC
	probe := &ENI{ID: e.ID, MAC: mac, DeviceIndex: e.DeviceIndex}
	a.arrivals.Add(1)
	go func() {
		defer a.arrivals.Done()
		dctx, cancel := context.WithTimeout(ctx, a.cfg.DeviceTimeout)
		defer cancel()
		if err := a.net.WaitDevice(dctx, probe); err != nil {
			a.log.Info("attached ENI's device not up yet; rechecking", "eni", e.ID, "err", err)
			return
		}
		select {
		case a.resyncNow <- struct{}{}:
		default:
		}
	}()
}

func appendNew[T comparable](have []T, add ...T) []T {
	seen := map[T]bool{}
	for _, h := range have {
		seen[h] = true
	}
	for _, x := range add {
		if !seen[x] {
			have = append(have, x)
			seen[x] = true
		}
	}
	return have
}
