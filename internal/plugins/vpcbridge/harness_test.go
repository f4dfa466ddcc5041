package vpcbridge

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
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The test world: a "host" namespace plays the instance (the bridge lives
// there, the plugin runs there, and it serves the task metadata endpoint
// 169.254.170.2); each container is another namespace.

const tag = "bridge"

func TestMain(m *testing.M) {
	testenv.CleanLeftovers(tag)
	// The verbs run in-process log through the default logger.
	slog.SetDefault(logging.Discard)
	os.Exit(m.Run())
}

const (
	endpointIP = "169.254.170.2"
	subnet     = "169.254.172.0/22"
	gatewayIP  = "169.254.172.1"
	bridgeName = "vpcbr-test"
)

type host struct {
	t    testing.TB
	ns   ns.NetNS
	port int // of the endpoint's TCP listener
}

// newHost creates the instance namespace with the endpoint address on lo
// and a listener that greets every connection.
func newHost(t testing.TB) *host {
	t.Helper()
	h := &host{t: t, ns: testenv.NewNS(t, tag)}
	var ln net.Listener
	err := h.ns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: netops.IPNet(netops.HostPrefix(netip.MustParseAddr(endpointIP)))}); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", endpointIP+":0")
		return err
	})
	if err != nil {
		t.Fatalf("set up the endpoint: %v", err)
	}
	h.port = ln.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { ln.Close() })
	go greet(ln, "metadata")
	return h
}

// greet answers every connection on ln with a line of text.
func greet(ln net.Listener, text string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, text)
		c.Close()
	}
}

// dial connects from namespace n to addr and reads the greeting.
func dial(n ns.NetNS, addr string) (string, error) {
	return dialContext(context.Background(), n, addr)
}

// dialContext is dial that ctx may cancel while it connects.
func dialContext(ctx context.Context, n ns.NetNS, addr string) (string, error) {
	return testenv.DialLine(ctx, n, netip.Addr{}, addr, 10*time.Second)
}

// reachesEndpoint fails the test unless the container gets the endpoint's
// greeting.
func (h *host) reachesEndpoint(ctr ns.NetNS) {
	h.t.Helper()
	got, err := dial(ctr, fmt.Sprintf("%s:%d", endpointIP, h.port))
	if err != nil || got != "metadata" {
		h.t.Fatalf("container %s cannot reach the endpoint: %q, %v", testenv.NSName(ctr), got, err)
	}
}

// do runs f in the host namespace.
func (h *host) do(f func() error) error {
	return h.ns.Do(func(ns.NetNS) error { return f() })
}

// cniPath is where the plugins are: ours, built for the test, and Debian's
// reference plugins (host-local).
func cniPath(t testing.TB, extra ...string) string {
	return strings.Join(append(extra, testenv.BinDir(t, "vpc-bridge", "vpc-ipam"), "/usr/lib/cni"), string(os.PathListSeparator))
}

// netConf is a config of ours with the given ipam section.
func netConf(version, network string, ipam map[string]any) []byte {
	c := map[string]any{
		"cniVersion": version,
		"name":       network,
		"type":       "vpc-bridge",
		"bridge":     bridgeName,
		"mtu":        1400,
	}
	if ipam != nil {
		c["ipam"] = ipam
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

// The IPAM plugins the tests use: vpc-ipam (what we ship) and Debian's
// host-local, to prove that any IPAM plugin works.
type ipamKind struct {
	store string // vpc-ipam's store file
	// section is the ipam section; rangeStart and rangeEnd narrow the
	// range when not empty.
	section func(rangeStart, rangeEnd string) map[string]any
	// allocations lists the addresses held in a network.
	allocations func(t testing.TB, network string) []string
}

func vpcIPAM(t testing.TB) ipamKind {
	store := filepath.Join(t.TempDir(), "ipam.db")
	return ipamKind{
		store: store,
		section: func(rangeStart, rangeEnd string) map[string]any {
			r := map[string]any{"subnet": subnet, "gateway": gatewayIP}
			if rangeStart != "" {
				r["rangeStart"], r["rangeEnd"] = rangeStart, rangeEnd
			}
			return map[string]any{
				"type":   "vpc-ipam",
				"store":  store,
				"ranges": [][]map[string]any{{r}},
				"routes": []map[string]any{{"dst": endpointIP + "/32"}},
			}
		},
		allocations: func(t testing.TB, network string) []string {
			t.Helper()
			s, err := ipam.Open(store, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			all, err := s.Allocations(network)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, a := range all {
				for _, ip := range a.IPs {
					out = append(out, a.Owner.String()+"="+ip.Address.String())
				}
			}
			return out
		},
	}
}

func hostLocal(t testing.TB) ipamKind {
	dir := t.TempDir()
	return ipamKind{
		section: func(rangeStart, rangeEnd string) map[string]any {
			return hostLocalIPAM(dir, rangeStart, rangeEnd)
		},
		allocations: func(t testing.TB, network string) []string {
			return hostLocalAllocations(t, dir, network)
		},
	}
}

func hostLocalIPAM(dataDir string, rangeStart, rangeEnd string) map[string]any {
	r := map[string]any{"subnet": subnet, "gateway": gatewayIP}
	if rangeStart != "" {
		r["rangeStart"], r["rangeEnd"] = rangeStart, rangeEnd
	}
	return map[string]any{
		"type":    "host-local",
		"dataDir": dataDir,
		"ranges":  [][]map[string]any{{r}},
		"routes":  []map[string]any{{"dst": endpointIP + "/32"}},
	}
}

// hostLocalAllocations lists the addresses host-local holds for a network.
func hostLocalAllocations(t testing.TB, dataDir, network string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, network))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// call is one invocation of the plugin.
type call struct {
	netns, containerID, ifName string
	conf                       []byte
	path                       string // CNI_PATH
	// wrap, for exec, is a command line that runs the binary, given last.
	wrap []string
}

func (c call) args() *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: c.containerID, Netns: c.netns, IfName: c.ifName, Path: c.path, StdinData: c.conf}
}

// In-process verbs, run in the host namespace.

func (h *host) add(c call) (types.Result, error) {
	var res types.Result
	err := h.do(func() (err error) {
		res, err = Add(context.Background(), c.args())
		return err
	})
	return res, err
}

func (h *host) del(c call) error {
	return h.do(func() error { return Del(context.Background(), c.args()) })
}

func (h *host) check(c call) error {
	return h.do(func() error { return Check(context.Background(), c.args()) })
}

// exec runs the vpc-bridge binary in the host namespace (a child forked
// from a thread in a namespace starts there) and returns its stdout; a
// failure is returned as the CNI error it printed.
func (h *host) exec(verb string, c call, env ...string) ([]byte, error) {
	return h.execPlugin("vpc-bridge", verb, c, env...)
}

// execPlugin runs the named vpcnet plugin binary as exec runs vpc-bridge.
func (h *host) execPlugin(plugin, verb string, c call, env ...string) ([]byte, error) {
	bin := testenv.Binary(h.t, plugin)
	var stdout, stderr bytes.Buffer
	var runErr error
	err := h.do(func() error {
		argv := append(append([]string(nil), c.wrap...), bin)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin = bytes.NewReader(c.conf)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Env = append([]string{
			"PATH=" + os.Getenv("PATH"),
			"CNI_COMMAND=" + verb,
			"CNI_CONTAINERID=" + c.containerID,
			"CNI_NETNS=" + c.netns,
			"CNI_IFNAME=" + c.ifName,
			"CNI_PATH=" + c.path,
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
	return stdout.Bytes(), fmt.Errorf("%s %s: %w (stdout %q, stderr %q)", plugin, verb, runErr, stdout.String(), stderr.String())
}

// result parses an ADD's stdout in the config's version.
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

// containerIP returns the IPv4 address of the container interface.
func containerIP(t testing.TB, r types.Result) net.IP {
	t.Helper()
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, ipc := range cur.IPs {
		if ip := ipc.Address.IP.To4(); ip != nil {
			return ip
		}
	}
	t.Fatalf("no IPv4 address in %v", cur)
	return nil
}

// snapshot describes a namespace: what "as before" means in the tests.
func snapshot(t testing.TB, n ns.NetNS) string { return testenv.NetState(t, n, kernelManaged) }

// kernelManaged tells the bridge's IPv6 link-local address and its
// link-local and multicast routes: the kernel adds them when the bridge
// first has carrier, up to a second after its first port comes up
// (link events are batched), so they may appear between two snapshots.
// They are part of the bridge, which stays.
func kernelManaged(dev string, ip net.IP) bool {
	return dev == bridgeName && ip.To4() == nil && (ip.IsLinkLocalUnicast() || ip.IsMulticast())
}

// attachmentLinks returns the host veths labelled by this plugin.
func (h *host) attachmentLinks(t testing.TB) []netlink.Link {
	t.Helper()
	var links []netlink.Link
	err := h.do(func() (err error) {
		links, err = netops.LinksByAliasPrefix(aliasPrefix)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// bridgePorts counts the ports of the test bridge.
func (h *host) bridgePorts(t testing.TB) int {
	t.Helper()
	var n int
	err := h.do(func() error {
		br, err := netops.LookupBridge(bridgeName)
		if err != nil {
			return err
		}
		ports, err := netops.BridgePorts(br)
		n = len(ports)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// linkIn returns the link called name in n, or nil.
func linkIn(t testing.TB, n ns.NetNS, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	_ = n.Do(func(ns.NetNS) error {
		link, _ = netlink.LinkByName(name)
		return nil
	})
	return link
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

// removeL3Isolation takes the test bridge out of vpc-bridge's nftables set,
// as if the rule had never been added for it.
func (h *host) removeL3Isolation(t testing.TB) {
	t.Helper()
	err := h.do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		if err := c.SetDeleteElements(newNftSet(), []nftables.SetElement{{Key: bridgeKey(bridgeName)}}); err != nil {
			return err
		}
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("remove %s from the nftables set: %v", bridgeName, err)
	}
}

// restoreL3Isolation puts it back, as the next ADD would.
func (h *host) restoreL3Isolation(t testing.TB) {
	t.Helper()
	if err := h.do(func() error { return ensureIsolation(bridgeName) }); err != nil {
		t.Fatal(err)
	}
}
