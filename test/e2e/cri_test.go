package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCRI runs a pod through containerd's CRI (crictl runp, stopp, rmp)
// with one conflist, as a kubelet-driven node has: the ENI plugin first,
// the task bridge second, chained; and vpc-eni alone. The reference
// plugins cannot chain (the reference bridge takes CNI_IFNAME, already used
// by the ENI), so the harness is proved with host-device alone.
func TestCRI(t *testing.T) {
	t.Run("vpcnet", func(t *testing.T) {
		run := NewRunDir(t)
		plugins := VPCNetPlugins(t, run)
		testCRI(t, run, plugins, func(inst *Instance) []map[string]any {
			return []map[string]any{plugins.ENI(inst.ENI), plugins.Bridge(TaskBridgeSubnet, TaskIfName)}
		})
	})
	// vpc-eni alone: the ENI half of the chain, under the CRI.
	t.Run("vpc-eni", func(t *testing.T) {
		run := NewRunDir(t)
		plugins := VPCNetPlugins(t, run)
		testCRI(t, run, plugins, func(inst *Instance) []map[string]any {
			return []map[string]any{plugins.ENI(inst.ENI)}
		})
	})
	t.Run("reference", func(t *testing.T) {
		run := NewRunDir(t)
		plugins := ReferencePlugins(t, run)
		testCRI(t, run, plugins, func(inst *Instance) []map[string]any {
			return []map[string]any{plugins.ENI(inst.ENI)}
		})
	})
}

func testCRI(t *testing.T, run *RunDir, plugins Plugins, chain func(*Instance) []map[string]any) {
	inst := NewInstance(t)
	plugins = plugins.Recording(t, run)
	diagnoseOnFailure(t, run)
	network := run.Network("task")
	confs := chain(inst)
	withBridge := len(confs) > 1
	confDir := WriteConflist(t, run.File("net.d"), network, confs...)
	c := StartContainerd(t, run, ContainerdConfig{
		NSPath: inst.Path(), PluginDir: plugins.Dir, ConfDir: confDir, Env: pluginLogEnv(run),
	})
	before := inst.Links(t)

	podConfig := c.PodConfig(t, "task")
	pod, r := c.RunPod(t, podConfig)
	if r.Err != nil {
		msg := "crictl runp (CNI ADD of the chain): %v\n%s"
		if withBridge && strings.Contains(r.Output(), "eth0") {
			msg += "\nIn a chain every plugin gets CNI_IFNAME=eth0, which the ENI plugin has taken: " +
				"the bridge plugin must name its container side from \"containerIfName\" (" + TaskIfName + ") " +
				"and append its interface, address and routes to the prevResult, leaving the ENI's eth0 and address first " +
				"(containerd reports the first address of the result's eth0 as the pod IP)."
		}
		if err := inst.ENIHome(); err != nil {
			t.Errorf("a failed ADD must leave the ENI in the instance: %v", err)
		}
		t.Fatalf(msg, r.Err, r.Output())
	}
	status := c.InspectPod(t, pod)
	if status.IP != inst.ENI.Address.IP.String() {
		t.Errorf("crictl inspectp reports pod IP %q, want the ENI's %s", status.IP, inst.ENI.Address.IP)
	}
	if err := inst.ENIHome(); err == nil {
		t.Errorf("the ENI is still in the instance namespace while the pod runs")
	}

	ctr := c.StartContainer(t, pod, podConfig, "task", []string{"NET_RAW"}, "sleep", "600")
	t.Run("ENI moved in", func(t *testing.T) {
		mac := strings.TrimSpace(c.Exec(ctr, "cat", "/sys/class/net/eth0/address").MustRun(t))
		if mac != inst.ENI.MAC.String() {
			t.Errorf("eth0 in the pod has MAC %s, want the ENI's %s", mac, inst.ENI.MAC)
		}
	})
	t.Run("gateway answers ping", func(t *testing.T) {
		c.Exec(ctr, "ping", "-c", "1", "-W", "5", inst.ENI.Gateway.String()).MustRun(t)
	})
	if withBridge {
		t.Run("task metadata endpoint answers", func(t *testing.T) {
			body := c.Exec(ctr, wget(TaskMetadataURL)...).MustRun(t)
			if strings.TrimSpace(body) != inst.TaskMetadataBody {
				t.Errorf("GET %s = %q, want %q", TaskMetadataURL, body, inst.TaskMetadataBody)
			}
		})
	}
	if plugins.BlocksIMDS {
		t.Run("instance metadata blocked", func(t *testing.T) {
			if r := c.Exec(ctr, wget(IMDSURL)...).Run(); r.Err == nil && strings.Contains(r.Stdout, inst.IMDSBody) {
				t.Errorf("169.254.169.254 is reachable from the pod; the ENI config blocks it")
			}
		})
	}

	// stopp: DEL with the pod's netns and the cached result; the ENI
	// comes back. rmp: DEL again, with no netns and no prevResult.
	calls := len(Calls(t, run))
	c.Crictl("stopp", pod).MustRun(t)
	if err := inst.ENIHome(); err != nil {
		t.Errorf("after stopp: %v", err)
	}
	stopDels := dels(Calls(t, run)[calls:])
	calls = len(Calls(t, run))
	c.Crictl("rmp", pod).MustRun(t)
	rmDels := dels(Calls(t, run)[calls:])
	for _, conf := range confs {
		typ := conf["type"].(string)
		if d, ok := stopDels[typ]; !ok || d.NetNS == "" || !d.PrevResult {
			t.Errorf("stopp: want a DEL of %s with the netns and a prevResult, got %v", typ, stopDels)
		}
		if d, ok := rmDels[typ]; !ok || d.NetNS != "" || d.PrevResult {
			t.Errorf("rmp: want a DEL of %s with no netns and no prevResult, got %v", typ, rmDels)
		}
	}
	assertTaskGone(t, inst, before)

	// More pods, one after the other, than the task bridge subnet has
	// addresses (see TestPodman). runp latency is logged.
	var took []time.Duration
	for i := 0; i <= TaskBridgeCapacity; i++ {
		pod, r := c.RunPod(t, c.PodConfig(t, "again"))
		if r.Err != nil {
			t.Fatalf("pod %d of %d: crictl runp: %v\n%s", i+1, TaskBridgeCapacity+1, r.Err, r.Output())
		}
		took = append(took, r.Elapsed)
		c.InspectPod(t, pod)
		c.Crictl("stopp", pod).MustRun(t)
		c.Crictl("rmp", pod).MustRun(t)
	}
	assertTaskGone(t, inst, before)
	t.Logf("%s: crictl runp with %d plugin(s) chained: median %v over %d pods %v",
		plugins.Name, len(confs), median(took), len(took), took)
}

// dels returns the DEL calls by plugin binary, the last of each.
func dels(calls []Call) map[string]Call {
	m := map[string]Call{}
	for _, c := range calls {
		if c.Command == "DEL" {
			m[c.Plugin] = c
		}
	}
	return m
}
