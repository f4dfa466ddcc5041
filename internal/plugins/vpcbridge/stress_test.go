package vpcbridge

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

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestConcurrentAddDel starts 50 ADDs at once, each its own vpc-bridge
// process running vpc-ipam, on one bridge that does not exist yet: they
// race to create it and to give it its gateway. Every task gets its own
// address and reaches the endpoint; then 50 DELs at once leave nothing.
func TestConcurrentAddDel(t *testing.T) {
	const n = 50
	h := newHost(t)
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	path := cniPath(t)
	tasks := make([]*task, n)
	for i := range tasks {
		tk := &task{ns: testenv.NewNS(t, tag)}
		tk.c = call{netns: tk.ns.Path(), containerID: fmt.Sprintf("burst-%02d", i), ifName: "ecs-eth0", conf: conf, path: path}
		tasks[i] = tk
	}

	outs := make([][]byte, n)
	errs := all(n, func(i int) (err error) {
		outs[i], err = h.exec("ADD", tasks[i].c)
		return err
	})
	seen := map[string]string{}
	for i, tk := range tasks {
		if errs[i] != nil {
			t.Fatalf("ADD %s: %v", tk.c.containerID, errs[i])
		}
		tk.res = parseResult(t, outs[i])
		tk.ip = containerIP(t, tk.res)
		if other, dup := seen[tk.ip.String()]; dup {
			t.Fatalf("%s and %s both got %s", other, tk.c.containerID, tk.ip)
		}
		seen[tk.ip.String()] = tk.c.containerID
	}
	for _, tk := range tasks {
		h.reachesEndpoint(tk.ns)
	}
	if ports := h.bridgePorts(t); ports != n {
		t.Errorf("bridge has %d ports, want %d", ports, n)
	}
	if held := ip.allocations(t, "meta"); len(held) != n {
		t.Errorf("%d allocations, want %d", len(held), n)
	}
	// They all raced to install the nftables rule too: one rule, one
	// element.
	if rules := h.isolationRules(t); len(rules) != 1 {
		t.Errorf("the forward chain has %d rules, want 1", len(rules))
	}
	if bridges := h.isolatedBridges(t); len(bridges) != 1 || bridges[0] != bridgeName+"."+bridgeName {
		t.Errorf("the nftables set holds %v, want only %s.%s", bridges, bridgeName, bridgeName)
	}

	errs = all(n, func(i int) error {
		_, err := h.exec("DEL", tasks[i].c)
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL %s: %v", tasks[i].c.containerID, err)
		}
	}
	h.verifyGone(t, ip, "meta", tasks...)
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

// TestCrashAtEachStep kills the ADD at each step it reaches (SIGKILL: no
// deferred cleanup runs) and then repairs with DEL, with DEL without the
// namespace, with GC, or by retrying the ADD and then deleting. The crash
// at "veth created" leaves a pair that is not labelled yet. Afterwards the host and the container are as
// before the ADD, link for link, address for address, route for route, and
// no address is held. "As before" includes the bridge and its gateway
// address: they are shared by every task and made by the first ADD, which
// the test runs before taking the snapshot.
func TestCrashAtEachStep(t *testing.T) {
	h := newHost(t)
	ip := vpcIPAM(t)
	conf := netConf("1.1.0", "meta", ip.section("", ""))
	path := cniPath(t)

	warm := call{netns: testenv.NewNS(t, tag).Path(), containerID: "warm", ifName: "eth1", conf: conf, path: path}
	stepLog := filepath.Join(t.TempDir(), "steps")
	if _, err := h.exec("ADD", warm, crashpoint.EnvStepLog+"="+stepLog); err != nil {
		t.Fatal(err)
	}
	if _, err := h.exec("DEL", warm); err != nil {
		t.Fatal(err)
	}
	steps := ourSteps(t, stepLog)
	want := []string{stepBridge, stepStale, stepVeth, stepLabelled, stepAttached, stepIPAM, stepGateway, stepAddress, stepRoutes}
	if strings.Join(steps, "|") != strings.Join(want, "|") {
		t.Fatalf("ADD reached steps %q, want %q", steps, want)
	}

	repairs := []struct {
		name   string
		repair func(t *testing.T, c call)
	}{
		{"DEL", func(t *testing.T, c call) {
			if _, err := h.exec("DEL", c); err != nil {
				t.Fatalf("DEL after the crash: %v", err)
			}
		}},
		// As crictl rmp does after a failed runp, and as the only way left
		// when the namespace is forgotten: the host veth is found by the
		// name it was created with, even if the crash came before its label.
		{"DEL without netns", func(t *testing.T, c call) {
			c.netns = ""
			if _, err := h.exec("DEL", c); err != nil {
				t.Fatalf("DEL without netns after the crash: %v", err)
			}
		}},
		{"GC", func(t *testing.T, c call) {
			gc := c
			gc.conf = []byte(strings.Replace(string(conf), "{", `{"cni.dev/valid-attachments":[],`, 1))
			if _, err := h.exec("GC", gc); err != nil {
				t.Fatalf("GC after the crash: %v", err)
			}
		}},
		{"retried ADD then DEL", func(t *testing.T, c call) {
			if _, err := h.exec("ADD", c); err != nil {
				t.Fatalf("ADD retried after the crash: %v", err)
			}
			h.reachesEndpoint(mustNS(t, c.netns))
			if links := h.attachmentLinks(t); len(links) != 1 {
				t.Errorf("after the retried ADD: want 1 host veth, have %v", linkNames(links))
			}
			if held := ip.allocations(t, "meta"); len(held) != 1 {
				t.Errorf("after the retried ADD: want 1 allocation, have %v", held)
			}
			if _, err := h.exec("DEL", c); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		}},
	}
	for _, step := range steps {
		for _, r := range repairs {
			t.Run(step+"/"+r.name, func(t *testing.T) {
				ctr := testenv.NewNS(t, tag)
				c := call{netns: ctr.Path(), containerID: "crash", ifName: "eth1", conf: conf, path: path}
				hostBefore, ctrBefore := snapshot(t, h.ns), snapshot(t, ctr)

				_, err := h.exec("ADD", c, crashpoint.EnvKillAt+"="+step)
				if !killed(err) {
					t.Fatalf("ADD with %s=%q: want it killed, got %v", crashpoint.EnvKillAt, step, err)
				}
				r.repair(t, c)

				if after := snapshot(t, h.ns); after != hostBefore {
					t.Errorf("host differs from before the ADD:\n%s", testenv.LineDiff(hostBefore, after))
				}
				if after := snapshot(t, ctr); after != ctrBefore {
					t.Errorf("container differs from before the ADD:\n%s", testenv.LineDiff(ctrBefore, after))
				}
				if held := ip.allocations(t, "meta"); len(held) != 0 {
					t.Errorf("addresses still held: %v", held)
				}
			})
		}
	}
}

// ourSteps reads the steps vpc-bridge logged (vpc-ipam, which inherits
// the variable, logs its own).
func ourSteps(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.HasPrefix(l, "vpc-bridge: ") {
			steps = append(steps, l)
		}
	}
	return steps
}

func killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func mustNS(t testing.TB, path string) ns.NetNS {
	t.Helper()
	n, err := ns.GetNS(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// BenchmarkAddDel measures one ADD and one DEL of the vpc-bridge binary with
// vpc-ipam, as a runtime runs them, on a bridge that already exists. It
// reports each verb's share too.
func BenchmarkAddDel(b *testing.B) {
	h := newHost(b)
	ip := vpcIPAM(b)
	ctr := testenv.NewNS(b, tag)
	c := call{netns: ctr.Path(), containerID: "bench", ifName: "eth1", conf: netConf("1.1.0", "meta", ip.section("", "")), path: cniPath(b)}
	if _, err := h.exec("ADD", c); err != nil {
		b.Fatal(err)
	}
	if _, err := h.exec("DEL", c); err != nil {
		b.Fatal(err)
	}
	var add, del time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := h.exec("ADD", c); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := h.exec("DEL", c); err != nil {
			b.Fatal(err)
		}
		add += mid.Sub(start)
		del += time.Since(mid)
	}
	b.ReportMetric(add.Seconds()*1000/float64(b.N), "add-ms/op")
	b.ReportMetric(del.Seconds()*1000/float64(b.N), "del-ms/op")
}
