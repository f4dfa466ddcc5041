package vpcipam

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// cnitoolRun runs cnitool as a runtime would, optionally inside a network
// namespace (the "host" a main plugin works in).
type cnitoolRun struct {
	t                 *testing.T
	cnitool, confDir  string
	cniPath, hostNS   string
	network, targetNS string
}

func (c cnitoolRun) do(verb string) ([]byte, error) {
	c.t.Helper()
	args := []string{c.cnitool, verb, c.network, c.targetNS}
	if c.hostNS != "" {
		args = append([]string{"ip", "netns", "exec", c.hostNS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "CNI_PATH="+c.cniPath, "NETCONFPATH="+c.confDir)
	return cmd.CombinedOutput()
}

func (c cnitoolRun) must(verb string) []byte {
	c.t.Helper()
	out, err := c.do(verb)
	if err != nil {
		c.t.Fatalf("cnitool %s %s: %v\n%s", verb, c.network, err, out)
	}
	return out
}

// newCnitool writes the conflist and removes libcni's cached results of the
// network when the test ends, whatever happened.
func newCnitool(t *testing.T, conflist testConf, cniPath, hostNS, targetNS string) cnitoolRun {
	t.Helper()
	network := conflist["name"].(string)
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, network+".conflist"), conflist.bytes(t), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cached, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", network+"-*"))
		for _, f := range cached {
			os.Remove(f)
		}
	})
	return cnitoolRun{t: t, cnitool: testenv.Tool(t, "cnitool"), confDir: confDir, cniPath: cniPath,
		hostNS: hostNS, network: network, targetNS: targetNS}
}

// vpc-ipam as the only plugin of a network, executed by cnitool (libcni
// 1.3) through CNI_PATH: every verb, at spec 1.1.0.
func TestCnitoolIPAMOnly(t *testing.T) {
	ctr := testenv.NewNS(t, testTag)
	store := tempStore(t)
	network := "vpct-ipam-" + testenv.RandomHex(4)
	conflist := testConf{"cniVersion": "1.1.0", "name": network, "plugins": []any{
		map[string]any{"type": "vpc-ipam", "ipam": map[string]any{"store": store,
			"ranges": [][]map[string]string{{{"subnet": "10.2.0.0/24"}}}}},
	}}
	c := newCnitool(t, conflist, testenv.BinDir(t, "vpc-ipam"), "", ctr.Path())

	var res types100.Result
	out := c.must("add")
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.2.0.2/24" {
		t.Fatalf("cnitool add printed %s (%v)", out, err)
	}
	c.must("check")
	c.must("status")

	// An allocation the runtime no longer knows of: GC must free it.
	conf := testConf{"cniVersion": "1.1.0", "name": network, "type": "vpc-ipam", "ipam": conflist["plugins"].([]any)[0].(map[string]any)["ipam"]}
	mustRun(t, invocation{command: "ADD", containerID: "orphan", stdin: conf.bytes(t)})
	if got := len(holdings(t, store, network)); got != 2 {
		t.Fatalf("store holds %d allocations, want 2", got)
	}
	c.must("gc")
	wantHoldings(t, store, network)
	c.must("del")
}

// Debian's reference bridge plugin (spec 1.0.0) delegating to vpc-ipam, in
// a namespace standing in for the host: the container's interface gets the
// address vpc-ipam chose, and DEL through the bridge frees it.
func TestCnitoolBridgeDelegates(t *testing.T) {
	bridge := "/usr/lib/cni/bridge"
	if _, err := os.Stat(bridge); err != nil {
		testenv.Skip(t, "the reference bridge plugin is not installed (Debian containernetworking-plugins; make deps)")
	}
	testenv.Tool(t, "ip")
	host := testenv.NewNS(t, testTag)
	ctr := testenv.NewNS(t, testTag)
	store := tempStore(t)
	network := "vpct-ipam-" + testenv.RandomHex(4)
	conflist := testConf{"cniVersion": "1.0.0", "name": network, "plugins": []any{
		map[string]any{"type": "bridge", "bridge": "vpct-br0", "isGateway": true, "ipam": map[string]any{
			"type": "vpc-ipam", "store": store,
			"ranges": [][]map[string]string{{{"subnet": "10.3.0.0/24"}}, {{"subnet": "fd00:3::/120"}}}}},
	}}
	cniPath := "/usr/lib/cni" + string(os.PathListSeparator) + testenv.BinDir(t, "vpc-ipam")
	c := newCnitool(t, conflist, cniPath, testenv.NSName(host), ctr.Path())

	c.must("add")
	addrs := testenv.Run(t, "ip", "-n", testenv.NSName(ctr), "-o", "addr", "show", "dev", "eth0")
	for _, want := range []string{"inet 10.3.0.2/24", "inet6 fd00:3::2/120"} {
		if !strings.Contains(addrs, want) {
			t.Fatalf("container eth0 lacks %q:\n%s", want, addrs)
		}
	}
	if h := holdings(t, store, network); len(h) != 1 || !slices.ContainsFunc(h, func(s string) bool { return strings.HasSuffix(s, "=10.3.0.2/24,fd00:3::2/120") }) {
		t.Fatalf("store holds %q", h)
	}
	c.must("del")
	wantHoldings(t, store, network)
}
