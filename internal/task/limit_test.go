package task

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestENILimit starts four tasks at once on a t3.medium (three ENIs, the
// primary included): exactly two get an ENI and run, the other two fail
// with a message naming the limit, and nothing of the failed launches is
// left behind.
func TestENILimit(t *testing.T) {
	v := upVPC(t, tagLimit, "--instances", "1", "--instance-type", "t3.medium")
	probe := probeBin(t)
	release := releaseFile(t)

	type launch struct {
		cmd      *exec.Cmd
		progress *lineWatcher
		exited   chan error
	}
	var launches []*launch
	for range 4 {
		cmd := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--", probe, probeCommand, "wait", release)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		l := &launch{cmd: cmd, progress: watchLines(stderr, func(s string) bool { return progressStep(s, "running") }), exited: make(chan error, 1)}
		launches = append(launches, l)
	}
	for _, l := range launches {
		if err := l.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range launches {
		go func() {
			<-l.progress.done
			l.exited <- l.cmd.Wait()
		}()
	}
	// Every launch either runs its command (which waits for the release
	// file, holding its ENI) or fails; none can finish before the release.
	running, failed := 0, []string{}
	for _, l := range launches {
		select {
		case <-l.progress.seen:
			running++
		case err := <-l.exited:
			if err == nil {
				t.Fatalf("a task finished before it was released:\n%s", l.progress.text())
			}
			failed = append(failed, l.progress.text())
		case <-time.After(2 * time.Minute):
			t.Fatalf("a launch neither ran nor failed:\n%s", l.progress.text())
		}
	}
	if running != 2 || len(failed) != 2 {
		t.Fatalf("%d tasks run and %d failed; want 2 and 2 (3 ENIs, one the primary):\n%s", running, len(failed), strings.Join(failed, "\n---\n"))
	}
	for _, msg := range failed {
		if !strings.Contains(msg, "t3.medium") || !strings.Contains(msg, "at most 3 network interfaces") || !strings.Contains(msg, "AttachmentLimitExceeded") {
			t.Errorf("failure does not name the limit (instance type, number):\n%s", msg)
		}
	}
	if err := writeFile(release); err != nil {
		t.Fatal(err)
	}
	for _, l := range launches {
		select {
		case <-l.progress.seen:
			if err := <-l.exited; err != nil {
				t.Errorf("a running task ended with %v:\n%s", err, l.progress.text())
			}
		default:
		}
	}
	v.assertClean(1)
}
