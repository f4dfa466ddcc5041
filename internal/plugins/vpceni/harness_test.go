package vpceni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// This file is the test harness: a "host" namespace holding veth ends that
// play ENIs, a "VPC" namespace holding their peers with the gateway and
// the instance metadata addresses, container namespaces, and two ways to
// run the plugin: in-process inside the host namespace, and as the built
// binary started there.

const tag = "eni"

func TestMain(m *testing.M) {
	testenv.CleanLeftovers(tag)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// testENI is a veth end in the host namespace that plays an ENI; its peer
// in the VPC namespace holds the subnet's gateway addresses.
type testENI struct {
	index    int
	mac      net.HardwareAddr
	hostName string // eth<index>
	addr4    string // 10.77.<index>.5/24
	addr6    string // fd00:77:<index>::5/64
	gw4      string // 10.77.<index>.1
	gw6      string // fd00:77:<index>::1
	peer     string // vpc<index>, in the VPC namespace
}

// hostMTU is the MTU the ENIs have in the host, as on EC2; the configs ask
// for another one in the container, so DEL must put it back.
const hostMTU = 9001

type world struct {
	host, vpc ns.NetNS
	ctrs      []ns.NetNS
	enis      []testENI
}

// newWorld builds a host namespace with n ENIs, a VPC namespace with their
// gateways and the metadata service, and n container namespaces. All of
// it goes away with the test.
func newWorld(t testing.TB, n int) *world {
	t.Helper()
	testenv.Privileged(t)
	w := &world{host: testenv.NewNS(t, tag), vpc: testenv.NewNS(t, tag)}
	for i := 1; i <= n; i++ {
		w.ctrs = append(w.ctrs, testenv.NewNS(t, tag))
		w.enis = append(w.enis, w.addENI(t, i))
	}
	w.startMetadataService(t)
	return w
}

func (w *world) ctr() ns.NetNS { return w.ctrs[0] }

func (w *world) addENI(t testing.TB, i int) testENI {
	t.Helper()
	e := testENI{
		index:    i,
		mac:      net.HardwareAddr{0x02, 0x00, 0x0a, 0x4d, 0x00, byte(i)},
		hostName: fmt.Sprintf("eth%d", i),
		addr4:    fmt.Sprintf("10.77.%d.5/24", i),
		addr6:    fmt.Sprintf("fd00:77:%d::5/64", i),
		gw4:      fmt.Sprintf("10.77.%d.1", i),
		gw6:      fmt.Sprintf("fd00:77:%d::1", i),
		peer:     fmt.Sprintf("vpc%d", i),
	}
	err := w.host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: e.hostName, HardwareAddr: e.mac, MTU: hostMTU},
			PeerName:      e.peer,
			PeerNamespace: netlink.NsFd(int(w.vpc.Fd())),
		})
	})
	if err != nil {
		t.Fatalf("create ENI %s: %v", e.hostName, err)
	}
	err = w.vpc.Do(func(ns.NetNS) error {
		peer, err := netlink.LinkByName(e.peer)
		if err != nil {
			return err
		}
		for _, a := range []string{fmt.Sprintf("10.77.%d.1/24", i), fmt.Sprintf("fd00:77:%d::1/64", i)} {
			addr, _ := netlink.ParseAddr(a)
			addr.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(peer, addr); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(peer)
	})
	if err != nil {
		t.Fatalf("set up the VPC side of %s: %v", e.hostName, err)
	}
	return e
}

// Addresses of the instance metadata service in the VPC namespace.
const (
	imds4 = "169.254.169.254:80"
	imds6 = "[fd00:ec2::254]:80"
)

// startMetadataService listens on the metadata addresses in the VPC
// namespace, so that a container reaches them through its gateway unless
// they are blocked. The kernel completes TCP handshakes on its own: a
// successful connect proves reachability.
func (w *world) startMetadataService(t testing.TB) {
	t.Helper()
	err := w.vpc.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range []string{"169.254.169.254/32", "fd00:ec2::254/128"} {
			addr, _ := netlink.ParseAddr(a)
			addr.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(lo, addr); err != nil {
				return err
			}
		}
		for _, a := range []string{imds4, imds6} {
			l, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start the metadata service: %v", err)
	}
}

// addReturnRoute gives the VPC namespace a route to a container address
// outside the subnet, as the VPC's router holds one for every address.
func (w *world) addReturnRoute(t testing.TB, e testENI, prefix string) {
	t.Helper()
	err := w.vpc.Do(func(ns.NetNS) error {
		peer, err := netlink.LinkByName(e.peer)
		if err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR(prefix)
		return netlink.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		t.Fatalf("route %s back to the container: %v", prefix, err)
	}
}

// confMap is a config as JSON fields; conf turns it into bytes.
type confMap map[string]any

// baseConf is our own format for e: dual stack, MTU 1500, metadata blocked.
func (e testENI) baseConf(version string) confMap {
	return confMap{
		"cniVersion":            version,
		"name":                  "vpcnet-eni",
		"type":                  "vpc-eni",
		"eniID":                 fmt.Sprintf("eni-%04d", e.index),
		"mac":                   e.mac.String(),
		"ipAddresses":           []string{e.addr4, e.addr6},
		"gatewayIPAddresses":    []string{e.gw4, e.gw6},
		"mtu":                   1500,
		"blockInstanceMetadata": true,
	}
}

// with returns a copy of c with fields set; a nil value removes the field.
func (c confMap) with(fields confMap) confMap {
	out := confMap{}
	for k, v := range c {
		out[k] = v
	}
	for k, v := range fields {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func (c confMap) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPrevResult adds an ADD's result as prevResult, as runtimes do for
// CHECK and DEL.
func (c confMap) withPrevResult(t testing.TB, result []byte) confMap {
	t.Helper()
	var prev map[string]any
	if err := json.Unmarshal(result, &prev); err != nil {
		t.Fatalf("result is not JSON: %v\n%s", err, result)
	}
	return c.with(confMap{"prevResult": prev})
}

// call is one plugin invocation.
type call struct {
	verb        string // ADD, DEL, CHECK, GC, STATUS
	conf        []byte
	containerID string
	netns       string
	ifName      string
	cniArgs     string
	env         []string // extra environment, binary only
}

// outcome is what the plugin did: its stdout, its CNI error, or its death.
type outcome struct {
	out    []byte
	err    *types.Error
	killed bool
	stderr string
}

// runner runs the plugin one way or another, always in the host namespace.
type runner interface {
	name() string
	run(t testing.TB, w *world, c call) outcome
}

type inProcess struct{}

func (inProcess) name() string { return "in-process" }

func (inProcess) run(t testing.TB, w *world, c call) outcome {
	t.Helper()
	args := &skel.CmdArgs{
		ContainerID: c.containerID, Netns: c.netns, IfName: c.ifName,
		Args: c.cniArgs, Path: "/nonexistent", StdinData: c.conf,
	}
	var o outcome
	err := w.host.Do(func(ns.NetNS) error {
		var err error
		switch c.verb {
		case "ADD":
			_, o.out, err = testutils.CmdAddWithArgs(args, func() error { return Verbs.SkelFuncs(context.Background()).Add(args) })
		case "DEL":
			err = testutils.CmdDelWithArgs(args, func() error { return Del(context.Background(), args) })
		case "CHECK":
			err = testutils.CmdCheckWithArgs(args, func() error { return Check(context.Background(), args) })
		case "GC":
			err = GC(context.Background(), args)
		case "STATUS":
			err = Status(context.Background(), args)
		default:
			t.Fatalf("unknown verb %s", c.verb)
		}
		o.err = asCNIError(t, err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// asCNIError insists that the plugin only ever returns CNI errors: a plain
// error would reach users as code 999 with no thought given to it.
func asCNIError(t testing.TB, err error) *types.Error {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("plugin returned a plain error, not a CNI error: %v", err)
	}
	return e
}

type binary struct{ path string }

func newBinary(t testing.TB) binary { return binary{testenv.Binary(t, "vpc-eni")} }

func (binary) name() string { return "binary" }

func (b binary) run(t testing.TB, w *world, c call) outcome {
	t.Helper()
	var o outcome
	err := w.host.Do(func(ns.NetNS) error {
		var err error
		o, err = b.exec(c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// exec starts the plugin from the calling thread, whose network namespace
// the child inherits. It fails only when the plugin broke the protocol: it
// exited non-zero without a CNI error on stdout.
func (b binary) exec(c call) (outcome, error) {
	cmd := exec.Command(b.path)
	cmd.Env = append([]string{
		"CNI_COMMAND=" + c.verb,
		"CNI_CONTAINERID=" + c.containerID,
		"CNI_NETNS=" + c.netns,
		"CNI_IFNAME=" + c.ifName,
		"CNI_ARGS=" + c.cniArgs,
		"CNI_PATH=" + filepath.Dir(b.path),
		"PATH=" + os.Getenv("PATH"),
	}, c.env...)
	cmd.Stdin = bytes.NewReader(c.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	o := outcome{out: stdout.Bytes(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			o.killed = true
			return o, nil
		}
		o.err = &types.Error{}
		if jerr := json.Unmarshal(o.out, o.err); jerr != nil || o.err.Code == 0 {
			return o, fmt.Errorf("%s failed without a CNI error on stdout: %v\nstdout: %s\nstderr: %s", c.verb, err, o.out, o.stderr)
		}
	default:
		return o, fmt.Errorf("run %s: %w", b.path, err)
	}
	return o, nil
}

// allRunners are the two ways every scenario runs.
func allRunners(t testing.TB) []runner { return []runner{inProcess{}, newBinary(t)} }

// attachCall is an ADD (or, with verb changed, any verb) of e into the
// i-th container as eth0, with the CNI_ARGS a Kubernetes runtime passes.
func (w *world) attachCall(e testENI, i int, conf []byte) call {
	return call{
		verb: "ADD", conf: conf,
		containerID: fmt.Sprintf("ctr-%d", e.index),
		netns:       w.ctrs[i].Path(),
		ifName:      "eth0",
		cniArgs:     "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-" + fmt.Sprint(e.index),
	}
}

func (c call) as(verb string) call { c.verb = verb; return c }

func (c call) withConf(conf []byte) call { c.conf = conf; return c }

// mustSucceed fails the test unless the plugin succeeded.
func mustSucceed(t testing.TB, o outcome, what string) []byte {
	t.Helper()
	if o.killed {
		t.Fatalf("%s: plugin was killed", what)
	}
	if o.err != nil {
		t.Fatalf("%s: code %d: %s (%s)\nstderr: %s", what, o.err.Code, o.err.Msg, o.err.Details, o.stderr)
	}
	return o.out
}

// worldSnapshot covers the host and every container namespace.
func (w *world) snapshot(t testing.TB) map[string]string {
	t.Helper()
	s := map[string]string{"host": testenv.NetState(t, w.host, nil)}
	for i, c := range w.ctrs {
		s[fmt.Sprintf("container %d", i)] = testenv.NetState(t, c, nil)
	}
	return s
}

// assertUnchanged fails with a line diff when the world is not as before.
func (w *world) assertUnchanged(t testing.TB, before map[string]string, when string) {
	t.Helper()
	after := w.snapshot(t)
	for name, b := range before {
		if a := after[name]; a != b {
			t.Errorf("%s: %s namespace changed:\n%s", when, name, testenv.LineDiff(b, a))
		}
	}
}

// ping sends one echo request from n and waits for the reply.
func ping(t testing.TB, n ns.NetNS, addr string) error {
	t.Helper()
	bin := testenv.Tool(t, "ping")
	return n.Do(func(ns.NetNS) error {
		out, err := exec.Command(bin, "-c", "1", "-W", "2", addr).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %s: %v\n%s", addr, err, out)
		}
		return nil
	})
}

// dial opens a TCP connection from n to addr; a blackhole fails it at once,
// the bound only keeps a broken datapath from hanging the test.
func dial(n ns.NetNS, addr string) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// eniIn returns the link with e's MAC in n, or nil.
func eniIn(t testing.TB, n ns.NetNS, e testENI) netlink.Link {
	t.Helper()
	var link netlink.Link
	err := n.Do(func(ns.NetNS) error {
		var err error
		link, err = findByMAC(e.mac)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// normalizeResult replaces the container path, which differs between
// worlds, so that results of separate worlds compare.
func normalizeResult(out []byte, netns string) string {
	return strings.ReplaceAll(string(out), netns, "<netns>")
}
