package task

import (
	"fmt"
	"io"
	"time"
)

// Progress prints one line per step with its duration, for a person
// watching a task start or stop. A nil Progress prints nothing.
type Progress struct {
	W    io.Writer
	Task string
}

func (p *Progress) step(name, detail string, d time.Duration, err error) {
	if p == nil || p.W == nil {
		return
	}
	status := detail
	if err != nil {
		status = "FAILED: " + err.Error()
	}
	fmt.Fprintf(p.W, "%-14s %-22s %8s  %s\n", p.Task, name, d.Round(time.Millisecond), status)
}
