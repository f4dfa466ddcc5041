package cloud

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

// APIErrors remembers the last error EC2 answered with. When a step runs
// out of time while the SDK is still retrying, the SDK reports only
// "request canceled, context deadline exceeded"; what a person needs to
// know is what EC2 kept saying (throttling, an internal error) all along.
// A nil *APIErrors remembers nothing.
type APIErrors struct {
	mu   sync.Mutex
	last smithy.APIError
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

// Note remembers err if it is an EC2 error.
func (e *APIErrors) Note(err error) {
	var ae smithy.APIError
	if e == nil || !errors.As(err, &ae) {
		return
	}
	e.mu.Lock()
	e.last = ae
	e.mu.Unlock()
}

// Reset forgets the last error (at the start of a step).
func (e *APIErrors) Reset() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.last = nil
	e.mu.Unlock()
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
	e.mu.Lock()
	last := e.last
	e.mu.Unlock()
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
