package task

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/cloud"
)

// TestEC2Faults runs tasks against an EC2 that misbehaves as the real one
// does: throttling and internal errors are retried with backoff and the
// task starts; a slow attachment is waited for; faults that outlast the
// set-up deadline fail the launch with a message naming the step and EC2's
// error, and nothing is left behind. Each case has its own local VPC and
// the cases run in parallel: most of their time is spent backing off.
func TestEC2Faults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults string
		// injected is the error code a call sees now and then. At a rate
		// of 0.5, a launch's eight or so calls all get through untouched
		// with probability 0.5^8 (0.4%): the retries are exercised.
		injected string
	}{
		{"throttling", `{"actions":{"*":{"throttleRate":0.5}}}`, cloud.CodeRequestLimitExceeded},
		{"internal errors", `{"actions":{"*":{"errorRate":0.5,"errorCode":"InternalError"}}}`, "InternalError"},
		{"unavailable", `{"actions":{"*":{"errorRate":0.5,"errorCode":"Unavailable"}}}`, "Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := upVPC(t, tagFaults, "--instances", "1")
			v.faults(tc.faults)
			faultsActive(t, v, tc.injected)
			out, err := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--", "echo", "started").CombinedOutput()
			if err != nil {
				t.Fatalf("task run under %s: %v\n%s", tc.faults, err, out)
			}
			if !bytes.Contains(out, []byte("started\n")) {
				t.Errorf("the task's command did not run:\n%s", out)
			}
			v.faults("")
			v.assertClean(1)
		})
	}

	t.Run("slow attachment", func(t *testing.T) {
		t.Parallel()
		v := upVPC(t, tagFaults, "--instances", "1")
		// The device shows up 3 s after AttachNetworkInterface returns, as
		// on AWS: a launcher that did not wait for it would fail in vpc-eni
		// (no link with the ENI's MAC).
		v.faults(`{"attachDelay":"3s"}`)
		cmd := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--", "echo", "started")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		progress := watchLines(stderr, func(l string) bool { return progressStep(l, "attach-eni") })
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-progress.seen:
		case <-progress.done:
			t.Fatalf("task run ended before attaching:\n%s", progress.text())
		}
		// While the launch waits for the device, `task gc` runs: it must
		// leave a launch whose launcher lives alone.
		if out, err := v.task("gc").CombinedOutput(); err != nil {
			t.Fatalf("task gc during a launch: %v\n%s", err, out)
		}
		<-progress.done
		if err := cmd.Wait(); err != nil || stdout.String() != "started\n" {
			t.Fatalf("task run with a slow attachment and a gc meanwhile: %v\nstdout: %s\nstderr: %s", err, stdout.String(), progress.text())
		}
		v.faults("")
		v.assertClean(1)
	})

	t.Run("past the deadline", func(t *testing.T) {
		t.Parallel()
		v := upVPC(t, tagFaults, "--instances", "1")
		// Every attach fails, slowly enough that the SDK's attempts outlast
		// the deadline; create and delete work, so the failed launch cleans
		// up after itself.
		v.faults(`{"actions":{"AttachNetworkInterface":{"errorRate":1,"errorCode":"InternalError","latency":"1s"}}}`)
		out, err := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--timeout", "4s", "--", "echo", "started").CombinedOutput()
		if err == nil {
			t.Fatalf("task run succeeded although every attach fails:\n%s", out)
		}
		msg := lastLine(out)
		for _, want := range []string{"--timeout 4s", "attach-eni", "InternalError"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if strings.Contains(string(out), "started") {
			t.Errorf("the command ran:\n%s", out)
		}
		v.faults("")
		v.assertClean(1)
	})

	t.Run("release fails too", func(t *testing.T) {
		t.Parallel()
		v := upVPC(t, tagFaults, "--instances", "1")
		// The launch runs out of time attaching, and the release cannot
		// delete the ENI: the launcher says both and leaves the rest to
		// `task gc`, which finishes once EC2 lets it.
		v.faults(`{"actions":{"AttachNetworkInterface":{"errorRate":1,"errorCode":"InternalError","latency":"1s"},
			"DeleteNetworkInterface":{"errorRate":1,"errorCode":"UnauthorizedOperation"}}}`)
		out, err := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--timeout", "3s", "--", "echo", "started").CombinedOutput()
		if err == nil {
			t.Fatalf("task run succeeded although every attach fails:\n%s", out)
		}
		msg := lastLine(out)
		for _, want := range []string{"--timeout 3s", "attach-eni", "InternalError", "UnauthorizedOperation", "vpcnet task gc"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if len(v.leftovers(1)) == 0 {
			t.Fatal("nothing left although the ENI could not be deleted")
		}
		v.faults("")
		v.mustTask("gc")
		v.assertClean(1)
	})
}

// faultsActive proves the faults reach EC2 calls: without retries, some of
// 40 calls fail with the injected code (all 40 succeed with probability
// 0.5^40).
func faultsActive(t *testing.T, v *taskVPC, code string) {
	t.Helper()
	opts := v.EC2().Options()
	opts.Retryer = aws.NopRetryer{}
	api := ec2.New(opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 40 {
		_, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
		if cloud.APIErrorCode(err) == code {
			return
		}
	}
	t.Fatalf("40 calls without retries never failed with %s: the faults are not applied", code)
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
