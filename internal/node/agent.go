// Package node is vpcnetd, the node agent of the pod model: it keeps a warm
// pool of its node's ENI addresses (secondary addresses or /28 prefixes),
// hands them to pods through the CNI backend API (package nodeapi) that the
// vpc-pod plugin calls, and keeps EC2, its crash-safe store and the node's
// routing in agreement.
//
// The shape follows the fabric of the local VPC: the pool policy is a pure
// function (package pool) over a snapshot of the node; one reconciler
// goroutine carries out its decisions, one EC2 call at a time, and is woken
// by events (an ADD below target, a release, a cooldown ending) rather than
// by a polling tick; a slow timer re-reads EC2, the truth.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// Agent is one node's vpcnetd.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	store  *Store
	ec2    EC2
	net    NodeNetwork
	id     Identity
	limits pool.Limits
	m      *metrics

	mu             sync.Mutex
	enis           map[string]*ENI
	pending        map[string]pendingENI    // attached in EC2, not usable (yet or any more)
	assigned       map[netip.Addr]Key       // mirror of the store's index, for picks under mu
	cooldowns      map[netip.Addr]time.Time // mirror of the store's cooldowns
	waiting        int                      // ADDs waiting for the pool to grow
	changed        chan struct{}            // closed and replaced whenever the pool changes
	softBlock      error                    // why the last growth failed (nil: it did not)
	subnets        map[string]subnetFlags   // what EC2 said recently of subnets' space
	throttledUntil time.Time                // EC2 throttled the agent; it backs off until then
	ready          bool                     // the first reconcile finished
	history        []DecisionRecord         // the last decisions, newest last
	lastErrs       []EC2ErrorRecord         // the last EC2 errors, newest last

	kube          *kube           // nil: not on Kubernetes
	kubeENIConfig *pool.ENIConfig // the ENIConfig resource of the node's zone label (nil: none)
	background    sync.WaitGroup  // annotations and events in flight

	wake      chan struct{}  // buffered(1): a reconcile is wanted
	resyncNow chan struct{}  // buffered(1): an attaching ENI's device is up; read EC2
	arrivals  sync.WaitGroup // the waits for attaching ENIs' devices
}

// DecisionRecord is a decision the reconciler carried out, for status.
type DecisionRecord struct {
	At     time.Time     `json:"at"`
	Action string        `json:"action"`
	Reason string        `json:"reason"`
	Took   time.Duration `json:"took"`
	Error  string        `json:"error,omitempty"`
}

// EC2ErrorRecord is an EC2 error the agent saw, for status.
type EC2ErrorRecord struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	Code   string    `json:"code"`
	Error  string    `json:"error"`
}

const historyLen = 20

// errNotReady is returned to ADDs that arrive before the first reconcile.
var errNotReady = errors.New("vpcnetd is starting: its first reconcile with EC2 has not finished")

// AddResult is what an ADD hands back to the plugin.
type AddResult struct {
	Assignment
	ENI *ENI
}

func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// broadcast tells every waiting ADD that the pool changed. Callers hold mu.
func (a *Agent) broadcast() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Add gives the attachment an address, or returns the one it already holds,
// so that a retried ADD converges. With no free address it wakes the
// reconciler and waits for the growth in flight until ctx ends or the
// agent's own deadline (VPCNET_ADD_WAIT) passes; if the pool cannot grow
// and no address will leave cooldown in time, it fails at once. Either way
// the error names why (package pool's Exhausted).
func (a *Agent) Add(ctx context.Context, req *nodeapi.AddNetworkRequest) (AddResult, error) {
	k := KeyOf(req.GetAttachment())
	if err := validKey(k); err != nil {
		return AddResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Pool.AddWait)
	defer cancel()
	deadline, _ := ctx.Deadline()
	waited := false
	defer func() {
		if waited {
			a.mu.Lock()
			a.waiting--
			a.mu.Unlock()
		}
	}()
	for {
		a.mu.Lock()
		if !a.ready {
			ch := a.changed
			a.mu.Unlock()
			if err := waitFor(ctx, ch, time.Time{}); err != nil {
				return AddResult{}, fmt.Errorf("%w: %w", ErrUnavailable, errNotReady)
			}
			continue
		}
		if old, ok, err := a.store.Get(k); err != nil {
			a.mu.Unlock()
			return AddResult{}, err
		} else if ok {
			e := a.enis[old.ENI]
			a.mu.Unlock()
			if e == nil {
				return AddResult{}, fmt.Errorf("attachment %s holds %s on ENI %s, which is not attached and ready", k, old.Address, old.ENI)
			}
			return AddResult{Assignment: old, ENI: e}, nil
		}
		now := time.Now()
		state := a.poolStateLocked(now)
		if eniID, addr, ok := pool.Pick(state, now); ok {
			if _, ok := a.cooldowns[addr]; ok {
				// Pick never chooses an address still cooling: this one's
				// cooldown is over but the reconciler has not yet cleared
				// it, and the store refuses an address in cooldown.
				if err := a.store.EndCooldown(addr); err != nil {
					a.mu.Unlock()
					return AddResult{}, fmt.Errorf("end the cooldown of %s: %w", addr, err)
				}
				delete(a.cooldowns, addr)
			}
			as := Assignment{Key: k, Address: addr, ENI: eniID, PodNamespace: req.GetPodNamespace(),
				PodName: req.GetPodName(), PodUID: req.GetPodUid(), AssignedAt: now.UTC()}
			if err := a.store.Put(as); err != nil {
				a.mu.Unlock()
				return AddResult{}, err
			}
			a.assigned[addr] = k
			e := a.enis[eniID]
			a.mu.Unlock()
			a.kick() // the pool may now be below its target
			a.log.Info("assigned", "attachment", k.String(), "address", addr, "eni", eniID,
				"pod", req.GetPodNamespace()+"/"+req.GetPodName(), "waited", waited)
			return AddResult{Assignment: as, ENI: e}, nil
		}
		x := pool.Exhausted(state, a.poolConfigLocked(), a.limits, now)
		growing := x.Cause == pool.CauseGrowing || x.Cause == pool.CauseThrottled || a.arrivingLocked()
		cooldownInTime := !x.CooldownEnds.IsZero() && x.CooldownEnds.Before(deadline)
		if !growing && !cooldownInTime {
			// Waiting cannot help: say why at once.
			a.mu.Unlock()
			return AddResult{}, fmt.Errorf("%w: %s", ErrExhausted, x.Message)
		}
		if !waited {
			waited = true
			a.waiting++
			a.m.addWaits.Inc()
		}
		ch := a.changed
		soft := a.softBlock
		a.mu.Unlock()
		a.kick()
		if err := waitFor(ctx, ch, x.CooldownEnds); err != nil {
			msg := x.Message
			if soft != nil {
				msg += "; last attempt: " + soft.Error()
			}
			return AddResult{}, fmt.Errorf("%w: no free address after waiting %s: %s", ErrExhausted,
				a.cfg.Pool.AddWait.Round(time.Millisecond), msg)
		}
	}
}

// waitFor blocks until ch is closed, the time until (if set) passes, or ctx
// ends (its error).
func waitFor(ctx context.Context, ch <-chan struct{}, until time.Time) error {
	var timer <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until) + time.Millisecond)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ch:
		return nil
	case <-timer:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Del releases the attachment's address into cooldown. It is idempotent.
func (a *Agent) Del(_ context.Context, req *nodeapi.DelNetworkRequest) (Assignment, bool, error) {
	k := KeyOf(req.GetAttachment())
	if err := validKey(k); err != nil {
		return Assignment{}, false, err
	}
	return a.release(k, "DEL")
}

func (a *Agent) release(k Key, why string) (Assignment, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	as, found, err := a.store.Release(k, now)
	if err != nil || !found {
		return as, found, err
	}
	delete(a.assigned, as.Address)
	a.cooldowns[as.Address] = now
	a.log.Info("released", "attachment", k.String(), "address", as.Address, "by", why, "cooldown", a.cfg.Pool.IPCooldown)
	a.kick()
	return as, true, nil
}

// Check returns the attachment's assignment.
func (a *Agent) Check(_ context.Context, k Key) (AddResult, bool, error) {
	if err := validKey(k); err != nil {
		return AddResult{}, false, err
	}
	as, ok, err := a.store.Get(k)
	if err != nil || !ok {
		return AddResult{}, ok, err
	}
	a.mu.Lock()
	e := a.enis[as.ENI]
	a.mu.Unlock()
	if e == nil {
		return AddResult{}, false, fmt.Errorf("attachment %s holds %s on ENI %s, which is no longer attached", k, as.Address, as.ENI)
	}
	return AddResult{Assignment: as, ENI: e}, true, nil
}

// GC releases every assignment of network whose attachment is not valid.
func (a *Agent) GC(_ context.Context, network string, valid []*nodeapi.Attachment) ([]netip.Addr, error) {
	keep := map[Key]bool{}
	for _, v := range valid {
		keep[KeyOf(v)] = true
	}
	all, err := a.store.Assignments()
	if err != nil {
		return nil, err
	}
	var released []netip.Addr
	for _, as := range all {
		if as.Network != network || keep[as.Key] {
			continue
		}
		if _, ok, err := a.release(as.Key, "GC"); err != nil {
			return released, err
		} else if ok {
			released = append(released, as.Address)
		}
	}
	return released, nil
}

// Status says whether an ADD could succeed now.
func (a *Agent) Status() (ready bool, reason string, free, assigned int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		return false, errNotReady.Error(), 0, 0
	}
	now := time.Now()
	state := a.poolStateLocked(now)
	st := state.Stats(now)
	if st.Free == 0 {
		x := pool.Exhausted(state, a.poolConfigLocked(), a.limits, now)
		if x.Cause != pool.CauseGrowing {
			return false, x.Message, st.Free, st.Assigned
		}
	}
	return true, "", st.Free, st.Assigned
}

func validKey(k Key) error {
	switch {
	case k.Network == "":
		return fmt.Errorf("%w: attachment.network is empty", ErrInvalid)
	case k.ContainerID == "":
		return fmt.Errorf("%w: attachment.container_id is empty", ErrInvalid)
	case k.IfName == "":
		return fmt.Errorf("%w: attachment.if_name is empty", ErrInvalid)
	}
	return nil
}

// Errors the API layer maps to gRPC codes.
var (
	ErrInvalid     = errors.New("invalid request")
	ErrExhausted   = errors.New("no address available")
	ErrUnavailable = errors.New("agent unavailable")
)
