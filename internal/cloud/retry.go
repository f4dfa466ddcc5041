package cloud

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// RetryPolicy bounds how hard a caller pushes a cloud that throttles or
// fails. Attempts are spaced by jittered exponential backoff; a call gives
// up after MaxAttempts or at the caller's context deadline, whichever
// comes first.
type RetryPolicy struct {
	MaxAttempts int           // per API call, including the first
	MaxBackoff  time.Duration // longest pause between attempts
	// ReturnThrottling hands RequestLimitExceeded back to the caller at
	// once instead of retrying it: for a caller that paces all its calls
	// itself.
	ReturnThrottling bool
}

// DefaultRetry suits an agent that must ride out throttling: EC2's token
// buckets refill within seconds.
var DefaultRetry = RetryPolicy{MaxAttempts: 10, MaxBackoff: 4 * time.Second}

// TaskRetryPolicy is the task launcher's: a launch has a deadline
// (--timeout) and a teardown its own, and those, not a count of attempts,
// should decide when to give up on a throttling or failing EC2. With ten
// attempts, one call in a thousand fails outright when half of the calls
// are throttled.
var TaskRetryPolicy = RetryPolicy{MaxAttempts: 25, MaxBackoff: DefaultRetry.MaxBackoff}

// AgentRetryPolicy is the node agent's. The agent makes its EC2 calls from
// one worker that backs off itself when EC2 throttles, and that backoff
// must be the only one: an SDK retrying a throttled call inside the worker
// would hold the worker for seconds (while pods wait for a decision that
// could use fresher state), spend more of the account's tokens on the same
// request, and hide the throttling from the worker's pacing and metrics.
// So throttling comes back at once. Other failures (a reset connection,
// EC2's InternalError or Unavailable) are transient and worth two quick
// retries, bounded to a second apart, so that one bad packet does not cost
// a reconcile round.
var AgentRetryPolicy = RetryPolicy{MaxAttempts: 3, MaxBackoff: time.Second, ReturnThrottling: true}

// NewRetryer returns the SDK retryer that applies p, for aws.Config's
// Retryer. It has no client-side retry quota (which would turn a
// throttling storm into hard failures).
func (p RetryPolicy) NewRetryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = p.MaxAttempts
		o.MaxBackoff = p.MaxBackoff
		o.RateLimiter = ratelimit.None
		if p.ReturnThrottling {
			o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(noThrottleRetry)}, o.Retryables...)
		}
	})
}

func noThrottleRetry(err error) aws.Ternary {
	if IsThrottled(err) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}
