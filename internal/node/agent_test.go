package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

const vpcTag = "nd"

// agent is a vpcnetd running on a local VPC instance, started by a test.
type agent struct {
	t        *testing.T
	vpc      *localvpctest.VPC
	instance int
	dir      string // socket, store and log
	env      []string
	cmd      *exec.Cmd
	conn     *grpc.ClientConn
	api      nodeapi.CNIBackendClient
	introURL string
}

// startAgent starts vpcnetd on instance n with extra environment (pool
// targets ...), and waits for its health service to say SERVING.
func startAgent(t *testing.T, v *localvpctest.VPC, n int, dir string, env ...string) *agent {
	t.Helper()
	a := &agent{t: t, vpc: v, instance: n, dir: dir, env: env}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) start() {
	t := a.t
	t.Helper()
	bin := testenv.Binary(t, "vpcnetd")
	a.introURL = "http://127.0.0.1:61679"
	cmd := exec.Command(bin,
		"--socket", filepath.Join(a.dir, "vpcnetd.sock"),
		"--state", filepath.Join(a.dir, "state.db"),
		"--metrics-addr", "127.0.0.1:61678",
		"--cni-conf", a.conflistPath())
	cmd.Env = append(a.vpc.InstanceEnv(os.Environ(), a.vpc.Instances[a.instance-1].ID),
		append([]string{"VPCNET_LOG_FILE=" + filepath.Join(a.dir, "vpcnetd.log"), "VPCNET_LOG_LEVEL=debug"}, a.env...)...)
	logf, err := os.OpenFile(filepath.Join(a.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := a.vpc.StartOnInstance(a.vpc.Instances[a.instance-1].ID, cmd); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	a.closeConn()
	conn, err := grpc.NewClient("unix://"+filepath.Join(a.dir, "vpcnetd.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	a.conn, a.api = conn, nodeapi.NewCNIBackendClient(conn)
	h := healthpb.NewHealthClient(conn)
	testenv.Eventually(t, 60*time.Second, func() error {
		if cmd.ProcessState != nil {
			return fmt.Errorf("vpcnetd exited: %s", a.logs())
		}
		r, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: nodeapi.HealthService})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %s", r.GetStatus())
		}
		return nil
	})
	// Serving means the conflist is there (written first: the kubelet
	// turns the node Ready on it), naming vpc-pod and this socket.
	data, err := os.ReadFile(a.conflistPath())
	if err != nil {
		t.Fatalf("vpcnetd serves but its conflist is not written: %v", err)
	}
	var list struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type   string `json:"type"`
			Socket string `json:"socket"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil || len(list.Plugins) != 1 || list.Plugins[0].Type != "vpc-pod" ||
		list.Plugins[0].Socket != filepath.Join(a.dir, "vpcnetd.sock") {
		t.Fatalf("conflist %s: %v\n%s", a.conflistPath(), err, data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodeapi.Probe(ctx, filepath.Join(a.dir, "vpcnetd.sock")); err != nil {
		t.Fatalf("probe of a serving vpcnetd: %v", err)
	}
}

func (a *agent) conflistPath() string { return filepath.Join(a.dir, "net.d", node.DefaultCNIConfName) }

func (a *agent) logs() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "stderr.log"))
	l, _ := os.ReadFile(filepath.Join(a.dir, "vpcnetd.log"))
	lines := strings.Split(strings.TrimSpace(string(l)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return string(b) + "\nlast lines of vpcnetd.log:\n" + strings.Join(lines, "\n")
}

// stop sends SIGTERM and waits: a graceful stop.
func (a *agent) stop() {
	defer a.closeConn()
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
		a.t.Errorf("vpcnetd did not stop within 30 s of SIGTERM:\n%s", a.logs())
	}
	if strings.Contains(a.logs(), "graceful stop still not done") {
		a.t.Errorf("vpcnetd's graceful stop hung:\n%s", a.logs())
	}
	a.cmd = nil
}

// kill kills the agent with SIGKILL: a crash. The client connection stays
// open, as a plugin's would: RPCs in flight fail on the broken transport
// (Unavailable), not on a connection the test closed under them (Canceled).
// The next start or stop closes it.
func (a *agent) kill() {
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
	a.cmd = nil
}

// closeConn closes the client connection of the last start, once.
func (a *agent) closeConn() {
	if a.conn != nil {
		a.conn.Close()
		a.conn = nil
	}
}

func (a *agent) report() node.Report {
	a.t.Helper()
	var r node.Report
	body := a.get("/v1/status")
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		a.t.Fatalf("decode status: %v\n%s", err, body)
	}
	return r
}

// get fetches a path of the introspection endpoint, which listens on the
// instance's loopback: the request is made from inside the instance's
// network namespace.
func (a *agent) get(path string) string {
	a.t.Helper()
	in := a.vpc.Instances[a.instance-1]
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(netops.NamedNSPath(in.Namespace), func(ns.NetNS) (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	u := a.introURL + path
	if path == "/metrics" {
		u = "http://127.0.0.1:61678/metrics"
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(u)
	if err != nil {
		a.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func attachment(id string) *nodeapi.Attachment {
	return &nodeapi.Attachment{Network: "pods", ContainerId: id, IfName: "eth0"}
}

func (a *agent) add(id string) (*nodeapi.AddNetworkReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a.api.AddNetwork(ctx, &nodeapi.AddNetworkRequest{Attachment: attachment(id), PodNamespace: "default", PodName: id})
}

func (a *agent) mustAdd(id string) *nodeapi.AddNetworkReply {
	a.t.Helper()
	r, err := a.add(id)
	if err != nil {
		a.t.Fatalf("AddNetwork %s: %v\n%s", id, err, a.logs())
	}
	return r
}

// ec2Addresses maps each address EC2 holds on an ENI of the instance to the ENI.
func ec2Addresses(t *testing.T, v *localvpctest.VPC, instanceID string) map[string]string {
	t.Helper()
	out, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, n := range out.NetworkInterfaces {
		for _, p := range n.PrivateIpAddresses {
			if !aws.ToBool(p.Primary) {
				m[aws.ToString(p.PrivateIpAddress)] = aws.ToString(n.NetworkInterfaceId)
			}
		}
		for _, p := range n.Ipv4Prefixes {
			pfx := netip.MustParsePrefix(aws.ToString(p.Ipv4Prefix))
			for ad := pfx.Addr(); pfx.Contains(ad); ad = ad.Next() {
				m[ad.String()] = aws.ToString(n.NetworkInterfaceId)
			}
		}
	}
	return m
}

func TestMain(m *testing.M) {
	localvpctest.CleanLeftovers(vpcTag)
	localvpctest.CleanLeftovers(naTag)
	testenv.CleanLeftovers("node") // netconf_test.go's namespaces
	os.Exit(m.Run())
}

// TestAgentPool runs vpcnetd on an m5.large of a local VPC with aws-node's
// default targets: the pool fills to them, pods get addresses EC2 holds on
// the node's ENIs, a burst past the first ENI grows the pool without a
// failed ADD, a released address cools down, and a restart keeps every
// assignment.
func TestAgentPool(t *testing.T) {
	v := localvpctest.Up(t, vpcTag+"p", "--instances", "1", "--instance-type", "m5.large")
	a := startAgent(t, v, 1, t.TempDir(), "IP_COOLDOWN_PERIOD=2s")
	inst := v.Instances[0].ID

	// Defaults on m5.large (3 ENIs of 10 addresses): the primary ENI gets
	// its 9 secondary addresses.
	testenv.Eventually(t, 30*time.Second, func() error {
		r := a.report()
		if r.Totals.Free != 9 || len(r.ENIs) != 1 {
			return fmt.Errorf("pool: %+v, %d ENIs", r.Totals, len(r.ENIs))
		}
		return nil
	})
	r := a.report()
	if r.Limits.MaxPods != 29 {
		t.Errorf("max pods of m5.large = %d, want 29", r.Limits.MaxPods)
	}

	// 12 pods: past the primary's 9, so a second ENI comes; none fails.
	got := map[string]string{}
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("pod%02d", i)
		rep := a.mustAdd(id)
		if prev, dup := got[rep.GetIpv4Address()]; dup {
			t.Fatalf("%s got %s, already given to %s", id, rep.GetIpv4Address(), prev)
		}
		got[rep.GetIpv4Address()] = id
		// A retried ADD converges on the same address.
		if again := a.mustAdd(id); again.GetIpv4Address() != rep.GetIpv4Address() {
			t.Fatalf("retried ADD of %s: %s, first %s", id, again.GetIpv4Address(), rep.GetIpv4Address())
		}
	}
	held := ec2Addresses(t, v, inst)
	for addr, id := range got {
		if held[addr] == "" {
			t.Errorf("%s was given %s, which EC2 does not hold on an ENI of %s", id, addr, inst)
		}
	}
	r = a.report()
	if len(r.ENIs) < 2 {
		t.Errorf("after 12 pods the node has %d ENIs, want a second one", len(r.ENIs))
	}
	for _, e := range r.ENIs[1:] {
		if !e.Ours || e.Primary {
			t.Errorf("ENI %s: ours=%v primary=%v", e.ID, e.Ours, e.Primary)
		}
	}

	// Release one: it cools down, then is free again.
	del, err := a.api.DelNetwork(context.Background(), &nodeapi.DelNetworkRequest{Attachment: attachment("pod00")})
	if err != nil || !del.GetFound() {
		t.Fatalf("DelNetwork pod00: %v %v", del, err)
	}
	if again, err := a.api.DelNetwork(context.Background(), &nodeapi.DelNetworkRequest{Attachment: attachment("pod00")}); err != nil || again.GetFound() {
		t.Fatalf("second DelNetwork pod00: %v %v, want idempotent found=false", again, err)
	}
	if r := a.report(); r.Totals.Cooldown != 1 {
		t.Errorf("after one DEL: %+v, want 1 in cooldown", r.Totals)
	}

	// A graceful restart keeps every assignment.
	a.stop()
	a.start()
	for addr, id := range got {
		if id == "pod00" {
			continue
		}
		if rep := a.mustAdd(id); rep.GetIpv4Address() != addr {
			t.Errorf("after restart %s has %s, had %s", id, rep.GetIpv4Address(), addr)
		}
	}
	// What an operator sees.
	out, err := exec.Command(v.Bin, "node", "status", "--name", v.Name, "--instance", "1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "assigned  default/pod03") {
		t.Errorf("vpcnet node status: %v\n%s", err, out)
	}
	t.Logf("vpcnet node status:\n%s", out)
	// The pool gauges are refreshed each second: wait for the one after
	// the restart's ADDs.
	testenv.Eventually(t, 30*time.Second, func() error {
		metrics := a.get("/metrics")
		for _, want := range []string{"vpcnet_pool_addresses{state=\"assigned\"} 11", "vpcnet_ec2_calls_total", "vpcnet_cni_latency_seconds_bucket"} {
			if !strings.Contains(metrics, want) {
				return fmt.Errorf("metrics lack %q", want)
			}
		}
		return nil
	})
}

// TestAgentBadRequest: an attachment without a container ID is refused as
// invalid, naming the field.
func TestAgentBadRequest(t *testing.T) {
	v := localvpctest.Up(t, vpcTag+"b", "--instances", "1", "--instance-type", "t3.small")
	a := startAgent(t, v, 1, t.TempDir())
	_, err := a.api.AddNetwork(context.Background(), &nodeapi.AddNetworkRequest{Attachment: &nodeapi.Attachment{Network: "pods", IfName: "eth0"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "container_id") {
		t.Fatalf("AddNetwork without container ID: %v, want InvalidArgument naming container_id", err)
	}
}
