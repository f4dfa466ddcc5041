package ec2api

import (
	"fmt"
	"testing"
	"time"
)

func TestAttachDelayFor(t *testing.T) {
	fixed := Faults{AttachDelay: Duration(3 * time.Second)}
	if got := fixed.AttachDelayFor("eni-attach-1"); got != 3*time.Second {
		t.Errorf("fixed delay: got %v, want 3s", got)
	}
	ranged := Faults{AttachDelay: Duration(2 * time.Second), AttachDelayMax: Duration(5 * time.Second)}
	seen := map[time.Duration]bool{}
	for i := range 50 {
		id := fmt.Sprintf("eni-attach-%d", i)
		d := ranged.AttachDelayFor(id)
		if d < 2*time.Second || d >= 5*time.Second {
			t.Fatalf("%s: delay %v outside [2s, 5s)", id, d)
		}
		if again := ranged.AttachDelayFor(id); again != d {
			t.Fatalf("%s: delay changed from %v to %v between calls", id, d, again)
		}
		seen[d.Truncate(time.Second)] = true
	}
	if len(seen) < 3 {
		t.Errorf("50 attachments drew delays in only %d of the 3 seconds of the range: %v", len(seen), seen)
	}
	if err := (Faults{AttachDelay: Duration(5 * time.Second), AttachDelayMax: Duration(time.Second)}).Validate(); err == nil {
		t.Error("an inverted attach delay range was accepted")
	}
}
