package vpcipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/vpcnet/vpcnet/internal/cni"
	"github.com/vpcnet/vpcnet/internal/crashpoint"
	"github.com/vpcnet/vpcnet/internal/ipam"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// invocation is one run of the built vpc-ipam binary, as a runtime execs it.
type invocation struct {
	command, containerID, cniArgs string
	stdin                         []byte
	env                           []string
	via                           []string // a command that execs the plugin, its path appended
}

// outcome is what the runtime sees: stdout, and on failure the CNI error
// printed there, or that the process was killed.
type outcome struct {
	stdout, stderr []byte
	err            *types.Error
	killed         bool
}

func (inv invocation) cmd(t *testing.T) *exec.Cmd {
	argv := append(slices.Clone(inv.via), testenv.Binary(t, "vpc-ipam"))
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_COMMAND=" + inv.command,
		"CNI_CONTAINERID=" + inv.containerID,
		"CNI_NETNS=" + unusedNetns,
		"CNI_IFNAME=eth0",
		"CNI_PATH=" + filepath.Dir(testenv.Binary(t, "vpc-ipam")),
		"CNI_ARGS=" + inv.cniArgs,
	}, inv.env...)
	c.Stdin = bytes.NewReader(inv.stdin)
	return c
}

// finish interprets a finished process.
func finish(t *testing.T, c *exec.Cmd, stdout, stderr *bytes.Buffer, err error) outcome {
	t.Helper()
	o := outcome{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			o.killed = ws.Signal() == syscall.SIGKILL
			return o
		}
		o.err = &types.Error{}
		if jerr := json.Unmarshal(o.stdout, o.err); jerr != nil {
			t.Fatalf("%s failed without a CNI error on stdout: %v\nstdout: %s\nstderr: %s", c.Args[0], err, o.stdout, o.stderr)
		}
	default:
		t.Fatalf("run %s: %v", c.Args[0], err)
	}
	return o
}

func run(t *testing.T, inv invocation) outcome {
	t.Helper()
	c := inv.cmd(t)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	return finish(t, c, &stdout, &stderr, c.Run())
}

func mustRun(t *testing.T, inv invocation) []byte {
	t.Helper()
	o := run(t, inv)
	if o.err != nil || o.killed {
		t.Fatalf("%s %s: error %v killed=%v\nstderr: %s", inv.command, inv.containerID, o.err, o.killed, o.stderr)
	}
	return o.stdout
}

func wantCNIError(t *testing.T, o outcome, code uint, msg string) {
	t.Helper()
	if o.err == nil {
		t.Fatalf("succeeded (stdout %s), want error %d %q", o.stdout, code, msg)
	}
	cniError(t, o.err, code, msg)
}

func TestBinaryEveryVersion(t *testing.T) {
	for _, version := range specVersions {
		t.Run(version, func(t *testing.T) {
			store := tempStore(t)
			conf := newConf(version, "bin", store, dualStack())
			b := conf.bytes(t)

			out1 := mustRun(t, invocation{command: "ADD", containerID: "c1", stdin: b})
			out2 := mustRun(t, invocation{command: "ADD", containerID: "c1", stdin: b})
			if !bytes.Equal(out1, out2) {
				t.Fatalf("second ADD differs:\n%s\n%s", out1, out2)
			}
			res, err := cniversion.NewResult(version, out1)
			if err != nil {
				t.Fatalf("result is not a %s result: %v\n%s", version, err, out1)
			}
			r100, _ := types100.NewResultFromResult(res)
			if got := resultIPs(r100); !slices.Equal(got, []string{"10.0.0.2/24 gw 10.0.0.1", "fd00::2/120 gw fd00::1"}) {
				t.Fatalf("ADD gave %v", got)
			}

			checkConf := conf.with("prevResult", json.RawMessage(out1)).bytes(t)
			o := run(t, invocation{command: "CHECK", containerID: "c1", stdin: checkConf})
			if atLeast(version, "0.4.0") {
				if o.err != nil {
					t.Fatalf("CHECK: %v", o.err)
				}
			} else {
				wantCNIError(t, o, cni.CodeIncompatibleVersion, "config version does not allow CHECK")
			}

			for range 2 {
				mustRun(t, invocation{command: "DEL", containerID: "c1", stdin: b})
			}
			wantHoldings(t, store, "bin")

			mustRun(t, invocation{command: "ADD", containerID: "c2", stdin: b})
			gc := run(t, invocation{command: "GC", stdin: conf.with("cni.dev/valid-attachments", attachments()).bytes(t)})
			status := run(t, invocation{command: "STATUS", stdin: b})
			if atLeast(version, "1.1.0") {
				if gc.err != nil || status.err != nil {
					t.Fatalf("GC: %v, STATUS: %v", gc.err, status.err)
				}
				wantHoldings(t, store, "bin")
			} else {
				wantCNIError(t, gc, cni.CodeIncompatibleVersion, "config version does not allow GC")
				wantCNIError(t, status, cni.CodeIncompatibleVersion, "config version does not allow STATUS")
				wantHoldings(t, store, "bin", "c2/eth0=10.0.0.3/24,fd00::3/120")
			}
		})
	}
}

func TestBinaryRefusesUnsupportedVersions(t *testing.T) {
	store := tempStore(t)
	for _, version := range []string{"0.2.0", "1.2.0"} {
		o := run(t, invocation{command: "ADD", containerID: "c1", stdin: newConf(version, "old", store, dualStack()).bytes(t)})
		wantCNIError(t, o, cni.CodeIncompatibleVersion, "incompatible CNI versions")
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused ADD created the store: %v", err)
	}
	var info struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	out := mustRun(t, invocation{command: "VERSION", stdin: []byte(`{"cniVersion":"1.1.0"}`)})
	if err := json.Unmarshal(out, &info); err != nil || !slices.Equal(info.SupportedVersions, specVersions) {
		t.Fatalf("VERSION: %s (%v)", out, err)
	}
}

// Fifty plugin processes at once against one store, as a kubelet starting
// a node's pods does: every ADD gets its own address, and every DEL frees.
func TestBinaryConcurrentAddDel(t *testing.T) {
	const n = 50
	store := tempStore(t)
	conf := newConf("1.1.0", "busy", store, map[string]any{"ranges": [][]map[string]string{{{"subnet": "10.1.0.0/24"}}}}).bytes(t)
	runAll := func(command string) []outcome {
		cmds := make([]*exec.Cmd, n)
		outs := make([]*bytes.Buffer, n)
		errs := make([]*bytes.Buffer, n)
		for i := range n {
			cmds[i] = invocation{command: command, containerID: fmt.Sprintf("ctr%02d", i), stdin: conf}.cmd(t)
			outs[i], errs[i] = &bytes.Buffer{}, &bytes.Buffer{}
			cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
		}
		start := time.Now()
		for _, c := range cmds {
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		results := make([]outcome, n)
		for i, c := range cmds {
			results[i] = finish(t, c, outs[i], errs[i], c.Wait())
		}
		t.Logf("%d concurrent %s: %s wall", n, command, time.Since(start).Round(time.Millisecond))
		return results
	}

	seen := map[string]string{}
	for i, o := range runAll("ADD") {
		if o.err != nil || o.killed {
			t.Fatalf("ADD ctr%02d: %v\n%s", i, o.err, o.stderr)
		}
		var r types100.Result
		if err := json.Unmarshal(o.stdout, &r); err != nil || len(r.IPs) != 1 {
			t.Fatalf("ADD ctr%02d printed %s (%v)", i, o.stdout, err)
		}
		a := r.IPs[0].Address.String()
		if other, dup := seen[a]; dup {
			t.Fatalf("%s given to ctr%02d and %s", a, i, other)
		}
		seen[a] = fmt.Sprintf("ctr%02d", i)
	}
	if got := len(holdings(t, store, "busy")); got != n {
		t.Fatalf("store holds %d allocations after %d ADDs", got, n)
	}
	for i, o := range runAll("DEL") {
		if o.err != nil || o.killed {
			t.Fatalf("DEL ctr%02d: %v\n%s", i, o.err, o.stderr)
		}
	}
	wantHoldings(t, store, "busy")
}

// A store held by someone else past the lock timeout is "try again later",
// and the store is left as it was.
func TestBinaryLockTimeout(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.1.0", "locked", store, merge(dualStack(), "lockTimeout", "300ms"))
	mustRun(t, invocation{command: "ADD", containerID: "before", stdin: conf.bytes(t)})

	holder, err := ipam.Open(store, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lockedMsg := "open IPAM store " + store + ": store is locked by another process (waited 300ms); try again"
	for _, command := range []string{"ADD", "DEL"} {
		o := run(t, invocation{command: command, containerID: "before", stdin: conf.bytes(t)})
		wantCNIError(t, o, cni.CodeTryAgainLater, lockedMsg)
	}
	// The ECS agent's variable sets the timeout when the config does not.
	noTimeout := newConf("1.1.0", "locked", store, dualStack())
	o := run(t, invocation{command: "ADD", containerID: "other", stdin: noTimeout.bytes(t), env: []string{EnvECSLockTimeout + "=200ms"}})
	wantCNIError(t, o, cni.CodeTryAgainLater, "open IPAM store "+store+": store is locked by another process (waited 200ms)")
	holder.Close()

	wantHoldings(t, store, "locked", "before/eth0=10.0.0.2/24,fd00::2/120")
	mustRun(t, invocation{command: "DEL", containerID: "before", stdin: conf.bytes(t)})
	wantHoldings(t, store, "locked")
}

// Killed at every step it marks, an ADD leaves either nothing or a whole
// allocation, never a broken store; DEL (or GC) then brings the store back
// to what it held before the ADD. The same for a DEL killed at each step.
func TestBinaryCrashSafety(t *testing.T) {
	store := tempStore(t)
	conf := newConf("1.1.0", "crash", store, dualStack())
	b := conf.bytes(t)
	mustRun(t, invocation{command: "ADD", containerID: "bystander", stdin: b})
	baseline := holdings(t, store, "crash")
	// whole says whether the store holds the baseline plus a complete
	// allocation for the victim: one IPv4 and one IPv6 address (which ones
	// depends on how far next-fit has moved).
	whole := func(h []string) bool {
		var victim []string
		h = slices.DeleteFunc(slices.Clone(h), func(s string) bool {
			if strings.HasPrefix(s, "victim/eth0=") {
				victim = append(victim, s)
				return true
			}
			return false
		})
		if len(victim) != 1 || !slices.Equal(h, baseline) {
			return false
		}
		ips := strings.Split(strings.TrimPrefix(victim[0], "victim/eth0="), ",")
		return len(ips) == 2 && strings.HasPrefix(ips[0], "10.0.0.") && strings.HasPrefix(ips[1], "fd00::")
	}

	steps := func(command string) []string {
		log := filepath.Join(t.TempDir(), "steps")
		mustRun(t, invocation{command: command, containerID: "victim", stdin: b, env: []string{crashpoint.EnvStepLog + "=" + log}})
		data, err := os.ReadFile(log)
		if err != nil {
			t.Fatalf("%s logged no steps: %v", command, err)
		}
		return strings.Fields(string(data))
	}
	addSteps := steps("ADD")
	delSteps := steps("DEL")
	if want := []string{"ipam-store-opened", "ipam-add-written", "ipam-add-committed"}; !slices.Equal(addSteps, want) {
		t.Fatalf("ADD steps %v, want %v", addSteps, want)
	}
	if want := []string{"ipam-store-opened", "ipam-del-written", "ipam-del-committed"}; !slices.Equal(delSteps, want) {
		t.Fatalf("DEL steps %v, want %v", delSteps, want)
	}

	recoveries := map[string]invocation{
		"DEL": {command: "DEL", containerID: "victim", stdin: b},
		"GC":  {command: "GC", stdin: conf.with("cni.dev/valid-attachments", attachments("bystander")).bytes(t)},
	}
	for i, step := range addSteps {
		for name, recovery := range recoveries {
			t.Run(fmt.Sprintf("ADD killed at %d %s, then %s", i+1, step, name), func(t *testing.T) {
				o := run(t, invocation{command: "ADD", containerID: "victim", stdin: b, env: []string{crashpoint.EnvKillAt + "=" + fmt.Sprint(i+1)}})
				if !o.killed {
					t.Fatalf("ADD was not killed at step %d: err %v stdout %s", i+1, o.err, o.stdout)
				}
				after := holdings(t, store, "crash")
				// Before the commit nothing is there; after it, all of it.
				if committed := step == "ipam-add-committed"; committed && !whole(after) || !committed && !slices.Equal(after, baseline) {
					t.Fatalf("after a kill at %s the store holds %q", step, after)
				}
				mustRun(t, recovery)
				wantHoldings(t, store, "crash", baseline...)
			})
		}
	}
	for i, step := range delSteps {
		t.Run(fmt.Sprintf("DEL killed at %d %s, then DEL", i+1, step), func(t *testing.T) {
			mustRun(t, invocation{command: "ADD", containerID: "victim", stdin: b})
			o := run(t, invocation{command: "DEL", containerID: "victim", stdin: b, env: []string{crashpoint.EnvKillAt + "=" + fmt.Sprint(i+1)}})
			if !o.killed {
				t.Fatalf("DEL was not killed at step %d", i+1)
			}
			after := holdings(t, store, "crash")
			if committed := step == "ipam-del-committed"; committed && !slices.Equal(after, baseline) || !committed && !whole(after) {
				t.Fatalf("after a kill at %s the store holds %q", step, after)
			}
			mustRun(t, recoveries["DEL"])
			wantHoldings(t, store, "crash", baseline...)
		})
	}
}

// The ECS agent's way: the store from IPAM_DB_PATH, a 0.3.0 config from
// ecs-bridge, the release through the "ecs-ipam" network.
func TestBinaryECSDropIn(t *testing.T) {
	store := tempStore(t)
	env := []string{EnvECSStore + "=" + store}
	ipamSection := map[string]any{"type": "ecs-ipam", "id": "0a:1b:2c:3d:4e:5f", "cniVersion": "0.3.0",
		"ipv4-subnet": "169.254.172.0/22", "ipv4-routes": []map[string]string{{"dst": "169.254.170.2/32"}}}
	bridge := testConf{"cniVersion": "0.3.0", "name": "ecs-bridge", "type": "ecs-bridge", "bridge": "ecs-bridge", "ipam": ipamSection}
	release := testConf{"cniVersion": "0.3.0", "name": "ecs-ipam", "type": "ecs-ipam", "ipam": ipamSection}

	out := mustRun(t, invocation{command: "ADD", containerID: "pause1", stdin: bridge.bytes(t), env: env})
	res, err := cniversion.NewResult("0.3.0", out)
	if err != nil {
		t.Fatalf("not a 0.3.0 result: %v\n%s", err, out)
	}
	r100, _ := types100.NewResultFromResult(res)
	if got := resultIPs(r100); !slices.Equal(got, []string{"169.254.172.2/22 gw 169.254.172.1"}) {
		t.Fatalf("ADD gave %v", got)
	}
	mustRun(t, invocation{command: "DEL", containerID: "pause1", stdin: release.bytes(t), env: env})
	wantHoldings(t, store, "ecs-bridge")
	mustRun(t, invocation{command: "DEL", containerID: "pause1", stdin: release.bytes(t), env: env})
}

// A store on a file system that has gone read-only: STATUS says the plugin
// is not available, ADD and DEL fail (so that the runtime retries) and the
// allocations are still there once it is writable again. The read-only
// mount exists only in a private mount namespace of the plugin process.
func TestBinaryReadOnlyStore(t *testing.T) {
	testenv.Privileged(t)
	unshare := testenv.Tool(t, "unshare")
	store := tempStore(t)
	dir := filepath.Dir(store)
	conf := newConf("1.1.0", "ro", store, dualStack()).bytes(t)
	mustRun(t, invocation{command: "ADD", containerID: "a", stdin: conf})

	readOnly := []string{unshare, "--mount", "sh", "-c",
		`mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"`, "sh", dir}
	o := run(t, invocation{command: "STATUS", stdin: conf, via: readOnly})
	wantCNIError(t, o, cni.CodePluginNotAvailable, "IPAM store unusable: open IPAM store "+store+": ")
	if !strings.Contains(o.err.Msg, "read-only file system") {
		t.Fatalf("STATUS message does not say why: %q", o.err.Msg)
	}
	for _, inv := range []invocation{
		{command: "ADD", containerID: "b", stdin: conf, via: readOnly},
		{command: "DEL", containerID: "a", stdin: conf, via: readOnly},
	} {
		wantCNIError(t, run(t, inv), cni.CodeIOFailure, "open IPAM store "+store+": ")
	}
	wantHoldings(t, store, "ro", "a/eth0=10.0.0.2/24,fd00::2/120")
	mustRun(t, invocation{command: "STATUS", stdin: conf})
}

// TestBinaryDuplicateKey: a config that gives a key twice, at the top level
// or in a nested object, is refused (code 7, naming the key) before the
// store is touched, even when the last value, the one a plain decoder
// would keep, is valid.
func TestBinaryDuplicateKey(t *testing.T) {
	tests := []struct {
		name, from, to, field string
	}{
		{"top level", `"name":"dup"`, `"name":"other","name":"dup"`, "name"},
		{"in ipam", `"type":"vpc-ipam"`, `"type":"host-local","type":"vpc-ipam"`, "ipam.type"},
		{"in a range", `"subnet":"10.0.0.0/24"`, `"subnet":"10.9.0.0/24","subnet":"10.0.0.0/24"`, "ipam.ranges[0][0].subnet"},
		{"in a route", `"dst":"0.0.0.0/0"`, `"dst":"10.0.0.0/8","dst":"0.0.0.0/0"`, "ipam.routes[0].dst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := tempStore(t)
			good := string(newConf("1.1.0", "dup", store, dualStack()).bytes(t))
			if !strings.Contains(good, tt.from) {
				t.Fatalf("%s not in %s", tt.from, good)
			}
			conf := []byte(strings.Replace(good, tt.from, tt.to, 1))
			for _, command := range []string{"ADD", "DEL", "GC", "STATUS"} {
				o := run(t, invocation{command: command, containerID: "c1", stdin: conf})
				wantCNIError(t, o, cni.CodeInvalidConfig, fmt.Sprintf("invalid config: field %q: given more than once", tt.field))
			}
			if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused config created or touched the store: %v", err)
			}
		})
	}
}

// TestBinaryRouteFieldsByVersion: route fields of spec 1.1.0 (mtu, advmss,
// priority, table, scope) given in the ipam section appear in a 1.1.0
// result and in no older one.
func TestBinaryRouteFieldsByVersion(t *testing.T) {
	fields := []string{"mtu", "advmss", "priority", "table", "scope"}
	for _, version := range specVersions {
		t.Run(version, func(t *testing.T) {
			pool := dualStack()
			pool["routes"] = []map[string]any{{"dst": "0.0.0.0/0", "mtu": 1400, "advmss": 1360, "priority": 5, "table": 100, "scope": 0}}
			out := mustRun(t, invocation{command: "ADD", containerID: "c1", stdin: newConf(version, "fields", tempStore(t), pool).bytes(t)})
			var res struct {
				Routes []map[string]any `json:"routes"`
			}
			if err := json.Unmarshal(out, &res); err != nil || len(res.Routes) != 1 {
				t.Fatalf("result %s: %v", out, err)
			}
			if res.Routes[0]["dst"] != "0.0.0.0/0" {
				t.Errorf("route %v lost its destination", res.Routes[0])
			}
			for _, f := range fields {
				if _, has := res.Routes[0][f]; has != (version == "1.1.0") {
					t.Errorf("route field %q present = %v in a %s result: %s", f, has, version, out)
				}
			}
		})
	}
}
