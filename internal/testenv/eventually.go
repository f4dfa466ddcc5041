package testenv

import (
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
