package main

// The pod sections that scale: start rate and EC2 calls, memory, a fleet
// of nodes (see pods.go).

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// benchPodRate: §6.5, pods per second until the node's limit, and EC2
// calls per 100 pod starts and stops.
func benchPodRate() error {
	fmt.Println("## Pods: start rate until the node's limit, EC2 calls per 100 starts and stops")
	fmt.Println()
	fmt.Println("m5.xlarge instances (4 ENIs x 14 secondary addresses: 56 pod addresses), no injected latency, EC2's default token buckets. " +
		"*Fill*: `cnitool add` from 4 workers until an ADD fails (the node's limit), then every pod DELed. " +
		"*Churn*: 10 rounds of 10 pods started at once and stopped, on a fresh node, with `IP_COOLDOWN_PERIOD=1s` and 1.1 s between rounds, so that the cooldown (30 s by default) does not decide the count. " +
		"EC2 calls are vpcnetd's `vpcnet_ec2_calls_total` (one per API call, SDK retries inside it), from the first ADD to 3 s after the last DEL; the agent's start-up calls are not counted.")
	fmt.Println()
	v, run, done, err := podVPC("ra", "--instances", "3", "--instance-type", "m5.xlarge")
	if err != nil {
		return err
	}
	defer done()
	var rows [][]string
	row, err := fillRow(v, run, 0)
	if err != nil {
		row = []string{"fill to the limit", "error: " + err.Error(), "", "", ""}
	}
	rows = append(rows, row)
	for i, env := range [][]string{{"IP_COOLDOWN_PERIOD=1s"}, {"IP_COOLDOWN_PERIOD=1s", "WARM_IP_TARGET=2"}} {
		row, err := churnRow(v, run, i+1, env)
		if err != nil {
			row = []string{"churn " + strings.Join(env, " "), "error: " + err.Error(), "", "", ""}
		}
		rows = append(rows, row)
	}
	table([]string{"run", "pods", "pods/s", "EC2 calls", "per 100 starts + 100 stops", "by action"}, rows)
	return nil
}

func fillRow(v *benchVPC, run string, i int) ([]string, error) {
	n, err := startPodNode(v, run, i)
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
	var mu sync.Mutex
	var lastOK time.Time
	okCount, limitMsg := 0, ""
	next := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if limitMsg != "" || next >= 100 {
					mu.Unlock()
					return
				}
				k := next
				next++
				mu.Unlock()
				_, err := n.add(k)
				end := time.Now()
				mu.Lock()
				if err != nil {
					if limitMsg == "" {
						limitMsg = cniMessage(err)
					}
				} else {
					okCount++
					if end.After(lastOK) {
						lastOK = end
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took := lastOK.Sub(start)
	if err := n.delAll(4); err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second)
	m, err := n.metrics()
	if err != nil {
		return nil, err
	}
	calls, by := ec2Calls(m.minus(before))
	fmt.Printf("Fill: the ADD after the %dth pod said: %s\n\n", okCount, limitMsg)
	return []string{"fill to the limit, default targets, then DEL all", fmt.Sprint(okCount), fmt.Sprintf("%.0f", float64(okCount)/took.Seconds()),
		fmt.Sprint(calls), fmt.Sprintf("%.0f", float64(calls)*100/float64(max(okCount, 1))), by}, nil
}

func churnRow(v *benchVPC, run string, i int, env []string) ([]string, error) {
	const rounds, perRound = 10, 10
	label := "churn, " + strings.Join(env, " ")
	n, err := startPodNode(v, run, i, env...)
	if err != nil {
		return nil, err
	}
	defer closeNode(n)
	if err := n.waitServing(time.Minute); err != nil {
		return nil, err
	}
	if err := n.waitFree(1, time.Minute); err != nil {
		return nil, err
	}
	before, err := n.metrics()
	if err != nil {
		return nil, err
	}
	var busy time.Duration
	for r := range rounds {
		t := time.Now()
		res := startRange(n, r*perRound, perRound, perRound)
		if len(res.failed) > 0 {
			return nil, errors.New(res.firstFailure())
		}
		if err := n.delAll(perRound); err != nil {
			return nil, err
		}
		busy += time.Since(t)
		time.Sleep(1100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	m, err := n.metrics()
	if err != nil {
		return nil, err
	}
	calls, by := ec2Calls(m.minus(before))
	total := rounds * perRound
	return []string{label, fmt.Sprint(total), fmt.Sprintf("%.0f (starts and stops, pauses left out)", float64(total)/busy.Seconds()),
		fmt.Sprint(calls), fmt.Sprintf("%.0f", float64(calls)*100/float64(total)), by}, nil
}

// benchPodRSS: §6.6, vpcnetd's memory with 250 pods and its CPU while idle.
func benchPodRSS() error {
	const pods = 250
	fmt.Printf("## Pods: vpcnetd's memory with %d pods, CPU while idle\n\n", pods)
	fmt.Printf("An m5.24xlarge instance (15 ENIs x 49 secondary addresses, max pods 737; a c5.4xlarge allows 234), default targets. RSS and peak (VmRSS, VmHWM) from /proc/PID/status; "+
		"CPU from /proc/PID/stat (utime + stime) over 10 s with nothing happening. %d pods ADDed by 4 workers.\n\n", pods)
	v, run, done, err := podVPC("rs", "--instances", "1", "--instance-type", "m5.24xlarge")
	if err != nil {
		return err
	}
	defer done()
	n, err := startPodNode(v, run, 0)
	if err != nil {
		return err
	}
	defer closeNode(n)
	if err := n.waitServing(time.Minute); err != nil {
		return err
	}
	pid := n.cmd.Process.Pid
	var rows [][]string
	measure := func(label string) error {
		time.Sleep(2 * time.Second) // let the pool settle
		c0, err := procCPU(pid)
		if err != nil {
			return err
		}
		time.Sleep(10 * time.Second)
		c1, err := procCPU(pid)
		if err != nil {
			return err
		}
		rss, peak, err := procRSS(pid)
		if err != nil {
			return err
		}
		m, err := n.metrics()
		if err != nil {
			return err
		}
		rows = append(rows, []string{label, fmt.Sprintf("%.1f", rss), fmt.Sprintf("%.1f", peak),
			fmt.Sprintf("%.2f", float64(c1-c0)/float64(10*time.Second)*100), fmt.Sprintf("%.0f", m.sum("go_goroutines")),
			fmt.Sprintf("%.0f", m.sum("vpcnet_pool_addresses", `state="assigned"`)), fmt.Sprintf("%.0f", m.sum("vpcnet_enis"))})
		return nil
	}
	if err := measure("ready, no pods"); err != nil {
		return err
	}
	start := time.Now()
	res := startAtOnce(n, pods, 4)
	took := time.Since(start)
	if len(res.failed) > 0 {
		return errors.New(res.firstFailure())
	}
	if err := measure(fmt.Sprintf("%d pods (started in %.1f s)", pods, took.Seconds())); err != nil {
		return err
	}
	table([]string{"vpcnetd", "RSS (MiB)", "peak RSS (MiB)", "CPU idle (% of one core)", "goroutines", "assigned", "ENIs"}, rows)
	return nil
}

// benchPodFleet: §6.7, 20 nodes at once, 30 pods each at once, under EC2's
// default token buckets.
func benchPodFleet() error {
	const nodes, pods, procs = 20, 30, 40
	fmt.Printf("## Pods: %d nodes at once, %d pods each at once, EC2's default token buckets\n\n", nodes, pods)
	fmt.Printf("A local VPC of %d m5.xlarge instances with EC2's default request buckets (the local VPC's defaults: CreateNetworkInterface, AssignPrivateIpAddresses 100 at once, 5/s; "+
		"other mutating actions 50, 5/s; describes 100, 20/s); every instance's vpcnetd (default targets) starts at the same moment. When all say SERVING, %d pods per node are started at once "+
		"(%d `cnitool add` in all, at most %d running at a time on this 2-core machine, so the plugins' CPU bounds the first row), none retried.\n\n", nodes, pods, nodes*pods, procs)
	var rows [][]string
	for _, sc := range []struct{ name, faults string }{{"no injected latency", ""}, {"attach 2-5 s, EC2 calls 50-150 ms", faultsAWS}} {
		row, err := fleetScenario(nodes, pods, procs, sc.faults)
		if err != nil {
			row = []string{"error: " + err.Error(), "", "", "", "", "", ""}
		}
		rows = append(rows, append([]string{sc.name}, row...))
	}
	table([]string{"EC2", "all agents SERVING (s)", "every pod addressed (s, from the first ADD)", "pods addressed", "pods failed", "EC2 calls (all agents, start-up included)", "RequestLimitExceeded seen", "a failure said"}, rows)
	return nil
}

func fleetScenario(nodes, pods, procs int, faults string) ([]string, error) {
	flags := []string{"--instances", fmt.Sprint(nodes), "--instance-type", "m5.xlarge"}
	if faults != "" {
		flags = append(flags, "--faults", faults)
	}
	v, run, done, err := podVPC("fl", flags...)
	if err != nil {
		return nil, err
	}
	defer done()
	var fleet []*podNode
	defer func() {
		var wg sync.WaitGroup
		for _, n := range fleet {
			wg.Add(1)
			go func() { defer wg.Done(); closeNode(n) }()
		}
		wg.Wait()
	}()
	start := time.Now()
	for i := range nodes {
		n, err := startPodNode(v, run, i)
		if err != nil {
			return nil, err
		}
		fleet = append(fleet, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i, n := range fleet {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.waitServing(2 * time.Minute) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	allReady := time.Since(start)
	sem := make(chan struct{}, procs)
	var mu sync.Mutex
	var failed []string
	okCount := 0
	var lastOK time.Time
	podStart := time.Now()
	for _, n := range fleet {
		for k := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				_, err := n.add(k)
				<-sem
				end := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = append(failed, cniMessage(err))
					return
				}
				okCount++
				if end.After(lastOK) {
					lastOK = end
				}
			}()
		}
	}
	wg.Wait()
	var throttled, calls float64
	for _, n := range fleet {
		m, err := n.metrics()
		if err != nil {
			return nil, err
		}
		throttled += m.sum("vpcnet_ec2_errors_total", `code="RequestLimitExceeded"`)
		calls += m.sum("vpcnet_ec2_calls_total")
	}
	first := ""
	if len(failed) > 0 {
		first = failed[0]
	}
	return []string{fmt.Sprintf("%.1f", allReady.Seconds()), fmt.Sprintf("%.1f", lastOK.Sub(podStart).Seconds()),
		fmt.Sprint(okCount), fmt.Sprint(len(failed)), fmt.Sprintf("%.0f", calls), fmt.Sprintf("%.0f", throttled), first}, nil
}
