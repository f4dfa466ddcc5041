package vpcipam

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/ipam"
)

// The verbs run in this process, as the reference plugins' tests run theirs.
// The namespace path is never opened: an IPAM plugin has no business in it.
const unusedNetns = "/var/run/netns/vpct-ipam-unused"

func cmdArgs(conf []byte, containerID, cniArgs string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: containerID, Netns: unusedNetns, IfName: "eth0", Args: cniArgs, StdinData: conf}
}

func add(t *testing.T, conf []byte, containerID, cniArgs string) (types.Result, []byte, error) {
	t.Helper()
	args := cmdArgs(conf, containerID, cniArgs)
	return testutils.CmdAddWithArgs(args, func() error { return Verbs.SkelFuncs(context.Background()).Add(args) })
}

func mustAdd(t *testing.T, conf []byte, containerID, cniArgs string) (*types100.Result, []byte) {
	t.Helper()
	r, out, err := add(t, conf, containerID, cniArgs)
	if err != nil {
		t.Fatalf("ADD %s: %v", containerID, err)
	}
	r100, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return r100, out
}

func del(t *testing.T, conf []byte, containerID string) error {
	args := cmdArgs(conf, containerID, "")
	return testutils.CmdDelWithArgs(args, func() error { return Del(context.Background(), args) })
}

func check(t *testing.T, conf []byte, containerID string) error {
	args := cmdArgs(conf, containerID, "")
	return testutils.CmdCheckWithArgs(args, func() error { return Check(context.Background(), args) })
}

// resultIPs is "address gw gateway" for each IP of a result.
func resultIPs(r *types100.Result) []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	return out
}

func TestVerbsEveryVersion(t *testing.T) {
	for _, version := range specVersions {
		t.Run(version, func(t *testing.T) {
			store := tempStore(t)
			conf := newConf(version, "net-"+strings.ReplaceAll(version, ".", ""), store, dualStack())
			network := conf["name"].(string)
			b := conf.bytes(t)

			r1, out1 := mustAdd(t, b, "c1", "")
			if got, want := resultIPs(r1), []string{"10.0.0.2/24 gw 10.0.0.1", "fd00::2/120 gw fd00::1"}; !slices.Equal(got, want) {
				t.Fatalf("ADD result %v, want %v", got, want)
			}
			if len(r1.Routes) != 2 || r1.Routes[0].Dst.String() != "0.0.0.0/0" || r1.Routes[1].Dst.String() != "::/0" {
				t.Fatalf("ADD routes %v", r1.Routes)
			}
			var printed struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err := json.Unmarshal(out1, &printed); err != nil || printed.CNIVersion != version {
				t.Fatalf("result printed as version %q (%v), want %s", printed.CNIVersion, err, version)
			}
			_, out2 := mustAdd(t, b, "c1", "")
			if !bytes.Equal(out1, out2) {
				t.Fatalf("second ADD differs:\n%s\n%s", out1, out2)
			}
			r3, _ := mustAdd(t, b, "c2", "")
			if got := resultIPs(r3); got[0] != "10.0.0.3/24 gw 10.0.0.1" {
				t.Fatalf("ADD c2 %v", got)
			}

			if atLeast(version, "0.4.0") {
				if err := check(t, conf.with("prevResult", json.RawMessage(out1)).bytes(t), "c1"); err != nil {
					t.Fatalf("CHECK of the ADD result: %v", err)
				}
				// c2 does not hold c1's addresses.
				err := check(t, conf.with("prevResult", json.RawMessage(out1)).bytes(t), "c2")
				cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "prevResult.ips": reports 10.0.0.2, fd00::2 of network "`+network+`", but c2/eth0 holds 10.0.0.3, fd00::3`)
				cniError(t, check(t, b, "c1"), cni.CodeInvalidConfig, `invalid config: field "prevResult": missing`)
			}

			for i := range 2 {
				if err := del(t, b, "c1"); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			wantHoldings(t, store, network, "c2/eth0=10.0.0.3/24,fd00::3/120")

			if atLeast(version, "1.1.0") {
				if err := Status(context.Background(), cmdArgs(b, "", "")); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				gc := func(valid ...string) {
					t.Helper()
					if err := GC(context.Background(), cmdArgs(conf.with("cni.dev/valid-attachments", attachments(valid...)).bytes(t), "", "")); err != nil {
						t.Fatalf("GC: %v", err)
					}
				}
				gc("c2")
				wantHoldings(t, store, network, "c2/eth0=10.0.0.3/24,fd00::3/120")
				gc()
				wantHoldings(t, store, network)
			}
		})
	}
}

func TestAddExhausted(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.0.0", "small", store, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/29"}}}})
	b := conf.bytes(t)
	var got []string
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		r, _ := mustAdd(t, b, c, "")
		got = append(got, r.IPs[0].Address.String())
	}
	if want := []string{"10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"}; !slices.Equal(got, want) {
		t.Fatalf("a /29 gave %v, want %v (never .0, .1 the gateway, .7 broadcast)", got, want)
	}
	before := storeBytes(t, store)
	_, _, err := add(t, b, "f", "")
	cniError(t, err, cni.CodeAddressesExhausted, `no free address in network "small", range 10.0.0.0/29[10.0.0.1-10.0.0.6 gw 10.0.0.1]`)
	if !bytes.Equal(before, storeBytes(t, store)) {
		t.Fatal("a failed ADD changed the store file")
	}
	if err := del(t, b, "c"); err != nil {
		t.Fatal(err)
	}
	if r, _ := mustAdd(t, b, "f", ""); r.IPs[0].Address.String() != "10.0.0.4/29" {
		t.Fatalf("after DEL c: %v", resultIPs(r))
	}
}

func storeBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Addresses asked for in the config, in CNI_ARGS and through the "ips"
// capability; and one already held by someone else.
func TestExplicitRequests(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.1.0", "explicit", store, dualStack())
	tests := []struct {
		name      string
		conf      testConf
		cniArgs   string
		container string
		want      []string
	}{
		{"config ipam.ips", newConf("1.1.0", "explicit", store, merge(dualStack(), "ips", []string{"10.0.0.50/24"})), "", "a", []string{"10.0.0.50/24", "fd00::2/120"}},
		{"CNI_ARGS IP", conf, "IgnoreUnknown=1;IP=10.0.0.51,fd00::51", "b", []string{"10.0.0.51/24", "fd00::51/120"}},
		{"ips capability", conf.with("runtimeConfig", map[string]any{"ips": []string{"fd00::52/120"}}), "", "c", []string{"10.0.0.2/24", "fd00::52/120"}},
		{"args convention", conf.with("args", map[string]any{"cni": map[string]any{"ips": []string{"10.0.0.53"}}}), "", "d", []string{"10.0.0.53/24", "fd00::3/120"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := mustAdd(t, tt.conf.bytes(t), tt.container, tt.cniArgs)
			var got []string
			for _, ip := range r.IPs {
				got = append(got, ip.Address.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}

	before := storeBytes(t, store)
	_, _, err := add(t, conf.bytes(t), "x", "IP=10.0.0.51")
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "CNI_ARGS IP": 10.0.0.51 is already held by b/eth0 in network "explicit"`)
	_, _, err = add(t, conf.with("runtimeConfig", map[string]any{"ips": []string{"fd00::52/120"}}).bytes(t), "x", "")
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "runtimeConfig.ips[0]": fd00::52 is already held by c/eth0 in network "explicit"`)
	_, _, err = add(t, conf.bytes(t), "b", "IP=10.0.0.99")
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "CNI_ARGS IP": b/eth0 already holds 10.0.0.51 in network "explicit" and cannot also take 10.0.0.99`)
	_, _, err = add(t, conf.bytes(t), "x", "IP=10.1.0.5")
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "CNI_ARGS IP": 10.1.0.5 is outside every subnet of the network (10.0.0.0/24, fd00::/120)`)
	if !bytes.Equal(before, storeBytes(t, store)) {
		t.Fatal("a refused request changed the store file")
	}
	// Asking again for what one holds is a retried ADD, not a conflict.
	if r, _ := mustAdd(t, conf.bytes(t), "b", "IP=10.0.0.51"); r.IPs[0].Address.String() != "10.0.0.51/24" {
		t.Fatalf("retried ADD with IP=: %v", resultIPs(r))
	}
}

func merge(m map[string]any, kv ...any) map[string]any {
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func TestIPv6Only(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.0.0", "v6", store, map[string]any{
		"ranges": [][]map[string]string{{{"subnet": "2001:db8::/64", "rangeStart": "2001:db8::100", "gateway": "2001:db8::ffff"}}},
		"routes": []map[string]string{{"dst": "fd00:ec2::254/128"}},
	}).bytes(t)
	r, _ := mustAdd(t, conf, "a", "")
	if got := resultIPs(r); !slices.Equal(got, []string{"2001:db8::100/64 gw 2001:db8::ffff"}) {
		t.Fatalf("got %v", got)
	}
	if r.Routes[0].Dst.String() != "fd00:ec2::254/128" {
		t.Fatalf("routes %v", r.Routes)
	}
	if err := del(t, conf, "a"); err != nil {
		t.Fatal(err)
	}
	wantHoldings(t, store, "v6")
}

// GC keeps attachments named under either key: the spec's
// "cni.dev/valid-attachments" and the older "cni.dev/attachments".
func TestGCBothKeys(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.1.0", "gcnet", store, dualStack())
	for _, c := range []string{"new", "old", "gone"} {
		mustAdd(t, conf.bytes(t), c, "")
	}
	gc := conf.with("cni.dev/valid-attachments", attachments("new"), "cni.dev/attachments", attachments("old"))
	if err := GC(context.Background(), cmdArgs(gc.bytes(t), "", "")); err != nil {
		t.Fatal(err)
	}
	wantHoldings(t, store, "gcnet", "new/eth0=10.0.0.2/24,fd00::2/120", "old/eth0=10.0.0.3/24,fd00::3/120")
	if err := GC(context.Background(), cmdArgs(conf.with("cni.dev/attachments", attachments("old")).bytes(t), "", "")); err != nil {
		t.Fatal(err)
	}
	wantHoldings(t, store, "gcnet", "old/eth0=10.0.0.3/24,fd00::3/120")
	err := GC(context.Background(), cmdArgs(conf.with("cni.dev/valid-attachments", []map[string]string{{"ifname": "eth0"}}).bytes(t), "", ""))
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "cni.dev/valid-attachments": an entry has no containerID`)
	wantHoldings(t, store, "gcnet", "old/eth0=10.0.0.3/24,fd00::3/120")
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	aFile := filepath.Join(dir, "a-file")
	corrupt := filepath.Join(dir, "corrupt.db")
	locked := filepath.Join(dir, "locked.db")
	for _, f := range []string{aFile, corrupt} {
		if err := os.WriteFile(f, bytes.Repeat([]byte("not a bbolt file "), 512), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	holder, err := ipam.Open(locked, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tests := []struct {
		name, store, timeout, msg string
	}{
		{"new store", filepath.Join(dir, "new", "ipam.db"), "", ""},
		{"store path is a directory", dir, "", "IPAM store unusable: open IPAM store " + dir + ": "},
		{"parent is a file", filepath.Join(aFile, "ipam.db"), "", "IPAM store unusable: create the directory of IPAM store " + aFile + "/ipam.db: "},
		{"not a bbolt file", corrupt, "", "IPAM store unusable: open IPAM store " + corrupt + ": "},
		{"locked by another process", locked, "200ms", "IPAM store unusable: open IPAM store " + locked + ": store is locked by another process (waited 200ms)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := dualStack()
			if tt.timeout != "" {
				fields["lockTimeout"] = tt.timeout
			}
			err := Status(context.Background(), cmdArgs(newConf("1.1.0", "st", tt.store, fields).bytes(t), "", ""))
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			cniError(t, err, cni.CodePluginNotAvailable, tt.msg)
		})
	}
}

// A config that is wrong is refused before the store is touched.
func TestBadConfigWritesNothing(t *testing.T) {
	store := tempStore(t)
	good := newConf("1.0.0", "bad", store, dualStack())
	mustAdd(t, good.bytes(t), "existing", "")
	before := storeBytes(t, store)
	for _, conf := range []testConf{
		newConf("1.0.0", "bad", store, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.0.0.0/33"}}}}),
		newConf("1.0.0", "bad", store, merge(dualStack(), "routes", []map[string]string{{"gw": "10.0.0.1"}})),
		newConf("1.0.0", "bad", store, merge(dualStack(), "ipv4-subnet", "10.0.0.0/24")),
		newConf("1.0.0", "", store, dualStack()),
	} {
		_, _, err := add(t, conf.bytes(t), "new", "")
		cniError(t, err, cni.CodeInvalidConfig, "invalid config: field ")
		cniError(t, del(t, conf.bytes(t), "existing"), cni.CodeInvalidConfig, "invalid config: field ")
	}
	// A request that cannot be met fails the ADD only: DEL does not look at
	// requests, so that it can always release.
	_, _, err := add(t, newConf("1.0.0", "bad", store, merge(dualStack(), "ips", []string{"10.0.0.0"})).bytes(t), "new", "")
	cniError(t, err, cni.CodeInvalidConfig, `invalid config: field "ipam.ips[0]": 10.0.0.0 is the network address of 10.0.0.0/24`)
	if !bytes.Equal(before, storeBytes(t, store)) {
		t.Fatal("a refused config changed the store file")
	}
	wantHoldings(t, store, "bad", "existing/eth0=10.0.0.2/24,fd00::2/120")
}

// The ECS agent's configs: ADD through ecs-bridge's config, release through
// the ipam-only config it names "ecs-ipam", both carrying the task ENI's
// MAC as "id"; and the address it passes back after a restart.
func TestECSConfigRoundTrip(t *testing.T) {
	store := tempStore(t)
	const mac = "0a:1b:2c:3d:4e:5f"
	ipamSection := map[string]any{
		"type": "ecs-ipam", "id": mac, "cniVersion": "0.3.0", "store": store,
		"ipv4-subnet": "169.254.172.0/22", "ipv4-routes": []map[string]string{{"dst": "169.254.170.2/32"}},
	}
	bridge := testConf{"cniVersion": "0.3.0", "name": "ecs-bridge", "type": "ecs-bridge", "bridge": "ecs-bridge", "ipam": ipamSection}
	release := testConf{"cniVersion": "0.3.0", "name": "ecs-ipam", "type": "ecs-ipam", "ipam": ipamSection}

	args := &skel.CmdArgs{ContainerID: "pause1", Netns: unusedNetns, IfName: "ecs-eth0", StdinData: bridge.bytes(t)}
	r, out, err := testutils.CmdAddWithArgs(args, func() error { return Verbs.SkelFuncs(context.Background()).Add(args) })
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != "0.3.0" || !strings.Contains(string(out), `"version": "4"`) {
		t.Fatalf("result is not a 0.3.0 result:\n%s", out)
	}
	r100, _ := types100.NewResultFromResult(r)
	if got := resultIPs(r100); !slices.Equal(got, []string{"169.254.172.2/22 gw 169.254.172.1"}) || r100.Routes[0].Dst.String() != "169.254.170.2/32" {
		t.Fatalf("ECS ADD gave %v routes %v", got, r100.Routes)
	}
	wantHoldings(t, store, "ecs-bridge", `id "`+mac+`" (container pause1, interface ecs-eth0)=169.254.172.2/22`)

	for range 2 {
		args := &skel.CmdArgs{ContainerID: "pause1", IfName: "ecs-eth0", StdinData: release.bytes(t)}
		if err := Del(context.Background(), args); err != nil {
			t.Fatalf("the agent's release: %v", err)
		}
	}
	wantHoldings(t, store, "ecs-bridge")

	// After an agent restart it asks for the address the task had.
	ipamSection["ipv4-address"] = "169.254.172.9/22"
	args = &skel.CmdArgs{ContainerID: "pause1", Netns: unusedNetns, IfName: "ecs-eth0", StdinData: bridge.bytes(t)}
	r, _, err = testutils.CmdAddWithArgs(args, func() error { return Verbs.SkelFuncs(context.Background()).Add(args) })
	if err != nil {
		t.Fatal(err)
	}
	if r100, _ := types100.NewResultFromResult(r); r100.IPs[0].Address.String() != "169.254.172.9/22" {
		t.Fatalf("ECS ADD with ipv4-address gave %v", resultIPs(r100))
	}
}
