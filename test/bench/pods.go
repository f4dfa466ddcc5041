package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The pod sections (issue 9 §6): vpcnetd and vpc-pod on local VPC
// instances. A pod is a CNI ADD through cnitool, run in the instance's
// namespace, into a namespace the benchmark creates (no container runtime:
// test/e2e's Go benchmarks cover crictl). Each section starts its own
// local VPCs (named vpcbp*) and agents and takes them down, pods first,
// whatever happens.
var podSections = []struct {
	name string
	run  func() error
}{
	{"podburst", benchPodBurst},
	{"podcold", benchPodCold},
	{"podfresh", benchPodFresh},
	{"podwarm1", benchPodWarmIP1},
	{"podrate", benchPodRate},
	{"podrss", benchPodRSS},
	{"podfleet", benchPodFleet},
}

// Fault sets of the local VPC (`vpcnet local up --faults`): what AWS
// costs. EC2 answers in 50-150 ms; an attached ENI's device shows after
// 2-5 s.
const (
	faultsEC2Latency = `{"actions":{"*":{"latency":"50ms","latencyMax":"150ms"}}}`
	faultsAWS        = `{"attachDelay":"2s","attachDelayMax":"5s","actions":{"*":{"latency":"50ms","latencyMax":"150ms"}}}`
)

// benchPods runs every pod section.
func benchPods() {
	for _, s := range podSections {
		runPodSection(s.name, s.run)
	}
}

// runPodSection runs one pod section, its failures printed in place of its
// table, with interrupts cleaned up.
func runPodSection(name string, run func() error) {
	stop := onInterrupt()
	defer stop()
	start := time.Now()
	if err := run(); err != nil {
		fmt.Printf("**%s failed:** %v\n\n", name, err)
	}
	fmt.Printf("Command: `VPCNET_BIN_DIR=$PWD/bin scripts/bench.sh -sections %s` (%.0f s).\n\n", name, time.Since(start).Seconds())
}

// podVPC is a local VPC for a pod section and a run directory for its
// agents; done takes it down.
func podVPC(tag string, flags ...string) (v *benchVPC, run string, done func(), err error) {
	v, err = upNamedVPC(podsVPCPrefix+tag, flags...)
	if err != nil {
		return nil, "", nil, err
	}
	run, err = os.MkdirTemp("", "vpcnet-bench-pods-")
	if err != nil {
		v.down()
		return nil, "", nil, err
	}
	return v, run, func() { v.down(); _ = os.RemoveAll(run) }, nil
}

// closeNode DELs the node's pods and stops its agent.
func closeNode(n *podNode) {
	if err := n.delAll(8); err != nil {
		fmt.Fprintf(os.Stderr, "bench: DEL of the pods on %s: %v\n", n.inst.ID, err)
	}
	n.stop()
}

// variant is the node's instance with another conflist (plugins from
// pluginDir), for the reference plugins beside vpc-pod.
func (n *podNode) variant(name, pluginDir string, plugin map[string]any) (*podNode, error) {
	dir := filepath.Join(n.dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o700); err != nil {
		return nil, err
	}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "benchnet", "plugins": []any{plugin}})
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-bench.conflist"), conf, 0o644); err != nil {
		return nil, err
	}
	return &podNode{v: n.v, inst: n.inst, host: n.host, dir: dir, tag: randomSuffix(), pods: map[int]bool{},
		cniEnv: append(os.Environ(), "NETCONFPATH="+filepath.Join(dir, "net.d"), "CNI_PATH="+pluginDir)}, nil
}

// burst ADDs count pods one after another, then DELs them one after
// another, each timed.
func burst(n *podNode, count int) (add, del sample, err error) {
	defer func() {
		if err != nil {
			_ = n.delAll(4)
		}
	}()
	for i := range count {
		d, err := n.add(i)
		if err != nil {
			return nil, nil, err
		}
		add = append(add, d)
	}
	for i := range count {
		d, err := n.del(i)
		if err != nil {
			return nil, nil, err
		}
		del = append(del, d)
	}
	return add, del, nil
}

func p99(s sample) time.Duration { return s.quantile(0.99) }

// benchPodBurst: §6.1, a burst of 30 pods on a warm pool, beside the
// reference ptp + host-local and the no-op floor on the same instance.
func benchPodBurst() error {
	const pods = 30
	fmt.Printf("## Pods: ADD and DEL in a burst of %d on a warm pool (ms)\n\n", pods)
	fmt.Printf("One m5.xlarge instance of a local VPC, vpcnetd with `WARM_IP_TARGET=%d` and %d addresses free before the burst. "+
		"%d `cnitool add` one after another in the instance's namespace, each into a new namespace, then %d `cnitool del`; the same on the same instance for the reference "+
		"`ptp` + `host-local` (Debian's /usr/lib/cni) and the no-op plugin. A pod here is a CNI ADD, not a runtime's sandbox. p99 of %d is the 29th slowest.\n\n", pods, pods, pods, pods, pods)
	v, run, done, err := podVPC("bu", "--instances", "1", "--instance-type", "m5.xlarge")
	if err != nil {
		return err
	}
	defer done()
	n, err := startPodNode(v, run, 0, fmt.Sprintf("WARM_IP_TARGET=%d", pods))
	if err != nil {
		return err
	}
	defer closeNode(n)
	if err := n.waitFree(pods, time.Minute); err != nil {
		return err
	}
	noop, err := n.variant("noop", *binDir, map[string]any{"type": "cninoop"})
	if err != nil {
		return err
	}
	ptp, err := n.variant("ptp", *refDir, map[string]any{"type": "ptp", "ipMasq": false, "ipam": map[string]any{
		"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.250.0.0/24"}}},
		"dataDir": filepath.Join(run, "host-local")}})
	if err != nil {
		return err
	}
	cases := []struct {
		name string
		node *podNode
	}{{"no-op plugin (floor)", noop}, {"reference ptp + host-local", ptp}, {"vpc-pod + vpcnetd", n}}
	var rows [][]string
	medians := map[string]time.Duration{}
	for _, c := range cases {
		add, del, err := burst(c.node, pods)
		if err != nil {
			rows = append(rows, []string{c.name, "error: " + cniMessage(err), "", "", "", ""})
			continue
		}
		medians[c.name] = add.median()
		rows = append(rows, []string{c.name, ms(add.median()), ms(p99(add)), ms(del.median()), ms(p99(del)), ms(add.quantile(1))})
	}
	m, err := n.metrics()
	if err != nil {
		return err
	}
	rows = append(rows, []string{"vpcnetd's own AddNetwork / DelNetwork (mean, from vpcnet_cni_latency_seconds)",
		ms(m.mean("vpcnet_cni_latency_seconds", `verb="add"`)), "", ms(m.mean("vpcnet_cni_latency_seconds", `verb="del"`)), "", ""})
	table([]string{"plugin", "ADD median", "ADD p99", "DEL median", "DEL p99", "ADD max"}, rows)
	if vp, ok := medians["vpc-pod + vpcnetd"]; ok {
		ref := medians["reference ptp + host-local"]
		fmt.Printf("Target ADD median ≤ 10 ms and no slower than ptp + host-local: %s (%s ms against %s ms).\n\n",
			verdict(vp <= 10*time.Millisecond && (ref == 0 || vp <= ref)), ms(vp), ms(ref))
	}
	return nil
}

func verdict(met bool) string {
	if met {
		return "**met**"
	}
	return "**not met**"
}

// coldRun is one cold node's first pod, timed from vpcnetd's fork.
type coldRun struct {
	socket, ready, serving, addressed time.Duration // since the fork
	add                               time.Duration // the ADD, sent when the socket appeared
	assignRTT                         time.Duration // the agent's mean AssignPrivateIpAddresses
	waited                            bool
}

// benchPodCold: §6.2, the first pod of a node whose pool is empty.
func benchPodCold() error {
	const nodes = 5
	fmt.Println("## Pods: a cold node's first pod (ms)")
	fmt.Println()
	fmt.Printf("A fresh m5.xlarge instance (nothing on its ENIs, an empty store), vpcnetd with `WARM_ENI_TARGET=0`. No setting keeps a ready vpcnetd's pool empty: every target, "+
		"0 included, grows the pool as soon as the first reconcile has read EC2 (`WARM_ENI_TARGET=0` grows one ENI's worth when nothing is free). So the pod is there first: "+
		"its `cnitool add` is sent the moment vpcnetd's socket appears, before the agent has read EC2, and finds the pool empty. The agent's readiness is polled with its Status call every 2 ms. "+
		"*ready → addressed* is the ADD's wait for the pool's first growth (one AssignPrivateIpAddresses) plus the plugin's own work; the target is one EC2 round trip + 50 ms. "+
		"(vpcnetd counts an ADD in `vpcnet_add_waits_total` only if it still finds no address once the agent is ready: with no latency the growth is done first.) "+
		"Median of %d nodes (max in parentheses), each a different instance.\n\n", nodes)
	var rows [][]string
	for _, sc := range []struct{ name, faults string }{{"no injected latency", ""}, {"EC2 calls 50-150 ms", faultsEC2Latency}} {
		runs, err := coldScenario(nodes, sc.faults)
		if err != nil {
			rows = append(rows, []string{sc.name, "error: " + err.Error(), "", "", "", "", "", "", ""})
			continue
		}
		col := func(f func(coldRun) time.Duration) string {
			var s sample
			for _, r := range runs {
				s = append(s, f(r))
			}
			return fmt.Sprintf("%s (%s)", ms(s.median()), ms(s.quantile(1)))
		}
		met, waited := true, 0
		for _, r := range runs {
			met = met && r.addressed-r.ready <= r.assignRTT+50*time.Millisecond
			if r.waited {
				waited++
			}
		}
		rows = append(rows, []string{sc.name,
			col(func(r coldRun) time.Duration { return r.socket }),
			col(func(r coldRun) time.Duration { return r.ready }),
			col(func(r coldRun) time.Duration { return r.serving }),
			col(func(r coldRun) time.Duration { return r.add }),
			col(func(r coldRun) time.Duration { return r.addressed - r.ready }),
			col(func(r coldRun) time.Duration { return r.assignRTT }),
			fmt.Sprintf("%d of %d", waited, len(runs)),
			verdict(met)})
	}
	table([]string{"EC2", "fork → socket", "fork → ready (first reconcile)", "fork → health SERVING", "ADD (sent at socket)", "ready → addressed", "AssignPrivateIpAddresses (agent's mean)", "ADDs counted in vpcnet_add_waits_total", "ready → addressed ≤ round trip + 50 ms"}, rows)
	return nil
}

func coldScenario(nodes int, faults string) ([]coldRun, error) {
	flags := []string{"--instances", fmt.Sprint(nodes), "--instance-type", "m5.xlarge"}
	if faults != "" {
		flags = append(flags, "--faults", faults)
	}
	v, run, done, err := podVPC("co", flags...)
	if err != nil {
		return nil, err
	}
	defer done()
	var runs []coldRun
	for i := range nodes {
		r, err := coldNode(v, run, i)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

func coldNode(v *benchVPC, run string, i int) (coldRun, error) {
	n, err := startPodNode(v, run, i, "WARM_ENI_TARGET=0")
	if err != nil {
		return coldRun{}, err
	}
	defer closeNode(n)
	if err := n.waitSocket(30 * time.Second); err != nil {
		return coldRun{}, err
	}
	r := coldRun{socket: time.Since(n.started)}
	// The health watcher: when a DaemonSet would write the conflist.
	servingAt := make(chan time.Duration, 1)
	go func() {
		if n.waitServing(time.Minute) == nil {
			servingAt <- time.Since(n.started)
		}
		close(servingAt)
	}()
	// The readiness watcher: the first Status that says ready.
	readyAt := make(chan time.Duration, 1)
	go func() {
		_ = n.poll("ready", time.Minute, 2*time.Millisecond, func() bool {
			s, err := n.status()
			if err == nil && s.GetReady() {
				readyAt <- time.Since(n.started)
				return true
			}
			return false
		})
		close(readyAt)
	}()
	d, err := n.add(0)
	if err != nil {
		return coldRun{}, fmt.Errorf("first ADD on %s: %s", n.inst.ID, cniMessage(err))
	}
	r.add, r.addressed = d, time.Since(n.started)
	ready, ok := <-readyAt
	if !ok {
		return coldRun{}, fmt.Errorf("vpcnetd on %s never said ready", n.inst.ID)
	}
	r.ready = ready
	if r.serving, ok = <-servingAt; !ok {
		return coldRun{}, fmt.Errorf("vpcnetd on %s never said SERVING", n.inst.ID)
	}
	m, err := n.metrics()
	if err != nil {
		return coldRun{}, err
	}
	r.assignRTT = m.mean("vpcnet_ec2_latency_seconds", `action="AssignPrivateIpAddresses"`)
	r.waited = m.sum("vpcnet_add_waits_total") > 0
	return r, nil
}

// benchPodFresh: §6.3, 45 pods at once on a node that just turned Ready.
func benchPodFresh() error {
	const pods = 45
	fmt.Printf("## Pods: %d at once on a fresh node\n\n", pods)
	fmt.Printf("A fresh m5.xlarge instance (4 ENIs x 14 secondary addresses, max pods 58), vpcnetd with default targets (`WARM_ENI_TARGET=1`, `VPCNET_ADD_WAIT` 10 s, vpc-pod's `addTimeout` 15 s). "+
		"When its health says SERVING (the moment a DaemonSet writes the conflist and the node turns Ready), %d `cnitool add` start at once, each into a new namespace, none retried. "+
		"*all addressed* is from the first ADD's start to the last successful ADD's end. Targets: every ADD succeeds on its first try; all addressed within 3 s (no injected latency), 8 s (AWS-like).\n\n", pods)
	var rows [][]string
	for _, sc := range []struct {
		name, faults string
		target       time.Duration
	}{{"no injected latency", "", 3 * time.Second}, {"attach 2-5 s, EC2 calls 50-150 ms", faultsAWS, 8 * time.Second}} {
		row, err := freshScenario(pods, sc.faults, sc.target)
		if err != nil {
			row = []string{"error: " + err.Error(), "", "", "", "", "", "", ""}
		}
		rows = append(rows, append([]string{sc.name}, row...))
	}
	table([]string{"EC2", "first try ok", "all addressed (ms)", "ADD median (ms)", "ADD max (ms)", "ENIs at the end", "EC2 calls", "target", "failed ADDs say"}, rows)
	return nil
}

func freshScenario(pods int, faults string, target time.Duration) ([]string, error) {
	flags := []string{"--instances", "1", "--instance-type", "m5.xlarge"}
	if faults != "" {
		flags = append(flags, "--faults", faults)
	}
	v, run, done, err := podVPC("fr", flags...)
	if err != nil {
		return nil, err
	}
	defer done()
	n, err := startPodNode(v, run, 0)
	if err != nil {
		return nil, err
	}
	defer closeNode(n)
	if err := n.waitServing(time.Minute); err != nil {
		return nil, err
	}
	before, err := n.metrics()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res := startAtOnce(n, pods, pods)
	m, err := n.metrics()
	if err != nil {
		return nil, err
	}
	calls, by := ec2Calls(m.minus(before))
	// vpcnetd's gauges are refreshed once a second: count from its report.
	rep, err := n.report()
	if err != nil {
		return nil, err
	}
	enis := len(rep.ENIs)
	all := res.lastOK.Sub(start)
	return []string{
		fmt.Sprintf("%d of %d", len(res.ok), pods),
		ms(all), ms(res.ok.median()), ms(res.ok.quantile(1)),
		fmt.Sprint(enis),
		fmt.Sprintf("%d (%s)", calls, by),
		verdict(len(res.failed) == 0 && all <= target),
		res.firstFailure(),
	}, nil
}

// startResult is what a group of parallel ADDs did.
type startResult struct {
	ok     sample
	lastOK time.Time
	failed []string // CNI messages
}

func (r startResult) firstFailure() string {
	if len(r.failed) == 0 {
		return ""
	}
	return fmt.Sprintf("%d failed: %s", len(r.failed), r.failed[0])
}

// startAtOnce ADDs pods 0..count-1 on workers goroutines.
func startAtOnce(n *podNode, count, workers int) startResult {
	return startRange(n, 0, count, workers)
}

func startRange(n *podNode, from, count, workers int) startResult {
	var mu sync.Mutex
	var r startResult
	parallel(count, workers, func(k int) {
		d, err := n.add(from + k)
		end := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			r.failed = append(r.failed, cniMessage(err))
			return
		}
		r.ok = append(r.ok, d)
		if end.After(r.lastOK) {
			r.lastOK = end
		}
	})
	return r
}

// benchPodWarmIP1: §6.4, WARM_IP_TARGET=1 MINIMUM_IP_TARGET=1, ten pods
// one after another.
func benchPodWarmIP1() error {
	const pods = 10
	fmt.Printf("## Pods: `WARM_IP_TARGET=1 MINIMUM_IP_TARGET=1`, %d pods one after another (ms)\n\n", pods)
	fmt.Printf("One m5.xlarge instance, one address free before the first pod. *Back to back*: each `cnitool add` starts when the previous one returned, so it finds the one free address " +
		"taken and waits for the growth its predecessor set off (one AssignPrivateIpAddresses of one address). *Spaced*: the same with 500 ms between pods, so the pool has grown " +
		"before each. *vpcnetd* is the agent's own time for each AddNetwork (its wait included), from the growth of `vpcnet_cni_latency_seconds_sum` across that one ADD; " +
		"the round trips are the `took` of the agent's assign decisions (`vpcnet node status -o json`). Target: every ADD's wait at most one EC2 round trip, no polling interval.\n\n")
	var rows [][]string
	for _, sc := range []struct{ name, faults string }{{"no injected latency", ""}, {"EC2 calls 50-150 ms", faultsEC2Latency}} {
		row, err := warmIP1Scenario(pods, sc.faults)
		if err != nil {
			row = []string{"error: " + err.Error(), "", "", "", "", "", ""}
		}
		rows = append(rows, append([]string{sc.name}, row...))
	}
	table([]string{"EC2", "back to back: cnitool ADD median / max", "vpcnetd median / max", "ADDs that waited (vpcnet_add_waits_total)", "spaced: cnitool ADD median", "vpcnetd median / max",
		"AssignPrivateIpAddresses round trip median / max", "vpcnetd max ≤ round trip max + 5 ms"}, rows)
	return nil
}

// timedAdd ADDs pod i and returns cnitool's time and vpcnetd's own time
// for the AddNetwork (the only CNI call in flight).
func timedAdd(n *podNode, i int) (cni, agent time.Duration, err error) {
	before, err := n.metrics()
	if err != nil {
		return 0, 0, err
	}
	cni, err = n.add(i)
	if err != nil {
		return 0, 0, fmt.Errorf("ADD %d: %s", i, cniMessage(err))
	}
	after, err := n.metrics()
	if err != nil {
		return 0, 0, err
	}
	d := after.minus(before).sum("vpcnet_cni_latency_seconds_sum", `verb="add"`)
	return cni, time.Duration(d * float64(time.Second)), nil
}

func warmIP1Scenario(pods int, faults string) ([]string, error) {
	flags := []string{"--instances", "1", "--instance-type", "m5.xlarge"}
	if faults != "" {
		flags = append(flags, "--faults", faults)
	}
	v, run, done, err := podVPC("w1", flags...)
	if err != nil {
		return nil, err
	}
	defer done()
	n, err := startPodNode(v, run, 0, "WARM_IP_TARGET=1", "MINIMUM_IP_TARGET=1")
	if err != nil {
		return nil, err
	}
	defer closeNode(n)
	if err := n.waitFree(1, time.Minute); err != nil {
		return nil, err
	}
	before, err := n.metrics()
	if err != nil {
		return nil, err
	}
	var b2b, b2bAgent sample
	for i := range pods {
		c, a, err := timedAdd(n, i)
		if err != nil {
			return nil, err
		}
		b2b, b2bAgent = append(b2b, c), append(b2bAgent, a)
	}
	mid, err := n.metrics()
	if err != nil {
		return nil, err
	}
	waited := mid.minus(before).sum("vpcnet_add_waits_total")
	var spaced, spacedAgent sample
	for i := pods; i < 2*pods; i++ {
		time.Sleep(500 * time.Millisecond)
		if err := n.waitFree(1, time.Minute); err != nil {
			return nil, err
		}
		c, a, err := timedAdd(n, i)
		if err != nil {
			return nil, err
		}
		spaced, spacedAgent = append(spaced, c), append(spacedAgent, a)
	}
	rep, err := n.report()
	if err != nil {
		return nil, err
	}
	var rtt sample
	for _, d := range rep.Decisions {
		if strings.HasPrefix(d.Action, "assign ") && d.Error == "" {
			rtt = append(rtt, d.Took)
		}
	}
	return []string{ms(b2b.median()) + " / " + ms(b2b.quantile(1)), ms(b2bAgent.median()) + " / " + ms(b2bAgent.quantile(1)),
		fmt.Sprintf("%.0f of %d", waited, pods), ms(spaced.median()), ms(spacedAgent.median()) + " / " + ms(spacedAgent.quantile(1)),
		fmt.Sprintf("%s / %s (%d calls)", ms(rtt.median()), ms(rtt.quantile(1)), len(rtt)),
		verdict(b2bAgent.quantile(1) <= rtt.quantile(1)+5*time.Millisecond)}, nil
}
