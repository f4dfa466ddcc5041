package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/task"
)

// taskVPCPrefix starts the name of the local VPCs of this section.
const taskVPCPrefix = "vpcbtask"

// taskScenario is one column group of the task table: a local VPC with
// some injected cloud behaviour.
type taskScenario struct {
	name   string
	faults string // for `vpcnet local faults`; "" for none
}

var (
	setupSteps    = []string{"describe-subnet", "create-eni", "attach-eni", "wait-device", "create-netns", "cni-eni", "cni-bridge", "metadata-endpoint"}
	teardownSteps = []string{"stop-command", "cni-del", "delete-netns", "detach-eni", "delete-eni"}
)

// taskRun is what one `vpcnet task run` measured.
type taskRun struct {
	start    time.Duration // command started -> the task's process printed its first line
	teardown time.Duration // that line -> vpcnet exited
	steps    map[string]time.Duration
}

func benchTask() {
	fmt.Println("## Task start-up by step (ms)")
	fmt.Println()
	fmt.Println("Each iteration is one foreground `vpcnet task run --instance 1 --subnet S -- echo started` on a local VPC, from the host, as a user types it. " +
		"*start* is from starting vpcnet to the task's process writing its first line in its own namespace; the steps are the launcher's own timings from the task record; " +
		"*other* is start minus the steps: vpcnet starting, entering the instance, the instance identity from metadata, starting the command. " +
		"*teardown* is from that line to vpcnet's exit (CNI DEL, namespace, detach, delete). " +
		"The first run of each scenario, which also starts the instance's metadata endpoint, is not counted.")
	fmt.Println()
	cleanTaskVPCs()
	defer cleanTaskVPCs()
	scenarios := []taskScenario{
		{name: "no injected latency"},
		{name: "AWS-like: attach 2-5 s, EC2 calls 50-150 ms", faults: `{"attachDelay":"2s","attachDelayMax":"5s","actions":{"*":{"latency":"50ms","latencyMax":"150ms"}}}`},
	}
	results := make([][]taskRun, len(scenarios))
	for i, sc := range scenarios {
		runs, err := runTaskScenario(sc)
		if err != nil {
			fatalf("task scenario %q: %v", sc.name, err)
		}
		results[i] = runs
	}

	header := []string{"step"}
	for _, sc := range scenarios {
		header = append(header, sc.name+" median", "p95")
	}
	var rows [][]string
	row := func(name string, value func(taskRun) time.Duration) {
		r := []string{name}
		for _, runs := range results {
			var s sample
			for _, run := range runs {
				s = append(s, value(run))
			}
			r = append(r, ms(s.median()), ms(s.p95()))
		}
		rows = append(rows, r)
	}
	for _, step := range setupSteps {
		row(step, func(r taskRun) time.Duration { return r.steps[step] })
	}
	row("other", func(r taskRun) time.Duration {
		other := r.start
		for _, step := range setupSteps {
			other -= r.steps[step]
		}
		return other
	})
	row("**start**", func(r taskRun) time.Duration { return r.start })
	for _, step := range teardownSteps {
		row(step, func(r taskRun) time.Duration { return r.steps[step] })
	}
	row("**teardown**", func(r taskRun) time.Duration { return r.teardown })
	table(header, rows)
}

// runTaskScenario starts a local VPC with one instance, applies the
// faults, and runs *iterations tasks one after the other (plus one not
// counted), then takes the VPC down.
func runTaskScenario(sc taskScenario) ([]taskRun, error) {
	vpcnet := filepath.Join(*binDir, "vpcnet")
	name := taskVPCPrefix + taskRandomHex(3)
	if out, err := exec.Command(vpcnet, "local", "up", "--name", name, "--instances", "1").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("local up: %v: %s", err, out)
	}
	defer func() { _ = exec.Command(vpcnet, "local", "down", "--name", name).Run() }()
	ctl, err := localvpc.Find(name)
	if err != nil {
		return nil, err
	}
	if sc.faults != "" {
		if out, err := exec.Command(vpcnet, "local", "faults", "--name", name, sc.faults).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("local faults: %v: %s", err, out)
		}
	}
	var runs []taskRun
	for i := 0; i <= *iterations; i++ {
		r, err := runOneTask(vpcnet, name, ctl.Instances[0].SubnetID)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			runs = append(runs, r)
		}
	}
	return runs, nil
}

func runOneTask(vpcnet, vpcName, subnet string) (taskRun, error) {
	cmd := exec.Command(vpcnet, "task", "run", "--local", vpcName, "--instance", "1", "--subnet", subnet, "--", "echo", "started")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return taskRun{}, err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return taskRun{}, err
	}
	var r taskRun
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "started" && r.start == 0 {
			r.start = time.Since(begin)
		}
	}
	if err := cmd.Wait(); err != nil {
		return taskRun{}, fmt.Errorf("task run: %v: %s", err, stderr.String())
	}
	if r.start == 0 {
		return taskRun{}, fmt.Errorf("the task printed nothing: %s", stderr.String())
	}
	r.teardown = time.Since(begin) - r.start
	// Progress lines start with the task ID's first 12 digits.
	prefix := strings.Fields(stderr.String())
	if len(prefix) == 0 {
		return taskRun{}, fmt.Errorf("no progress lines from task run")
	}
	rec, err := taskRecord(vpcnet, vpcName, prefix[0])
	if err != nil {
		return taskRun{}, err
	}
	r.steps = map[string]time.Duration{}
	for _, s := range rec.StepTimings {
		r.steps[s.Step] += s.Duration
	}
	return r, nil
}

// taskRecord reads a finished task's record (with its step timings) from
// `vpcnet task ls --all -o json`.
func taskRecord(vpcnet, vpcName, idPrefix string) (task.Record, error) {
	out, err := exec.Command(vpcnet, "task", "ls", "--local", vpcName, "--all", "-o", "json").Output()
	if err != nil {
		return task.Record{}, fmt.Errorf("task ls: %v", err)
	}
	var records []task.Record
	if err := json.Unmarshal(out, &records); err != nil {
		return task.Record{}, err
	}
	for _, r := range records {
		if strings.HasPrefix(r.ID, idPrefix) {
			return r, nil
		}
	}
	return task.Record{}, fmt.Errorf("no record of task %s", idPrefix)
}

// cleanTaskVPCs takes down local VPCs of this section that a crashed
// benchmark left behind (their control plane is gone).
func cleanTaskVPCs() {
	entries, _ := os.ReadDir(localvpc.BaseStateDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), taskVPCPrefix) {
			if _, err := localvpc.Find(e.Name()); err != nil {
				_ = localvpc.Down(e.Name())
			}
		}
	}
}

func taskRandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
