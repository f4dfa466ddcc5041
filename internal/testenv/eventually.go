package testenv

import (
	"errors"
	"testing"
	"time"
)

// Eventually calls check until it returns nil, failing the test with
// check's last error once timeout has passed. It is for state that another
// process converges to (a pool filling, a device appearing), never for
// speed: timeout is a ceiling that a stalled -race runner stays far below.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %s: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 500*time.Millisecond {
			wait *= 2
		}
	}
}

// EventuallyTrue is Eventually for a condition without an error of its
// own: it polls cond until it holds and, once timeout has passed, fails
// the test naming what was awaited.
func EventuallyTrue(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if !cond() {
			return errors.New(what)
		}
		return nil
	})
}
