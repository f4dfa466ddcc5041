package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestPodman runs a busybox task under podman (CNI backend) attached to the
// ENI network (eth0) and the task bridge network (ecs-eth0, as ECS names
// it), with vpcnet's plugins and, to prove the harness, with the reference
// plugins.
func TestPodman(t *testing.T) {
	t.Run("vpcnet", func(t *testing.T) {
		run := NewRunDir(t)
		testPodman(t, run, VPCNetPlugins(t, run))
	})
	t.Run("reference", func(t *testing.T) {
		run := NewRunDir(t)
		testPodman(t, run, ReferencePlugins(t, run))
	})
}

func testPodman(t *testing.T, run *RunDir, plugins Plugins) {
	inst := NewInstance(t)
	plugins = plugins.Recording(t, run)
	diagnoseOnFailure(t, run)
	confDir := run.File("net.d")
	eniNet, bridgeNet := run.Network("eni"), run.Network("taskbridge")
	WriteConflist(t, confDir, eniNet, plugins.ENI(inst.ENI))
	WriteConflist(t, confDir, bridgeNet, plugins.Bridge(TaskBridgeSubnet, ""))
	p := NewPodman(t, run, PodmanConfig{
		NSPath: inst.Path(), PluginDir: plugins.Dir, ConfDir: confDir, Env: pluginLogEnv(run),
	})
	before := inst.Links(t)
	networks := []Attachment{{eniNet, "eth0"}, {bridgeNet, TaskIfName}}

	p.Run(PodmanRun{
		Name: "task", Networks: networks, Detach: true, CapAdd: []string{"NET_RAW"},
		Cmd: []string{"sleep", "600"},
	}).MustRun(t)
	p.RecordNetNS(t, "task")

	t.Run("ENI moved in", func(t *testing.T) {
		mac := strings.TrimSpace(p.Exec("task", "cat", "/sys/class/net/eth0/address").MustRun(t))
		if mac != inst.ENI.MAC.String() {
			t.Errorf("eth0 in the container has MAC %s, want the ENI's %s", mac, inst.ENI.MAC)
		}
		addrs := p.Exec("task", "ip", "-o", "-4", "addr", "show", "dev", "eth0").MustRun(t)
		if !strings.Contains(addrs, "inet "+inst.ENI.Address.String()+" ") {
			t.Errorf("eth0 does not hold the ENI address %s:\n%s", inst.ENI.Address, addrs)
		}
		if err := inst.ENIHome(); err == nil {
			t.Errorf("the ENI is still in the instance namespace while the container runs")
		}
	})
	t.Run("gateway answers ping", func(t *testing.T) {
		p.Exec("task", "ping", "-c", "1", "-W", "5", inst.ENI.Gateway.String()).MustRun(t)
	})
	t.Run("task metadata endpoint answers", func(t *testing.T) {
		body := p.Exec("task", wget(TaskMetadataURL)...).MustRun(t)
		if strings.TrimSpace(body) != inst.TaskMetadataBody {
			t.Errorf("GET %s = %q, want %q", TaskMetadataURL, body, inst.TaskMetadataBody)
		}
	})
	t.Run("instance metadata", func(t *testing.T) {
		r := p.Exec("task", wget(IMDSURL)...).Run()
		reached := r.Err == nil && strings.Contains(r.Stdout, inst.IMDSBody)
		switch {
		case plugins.BlocksIMDS && reached:
			t.Errorf("169.254.169.254 is reachable from the task; the ENI config blocks it")
		case !plugins.BlocksIMDS && !reached:
			t.Errorf("169.254.169.254 should be reachable through the ENI (not blocked): %v\n%s", r.Err, r.Output())
		}
		if plugins.BlocksIMDS {
			routes := p.Exec("task", "ip", "route", "show", IMDSIP).MustRun(t)
			if !strings.Contains(routes, "blackhole") {
				t.Errorf("no blackhole route to %s in the task:\n%s", IMDSIP, routes)
			}
		}
	})

	p.Command("rm", "--force", "--time", "0", "task").MustRun(t)
	assertTaskGone(t, inst, before)

	// More tasks, one after the other, than the task bridge subnet has
	// addresses: each one runs only if the ENI came back and the previous
	// task's address was released. Their latency is logged.
	var took []time.Duration
	for i := 0; i <= TaskBridgeCapacity; i++ {
		r := p.Run(PodmanRun{Networks: networks, Remove: true, Cmd: []string{"true"}}).Run()
		if r.Err != nil {
			t.Fatalf("task %d of %d (podman run --rm): %v\n%s", i+1, TaskBridgeCapacity+1, r.Err, r.Output())
		}
		took = append(took, r.Elapsed)
	}
	assertTaskGone(t, inst, before)
	t.Logf("%s: podman run --rm with ENI and task bridge: median %v over %d runs %v",
		plugins.Name, median(took), len(took), took)
}

// assertTaskGone checks what a finished task must leave: the ENI back in
// the instance with no address, and no new link apart from the bridge.
func assertTaskGone(t *testing.T, inst *Instance, before map[string]string) {
	t.Helper()
	if err := inst.ENIHome(); err != nil {
		t.Error(err)
	}
	if added, removed := inst.LeakedLinks(t, before); len(added)+len(removed) > 0 {
		t.Errorf("instance links after the task: new %v, gone %v", added, removed)
	}
}

// wget is the busybox command line that fetches url. Busybox 1.35's wget
// crashes with -T, so timeout(1) bounds it instead.
func wget(url string) []string {
	return []string{"timeout", "10", "wget", "-q", "-O", "-", url}
}
