package vpcpod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestConcurrentAddDel starts 30 ADDs at once, each its own vpc-pod
// process, against one agent, half of the addresses on the secondary ENI:
// every pod gets its own address and reaches the node and a neighbour;
// then 30 DELs at once leave the node as before and the agent holding
// nothing.
func TestConcurrentAddDel(t *testing.T) {
	const n = 30
	var addrs []string
	for i := range n / 2 {
		addrs = append(addrs, fmt.Sprintf("10.0.1.%d", 10+i))
	}
	addrs = append(addrs, "|")
	for i := range n - n/2 {
		addrs = append(addrs, fmt.Sprintf("10.0.2.%d", 10+i))
	}
	nd := newNode(t, addrs...)
	before := snapshot(t, nd.ns)
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = nd.newPod(t, fmt.Sprintf("burst-%02d", i), "1.0.0")
	}
	outs := make([][]byte, n)
	errs := all(n, func(i int) (err error) {
		outs[i], err = nd.exec("ADD", pods[i].c)
		return err
	})
	seen := map[string]string{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Fatalf("ADD %s: %v", p.c.containerID, errs[i])
		}
		p.res = parseResult(t, outs[i])
		ip := p.res.IPs[0].Address.IP.String()
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s both got %s", other, p.c.containerID, ip)
		}
		seen[ip] = p.c.containerID
		table := 0
		if strings.HasPrefix(ip, "10.0.2.") {
			table = secondaryTable
		}
		nd.verifyAttached(t, p, ip, table)
	}
	for i, p := range pods {
		if err := ping(t, p.ns, nodeIP); err != nil {
			t.Error(err)
		}
		if err := ping(t, p.ns, pods[(i+1)%n].ip.String()); err != nil {
			t.Error(err)
		}
	}
	if rules := nd.podRules(t); len(rules) != n+(n-n/2) {
		t.Errorf("%d rules of vpc-pod, want %d", len(rules), n+(n-n/2))
	}
	errs = all(n, func(i int) error {
		_, err := nd.exec("DEL", pods[i].c)
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %s: %v", pods[i].c.containerID, err)
		}
	}
	nd.verifyGone(t, before)
}

// all runs f(0..n-1) at once and returns their errors.
func all(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestCrashAtEachStep SIGKILLs ADD at each step it reaches (no deferred
// cleanup runs) and then repairs with DEL, with DEL without the namespace,
// with DEL while the agent is down followed by the agent's GC, with GC, or
// by retrying the ADD and then deleting; and kills DEL at each of its
// steps and runs it again. Afterwards the node and the pod are as before,
// link for link, address for address, route and rule for rule, and the
// agent holds no address. The pod's address is on the secondary ENI, so
// both rules are made.
func TestCrashAtEachStep(t *testing.T) {
	nd := newNode(t, "|", "10.0.2.20")
	warm := nd.newPod(t, "warm", "1.1.0")
	addLog, delLog := filepath.Join(t.TempDir(), "add"), filepath.Join(t.TempDir(), "del")
	if _, err := nd.exec("ADD", warm.c, crashpoint.EnvStepLog+"="+addLog); err != nil {
		t.Fatal(err)
	}
	if _, err := nd.exec("DEL", warm.c, crashpoint.EnvStepLog+"="+delLog); err != nil {
		t.Fatal(err)
	}
	addSteps, delSteps := readSteps(t, addLog), readSteps(t, delLog)
	want := []string{stepAssigned, stepStale, stepVeth, stepLabelled, stepHostRoute, stepRules, stepPodAddress, stepPodRoutes}
	if strings.Join(addSteps, "|") != strings.Join(want, "|") {
		t.Fatalf("ADD reached steps %q, want %q", addSteps, want)
	}
	if want := []string{stepRulesRemoved, stepVethRemoved, stepReleased}; strings.Join(delSteps, "|") != strings.Join(want, "|") {
		t.Fatalf("DEL reached steps %q, want %q", delSteps, want)
	}

	gcConf := withField(t, warm.c.conf, "cni.dev/valid-attachments", []map[string]string{})
	repairs := []struct {
		name   string
		repair func(t *testing.T, p *pod)
	}{
		{"DEL", func(t *testing.T, p *pod) {
			if _, err := nd.exec("DEL", p.c); err != nil {
				t.Fatalf("DEL after the crash: %v", err)
			}
		}},
		// As crictl rmp does after a failed runp: the host veth is found by
		// the name it was created with, even if the crash came before its
		// label.
		{"DEL without netns", func(t *testing.T, p *pod) {
			c := p.c
			c.netns = ""
			if _, err := nd.exec("DEL", c); err != nil {
				t.Fatalf("DEL without netns after the crash: %v", err)
			}
		}},
		{"DEL with the agent down, then GC", func(t *testing.T, p *pod) {
			nd.agent.stop()
			if _, err := nd.exec("DEL", p.c); err != nil {
				t.Fatalf("DEL with the agent down: %v", err)
			}
			nd.agent.start(t)
			c := p.c
			c.conf = gcConf
			if _, err := nd.exec("GC", c); err != nil {
				t.Fatalf("GC: %v", err)
			}
		}},
		{"GC", func(t *testing.T, p *pod) {
			c := p.c
			c.conf = gcConf
			if _, err := nd.exec("GC", c); err != nil {
				t.Fatalf("GC after the crash: %v", err)
			}
		}},
		{"retried ADD then DEL", func(t *testing.T, p *pod) {
			out, err := nd.exec("ADD", p.c)
			if err != nil {
				t.Fatalf("ADD retried after the crash: %v", err)
			}
			p.res = parseResult(t, out)
			nd.verifyAttached(t, p, "10.0.2.20", secondaryTable)
			if err := ping(t, p.ns, nodeIP); err != nil {
				t.Error(err)
			}
			if _, err := nd.exec("DEL", p.c); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		}},
	}
	for _, step := range addSteps {
		for _, r := range repairs {
			t.Run("ADD killed at "+step+"/"+r.name, func(t *testing.T) {
				p := nd.newPod(t, "crash", "1.1.0")
				nodeBefore, podBefore := snapshot(t, nd.ns), snapshot(t, p.ns)
				_, err := nd.exec("ADD", p.c, crashpoint.EnvKillAt+"="+step)
				if !killed(err) {
					t.Fatalf("ADD with %s=%q: want it killed, got %v", crashpoint.EnvKillAt, step, err)
				}
				r.repair(t, p)
				nd.assertRestored(t, nodeBefore, p, podBefore)
			})
		}
	}
	for _, step := range delSteps {
		t.Run("DEL killed at "+step+"/DEL again", func(t *testing.T) {
			p := nd.newPod(t, "crash", "1.1.0")
			nodeBefore, podBefore := snapshot(t, nd.ns), snapshot(t, p.ns)
			if _, err := nd.exec("ADD", p.c); err != nil {
				t.Fatal(err)
			}
			_, err := nd.exec("DEL", p.c, crashpoint.EnvKillAt+"="+step)
			if !killed(err) {
				t.Fatalf("DEL with %s=%q: want it killed, got %v", crashpoint.EnvKillAt, step, err)
			}
			if _, err := nd.exec("DEL", p.c); err != nil {
				t.Fatalf("DEL again: %v", err)
			}
			nd.assertRestored(t, nodeBefore, p, podBefore)
		})
	}
}

func (nd *node) assertRestored(t *testing.T, nodeBefore string, p *pod, podBefore string) {
	t.Helper()
	if after := snapshot(t, nd.ns); after != nodeBefore {
		t.Errorf("node differs from before the ADD:\n%s", testenv.LineDiff(nodeBefore, after))
	}
	if after := snapshot(t, p.ns); after != podBefore {
		t.Errorf("pod differs from before the ADD:\n%s", testenv.LineDiff(podBefore, after))
	}
	if held := nd.agent.holdings(); len(held) != 0 {
		t.Errorf("the agent still holds %v", held)
	}
}

func readSteps(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestRetriesRaceGC retries the ADD of 10 running pods, twice each, while
// 5 GCs that list them all run at once and sweep orphaned rules: no pod
// loses its veth, its rules or its address, and all still work.
func TestRetriesRaceGC(t *testing.T) {
	const n = 10
	var addrs []string
	addrs = append(addrs, "|")
	for i := range n {
		addrs = append(addrs, fmt.Sprintf("10.0.2.%d", 10+i))
	}
	nd := newNode(t, addrs...)
	pods := make([]*pod, n)
	var valid []map[string]string
	for i := range pods {
		pods[i] = nd.newPod(t, fmt.Sprintf("busy-%02d", i), "1.1.0")
		if _, err := nd.exec("ADD", pods[i].c); err != nil {
			t.Fatal(err)
		}
		valid = append(valid, map[string]string{"containerID": pods[i].c.containerID, "ifname": "eth0"})
	}
	gc := pods[0].c
	gc.conf = withField(t, pods[0].c.conf, "cni.dev/valid-attachments", valid)
	errs := all(n+5, func(i int) error {
		if i >= n {
			_, err := nd.exec("GC", gc)
			return err
		}
		for range 2 {
			out, err := nd.exec("ADD", pods[i].c)
			if err != nil {
				return err
			}
			pods[i].res = parseResult(t, out)
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	if rules := nd.podRules(t); len(rules) != 2*n {
		t.Errorf("%d rules of vpc-pod, want %d: %v", len(rules), 2*n, rules)
	}
	for i, p := range pods {
		nd.verifyAttached(t, p, fmt.Sprintf("10.0.2.%d", 10+i), secondaryTable)
		if err := ping(t, p.ns, nodeIP); err != nil {
			t.Error(err)
		}
	}
	if held := nd.agent.holdings(); len(held) != n {
		t.Errorf("the agent holds %d addresses, want %d", len(held), n)
	}
}

// BenchmarkAddDel measures one ADD and one DEL of the vpc-pod binary, as a
// runtime runs them, against the in-test agent (which answers at once), on
// an address of a secondary ENI (both rules). It reports each verb's share.
func BenchmarkAddDel(b *testing.B) {
	nd := newNode(b, "|", "10.0.2.20")
	p := nd.newPod(b, "bench", "1.0.0")
	var add, del time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := nd.exec("ADD", p.c); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := nd.exec("DEL", p.c); err != nil {
			b.Fatal(err)
		}
		add += mid.Sub(start)
		del += time.Since(mid)
	}
	b.ReportMetric(add.Seconds()*1000/float64(b.N), "add-ms/op")
	b.ReportMetric(del.Seconds()*1000/float64(b.N), "del-ms/op")
}
