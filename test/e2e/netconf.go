package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// CNIVersion is the spec version of the generated configs: the newest that
// podman 4.3 and containerd 1.6 take.
const CNIVersion = "1.0.0"

// ReferencePluginDir is where Debian's containernetworking-plugins live.
const ReferencePluginDir = "/usr/lib/cni"

// TaskBridgeName is the task bridge in the instance namespace. A chain's
// second interface in the container (the task bridge's veth) is named
// TaskIfName, as ECS names it.
const (
	TaskBridgeName = "ecs-bridge"
	TaskIfName     = "ecs-eth0"
)

// Plugins is one set of CNI plugins that can play the two roles of an
// awsvpc task: moving the ENI in, and the task bridge for 169.254.170.2.
type Plugins struct {
	Name string
	// Dir is the CNI_PATH (CRI bin_dir): it holds the plugins and loopback.
	Dir string
	// ENI is the config of the plugin that moves eni into the container.
	ENI func(eni ENI) map[string]any
	// Bridge is the config of the task bridge plugin. ifName, when not
	// empty, is the name of the container side when it differs from
	// CNI_IFNAME (in a chain after ENI).
	Bridge func(subnet, ifName string) map[string]any
	// BlocksIMDS is whether the ENI config blackholes 169.254.169.254.
	BlocksIMDS bool
}

// VPCNetPlugins returns vpcnet's plugins (built, or from VPCNET_BIN_DIR)
// linked into one directory of the run together with the reference
// loopback plugin, as the CRI's single bin_dir needs.
func VPCNetPlugins(t testing.TB, run *RunDir) Plugins {
	t.Helper()
	dir, store := run.File("cni-bin"), run.File("ipam.db")
	linkPlugins(t, dir, map[string]string{
		"vpc-eni":    testenv.Binary(t, "vpc-eni"),
		"vpc-bridge": testenv.Binary(t, "vpc-bridge"),
		"vpc-ipam":   testenv.Binary(t, "vpc-ipam"),
		"loopback":   filepath.Join(ReferencePluginDir, "loopback"),
	})
	return Plugins{
		Name: "vpcnet",
		Dir:  dir,
		// The field names are those the ECS agent writes for ecs-eni,
		// ecs-bridge and ecs-ipam, which vpcnet's plugins accept as they
		// are (DESIGN.md, config compatibility), except vpc-ipam's
		// "store": each run has its own, off /var/lib/vpcnet.
		ENI: func(eni ENI) map[string]any {
			return map[string]any{
				"type":                    "vpc-eni",
				"eni":                     eni.ID,
				"mac":                     eni.MAC.String(),
				"ip-addresses":            []string{eni.Address.String()},
				"gateway-ip-addresses":    []string{eni.Gateway.String()},
				"block-instance-metadata": true,
				"mtu":                     eni.MTU,
			}
		},
		Bridge: func(subnet, ifName string) map[string]any {
			c := map[string]any{
				"type":   "vpc-bridge",
				"bridge": TaskBridgeName,
				"mtu":    1500,
				"ipam": map[string]any{
					"type":        "vpc-ipam",
					"store":       store,
					"ipv4-subnet": subnet,
					"ipv4-routes": []map[string]string{{"dst": TaskMetadataIP + "/32"}},
				},
			}
			if ifName != "" {
				// Proposed: the container side's name when chained
				// after vpc-eni, which already took CNI_IFNAME.
				c["containerIfName"] = ifName
			}
			return c
		},
		BlocksIMDS: true,
	}
}

// ReferencePlugins returns Debian's reference plugins playing the same
// roles: host-device (by MAC) with static IPAM for the ENI, bridge with
// host-local for the task bridge. They prove the harness and give the
// baseline figures. The reference bridge cannot follow another plugin in a
// chain (it takes CNI_IFNAME), so only single-plugin conflists use it.
func ReferencePlugins(t testing.TB, run *RunDir) Plugins {
	t.Helper()
	dataDir := run.File("host-local")
	return Plugins{
		Name: "reference",
		Dir:  ReferencePluginDir,
		ENI: func(eni ENI) map[string]any {
			return map[string]any{
				"type":   "host-device",
				"hwaddr": eni.MAC.String(),
				"ipam": map[string]any{
					"type":      "static",
					"addresses": []map[string]string{{"address": eni.Address.String(), "gateway": eni.Gateway.String()}},
					"routes":    []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			}
		},
		Bridge: func(subnet, ifName string) map[string]any {
			return map[string]any{
				"type":      "bridge",
				"bridge":    TaskBridgeName,
				"isGateway": true,
				"mtu":       1500,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": dataDir,
					"ranges":  [][]map[string]string{{{"subnet": subnet}}},
					"routes":  []map[string]string{{"dst": TaskMetadataIP + "/32"}},
				},
			}
		},
	}
}

// Conflist renders a network configuration list.
func Conflist(name string, plugins ...map[string]any) []byte {
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion": CNIVersion,
		"name":       name,
		"plugins":    plugins,
	}, "", "  ")
	if err != nil {
		panic(err) // only maps of plain values
	}
	return b
}

// WriteConflist writes a conflist as dir/<name>.conflist and returns dir.
func WriteConflist(t testing.TB, dir, name string, plugins ...map[string]any) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".conflist"), Conflist(name, plugins...), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// linkPlugins makes dir hold a symlink to each binary under its name.
func linkPlugins(t testing.TB, dir string, bins map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range bins {
		if _, err := os.Stat(target); err != nil {
			t.Fatalf("plugin %s: %v", name, err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatalf("link plugin %s: %v", name, fmt.Errorf("%w", err))
		}
	}
}

// Call is one invocation of a plugin, as recorded by Recording.
type Call struct {
	Plugin, Command, NetNS, IfName, ContainerID, Args string
	// PrevResult is whether the config carried a prevResult.
	PrevResult bool
}

func (c Call) String() string {
	return fmt.Sprintf("%s %s netns=%q ifname=%s prevResult=%v", c.Plugin, c.Command, c.NetNS, c.IfName, c.PrevResult)
}

// Recording returns p with every plugin behind a shell wrapper that
// records the call (environment and config) under run before running the
// plugin, so a test can assert what a runtime actually asked for.
func (p Plugins) Recording(t testing.TB, run *RunDir) Plugins {
	t.Helper()
	dir, logDir := run.File("cni-bin-recording"), run.File("cni-calls")
	for _, d := range []string{dir, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		real := filepath.Join(p.Dir, e.Name())
		script := fmt.Sprintf(`#!/bin/sh
f=%q/$(date +%%s%%N).$$
cat >"$f.stdin"
printf '%%s\n' %q "$CNI_COMMAND" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_CONTAINERID" "$CNI_ARGS" >"$f.env"
exec %q "$@" <"$f.stdin"
`, logDir, e.Name(), real)
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.Dir = dir
	p.Name += "+recording"
	return p
}

// Calls returns the calls recorded by Recording so far, oldest first,
// leaving out VERSION queries.
func Calls(t testing.TB, run *RunDir) []Call {
	t.Helper()
	envs, _ := filepath.Glob(run.File("cni-calls", "*.env"))
	sort.Strings(envs) // names start with the time in nanoseconds
	var calls []Call
	for _, f := range envs {
		env, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := strings.Split(string(env), "\n")
		if len(v) < 6 || v[1] == "VERSION" {
			continue
		}
		c := Call{Plugin: v[0], Command: v[1], NetNS: v[2], IfName: v[3], ContainerID: v[4], Args: v[5]}
		var conf struct {
			PrevResult json.RawMessage `json:"prevResult"`
		}
		stdin, _ := os.ReadFile(strings.TrimSuffix(f, ".env") + ".stdin")
		_ = json.Unmarshal(stdin, &conf)
		c.PrevResult = len(conf.PrevResult) > 0 && string(conf.PrevResult) != "null"
		calls = append(calls, c)
	}
	return calls
}
