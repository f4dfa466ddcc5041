package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// Podman is podman 4.3 with the CNI backend, configured entirely by files
// in the run directory (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF): its own
// storage, lock files, events log and network config directory. Every
// podman command runs in NSPath, so the plugins it calls (and the exit
// command conmon runs when a container stops) run in the instance.
type Podman struct {
	NSPath string
	run    *RunDir
	env    []string
}

// PodmanConfig says where the plugins and their conflists are.
type PodmanConfig struct {
	NSPath    string // the instance namespace
	PluginDir string // cni_plugin_dirs
	ConfDir   string // network_config_dir: every conflist there is a network
	Env       []string
}

// NewPodman writes podman's configuration into run, imports BusyboxImage
// and, when the test ends, removes every container it made.
func NewPodman(t testing.TB, run *RunDir, cfg PodmanConfig) *Podman {
	t.Helper()
	testenv.Tool(t, "podman")
	testenv.Tool(t, "runc")
	testenv.Tool(t, "conmon")
	dir := run.File("podman")
	for _, d := range []string{"graph", "runroot", "tmp"} {
		if err := os.MkdirAll(dir+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// RUNTIMES.md: cgroupfs and a file events log without systemd, runc
	// (crun 1.8 fails on this cgroup layout), explicit ulimits without
	// CAP_SYS_RESOURCE. File locks keep this podman off the shared memory
	// lock table that any other podman on the machine uses.
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
runtime = "runc"
tmp_dir = %q
lock_type = "file"
volume_path = %q
`, cfg.PluginDir, cfg.ConfDir, dir+"/events.log", dir+"/tmp", dir+"/volumes")
	storage := fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = %q
runroot = %q
`, dir+"/graph", dir+"/runroot")
	write(t, dir+"/containers.conf", conf)
	write(t, dir+"/storage.conf", storage)
	p := &Podman{
		NSPath: cfg.NSPath,
		run:    run,
		env: append([]string{
			"CONTAINERS_CONF=" + dir + "/containers.conf",
			"CONTAINERS_STORAGE_CONF=" + dir + "/storage.conf",
		}, cfg.Env...),
	}
	t.Cleanup(func() {
		if r := p.Command("rm", "--all", "--force", "--time", "0").Run(); r.Err != nil {
			t.Errorf("podman rm --all: %v\n%s", r.Err, r.Output())
		}
	})
	layer, err := BusyboxLayer()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := dir + "/busybox.tar"
	if err := os.WriteFile(rootfs, layer, 0o644); err != nil {
		t.Fatal(err)
	}
	p.Command("import", "--quiet", rootfs, BusyboxImage).MustRun(t)
	return p
}

// Command returns `podman args...`, to run in the instance.
func (p *Podman) Command(args ...string) Command {
	return Command{NSPath: p.NSPath, Name: "podman", Args: args, Env: p.env}
}

// Attachment is a network and the container's interface on it.
type Attachment struct{ Network, IfName string }

// PodmanRun describes a `podman run` of BusyboxImage.
type PodmanRun struct {
	Name     string
	Networks []Attachment
	Detach   bool
	Remove   bool
	CapAdd   []string
	Cmd      []string
}

// Run returns the `podman run` command for o. Containers go under the run's
// cgroup parent, where a crashed run's are found.
func (p *Podman) Run(o PodmanRun) Command {
	args := []string{"run", "--cgroup-parent", p.run.CgroupParent()}
	if o.Name != "" {
		args = append(args, "--name", o.Name)
	}
	if o.Detach {
		args = append(args, "--detach")
	}
	if o.Remove {
		args = append(args, "--rm")
	}
	for _, n := range o.Networks {
		args = append(args, "--network", n.Network+":interface_name="+n.IfName)
	}
	for _, c := range o.CapAdd {
		args = append(args, "--cap-add", c)
	}
	args = append(args, BusyboxImage)
	args = append(args, o.Cmd...)
	return p.Command(args...)
}

// Exec runs a command in a running container.
func (p *Podman) Exec(name string, cmd ...string) Command {
	return p.Command(append([]string{"exec", name}, cmd...)...)
}

// RecordNetNS records the container's network namespace in the run, so a
// crashed run's is removed.
func (p *Podman) RecordNetNS(t testing.TB, name string) string {
	t.Helper()
	path := strings.TrimSpace(p.Command("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name).MustRun(t))
	if path != "" {
		p.run.RecordNetNS(path)
	}
	return path
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
