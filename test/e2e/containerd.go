package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// Containerd is a containerd 1.6 daemon with the CRI plugin, started by the
// test from a generated config: its root, state, sockets and runc state
// live in the run directory. It runs in the instance namespace, so the CNI
// plugins it calls run there too. crictl talks to it over its socket.
type Containerd struct {
	Socket string
	run    *RunDir
	dir    string
	proc   *Process
	crictl string
}

// ContainerdConfig says where the CNI plugins and their one conflist are.
type ContainerdConfig struct {
	NSPath string // the instance namespace
	// PluginDir is the CRI's single bin_dir: the plugins and loopback.
	PluginDir string
	// ConfDir must hold exactly one conflist: the CRI uses only the
	// lexically first.
	ConfDir string
	Env     []string
}

// StartContainerd starts containerd, imports PauseImage (the sandbox image)
// and BusyboxImage, and waits until the CRI says the runtime and the network
// are ready. When the test ends it removes every pod (so the plugins' DEL
// runs) and stops the daemon by its PID.
func StartContainerd(t testing.TB, run *RunDir, cfg ContainerdConfig) *Containerd {
	t.Helper()
	bin := testenv.Tool(t, "containerd")
	testenv.Tool(t, "containerd-shim-runc-v2")
	testenv.Tool(t, "runc")
	ctr := testenv.Tool(t, "ctr")
	c := &Containerd{
		run:    run,
		dir:    run.File("containerd"),
		crictl: testenv.Tool(t, "crictl"),
	}
	c.Socket = c.dir + "/containerd.sock"
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// RUNTIMES.md: restrict_oom_score_adj because the machine lacks
	// CAP_SYS_RESOURCE (runc init dies otherwise); everything that would
	// default to a global path (/var/lib/containerd, /run/containerd,
	// /opt/containerd, /run/containerd/runc) is moved into the run.
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[9]q
    max_conf_num = 1
`, c.dir+"/root", c.dir+"/state", c.Socket, c.Socket+".ttrpc", c.dir+"/opt",
		PauseImage, c.dir+"/runc", cfg.PluginDir, cfg.ConfDir)
	write(t, c.dir+"/config.toml", conf)
	write(t, c.dir+"/crictl.yaml", fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Socket, c.Socket))

	// Images first, so they are ready when the daemon is.
	pause, err := PauseLayer(BuildPause(t, c.dir))
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := BusyboxLayer()
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(c.dir+"/pause.tar", PauseImage, pause, []string{"/pause"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(c.dir+"/busybox.tar", BusyboxImage, busybox, nil, []string{"sh"}); err != nil {
		t.Fatal(err)
	}

	p, err := Command{
		NSPath: cfg.NSPath, Name: bin, Args: []string{"--config", c.dir + "/config.toml"},
		Env: cfg.Env, KillWithTest: true,
	}.Start(c.dir + "/containerd.log")
	if err != nil {
		t.Fatal(err)
	}
	c.proc = p
	t.Cleanup(func() { c.stop(t) })
	c.waitReady(t)
	for _, img := range []string{"pause.tar", "busybox.tar"} {
		Command{Name: ctr, Args: []string{"--address", c.Socket, "--namespace", "k8s.io", "images", "import", c.dir + "/" + img}}.MustRun(t)
	}
	return c
}

// waitReady waits (at most a minute) for the CRI's RuntimeReady and
// NetworkReady conditions; NetworkReady means it loaded the conflist.
func (c *Containerd) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last Result
	for time.Now().Before(deadline) {
		select {
		case <-c.proc.Done():
			t.Fatalf("containerd exited: %v\n%s", c.proc.Err(), tail(c.Log(), 40))
		default:
		}
		last = c.Crictl("info").Run()
		if last.Err == nil {
			var info struct {
				Status struct {
					Conditions []struct {
						Type    string `json:"type"`
						Status  bool   `json:"status"`
						Message string `json:"message"`
					} `json:"conditions"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(last.Stdout), &info); err == nil {
				ready := 0
				for _, cond := range info.Status.Conditions {
					if cond.Status && (cond.Type == "RuntimeReady" || cond.Type == "NetworkReady") {
						ready++
					}
				}
				if ready == 2 {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("containerd's CRI was not ready within a minute; last crictl info: %v\n%s\ncontainerd log:\n%s",
		last.Err, last.Output(), tail(c.Log(), 40))
}

func (c *Containerd) stop(t testing.TB) {
	if r := c.Crictl("rmp", "--all", "--force").Run(); r.Err != nil {
		t.Errorf("crictl rmp --all --force: %v\n%s", r.Err, r.Output())
	}
	if err := c.proc.Stop(20 * time.Second); err != nil {
		t.Errorf("stop containerd: %v", err)
	}
}

// Log returns what containerd wrote so far.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(c.dir + "/containerd.log")
	return string(b)
}

// Crictl returns `crictl args...` against this containerd.
func (c *Containerd) Crictl(args ...string) Command {
	return Command{Name: c.crictl, Args: append([]string{"--config", c.dir + "/crictl.yaml"}, args...)}
}

// PodConfig writes a CRI pod sandbox config for a pod called name and
// returns its path. The pod goes under the run's cgroup parent.
func (c *Containerd) PodConfig(t testing.TB, name string) string {
	t.Helper()
	logs := c.dir + "/logs/" + name
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"name": name, "namespace": "e2e", "uid": c.run.PodUIDPrefix() + testenv.RandomHex(8), "attempt": 0,
		},
		"hostname":      name,
		"log_directory": logs,
		"linux":         map[string]any{"cgroup_parent": c.run.CgroupParent()},
	})
	path := c.dir + "/pod-" + name + ".json"
	write(t, path, string(b))
	return path
}

// RunPod runs `crictl runp` (the CNI ADD) and returns the pod ID.
func (c *Containerd) RunPod(t testing.TB, podConfig string) (string, Result) {
	t.Helper()
	r := c.Crictl("runp", podConfig).Run()
	return strings.TrimSpace(r.Stdout), r
}

// PodStatus is the part of `crictl inspectp` the tests read.
type PodStatus struct {
	State string
	IP    string // the IP the CRI reports: the first of the eth0 result
	NetNS string // the pod's network namespace path
}

// InspectPod runs `crictl inspectp` and records the pod's namespace in the
// run, so a crashed run's is removed.
func (c *Containerd) InspectPod(t testing.TB, id string) PodStatus {
	t.Helper()
	out := c.Crictl("inspectp", "--output", "json", id).MustRun(t)
	var v struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decode crictl inspectp: %v\n%s", err, out)
	}
	s := PodStatus{State: v.Status.State, IP: v.Status.Network.IP}
	for _, n := range v.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			s.NetNS = n.Path
		}
	}
	if s.NetNS != "" {
		c.run.RecordNetNS(s.NetNS)
	}
	return s
}

// StartContainer creates and starts a BusyboxImage container running cmd
// in the pod, with extra capabilities, and returns its ID.
func (c *Containerd) StartContainer(t testing.TB, podID, podConfig, name string, capAdd []string, cmd ...string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": BusyboxImage},
		"command":  cmd,
		"log_path": name + ".log",
		"linux": map[string]any{
			"security_context": map[string]any{
				"capabilities": map[string]any{"add_capabilities": capAdd},
			},
		},
	})
	path := c.dir + "/container-" + name + ".json"
	write(t, path, string(b))
	id := strings.TrimSpace(c.Crictl("create", "--no-pull", podID, path, podConfig).MustRun(t))
	c.Crictl("start", id).MustRun(t)
	return id
}

// Exec runs cmd in a container through the CRI's ExecSync.
func (c *Containerd) Exec(containerID string, cmd ...string) Command {
	return c.Crictl(append([]string{"exec", "--sync", "--timeout", "30", containerID}, cmd...)...)
}
