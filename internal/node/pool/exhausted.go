package pool

import (
	"fmt"
	"time"
)

// Cause is why a pod cannot have an address now.
type Cause int

const (
	// CauseNone: an address is free; Pick will find it.
	CauseNone Cause = iota
	// CauseGrowing: the pool is short and can grow; the address comes with
	// the action Decide returns (an ADD waits for it, up to AddWait).
	CauseGrowing
	// CauseThrottled: the pool could grow, but EC2 is throttling the
	// agent's requests (RequestLimitExceeded) and it is backing off.
	CauseThrottled
	// CauseInstanceLimit: every ENI the instance type allows is attached and
	// every one is full: the node is at its address limit.
	CauseInstanceLimit
	// CauseMaxENI: the ENIs are full and MAX_ENI, below the instance type's
	// limit, forbids another.
	CauseMaxENI
	// CauseMaxPods: the node has as many addresses as its max pods.
	CauseMaxPods
	// CauseSubnetFull: EC2 said the subnet has no free addresses (nor /28s).
	CauseSubnetFull
	// CauseNoENIConfig: custom networking is on and no ENIConfig names the
	// subnet for the node's zone.
	CauseNoENIConfig
	// CauseTargets: the targets keep the pool where it is, by design:
	// WARM_IP_TARGET=0 with MINIMUM_IP_TARGET caps the node at that many
	// addresses.
	CauseTargets
)

var causeNames = [...]string{"none", "growing", "throttled", "instance-limit", "max-eni", "max-pods", "subnet-full", "no-eni-config", "targets"}

// String is the cause's name in logs and metrics labels, e.g. "subnet-full".
func (c Cause) String() string {
	if c < 0 || int(c) >= len(causeNames) {
		return fmt.Sprintf("Cause(%d)", int(c))
	}
	return causeNames[c]
}

// Exhaustion says why no address is free and what would change that.
type Exhaustion struct {
	Cause Cause
	// Message is for the person reading the pod's events: the CNI "try
	// again" (code 11) message, e.g. "no free pod address on this node: all
	// 3 ENIs its instance type allows are attached and full (...)".
	Message string
	// CooldownEnds is when the first address in cooldown becomes free again
	// (zero if none is cooling): a wait that ends for certain.
	CooldownEnds time.Time
}

// Exhausted explains an empty pool: whether it is growing (and a pod should
// wait), or why it cannot grow. With a free address it returns CauseNone.
func Exhausted(s State, cfg Config, l Limits, now time.Time) Exhaustion {
	s.CustomNetworking = s.CustomNetworking || cfg.CustomNetworking
	st := s.Stats(now)
	if st.Free > 0 {
		return Exhaustion{Cause: CauseNone, Message: fmt.Sprintf("a free address exists (%s)", st)}
	}
	x := Exhaustion{CooldownEnds: firstCooldownEnd(s, now)}
	d, cause := decide(s, cfg, l, now)
	switch {
	case d.Action.Grows() && s.Throttled:
		x.Cause = CauseThrottled
		x.Message = "no free pod address on this node yet: EC2 is throttling the node agent's requests (RequestLimitExceeded) and it is backing off before it " + d.Action.String()
	case d.Action.Grows():
		x.Cause = CauseGrowing
		x.Message = "no free pod address on this node yet: the pool is growing (" + d.Reason + ")"
	case st.Arriving > 0:
		x.Cause = CauseGrowing
		x.Message = fmt.Sprintf("no free pod address on this node yet: %d addresses are on ENIs still attaching (%s)", st.Arriving, st)
	case cause == CauseNone:
		x.Cause = CauseTargets
		x.Message = "no free pod address on this node: the configuration keeps it at this size (" + d.Reason + "); raise WARM_IP_TARGET or MINIMUM_IP_TARGET"
	default:
		x.Cause = cause
		x.Message = "no free pod address on this node: " + d.Reason
	}
	if !x.CooldownEnds.IsZero() {
		x.Message += fmt.Sprintf("; %d released addresses leave their cooldown (IP_COOLDOWN_PERIOD), the first at %s",
			st.Cooling, x.CooldownEnds.UTC().Format(time.RFC3339))
	}
	return x
}

// firstCooldownEnd is the earliest end of a cooldown after now, on the ENIs
// that carry pods.
func firstCooldownEnd(s State, now time.Time) time.Time {
	var first time.Time
	note := func(a Address) {
		if a.cooling(now) && (first.IsZero() || a.CooldownUntil.Before(first)) {
			first = a.CooldownUntil
		}
	}
	for _, e := range s.podENIs() {
		for _, a := range e.Addresses {
			note(a)
		}
		for _, p := range e.Prefixes {
			for _, a := range p.Addresses {
				note(a)
			}
		}
	}
	return first
}
