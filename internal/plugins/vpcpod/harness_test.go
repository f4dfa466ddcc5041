package vpcpod

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The test world: a "node" namespace plays the instance (the plugin runs
// there, it forwards IPv4 and owns the node address 10.0.0.10 on lo); each
// pod is another namespace; a test double of vpcnetd, in the test process,
// serves the API on a unix socket and hands out addresses from a list. The
// agent is a component with a contract, so a double is fair; every kernel
// effect is real.

const tag = "hp"

func TestMain(m *testing.M) {
	testenv.CleanLeftovers(tag)
	// The verbs run in-process log through the default logger.
	slog.SetDefault(logging.Discard)
	os.Exit(m.Run())
}

const (
	nodeIP  = "10.0.0.10"
	network = "pods"
	// secondaryTable is the route table of the test's secondary ENI.
	secondaryTable = 2
)

// fakeAgent is the test's vpcnetd: assignments keyed by attachment, taken
// from a list of free addresses, every call recorded.
type fakeAgent struct {
	nodeapi.UnimplementedCNIBackendServer
	socket string

	mu       sync.Mutex
	free     []string
	tables   map[string]int32 // address -> route table, for secondary-ENI addresses
	held     map[string]string
	calls    []string
	addErr   error // AddNetwork fails with it when set
	mtu      int32
	delay    time.Duration // AddNetwork waits this long, as for a pool growing
	ready    bool
	reason   string
	released []string
	srv      *grpc.Server
}

func akey(a *nodeapi.Attachment) string {
	return a.GetNetwork() + "/" + a.GetContainerId() + "/" + a.GetIfName()
}

// newAgent starts the test agent with the given free addresses; those
// after a "|" belong to the secondary ENI (table 2).
func startAgent(t testing.TB, addrs ...string) *fakeAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "hp-agent") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &fakeAgent{socket: filepath.Join(dir, "vpcnetd.sock"), tables: map[string]int32{}, held: map[string]string{}, ready: true, mtu: 9001}
	secondary := false
	for _, s := range addrs {
		if s == "|" {
			secondary = true
			continue
		}
		a.free = append(a.free, s)
		if secondary {
			a.tables[s] = secondaryTable
		}
	}
	a.start(t)
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) start(t testing.TB) {
	t.Helper()
	os.Remove(a.socket)
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	nodeapi.RegisterCNIBackendServer(srv, a)
	a.mu.Lock()
	a.srv = srv
	a.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop takes the agent down, as a crashed vpcnetd: the socket goes.
func (a *fakeAgent) stop() {
	a.mu.Lock()
	srv := a.srv
	a.srv = nil
	a.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	os.Remove(a.socket)
}

func (a *fakeAgent) record(format string, args ...any) {
	a.calls = append(a.calls, fmt.Sprintf(format, args...))
}

func (a *fakeAgent) reply(addr string) *nodeapi.AddNetworkReply {
	return &nodeapi.AddNetworkReply{Ipv4Address: addr, EniId: "eni-test", RouteTable: a.tables[addr], DeviceIndex: a.tables[addr], VpcCidrs: []string{"10.0.0.0/16"}, Mtu: a.mtu}
}

func (a *fakeAgent) AddNetwork(ctx context.Context, r *nodeapi.AddNetworkRequest) (*nodeapi.AddNetworkReply, error) {
	a.mu.Lock()
	delay := a.delay
	a.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := akey(r.GetAttachment())
	a.record("AddNetwork %s pod=%s/%s", k, r.GetPodNamespace(), r.GetPodName())
	if a.addErr != nil {
		return nil, a.addErr
	}
	if addr, ok := a.held[k]; ok {
		return a.reply(addr), nil
	}
	if len(a.free) == 0 {
		return nil, status.Error(codes.ResourceExhausted, "no free address: node at its limit")
	}
	addr := a.free[0]
	a.free = a.free[1:]
	a.held[k] = addr
	return a.reply(addr), nil
}

func (a *fakeAgent) releaseLocked(k string) (string, bool) {
	addr, ok := a.held[k]
	if !ok {
		return "", false
	}
	delete(a.held, k)
	a.free = append(a.free, addr)
	a.released = append(a.released, addr)
	return addr, true
}

func (a *fakeAgent) DelNetwork(_ context.Context, r *nodeapi.DelNetworkRequest) (*nodeapi.DelNetworkReply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := akey(r.GetAttachment())
	a.record("DelNetwork %s", k)
	addr, ok := a.releaseLocked(k)
	return &nodeapi.DelNetworkReply{Found: ok, Ipv4Address: addr, RouteTable: a.tables[addr]}, nil
}

func (a *fakeAgent) CheckNetwork(_ context.Context, r *nodeapi.CheckNetworkRequest) (*nodeapi.AddNetworkReply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := akey(r.GetAttachment())
	a.record("CheckNetwork %s", k)
	addr, ok := a.held[k]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "attachment %s holds no address", k)
	}
	return a.reply(addr), nil
}

func (a *fakeAgent) GarbageCollect(_ context.Context, r *nodeapi.GarbageCollectRequest) (*nodeapi.GarbageCollectReply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	valid := map[string]bool{}
	var names []string
	for _, v := range r.GetValid() {
		valid[akey(v)] = true
		names = append(names, akey(v))
	}
	slices.Sort(names)
	a.record("GarbageCollect %s valid=%v", r.GetNetwork(), names)
	var out []string
	for k := range a.held {
		if strings.HasPrefix(k, r.GetNetwork()+"/") && !valid[k] {
			addr, _ := a.releaseLocked(k)
			out = append(out, addr)
		}
	}
	return &nodeapi.GarbageCollectReply{Released: out}, nil
}

func (a *fakeAgent) Status(context.Context, *nodeapi.StatusRequest) (*nodeapi.StatusReply, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.record("Status")
	return &nodeapi.StatusReply{Ready: a.ready, Reason: a.reason, Free: int32(len(a.free)), Assigned: int32(len(a.held)), MaxPods: 29}, nil
}

// holdings returns the agent's assignments as "attachment=address".
func (a *fakeAgent) holdings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for k, v := range a.held {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

func (a *fakeAgent) callLog() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

func (a *fakeAgent) set(f func(a *fakeAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// node is the instance namespace the plugin runs in.
type node struct {
	t     testing.TB
	ns    ns.NetNS
	agent *fakeAgent
}

func newNode(t testing.TB, addrs ...string) *node {
	t.Helper()
	n := &node{t: t, ns: testenv.NewNS(t, tag), agent: startAgent(t, addrs...)}
	err := n.do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netops.IPNet(netops.HostPrefix(netip.MustParseAddr(nodeIP)))}); err != nil {
			return err
		}
		// The pods' packets to each other are forwarded by the node.
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("set up the node: %v", err)
	}
	return n
}

// do runs f in the node namespace.
func (n *node) do(f func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

// conf is a config of ours for the test agent, with extra fields.
func (n *node) conf(version string, extra ...any) []byte {
	c := map[string]any{
		"cniVersion": version,
		"name":       network,
		"type":       "vpc-pod",
		"socket":     n.agent.socket,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	return b
}

// withPrevResult adds the ADD's result to a config, for CHECK.
func withPrevResult(t testing.TB, conf []byte, res types.Result) []byte {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		t.Fatal(err)
	}
	res, err := res.GetAsVersion(c["cniVersion"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := res.PrintTo(&buf); err != nil {
		t.Fatal(err)
	}
	var prev map[string]any
	if err := json.Unmarshal(buf.Bytes(), &prev); err != nil {
		t.Fatal(err)
	}
	c["prevResult"] = prev
	out, _ := json.Marshal(c)
	return out
}

// withField sets a top-level field of a config.
func withField(t testing.TB, conf []byte, key string, value any) []byte {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		t.Fatal(err)
	}
	c[key] = value
	out, _ := json.Marshal(c)
	return out
}

// call is one invocation of the plugin.
type call struct {
	netns, containerID, ifName, args string
	conf                             []byte
}

func (c call) cmdArgs() *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: c.containerID, Netns: c.netns, IfName: c.ifName, Args: c.args, StdinData: c.conf}
}

// pod is one pod attached by a test.
type pod struct {
	ns  ns.NetNS
	c   call
	res *current.Result
	ip  netip.Addr
	// serving is the greeting of the pod's TCP listener, once started.
	serving string
}

func (n *node) newPod(t testing.TB, id, version string) *pod {
	t.Helper()
	p := &pod{ns: testenv.NewNS(t, tag)}
	if err := netops.LoopbackUp(p.ns); err != nil {
		t.Fatal(err)
	}
	p.c = call{netns: p.ns.Path(), containerID: id, ifName: "eth0", conf: n.conf(version),
		args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id + ";K8S_POD_UID=uid-" + id + ";K8S_POD_INFRA_CONTAINER_ID=" + id}
	return p
}

// In-process verbs, run in the node namespace.

func (n *node) add(c call) (types.Result, error) {
	var res types.Result
	err := n.do(func() (err error) {
		res, err = Add(context.Background(), c.cmdArgs())
		return err
	})
	return res, err
}

func (n *node) del(c call) error {
	return n.do(func() error { return Del(context.Background(), c.cmdArgs()) })
}

func (n *node) check(c call) error {
	return n.do(func() error { return Check(context.Background(), c.cmdArgs()) })
}

func (n *node) gc(c call) error {
	return n.do(func() error { return GC(context.Background(), c.cmdArgs()) })
}

func (n *node) status(c call) error {
	return n.do(func() error { return Status(context.Background(), c.cmdArgs()) })
}

// exec runs the vpc-pod binary in the node namespace (a child forked from
// a thread in a namespace starts there) and returns its stdout; a failure
// is returned as the CNI error it printed.
func (n *node) exec(verb string, c call, env ...string) ([]byte, error) {
	bin := testenv.Binary(n.t, "vpc-pod")
	var stdout, stderr bytes.Buffer
	var runErr error
	err := n.do(func() error {
		cmd := exec.Command(bin)
		cmd.Stdin = bytes.NewReader(c.conf)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"CNI_COMMAND=" + verb,
			"CNI_CONTAINERID=" + c.containerID,
			"CNI_NETNS=" + c.netns,
			"CNI_IFNAME=" + c.ifName,
			"CNI_ARGS=" + c.args,
			"CNI_PATH=/nonexistent",
		}, env...)
		runErr = cmd.Run()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if runErr == nil {
		return stdout.Bytes(), nil
	}
	var e types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr == nil && e.Msg != "" {
		return stdout.Bytes(), &e
	}
	return stdout.Bytes(), fmt.Errorf("vpc-pod %s: %w (stdout %q, stderr %q)", verb, runErr, stdout.String(), stderr.String())
}

// parseResult parses an ADD's stdout in the config's version.
func parseResult(t testing.TB, out []byte) *current.Result {
	t.Helper()
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("result %q: %v", out, err)
	}
	r, err := cniversion.NewResult(v.CNIVersion, out)
	if err != nil {
		t.Fatalf("result %q: %v", out, err)
	}
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

func asCurrent(t testing.TB, r types.Result) *current.Result {
	t.Helper()
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// snapshot describes a namespace, policy rules included: what "as before"
// means in the tests.
func snapshot(t testing.TB, n ns.NetNS) string {
	t.Helper()
	s := testenv.NetState(t, n, kernelManaged)
	var lines []string
	err := n.Do(func(ns.NetNS) error {
		rules, err := netops.Rules(0)
		for _, r := range rules {
			lines = append(lines, "rule "+r.String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return s + "\n" + strings.Join(lines, "\n")
}

// kernelManaged tells a host veth's IPv6 link-local address and its
// link-local and multicast routes: the kernel adds them in its own time
// after the veth comes up, and they go with the veth.
func kernelManaged(dev string, ip net.IP) bool {
	return strings.HasPrefix(dev, nodeapi.DefaultVethPrefix) && ip.To4() == nil && (ip.IsLinkLocalUnicast() || ip.IsMulticast())
}

// podRules returns vpc-pod's rules on the node.
func (n *node) podRules(t testing.TB) []string {
	t.Helper()
	var out []string
	err := n.do(func() error {
		rules, err := netops.Rules(RuleProtocol)
		for _, r := range rules {
			out = append(out, r.String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// podVeths returns the host veths labelled by this plugin.
func (n *node) podVeths(t testing.TB) []string {
	t.Helper()
	var names []string
	err := n.do(func() error {
		links, err := netops.LinksByAliasPrefix(aliasPrefix)
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func wantCode(t testing.TB, err error, code uint, mentions ...string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got error %v, want CNI code %d", err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(e.Msg, m) {
			t.Errorf("error %q does not mention %q", e.Msg, m)
		}
	}
}

// Traffic.

// ping sends one echo request from namespace n to addr and reports the
// output of a failure.
func ping(t testing.TB, n ns.NetNS, addr string) error {
	t.Helper()
	bin := testenv.Tool(t, "ping")
	var out []byte
	var runErr error
	err := n.Do(func(ns.NetNS) error {
		out, runErr = exec.Command(bin, "-c", "1", "-W", "5", addr).CombinedOutput()
		return nil
	})
	if err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", addr, testenv.NSName(n), runErr, out)
	}
	return nil
}

// serve listens on TCP port 7000 of addr in namespace n and answers every
// connection with text.
func serve(t testing.TB, n ns.NetNS, addr, text string) {
	t.Helper()
	var ln net.Listener
	err := n.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr, "7000"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, text)
			c.Close()
		}
	}()
}

// dial connects from namespace n to addr:port and reads the greeting.
func dial(n ns.NetNS, addr string) (string, error) {
	return testenv.DialLine(context.Background(), n, netip.Addr{}, addr, 10*time.Second)
}

// agentState is the part of the test agent a test case may change.
type agentState struct {
	free   []string
	addErr error
	mtu    int32
	delay  time.Duration
}

func (a *fakeAgent) snapshotState() agentState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return agentState{free: slices.Clone(a.free), addErr: a.addErr, mtu: a.mtu, delay: a.delay}
}

func (a *fakeAgent) restoreState(s agentState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.free, a.addErr, a.mtu, a.delay = s.free, s.addErr, s.mtu, s.delay
}
