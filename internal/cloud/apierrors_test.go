package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

func TestAPIErrorsExplain(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	deadline := fmt.Errorf("attach: %w", context.DeadlineExceeded)
	for _, tc := range []struct {
		name string
		seen error // what EC2 answered during the step
		err  error // what the step returned
		want string
	}{
		{"deadline after throttling", throttled, deadline, "attach: context deadline exceeded (EC2 kept failing until then: RequestLimitExceeded: Request limit exceeded.)"},
		{"cancelled after throttling", throttled, fmt.Errorf("x: %w", context.Canceled), "x: context canceled (EC2 kept failing until then: RequestLimitExceeded: Request limit exceeded.)"},
		{"deadline, EC2 never failed", nil, deadline, "attach: context deadline exceeded"},
		{"deadline, only a transport error", errors.New("connection refused"), deadline, "attach: context deadline exceeded"},
		{"an EC2 error says it itself", throttled, fmt.Errorf("attach: %w", throttled), "attach: api error RequestLimitExceeded: Request limit exceeded."},
		{"success", throttled, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &APIErrors{}
			if tc.seen != nil {
				e.Note(tc.seen)
			}
			got := e.Explain(tc.err)
			if (got == nil) != (tc.want == "") || got != nil && got.Error() != tc.want {
				t.Errorf("explain(%v) = %v, want %q", tc.err, got, tc.want)
			}
			if got != nil && !errors.Is(got, tc.err) {
				t.Errorf("explain lost the original error: %v", got)
			}
		})
	}
	// A step starts afresh: what EC2 said in an earlier step is not this
	// step's excuse.
	e := &APIErrors{}
	e.Note(throttled)
	e.Reset()
	if got := e.Explain(deadline); strings.Contains(got.Error(), "EC2 kept failing") {
		t.Errorf("after reset: %v", got)
	}
	// A nil *APIErrors (no watcher configured) changes nothing.
	var none *APIErrors
	none.Note(throttled)
	none.Reset()
	if got := none.Explain(deadline); got != deadline {
		t.Errorf("nil explain: %v", got)
	}
}

// fakeRetryer counts what the SDK would ask its retryer.
type fakeRetryer struct {
	aws.Retryer
	asked int
}

func (f *fakeRetryer) IsErrorRetryable(error) bool { f.asked++; return true }

func TestAPIErrorsWatch(t *testing.T) {
	inner := &fakeRetryer{Retryer: aws.NopRetryer{}}
	cfg := aws.Config{Retryer: func() aws.Retryer { return inner }}
	e := &APIErrors{}
	e.Watch(&cfg)
	r := cfg.Retryer()
	if _, ok := r.(aws.RetryerV2); !ok {
		t.Fatalf("the watching retryer %T is not an aws.RetryerV2", r)
	}
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "slow down"}
	if !r.IsErrorRetryable(fmt.Errorf("op: %w", throttled)) || inner.asked != 1 {
		t.Fatalf("the wrapped retryer was not asked (asked %d times)", inner.asked)
	}
	if got := e.Explain(context.DeadlineExceeded); !strings.Contains(got.Error(), "RequestLimitExceeded: slow down") {
		t.Errorf("after a throttled attempt: %v", got)
	}
}

func TestAPIErrorsInContext(t *testing.T) {
	throttled := &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "slow down"}
	internal := &smithy.GenericAPIError{Code: "InternalError", Message: "oops"}
	if APIErrorsFrom(context.Background()) != nil {
		t.Fatal("a bare context carries a record")
	}
	APIErrorsFrom(context.Background()).Note(throttled) // no record: nothing happens

	ctx, outer := WithAPIErrors(context.Background())
	if APIErrorsFrom(ctx) != outer {
		t.Fatal("the context does not carry its record")
	}
	stepCtx, step := WithAPIErrors(ctx)
	APIErrorsFrom(stepCtx).Note(throttled)
	APIErrorsFrom(stepCtx).Note(errors.New("connection reset"))
	// A sibling step's failures are its own.
	otherCtx, other := WithAPIErrors(ctx)
	APIErrorsFrom(otherCtx).Note(internal)

	if got := step.Explain(context.DeadlineExceeded); !strings.Contains(got.Error(), "RequestLimitExceeded: slow down") {
		t.Errorf("step: %v", got)
	}
	if got := other.Explain(context.DeadlineExceeded); !strings.Contains(got.Error(), "InternalError: oops") {
		t.Errorf("sibling step: %v", got)
	}
	if step.Failures() != 2 || other.Failures() != 1 {
		t.Errorf("failures: step %d, sibling %d; want 2 and 1", step.Failures(), other.Failures())
	}
	// The enclosing work saw all three, the last an InternalError.
	if outer.Failures() != 3 || outer.Last().ErrorCode() != "InternalError" {
		t.Errorf("outer: %d failures, last %v; want 3, InternalError", outer.Failures(), outer.Last())
	}
}
