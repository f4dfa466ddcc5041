package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
)

// podsVPCPrefix starts the name of every local VPC of the pod sections
// ("vpcb" + "p"), so that cleanLeftovers takes down what a crashed run left.
const podsVPCPrefix = localVPCPrefix + "p"

// Where vpcnetd serves its metrics inside the instance's namespace (its
// introspection stays on the default 127.0.0.1:61679, where `vpcnet node
// status` looks).
const podMetricsAddr = "127.0.0.1:61678"

// podNode is a local VPC instance run as a pod node: vpcnetd started in the
// instance's network namespace with an instance's environment (as
// test/e2e's StartPodNode does), its socket, store and logs in a run
// directory of its own, and a conflist naming vpc-pod with that socket.
// Pods are CNI ADDs through cnitool, run in the instance's namespace, into
// namespaces the benchmark creates: no container runtime.
type podNode struct {
	v      *benchVPC
	inst   localvpc.InstanceInfo
	host   ns.NetNS // the instance's namespace
	dir    string
	socket string
	cniEnv []string // cnitool's environment: the conflist and plugin directory
	tag    string   // in the names of this node's pod namespaces

	cmd     *exec.Cmd
	started time.Time // just before vpcnetd was forked
	done    chan struct{}
	waitErr error
	conn    *grpc.ClientConn
	api     nodeapi.CNIBackendClient

	mu   sync.Mutex
	pods map[int]bool // pods with a namespace, ADDed or not: DEL them at the end
}

// agents are the running vpcnetd processes of this benchmark, so that an
// interrupt stops them (by PID) before the VPCs go.
var agents struct {
	sync.Mutex
	m map[*podNode]bool
}

// onInterrupt stops the pod sections' agents and takes their VPCs down on
// Ctrl-C or SIGTERM. The agents would die with the benchmark anyway
// (Pdeathsig), but only after the VPC they use is gone.
func onInterrupt() (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			agents.Lock()
			for n := range agents.m {
				_ = n.cmd.Process.Kill()
			}
			agents.Unlock()
			cleanLeftovers()
			os.Exit(130)
		}
	}()
	return func() { signal.Stop(sigs); close(sigs) }
}

// startPodNode starts vpcnetd on the VPC's instance i (0-based) with extra
// environment (the pool targets) and returns without waiting for it.
func startPodNode(v *benchVPC, runDir string, i int, env ...string) (*podNode, error) {
	inst := v.Instances[i]
	dir := filepath.Join(runDir, inst.ID)
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o700); err != nil {
		return nil, err
	}
	n := &podNode{v: v, inst: inst, dir: dir, socket: filepath.Join(dir, "vpcnetd.sock"), tag: randomSuffix(),
		done: make(chan struct{}), pods: map[int]bool{}}
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "benchnet", "plugins": []any{
		map[string]any{"type": "vpc-pod", "socket": n.socket}}})
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-bench.conflist"), conf, 0o644); err != nil {
		return nil, err
	}
	n.cniEnv = append(os.Environ(), "NETCONFPATH="+filepath.Join(dir, "net.d"), "CNI_PATH="+*binDir)
	host, err := ns.GetNS(netops.NamedNSPath(inst.Namespace))
	if err != nil {
		return nil, fmt.Errorf("open the namespace of %s: %w", inst.ID, err)
	}
	n.host = host

	logf, err := os.Create(filepath.Join(dir, "vpcnetd.stderr"))
	if err != nil {
		host.Close()
		return nil, err
	}
	cmd := exec.Command(filepath.Join(*binDir, "vpcnetd"), "--socket", n.socket,
		"--state", filepath.Join(dir, "state.db"), "--metrics-addr", podMetricsAddr)
	cmd.Env = append(v.InstanceEnv(os.Environ(), inst.ID), "VPCNET_LOG_FILE="+filepath.Join(dir, "vpcnetd.log"))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The agent dies with the benchmark: Pdeathsig fires when the thread
	// that forked it ends, so that thread waits for it, locked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.cmd = cmd
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer close(n.done)
		defer logf.Close()
		n.waitErr = host.Do(func(ns.NetNS) error {
			n.started = time.Now()
			if err := cmd.Start(); err != nil {
				started <- err
				return err
			}
			started <- nil
			return cmd.Wait()
		})
	}()
	if err := <-started; err != nil {
		host.Close()
		return nil, fmt.Errorf("start vpcnetd on %s: %w", inst.ID, err)
	}
	agents.Lock()
	if agents.m == nil {
		agents.m = map[*podNode]bool{}
	}
	agents.m[n] = true
	agents.Unlock()
	conn, err := grpc.NewClient("unix://"+n.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.stop()
		return nil, err
	}
	n.conn, n.api = conn, nodeapi.NewCNIBackendClient(conn)
	return n, nil
}

// exited returns vpcnetd's exit and the end of its stderr if it is gone.
func (n *podNode) exited() error {
	select {
	case <-n.done:
		b, _ := os.ReadFile(filepath.Join(n.dir, "vpcnetd.stderr"))
		return fmt.Errorf("vpcnetd on %s exited: %v: %s", n.inst.ID, n.waitErr, strings.TrimSpace(lastLines(string(b), 5)))
	default:
		return nil
	}
}

// poll calls f every interval until it returns true, vpcnetd exits, or
// timeout passes.
func (n *podNode) poll(what string, timeout, interval time.Duration, f func() bool) error {
	deadline := time.Now().Add(timeout)
	for !f() {
		if err := n.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vpcnetd on %s: %s: not after %v", n.inst.ID, what, timeout)
		}
		time.Sleep(interval)
	}
	return nil
}

// waitSocket waits for the agent's socket to exist (polled every 1 ms).
func (n *podNode) waitSocket(timeout time.Duration) error {
	return n.poll("socket "+n.socket, timeout, time.Millisecond, func() bool {
		_, err := os.Stat(n.socket)
		return err == nil
	})
}

// status is the agent's Status call (what vpc-pod's STATUS asks).
func (n *podNode) status() (*nodeapi.StatusReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return n.api.Status(ctx, &nodeapi.StatusRequest{})
}

// waitFree waits until the agent has finished its first reconcile and has
// at least free addresses free (polled every 2 ms).
func (n *podNode) waitFree(free int, timeout time.Duration) error {
	return n.poll(fmt.Sprintf("%d free addresses", free), timeout, 2*time.Millisecond, func() bool {
		r, err := n.status()
		return err == nil && r.GetReady() && int(r.GetFree()) >= free
	})
}

// waitServing waits for grpc.health.v1 to say SERVING: the moment a
// DaemonSet's entrypoint writes the conflist and the node turns Ready.
func (n *podNode) waitServing(timeout time.Duration) error {
	h := healthpb.NewHealthClient(n.conn)
	return n.poll("health SERVING", timeout, 5*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: nodeapi.HealthService})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
}

// stop sends SIGTERM and waits up to 30 s, then SIGKILL.
func (n *podNode) stop() {
	if n.conn != nil {
		n.conn.Close()
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		fmt.Fprintf(os.Stderr, "bench: vpcnetd pid %d on %s ignored SIGTERM for 30s; killed\n", n.cmd.Process.Pid, n.inst.ID)
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	agents.Lock()
	delete(agents.m, n)
	agents.Unlock()
	n.host.Close()
}

func (n *podNode) podNS(i int) string { return fmt.Sprintf("%sbp%s-%d", nsPrefix, n.tag, i) }

// add creates pod i's namespace and runs `cnitool add` for it in the
// instance's namespace, timed.
func (n *podNode) add(i int) (time.Duration, error) {
	name := n.podNS(i)
	pod, err := netops.CreateNamedNS(name)
	if err != nil {
		return 0, err
	}
	pod.Close()
	n.mu.Lock()
	n.pods[i] = true
	n.mu.Unlock()
	env := append(n.cniEnv[:len(n.cniEnv):len(n.cniEnv)], fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod%d", i))
	return cnitool(n.host, env, "add", netops.NamedNSPath(name))
}

// del runs `cnitool del` for pod i, timed, and removes its namespace.
func (n *podNode) del(i int) (time.Duration, error) {
	name := n.podNS(i)
	d, err := cnitool(n.host, n.cniEnv, "del", netops.NamedNSPath(name))
	if err != nil {
		return 0, err
	}
	if err := netops.DeleteNamedNS(name); err != nil {
		return 0, err
	}
	n.mu.Lock()
	delete(n.pods, i)
	n.mu.Unlock()
	return d, nil
}

// delAll DELs every pod still there, with workers in parallel, and
// returns the first error.
func (n *podNode) delAll(workers int) error {
	n.mu.Lock()
	var left []int
	for i := range n.pods {
		left = append(left, i)
	}
	n.mu.Unlock()
	errs := make([]error, len(left))
	parallel(len(left), workers, func(k int) {
		if _, err := n.del(left[k]); err != nil {
			errs[k] = err
			_ = netops.DeleteNamedNS(n.podNS(left[k]))
		}
	})
	return errors.Join(errs...)
}

// parallel runs f(0..count-1) on workers goroutines.
func parallel(count, workers int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
}

// report is the agent's introspection, as `vpcnet node status -o json`
// prints it.
func (n *podNode) report() (node.Report, error) {
	out, err := exec.Command(vpcnetBin(), "node", "status", "--name", n.v.Name, "--instance", n.inst.ID, "-o", "json").Output()
	if err != nil {
		return node.Report{}, fmt.Errorf("vpcnet node status --instance %s: %w", n.inst.ID, err)
	}
	var r node.Report
	if err := json.Unmarshal(out, &r); err != nil {
		return node.Report{}, fmt.Errorf("decode vpcnet node status: %w", err)
	}
	return r, nil
}

// promSeries is a Prometheus text exposition: every sample line's series
// (name and labels, as printed) and its value.
type promSeries map[string]float64

// metrics reads vpcnetd's /metrics from inside the instance's namespace:
// the connection is made there; the HTTP exchange can happen anywhere.
func (n *podNode) metrics() (promSeries, error) {
	var conn net.Conn
	err := n.host.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", podMetricsAddr, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to vpcnetd's metrics on %s: %w", n.inst.ID, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", podMetricsAddr); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, fmt.Errorf("read vpcnetd's metrics on %s: %w", n.inst.ID, err)
	}
	defer resp.Body.Close()
	s := promSeries{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			s[line[:i]] = v
		}
	}
	return s, sc.Err()
}

// sum adds the samples of the metric name whose labels contain every one
// of match (e.g. `action="AttachNetworkInterface"`).
func (s promSeries) sum(name string, match ...string) float64 {
	var t float64
	for k, v := range s {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(labels, m)
		}
		if ok {
			t += v
		}
	}
	return t
}

// byLabel adds the samples of the metric name by the value of one label.
func (s promSeries) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range s {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		_, rest, ok := strings.Cut(labels, label+`="`)
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(rest, `"`)
		out[val] += v
	}
	return out
}

// minus is s - before, series by series (counters over an interval).
func (s promSeries) minus(before promSeries) promSeries {
	out := promSeries{}
	for k, v := range s {
		out[k] = v - before[k]
	}
	return out
}

// mean is a histogram's sum / count for the samples matching match.
func (s promSeries) mean(histogram string, match ...string) time.Duration {
	c := s.sum(histogram+"_count", match...)
	if c == 0 {
		return 0
	}
	return time.Duration(s.sum(histogram+"_sum", match...) / c * float64(time.Second))
}

// ec2Calls renders the EC2 calls of a metrics interval by action, e.g.
// "12: AssignPrivateIpAddresses 4, CreateNetworkInterface 2, ...".
func ec2Calls(d promSeries) (total int, byAction string) {
	m := d.byLabel("vpcnet_ec2_calls_total", "action")
	var parts []string
	for _, a := range slices.Sorted(maps.Keys(m)) {
		if m[a] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", a, m[a]))
			total += int(m[a])
		}
	}
	return total, strings.Join(parts, ", ")
}

// procRSS is a process's resident set and its peak, in MiB, from
// /proc/PID/status.
func procRSS(pid int) (rss, peak float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak, nil
}

// procCPU is a process's user + system CPU time so far, from /proc/PID/stat
// (in clock ticks of 1/100 s, USER_HZ on Linux).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// cniMessage is the message of a failed cnitool run: the plugin's CNI
// error (code and msg) when it printed one.
func cniMessage(err error) string {
	s := err.Error()
	if i := strings.Index(s, `"code"`); i >= 0 {
		s = s[max(i-1, 0):]
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 240 {
		s = s[:240] + "..."
	}
	return strings.ReplaceAll(s, "|", "/")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
