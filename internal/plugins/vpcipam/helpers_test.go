package vpcipam

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/logging"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

const testTag = "ipam"

func TestMain(m *testing.M) {
	testenv.CleanLeftovers(testTag)
	// The verbs log every allocation; in-process that is only noise.
	slog.SetDefault(logging.Discard)
	os.Exit(m.Run())
}

// specVersions are the versions every verb test runs at.
var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func atLeast(version, min string) bool {
	return slices.Index(specVersions, version) >= slices.Index(specVersions, min)
}

// testConf is a network config for tests; fields are set with JSON values.
type testConf map[string]any

func newConf(version, network, store string, ipamFields map[string]any) testConf {
	ipamSection := map[string]any{"type": "vpc-ipam", "store": store}
	for k, v := range ipamFields {
		ipamSection[k] = v
	}
	return testConf{"cniVersion": version, "name": network, "type": "vpc-ipam", "ipam": ipamSection}
}

// with returns a copy with top-level fields set (prevResult, runtimeConfig,
// cni.dev/valid-attachments ...).
func (c testConf) with(kv ...any) testConf {
	out := testConf{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func (c testConf) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dualStack is the pool most tests use.
func dualStack() map[string]any {
	return map[string]any{
		"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/24"}}, {{"subnet": "fd00::/120"}}},
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}},
	}
}

func tempStore(t testing.TB) string {
	return filepath.Join(t.TempDir(), "state", "ipam.db")
}

// holdings is what the store holds in a network, as sorted
// "owner=ip,ip" strings: what a user inspecting the store would see. It
// fails the test if bbolt finds the file inconsistent.
func holdings(t testing.TB, path, network string) []string {
	t.Helper()
	s, err := ipam.Open(path, 5*time.Second)
	if err != nil {
		t.Fatalf("open store for inspection: %v", err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		t.Fatalf("store %s is inconsistent: %v", path, err)
	}
	all, err := s.Allocations(network)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, a := range all {
		var ips []string
		for _, ip := range a.IPs {
			ips = append(ips, ip.Address.String())
		}
		out = append(out, a.Owner.String()+"="+strings.Join(ips, ","))
	}
	slices.Sort(out)
	return out
}

func wantHoldings(t testing.TB, path, network string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	slices.Sort(want)
	if got := holdings(t, path, network); !slices.Equal(got, want) {
		t.Fatalf("store holds %q\nwant %q", got, want)
	}
}

func attachments(ids ...string) []map[string]string {
	out := []map[string]string{}
	for _, id := range ids {
		out = append(out, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	return out
}
