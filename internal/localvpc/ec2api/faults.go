package ec2api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// Faults make the local VPC misbehave the way EC2 does: slow calls, errors
// and throttling, per action. It is one JSON document that `vpcnet local
// faults` reads and writes. AttachDelay and MetadataLag are applied by the
// control plane (how long an attachment stays "attaching", how far the
// metadata service lags behind EC2); the rest by the EC2 API.
type Faults struct {
	// Actions maps an action name, or "*" for every action, to its faults.
	// An action's own entry replaces "*" entirely.
	Actions map[string]ActionFaults `json:"actions,omitempty"`
	// AttachDelay is how long an attachment stays "attaching" before its
	// device appears: exactly AttachDelay, or, when AttachDelayMax is
	// larger, a time between the two that each attachment draws once.
	AttachDelay    Duration `json:"attachDelay,omitempty"`
	AttachDelayMax Duration `json:"attachDelayMax,omitempty"`
	MetadataLag    Duration `json:"metadataLag,omitempty"`
}

// ParseFaults decodes a fault configuration strictly: a key it does not
// know (a misspelt "attachdelay") is an error naming it, never a fault
// quietly left out, and the result is validated.
func ParseFaults(data []byte) (Faults, error) {
	// encoding/json matches keys regardless of case, and would take
	// "attachdelay" for "attachDelay": keys are checked as written first.
	if err := exactKeys(data); err != nil {
		return Faults{}, fmt.Errorf("fault configuration: %w", err)
	}
	var f Faults
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Faults{}, fmt.Errorf("fault configuration: %w", err)
	}
	if dec.More() {
		return Faults{}, fmt.Errorf("fault configuration: more than one JSON document")
	}
	if err := f.Validate(); err != nil {
		return Faults{}, fmt.Errorf("fault configuration: %w", err)
	}
	return f, nil
}

// exactKeys refuses a key of a fault document, or of one of its actions,
// that is not spelt as Faults and ActionFaults spell theirs.
func exactKeys(data []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return err
	}
	if err := knownKeys(top, reflect.TypeFor[Faults](), ""); err != nil {
		return err
	}
	var actions map[string]map[string]json.RawMessage
	if raw, ok := top["actions"]; ok {
		if err := json.Unmarshal(raw, &actions); err != nil {
			return fmt.Errorf("actions: %w", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(actions)) {
		if err := knownKeys(actions[name], reflect.TypeFor[ActionFaults](), "action "+name+": "); err != nil {
			return err
		}
	}
	return nil
}

func knownKeys(m map[string]json.RawMessage, t reflect.Type, where string) error {
	var known []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		known = append(known, name)
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%sunknown key %s (known: %s)", where, strings.Join(unknown, ", "), strings.Join(known, ", "))
}

// AttachDelayFor is the attach delay of one attachment. Drawn from its ID,
// it stays the same however often the control plane asks.
func (f Faults) AttachDelayFor(attachmentID string) time.Duration {
	lo, hi := time.Duration(f.AttachDelay), time.Duration(f.AttachDelayMax)
	if hi <= lo {
		return lo
	}
	h := fnv.New64a()
	h.Write([]byte(attachmentID))
	return lo + time.Duration(h.Sum64()%uint64(hi-lo))
}

// ActionFaults are the faults of one action.
type ActionFaults struct {
	// Latency is added to every call: exactly Latency, or uniformly
	// between Latency and LatencyMax when LatencyMax is larger.
	Latency    Duration `json:"latency,omitempty"`
	LatencyMax Duration `json:"latencyMax,omitempty"`
	// ErrorRate (0 to 1) of calls fail with ErrorCode (InternalError by
	// default) and ErrorMessage.
	ErrorRate    float64 `json:"errorRate,omitempty"`
	ErrorCode    string  `json:"errorCode,omitempty"`
	ErrorMessage string  `json:"errorMessage,omitempty"`
	// ThrottleRate (0 to 1) of calls get RequestLimitExceeded whatever the
	// token buckets say.
	ThrottleRate float64 `json:"throttleRate,omitempty"`
}

// For returns the faults that apply to an action.
func (f Faults) For(action string) ActionFaults {
	if a, ok := f.Actions[action]; ok {
		return a
	}
	return f.Actions["*"]
}

// Validate refuses rates outside 0..1 and inverted latency ranges.
func (f Faults) Validate() error {
	if f.AttachDelay < 0 || f.MetadataLag < 0 {
		return fmt.Errorf("attachDelay and metadataLag must not be negative")
	}
	if f.AttachDelayMax != 0 && f.AttachDelayMax < f.AttachDelay {
		return fmt.Errorf("attachDelay %v..attachDelayMax %v is not a range", time.Duration(f.AttachDelay), time.Duration(f.AttachDelayMax))
	}
	for name, a := range f.Actions {
		switch {
		case a.ErrorRate < 0 || a.ErrorRate > 1:
			return fmt.Errorf("action %s: errorRate %v is not between 0 and 1", name, a.ErrorRate)
		case a.ThrottleRate < 0 || a.ThrottleRate > 1:
			return fmt.Errorf("action %s: throttleRate %v is not between 0 and 1", name, a.ThrottleRate)
		case a.Latency < 0 || (a.LatencyMax != 0 && a.LatencyMax < a.Latency):
			return fmt.Errorf("action %s: latency %v..%v is not a range", name, a.Latency, a.LatencyMax)
		}
	}
	return nil
}

// faultPlan is what faults do to one call.
type faultPlan struct {
	delay time.Duration
	err   *vpc.Error // nil: the call goes ahead
}

// plan decides the fate of one call from three uniform draws in [0,1): one
// for the latency, one for throttling, one for the error. Pure, so that the
// decision is tested with a table.
func (a ActionFaults) plan(latencyDraw, throttleDraw, errorDraw float64) faultPlan {
	p := faultPlan{delay: time.Duration(a.Latency)}
	if a.LatencyMax > a.Latency {
		p.delay += time.Duration(latencyDraw * float64(a.LatencyMax-a.Latency))
	}
	switch {
	case throttleDraw < a.ThrottleRate:
		p.err = requestLimitExceeded()
	case errorDraw < a.ErrorRate:
		code, msg := a.ErrorCode, a.ErrorMessage
		if code == "" {
			code = vpc.CodeInternalError
		}
		if msg == "" {
			msg = "An internal error has occurred (injected fault)."
		}
		p.err = &vpc.Error{Code: code, Message: msg}
	}
	return p
}

func requestLimitExceeded() *vpc.Error {
	return &vpc.Error{Code: vpc.CodeRequestLimitExceeded, Message: "Request limit exceeded."}
}

// Duration is a time.Duration written in JSON as Go's duration string
// ("1.5s"); a number is taken as nanoseconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1.5s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration %s is neither a string nor a number", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("parse duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}
