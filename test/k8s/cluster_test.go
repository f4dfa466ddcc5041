package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// webDeployment is busybox httpd answering with the pod's name on 8080,
// spread evenly over the nodes.
const webDeployment = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"},
"spec":{"replicas":%d,"selector":{"matchLabels":{"app":"web"}},
 "template":{"metadata":{"labels":{"app":"web"}},"spec":{
  "terminationGracePeriodSeconds":1, "dnsPolicy":"Default",
  "topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","nodeTaintsPolicy":"Honor","labelSelector":{"matchLabels":{"app":"web"}}}],
  "containers":[{"name":"web","image":"localhost/vpcnet-busybox:latest","imagePullPolicy":"Never",
   "command":["sh","-c","mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}}}}`

const webService = `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
"spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":8080}]}}`

// TestClusterOnLocalVPC is the cluster as an operator uses it: `vpcnet
// local up --kubernetes` on two t3.medium instances, `kubectl apply -k
// deploy/` from the machine, a Deployment spread over both nodes whose pods
// get addresses of their nodes' ENIs (as EC2 describes them) and reach
// each other across nodes by address and through a ClusterIP Service;
// pods beyond max pods wait in Pending and none fails for want of an
// address; the vpcnetd pod deleted and recreated keeps every pod's
// address and connectivity; a drained node's pods move and get the other
// node's addresses; deleted pods' addresses return to the pool after the
// cooldown; kill -9 of a node's kubelet, containerd and kube-proxy and of
// the VPC's control plane, then `vpcnet local restart`, keeps every pod;
// `down` leaves the machine as it was.
func TestClusterOnLocalVPC(t *testing.T) {
	kbin := binDir(t)
	if miss := localvpc.MissingClusterBinaries(kbin); len(miss) > 0 {
		testenv.Skip(t, fmt.Sprintf("the Kubernetes binaries %v are not built: make test runs scripts/install-kubernetes.sh", miss))
	}
	// The node images take these from next to vpcnet.
	for _, b := range []string{"vpcnetd", "vpc-pod", "vpcnet-pause"} {
		testenv.Binary(t, b)
	}
	before := hostState(t)
	// Registered before the VPC's own clean-up, so it runs after `down`.
	t.Cleanup(func() {
		if after := hostState(t); !after.equal(before) {
			t.Errorf("the machine after down differs:\n%s", testenv.LineDiff(before.String(), after.String()))
		}
	})
	v := localvpctest.Up(t, "kc", "--instances", "2", "--instance-type", "t3.medium", "--kubernetes")
	c := &cluster{t: t, bin: kbin, kubeconfig: v.KubernetesKubeconfig}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.kubectl("", "get", "pods", "-A", "-o", "wide")
			ev, _ := c.kubectl("", "get", "events", "-A", "--sort-by=.lastTimestamp")
			t.Logf("pods:\n%s\nevents (tail):\n%s", out, tail(ev, 40))
			for _, in := range v.Instances {
				b, _ := os.ReadFile(filepath.Join(v.StateDir, localvpc.ClusterDir, "nodes", in.ID, "kubelet.log"))
				t.Logf("kubelet of %s (errors, tail):\n%s", in.ID, tail(grepLines(string(b), "E1"), 10))
			}
		}
	})

	// The nodes as EKS makes them: named by their private DNS name, the
	// provider ID, the zone, max pods (t3.medium: EKS's 17 less kube-proxy,
	// which runs beside the kubelet here).
	nodes := map[string]localvpc.InstanceInfo{} // node name -> instance
	for _, in := range v.Instances {
		nodes["ip-"+strings.ReplaceAll(in.PrivateIP, ".", "-")+".ec2.internal"] = in
	}
	var nl struct {
		Items []struct {
			Metadata struct {
				Name   string
				Labels map[string]string
			}
			Spec   struct{ ProviderID string }
			Status struct{ Capacity map[string]string }
		}
	}
	mustJSON(t, c.mustKubectl("", "get", "nodes", "-o", "json"), &nl)
	if len(nl.Items) != 2 {
		t.Fatalf("%d nodes, want 2", len(nl.Items))
	}
	for _, n := range nl.Items {
		in, ok := nodes[n.Metadata.Name]
		switch {
		case !ok:
			t.Errorf("node %s: not named after an instance's private DNS name (%v)", n.Metadata.Name, v.Instances)
		case n.Spec.ProviderID != "aws:///"+in.Zone+"/"+in.ID:
			t.Errorf("node %s: providerID %q, want aws:///%s/%s", n.Metadata.Name, n.Spec.ProviderID, in.Zone, in.ID)
		case n.Metadata.Labels["topology.kubernetes.io/zone"] != in.Zone || n.Metadata.Labels["node.kubernetes.io/instance-type"] != "t3.medium":
			t.Errorf("node %s: labels %v", n.Metadata.Name, n.Metadata.Labels)
		case n.Status.Capacity["pods"] != "16":
			t.Errorf("node %s: max pods %s, want 16", n.Metadata.Name, n.Status.Capacity["pods"])
		}
	}

	// vpcnetd as operators install aws-node; the nodes turn Ready.
	c.mustKubectl("", "apply", "-k", deployDir(t, ""))
	c.mustKubectl("", "-n", "kube-system", "rollout", "status", "daemonset/vpcnetd", "--timeout=180s")
	c.mustKubectl("", "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")

	// 20 pods over both nodes.
	c.mustKubectl(fmt.Sprintf(webDeployment, 20), "apply", "-f", "-")
	c.mustKubectl(webService, "apply", "-f", "-")
	c.mustKubectl("", "rollout", "status", "deployment/web", "--timeout=240s")
	pods := webPods(t, c)
	running := pods.running()
	if len(running) != 20 {
		t.Fatalf("%d web pods running, want 20: %v", len(running), pods)
	}
	enis := nodeAddresses(t, v, nodes)
	perNode := map[string]int{}
	for _, p := range running {
		perNode[p.node]++
		if !slices.Contains(enis[p.node], p.ip) {
			t.Errorf("pod %s on %s has %s, not an address of its node's ENIs %v", p.name, p.node, p.ip, enis[p.node])
		}
	}
	if len(perNode) != 2 {
		t.Errorf("pods per node %v: want both nodes", perNode)
	}

	// Across nodes: by pod address, and through the Service.
	a, b := pickPair(t, running)
	if got := strings.TrimSpace(c.mustKubectl("", "exec", a.name, "--", "wget", "-qO-", "http://"+b.ip.String()+":8080/")); got != b.name {
		t.Errorf("%s (on %s) fetched %q from %s (on %s), want its name", a.name, a.node, got, b.ip, b.node)
	}
	svcIP := strings.TrimSpace(c.mustKubectl("", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
	byName := map[string]webPod{}
	for _, p := range running {
		byName[p.name] = p
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		got := strings.TrimSpace(c.mustKubectl("", "exec", a.name, "--", "wget", "-qO-", "http://"+svcIP+"/"))
		if p, ok := byName[got]; !ok || p.node == a.node {
			return fmt.Errorf("through the Service %s: %q, want a web pod on another node than %s", svcIP, got, a.node)
		}
		return nil
	})

	// Beyond max pods: 15 addressed pods per node (16 less vpcnetd's), so
	// of 34, 4 wait in Pending as unschedulable; none fails for an address.
	c.mustKubectl("", "scale", "deployment/web", "--replicas=34")
	testenv.Eventually(t, 240*time.Second, func() error {
		p := webPods(t, c)
		if r, pend := len(p.running()), p.pendingUnschedulable(); r != 30 || pend != 4 {
			return fmt.Errorf("%d running, %d unschedulable, want 30 and 4", r, pend)
		}
		return nil
	})
	if ev := c.mustKubectl("", "get", "events", "-n", "default", "--field-selector", "reason=FailedCreatePodSandBox", "-o", "name"); strings.TrimSpace(ev) != "" {
		t.Errorf("pod sandboxes failed:\n%s", c.mustKubectl("", "get", "events", "-n", "default", "--field-selector", "reason=FailedCreatePodSandBox"))
	}
	enis = nodeAddresses(t, v, nodes)
	for _, p := range webPods(t, c).running() {
		if !slices.Contains(enis[p.node], p.ip) {
			t.Errorf("pod %s on %s has %s, not an address of its node's ENIs", p.name, p.node, p.ip)
		}
	}

	// vpcnetd's pod on a's node deleted: the DaemonSet makes another,
	// and every pod keeps its address and its connectivity.
	c.mustKubectl("", "scale", "deployment/web", "--replicas=20")
	c.mustKubectl("", "rollout", "status", "deployment/web", "--timeout=120s")
	pods = webPods(t, c)
	a, b = pickPair(t, pods.running())
	old := strings.TrimSpace(c.mustKubectl("", "-n", "kube-system", "get", "pods", "-l", "k8s-app=vpcnetd",
		"--field-selector", "spec.nodeName="+a.node, "-o", "jsonpath={.items[0].metadata.name}"))
	c.mustKubectl("", "-n", "kube-system", "delete", "pod", old, "--wait=true", "--timeout=60s")
	c.mustKubectl("", "-n", "kube-system", "rollout", "status", "daemonset/vpcnetd", "--timeout=120s")
	after := webPods(t, c)
	for _, p := range pods.running() {
		if q, ok := after.byName(p.name); !ok || q.ip != p.ip || q.phase != "Running" {
			t.Errorf("pod %s had %s before vpcnetd's pod was replaced; after: %+v", p.name, p.ip, q)
		}
	}
	if got := strings.TrimSpace(c.mustKubectl("", "exec", b.name, "--", "wget", "-qO-", "http://"+a.ip.String()+":8080/")); got != a.name {
		t.Errorf("after vpcnetd's pod was replaced, %s fetched %q from %s, want %s", b.name, got, a.ip, a.name)
	}

	// Drained: a's node's pods come back on b's node, with its addresses;
	// the drained node's pool gets its addresses back after the cooldown.
	c.mustKubectl("", "drain", a.node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
	c.mustKubectl("", "scale", "deployment/web", "--replicas=12")
	c.mustKubectl("", "rollout", "status", "deployment/web", "--timeout=120s")
	enis = nodeAddresses(t, v, nodes)
	for _, p := range webPods(t, c).running() {
		if p.node != b.node || !slices.Contains(enis[b.node], p.ip) {
			t.Errorf("after draining %s: pod %s on %s with %s, want on %s with one of its addresses", a.node, p.name, p.node, p.ip, b.node)
		}
	}
	testenv.Eventually(t, 90*time.Second, func() error {
		r := nodeReport(t, v, nodes[a.node].ID)
		if r.Totals.Assigned != 0 || r.Totals.Cooldown != 0 {
			return fmt.Errorf("the drained node's pool: %d assigned, %d in cooldown; want none", r.Totals.Assigned, r.Totals.Cooldown)
		}
		return nil
	})
	c.mustKubectl("", "uncordon", a.node)

	// kill -9 of b's node (kubelet, containerd, kube-proxy) and of the
	// local VPC's control plane; `vpcnet local restart` brings the
	// control plane back and starts what of the cluster died. The pods,
	// whose containers outlived containerd, keep their addresses and
	// connectivity; the node turns Ready again.
	pods = webPods(t, c)
	var pidsOfB map[string]struct{ PID int }
	b2, _ := os.ReadFile(filepath.Join(v.StateDir, localvpc.ClusterDir, "nodes", nodes[b.node].ID, "pids.json"))
	mustJSON(t, string(b2), &pidsOfB)
	for _, name := range []string{"kubelet", "containerd", "kube-proxy"} {
		if err := syscall.Kill(pidsOfB[name].PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %s of %s: %v", name, b.node, err)
		}
	}
	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(v.Bin, "local", "restart", "--name", v.Name).CombinedOutput(); err != nil {
		t.Fatalf("vpcnet local restart: %v\n%s", err, out)
	}
	c.mustKubectl("", "wait", "--for=condition=Ready", "node/"+b.node, "--timeout=120s")
	testenv.Eventually(t, 60*time.Second, func() error {
		after := webPods(t, c)
		for _, p := range pods.running() {
			if q, ok := after.byName(p.name); !ok || q.ip != p.ip || q.phase != "Running" {
				return fmt.Errorf("pod %s had %s before its node's processes were killed; after: %+v", p.name, p.ip, q)
			}
		}
		return nil
	})
	// The restarted kubelet serves exec once it has synced its pods.
	x := pods.running()[0]
	testenv.Eventually(t, 60*time.Second, func() error {
		got, err := c.kubectl("", "exec", x.name, "--", "wget", "-qO-", "http://"+svcIP+"/")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimSpace(got), "web-") {
			return fmt.Errorf("after the restart, %s fetched %q through the Service", x.name, got)
		}
		return nil
	})
}

// webPod is a pod of the web Deployment.
type webPod struct {
	name, node, phase, reason string
	ip                        netip.Addr
}

type webPodList []webPod

func webPods(t *testing.T, c *cluster) webPodList {
	t.Helper()
	var pl struct {
		Items []struct {
			Metadata struct {
				Name              string
				DeletionTimestamp *string
			}
			Spec   struct{ NodeName string }
			Status struct {
				Phase      string
				PodIP      string
				Conditions []struct{ Type, Status, Reason string }
			}
		}
	}
	mustJSON(t, c.mustKubectl("", "get", "pods", "-n", "default", "-l", "app=web", "-o", "json"), &pl)
	var out webPodList
	for _, p := range pl.Items {
		if p.Metadata.DeletionTimestamp != nil {
			continue
		}
		w := webPod{name: p.Metadata.Name, node: p.Spec.NodeName, phase: p.Status.Phase}
		w.ip, _ = netip.ParseAddr(p.Status.PodIP)
		for _, cond := range p.Status.Conditions {
			if cond.Type == "PodScheduled" && cond.Status == "False" {
				w.reason = cond.Reason
			}
		}
		out = append(out, w)
	}
	return out
}

func (l webPodList) running() []webPod {
	var out []webPod
	for _, p := range l {
		if p.phase == "Running" && p.ip.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

func (l webPodList) pendingUnschedulable() int {
	n := 0
	for _, p := range l {
		if p.phase == "Pending" && p.reason == "Unschedulable" {
			n++
		}
	}
	return n
}

func (l webPodList) byName(name string) (webPod, bool) {
	for _, p := range l {
		if p.name == name {
			return p, true
		}
	}
	return webPod{}, false
}

// pickPair returns two running pods on different nodes.
func pickPair(t *testing.T, pods []webPod) (webPod, webPod) {
	t.Helper()
	for _, a := range pods {
		for _, b := range pods {
			if a.node != b.node {
				return a, b
			}
		}
	}
	t.Fatalf("no two pods on different nodes: %v", pods)
	return webPod{}, webPod{}
}

// nodeAddresses are the private addresses of the ENIs attached to each
// node's instance, as EC2 describes them.
func nodeAddresses(t *testing.T, v *localvpctest.VPC, nodes map[string]localvpc.InstanceInfo) map[string][]netip.Addr {
	t.Helper()
	out := map[string][]netip.Addr{}
	for name, in := range nodes {
		r, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
			Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{in.ID}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.NetworkInterfaces {
			for _, a := range e.PrivateIpAddresses {
				out[name] = append(out[name], netip.MustParseAddr(aws.ToString(a.PrivateIpAddress)))
			}
		}
	}
	return out
}

// nodeReport is vpcnetd's status on an instance (`vpcnet node status`).
func nodeReport(t *testing.T, v *localvpctest.VPC, instance string) node.Report {
	t.Helper()
	out, err := exec.Command(v.Bin, "node", "status", "--name", v.Name, "--instance", instance, "-o", "json").Output()
	if err != nil {
		t.Fatalf("vpcnet node status --instance %s: %v", instance, err)
	}
	var r node.Report
	mustJSON(t, string(out), &r)
	return r
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", tail(s, 5), err)
	}
}

// machineState is what a cluster must leave as it found it on the
// machine: the sysctls the kubelet sets, the root namespace's iptables
// chains, cgroups of nodes, mounts of local VPCs.
type machineState struct{ lines []string }

func hostState(t *testing.T) machineState {
	t.Helper()
	var s machineState
	for _, f := range []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory"} {
		b, _ := os.ReadFile("/proc/sys/" + f)
		s.lines = append(s.lines, f+"="+strings.TrimSpace(string(b)))
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, _ := exec.Command(tool).Output()
		for _, l := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(l, ":"): // a chain, without its counters
				s.lines = append(s.lines, tool+" "+strings.Fields(l)[0])
			case strings.HasPrefix(l, "-A"):
				s.lines = append(s.lines, tool+" "+l)
			}
		}
	}
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/vpcnet-node-*")
	for _, d := range cg {
		s.lines = append(s.lines, "cgroup "+d)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, localvpc.BaseStateDir+"/"+localvpctest.NamePrefix+"kc") {
			s.lines = append(s.lines, "mount "+l)
		}
	}
	slices.Sort(s.lines)
	return s
}

func (s machineState) equal(o machineState) bool { return slices.Equal(s.lines, o.lines) }
func (s machineState) String() string            { return strings.Join(s.lines, "\n") }

// grepLines keeps the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestClusterUpKilled kills `vpcnet local up --kubernetes` with SIGKILL
// while it starts the nodes: `up --kubernetes` again completes the cluster
// (both nodes register), and `down` leaves the machine as it was.
func TestClusterUpKilled(t *testing.T) {
	kbin := binDir(t)
	if miss := localvpc.MissingClusterBinaries(kbin); len(miss) > 0 {
		testenv.Skip(t, fmt.Sprintf("the Kubernetes binaries %v are not built: make test runs scripts/install-kubernetes.sh", miss))
	}
	testenv.Privileged(t)
	bin := testenv.Binary(t, "vpcnet")
	for _, b := range []string{"vpcnetd", "vpc-pod", "vpcnet-pause"} {
		testenv.Binary(t, b)
	}
	before := hostState(t)
	name := localvpctest.NamePrefix + "kc" + testenv.RandomHex(3)
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "local", "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("vpcnet local down: %v\n%s", err, out)
		}
		if after := hostState(t); !after.equal(before) {
			t.Errorf("the machine after down differs:\n%s", testenv.LineDiff(before.String(), after.String()))
		}
	})
	up := exec.Command(bin, "local", "up", "--name", name, "--kubernetes")
	stderr, err := up.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once it has started the first node's processes.
	var seen strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), "node ip-") {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("up ended before starting a node: %v\n%s", err, seen.String())
		}
	}
	time.Sleep(500 * time.Millisecond)
	_ = up.Process.Kill()
	_ = up.Wait()

	out, err := exec.Command(bin, "local", "up", "--name", name, "--kubernetes").CombinedOutput()
	if err != nil {
		t.Fatalf("up --kubernetes after the kill: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "2 nodes registered") {
		t.Errorf("up --kubernetes after the kill:\n%s", out)
	}
	ctl, err := localvpc.Find(name)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, bin: kbin, kubeconfig: ctl.KubernetesKubeconfig}
	if got := strings.Fields(c.mustKubectl("", "get", "nodes", "-o", "name")); len(got) != 2 {
		t.Errorf("nodes after the completed up: %v", got)
	}
}
