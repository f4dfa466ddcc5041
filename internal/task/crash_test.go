package task

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vpcnet/vpcnet/internal/crashpoint"
)

// TestCrashAtEveryStep kills a foreground `task run` with SIGKILL at each
// step of a task's life, launch and teardown, then runs `task gc`, and
// checks that nothing is left: no ENI, attachment, task namespace, IPAM
// address, veth or ENI device, and no unfinished record.
//
// The steps are learned from a run with the step log on. The plugins that
// the launcher runs through libcni inherit its environment, so they log
// their steps too, and the kill hook applies to them as well: the steps
// named "task/..." are the launcher's (the launcher is killed: a crashed
// agent), the others are vpc-eni's, vpc-bridge's and vpc-ipam's (the plugin
// is killed mid-ADD or mid-DEL: the launcher survives, sees the plugin fail
// and undoes the launch, or leaves an unfinished teardown to gc). Both
// kinds are tested, each step once.
func TestCrashAtEveryStep(t *testing.T) {
	v := upVPC(t, tagCrash, "--instances", "1")
	run := func(env ...string) ([]byte, error) {
		cmd := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--", "true")
		cmd.Env = append(os.Environ(), env...)
		return cmd.CombinedOutput()
	}

	stepLog := filepath.Join(t.TempDir(), "steps")
	if out, err := run(crashpoint.EnvStepLog + "=" + stepLog); err != nil {
		t.Fatalf("run with the step log: %v\n%s", err, out)
	}
	data, err := os.ReadFile(stepLog)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, s := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !slices.Contains(steps, s) { // vpc-ipam's store step comes in ADD and DEL
			steps = append(steps, s)
		}
	}
	for _, want := range []string{"task/create-eni", "task/attach-eni", "task/wait-device", "task/cni-eni", "task/cni-bridge", "task/delete-eni"} {
		if !slices.Contains(steps, want) {
			t.Fatalf("step %s was not logged; the steps: %v", want, steps)
		}
	}
	plugin := 0
	for _, s := range steps {
		if !strings.HasPrefix(s, "task/") {
			plugin++
		}
	}
	if plugin == 0 {
		t.Fatalf("no plugin step was logged (do the plugins still inherit the environment?): %v", steps)
	}
	v.assertClean(1)

	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			out, err := run(crashpoint.EnvKillAt + "=" + step)
			status := exitStatus(err)
			if strings.HasPrefix(step, "task/") {
				if status != 128+int(syscall.SIGKILL) {
					t.Fatalf("the launcher was not killed at %s (exit %d):\n%s", step, status, out)
				}
				// At least its unfinished record is left: it is gc that
				// cleans up below, not something else.
				if len(v.leftovers(1)) == 0 {
					t.Fatalf("nothing was left by a launcher killed at %s", step)
				}
			} else if status == 0 || status == 128+int(syscall.SIGKILL) {
				// A plugin killed mid-verb fails the launch (or its
				// teardown); the launcher itself lives on to say so.
				t.Fatalf("with the plugin killed at %q, task run exited %d:\n%s", step, status, out)
			}
			if gcOut, err := v.task("gc").CombinedOutput(); err != nil {
				t.Fatalf("task gc after a kill at %s: %v\n%s", step, err, gcOut)
			}
			if left := v.leftovers(1); len(left) > 0 {
				t.Fatalf("after a kill at %s and task gc, left:\n  %s\nrun output:\n%s", step, strings.Join(left, "\n  "), out)
			}
		})
	}

	// The instance still launches tasks.
	if out, err := run(); err != nil {
		t.Fatalf("a run after all the crashes: %v\n%s", err, out)
	}
	v.assertClean(1)
}
