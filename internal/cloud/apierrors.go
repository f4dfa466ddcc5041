package cloud

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// APIErrors remembers the last error EC2 answered with. When a step runs
// out of time while the SDK is still retrying, the SDK reports only
// "request canceled, context deadline exceeded"; what a person needs to
// know is what EC2 kept saying (throttling, an internal error) all along.
// A nil *APIErrors remembers nothing.
//
// A record belongs to one piece of work: WithAPIErrors puts a fresh one in
// a context, and every EC2 attempt made with that context (by a Client
// from New) is noted in it, so concurrent workers sharing a client each
// explain their own failures. Watch is the older, client-wide form: one
// record for everything made from a configuration, fit only for a caller
// that does one thing at a time.
type APIErrors struct {
	mu       sync.Mutex
	last     smithy.APIError
	failures int
	// outer is the record of the enclosing context, which sees what this
	// one sees: a step inside a larger piece of work explains both.
	outer *APIErrors
}

type apiErrorsKey struct{}

// WithAPIErrors returns a context carrying a new, empty record and the
// record. EC2 calls made with the context (or one derived from it) note
// their failed attempts in it, and in the records of enclosing contexts.
func WithAPIErrors(ctx context.Context) (context.Context, *APIErrors) {
	e := &APIErrors{outer: APIErrorsFrom(ctx)}
	return context.WithValue(ctx, apiErrorsKey{}, e), e
}

// APIErrorsFrom returns the record ctx carries, or nil.
func APIErrorsFrom(ctx context.Context) *APIErrors {
	e, _ := ctx.Value(apiErrorsKey{}).(*APIErrors)
	return e
}

// Watch makes the retryers that cfg creates report every failed attempt.
// Call it before building clients from cfg.
func (e *APIErrors) Watch(cfg *aws.Config) {
	if e == nil || cfg.Retryer == nil {
		return
	}
	newRetryer := cfg.Retryer
	cfg.Retryer = func() aws.Retryer { return watchingRetryer{Retryer: newRetryer(), errs: e} }
}

// Note records a failed attempt, and remembers err if it is an EC2 error.
func (e *APIErrors) Note(err error) {
	if err == nil {
		return
	}
	var ae smithy.APIError
	isAPI := errors.As(err, &ae)
	for ; e != nil; e = e.outer {
		e.mu.Lock()
		e.failures++
		if isAPI {
			e.last = ae
		}
		e.mu.Unlock()
	}
}

// Reset forgets the last error (at the start of a step).
func (e *APIErrors) Reset() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.last, e.failures = nil, 0
	e.mu.Unlock()
}

// Last returns the last EC2 error noted, or nil.
func (e *APIErrors) Last() smithy.APIError {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// Failures counts the failed attempts noted since the record was made or
// reset: EC2 refusals and transport errors alike, each retry of the SDK
// counting once.
func (e *APIErrors) Failures() int {
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failures
}

// Explain adds the last EC2 error to an error that only says the deadline
// passed or the work was cancelled.
func (e *APIErrors) Explain(err error) error {
	if e == nil || err == nil {
		return err
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	var already smithy.APIError
	if errors.As(err, &already) {
		return err
	}
	last := e.Last()
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (EC2 kept failing until then: %s: %s)", err, last.ErrorCode(), last.ErrorMessage())
}

// watchingRetryer is the SDK's retryer, reporting each failed attempt.
type watchingRetryer struct {
	aws.Retryer
	errs *APIErrors
}

func (w watchingRetryer) IsErrorRetryable(err error) bool {
	w.errs.Note(err)
	return w.Retryer.IsErrorRetryable(err)
}

// GetAttemptToken keeps the wrapped retryer's per-attempt behaviour when it
// has one (aws.RetryerV2).
func (w watchingRetryer) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := w.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return w.Retryer.GetInitialToken(), nil
}

var _ aws.RetryerV2 = watchingRetryer{}

// attemptRecorder notes each failed attempt of an operation in the record
// of the operation's context. It sits right inside the SDK's retry loop,
// so it sees every attempt, not only the final error.
type attemptRecorder struct{}

func (attemptRecorder) ID() string { return "vpcnet/APIErrors" }

func (attemptRecorder) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleFinalize(ctx, in)
	if err != nil {
		APIErrorsFrom(ctx).Note(err)
	}
	return out, md, err
}

// recordAttempts adds attemptRecorder to an operation's stack.
func recordAttempts(s *middleware.Stack) error {
	return s.Finalize.Insert(attemptRecorder{}, "Retry", middleware.After)
}
