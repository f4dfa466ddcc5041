package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vpcnet/vpcnet/internal/atomicfile"
	"github.com/vpcnet/vpcnet/internal/proc"
)

// Node is one node of the cluster: a containerd, a kubelet and kube-proxy
// (iptables mode) on a local VPC instance, in its network and mount
// namespaces. The instance's private directories (/run, /var/lib,
// /var/log, /etc/cni/net.d, /opt/cni/bin) make the defaults of all three
// the node's own, so nothing here moves them; what the kubelet would
// change for the whole machine is confined to the instance:
//   - the host-wide sysctls it sets (kernel.panic, kernel.panic_on_oops,
//     vm.overcommit_memory) are files bound over /proc/sys in the
//     instance's mount namespace;
//   - its cgroups live under a root of the node's own in every cgroup v1
//     hierarchy (two kubelets sharing one take each other's pods for
//     orphans), removed by Stop;
//   - its and kube-proxy's iptables chains and network sysctls are the
//     instance network namespace's; kube-proxy changes no conntrack
//     sysctl.
type Node struct {
	// Name is the node's name, as EKS names nodes (ip-10-0-0-10.ec2.internal).
	Name string
	// Instance is the EC2 instance ID, Zone its availability zone and
	// InstanceType its type; ProviderID is aws:///ZONE/ID.
	Instance, Zone, Region, InstanceType string
	// IP is the instance's primary address: the node's InternalIP.
	IP netip.Addr
	// MaxPods is the kubelet's max-pods, as EKS computes it for the type.
	MaxPods int
	// APIServer is the API server's URL as the node reaches it.
	APIServer string
	PKI       PKI
	// BinDir holds kubelet and kube-proxy (from scripts/install-kubernetes.sh).
	BinDir string
	// Images are OCI archives imported into containerd at start, the
	// sandbox image among them (SandboxImage names it).
	Images       []string
	SandboxImage string
	// Dir is the node's directory as the machine sees it: its logs and
	// pids. ConfDir is a directory the node writes its configuration into,
	// given as the instance sees it (InstanceDir) and as the machine does
	// (HostConfDir): the instance's private directories are not the
	// machine's.
	Dir                  string
	ConfDir, HostConfDir string
	// HostContainerdSocket is ContainerdSocket as the machine sees it:
	// ctr and crictl talk to the node's containerd from the machine.
	HostContainerdSocket string
	// Start starts cmd on the instance (its network and mount
	// namespaces); the caller waits for it. Not needed by Stop.
	Start func(cmd *exec.Cmd) error `json:"-"`
}

// nodeFile records a started node in its Dir, for Stop in a later process.
const nodeFile = "node.json"

// LoadNode reads the node recorded in dir (Stop works on it; StartNode
// needs Start set).
func LoadNode(dir string) (Node, error) {
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return Node{}, err
	}
	var n Node
	if err := json.Unmarshal(b, &n); err != nil {
		return Node{}, fmt.Errorf("decode %s: %w", filepath.Join(dir, nodeFile), err)
	}
	return n, nil
}

// ProviderID is the node's spec.providerID, as the AWS cloud provider sets it.
func (n Node) ProviderID() string { return fmt.Sprintf("aws:///%s/%s", n.Zone, n.Instance) }

// CgroupRoot is the node's cgroup root in every hierarchy.
func (n Node) CgroupRoot() string { return "/vpcnet-node-" + n.Instance }

// components of a node, in start order.
var nodeComponents = []string{"containerd", "kubelet", "kube-proxy"}

// sysctls the kubelet sets for the whole machine (it refuses to run if it
// cannot): the node sees these values in its own files instead.
var kubeletSysctls = [][2]string{
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"vm/overcommit_memory", "1"},
}

// ContainerdSocket is where the node's containerd listens, as the instance
// sees it.
const ContainerdSocket = "/run/containerd/containerd.sock"

func (n Node) pidsFile() string { return filepath.Join(n.Dir, "pids.json") }

// StartNode writes the node's configuration and certificates, starts
// containerd (importing the images), the kubelet and kube-proxy, each
// unless it runs already (a second call changes nothing), and returns
// once each is started; the node registers itself with the API server
// within seconds. A failure leaves what started running: StartNode again
// completes the node, Stop removes it.
func (n Node) StartNode(ctx context.Context) error {
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(n.BinDir, b)); err != nil {
			return fmt.Errorf("node %s: %s is not built (scripts/install-kubernetes.sh builds it): %w", n.Name, b, err)
		}
	}
	pids, _ := loadPIDs(n.pidsFile())
	if running(pids, nodeComponents) {
		return nil
	}
	if pids == nil {
		pids = map[string]pidRecord{}
	}
	// Only what is not running starts: a node whose kubelet or containerd
	// died (a crash, a reboot) keeps its running pods, as a real node does
	// when its kubelet restarts (containerd finds its shims again).
	alive := func(name string) bool {
		p, ok := pids[name]
		return ok && proc.Same(p.PID, p.Start)
	}
	if err := n.writeConfig(); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := atomicfile.Write(filepath.Join(n.Dir, nodeFile), mustJSON(n), 0o600, 0o700); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := n.confine(ctx); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	start := func(name string, argv ...string) error {
		if alive(name) {
			return nil
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
		if err := proc.StartDetachedWith(cmd, filepath.Join(n.Dir, name+".log"), n.Start); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		pids[name] = pidRecord{PID: cmd.Process.Pid, Start: proc.StartTime(cmd.Process.Pid)}
		_ = cmd.Process.Release()
		return savePIDs(n.pidsFile(), pids)
	}
	conf := func(f string) string { return filepath.Join(n.ConfDir, f) }
	if err := start("containerd", "containerd", "--config", conf("containerd.toml")); err != nil {
		return err
	}
	if err := n.waitContainerd(ctx, pids["containerd"]); err != nil {
		return fmt.Errorf("node %s: %w (log: %s)", n.Name, err, filepath.Join(n.Dir, "containerd.log"))
	}
	// Imported whenever the node starts (a start a crash cut short may
	// have left the content store without them); an image that is there
	// already costs a moment.
	for _, img := range n.Images {
		if err := n.host(ctx, "ctr", "--address", n.HostContainerdSocket, "--namespace", "k8s.io", "images", "import", img); err != nil {
			return fmt.Errorf("node %s: import %s: %w", n.Name, filepath.Base(img), err)
		}
	}
	labels := []string{
		"topology.kubernetes.io/zone=" + n.Zone, "topology.kubernetes.io/region=" + n.Region,
		"node.kubernetes.io/instance-type=" + n.InstanceType,
	}
	if err := start("kubelet", filepath.Join(n.BinDir, "kubelet"),
		"--config="+conf("kubelet.json"), "--kubeconfig="+conf("kubelet.kubeconfig"),
		"--hostname-override="+n.Name, "--node-ip="+n.IP.String(),
		"--node-labels="+strings.Join(labels, ","), "--v=1"); err != nil {
		return err
	}
	return start("kube-proxy", filepath.Join(n.BinDir, "kube-proxy"), "--config="+conf("kube-proxy.json"), "--v=1")
}

// run runs a command on the instance and waits for it.
func (n Node) run(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := n.Start(cmd); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// host runs a command on the machine and waits for it.
func (n Node) host(ctx context.Context, argv ...string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitContainerd waits until containerd answers on its socket.
func (n Node) waitContainerd(ctx context.Context, p pidRecord) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		if !proc.Same(p.PID, p.Start) {
			return errors.New("containerd exited")
		}
		if last = n.host(ctx, "ctr", "--address", n.HostContainerdSocket, "version"); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd does not answer: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// confine binds the kubelet's sysctl files over /proc/sys in the
// instance's mount namespace and makes the node's cgroup root.
func (n Node) confine(ctx context.Context) error {
	var script strings.Builder
	for _, kv := range kubeletSysctls {
		f := filepath.Join(n.ConfDir, "sysctl", strings.ReplaceAll(kv[0], "/", "."))
		fmt.Fprintf(&script, "mountpoint -q /proc/sys/%[1]s || mount --bind %[2]s /proc/sys/%[1]s || exit 1\n", kv[0], f)
	}
	if err := n.run(ctx, "sh", "-c", script.String()); err != nil {
		return fmt.Errorf("confine the kubelet's sysctls: %w", err)
	}
	return makeCgroupRoot(n.CgroupRoot())
}

// writeConfig writes containerd's, the kubelet's and kube-proxy's
// configuration, the sysctl files, and the kubelet's and kube-proxy's
// certificates and kubeconfigs.
func (n Node) writeConfig() error {
	host := func(f string) string { return filepath.Join(n.HostConfDir, f) }
	conf := func(f string) string { return filepath.Join(n.ConfDir, f) }
	for _, kv := range kubeletSysctls {
		if err := atomicfile.Write(host(filepath.Join("sysctl", strings.ReplaceAll(kv[0], "/", "."))), []byte(kv[1]+"\n"), 0o644, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return err
	}
	// Identities: the Node authorizer knows a kubelet by system:node:NAME
	// in system:nodes; kube-proxy is system:kube-proxy, which the default
	// system:node-proxier binding names.
	for _, id := range []struct {
		name string
		s    Subject
	}{
		{"kubelet", Subject{CN: "system:node:" + n.Name, Orgs: []string{"system:nodes"}}},
		{"kube-proxy", Subject{CN: "system:kube-proxy"}},
	} {
		pki := PKI{Dir: filepath.Join(n.Dir, "pki")}
		_, errCert := os.Stat(pki.Cert(id.name))
		if _, errCA := os.Stat(pki.CACert()); errCert != nil || errCA != nil {
			if err := n.PKI.IssueInto(pki, id.name, id.s); err != nil {
				return err
			}
		}
		if err := WriteKubeconfig(host(id.name+".kubeconfig"), n.APIServer, pki, id.name); err != nil {
			return err
		}
	}
	ca, err := os.ReadFile(n.PKI.CACert())
	if err != nil {
		return fmt.Errorf("read the cluster CA: %w", err)
	}
	if err := atomicfile.Write(host("ca.crt"), ca, 0o644, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{
		"containerd.toml": []byte(n.containerdConfig()),
		"kubelet.json":    mustJSON(n.kubeletConfig(conf("ca.crt"))),
		"kube-proxy.json": mustJSON(n.kubeProxyConfig(conf("kube-proxy.kubeconfig"))),
	}
	for _, f := range slices.Sorted(maps.Keys(files)) {
		if err := atomicfile.Write(host(f), files[f], 0o600, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig is containerd 1.6's: its own paths are the defaults
// (the instance's private /var/lib and /run); the CRI's CNI directories
// the instance's /opt/cni/bin and /etc/cni/net.d, where the vpcnetd
// DaemonSet installs vpc-pod and its conflist. Pod network namespaces are
// pinned under containerd's state (the instance's), not the machine's
// /run/netns. RUNTIMES.md: restrict_oom_score_adj (no CAP_SYS_RESOURCE
// here).
func (n Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`, n.SandboxImage)
}

// kubeletConfig is the KubeletConfiguration: RUNTIMES.md's lessons
// (cgroupfs under the node's own root, cgroup v1 allowed, images never
// collected since no registry can give them back), the kubelet's API
// for the API server's certificate only, and EKS's max pods.
func (n Node) kubeletConfig(caFile string) map[string]any {
	return map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
		"address": n.IP.String(), "port": 10250, "readOnlyPort": 0,
		"healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": caFile},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"containerRuntimeEndpoint":    "unix://" + ContainerdSocket,
		"cgroupDriver":                "cgroupfs",
		"cgroupRoot":                  n.CgroupRoot(),
		"failCgroupV1":                false,
		"failSwapOn":                  false,
		"maxPods":                     n.MaxPods,
		"providerID":                  n.ProviderID(),
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
		"resolvConf":                  "/etc/resolv.conf",
		"evictionHard":                map[string]string{"memory.available": "100Mi"},
		"rotateCertificates":          false,
		"serverTLSBootstrap":          false,
	}
}

// kubeProxyConfig is kube-proxy's, in iptables mode, changing no
// conntrack sysctl (RUNTIMES.md) and listening only on loopback.
func (n Node) kubeProxyConfig(kubeconfig string) map[string]any {
	return map[string]any{
		"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
		"mode":               "iptables",
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride":   n.Name,
		"bindAddress":        n.IP.String(),
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"conntrack": map[string]any{"maxPerCore": 0, "min": 0,
			"tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
	}
}

// Stop stops the node: the kubelet and kube-proxy first, then every pod
// (so that the CNI plugin releases its addresses: pods first, the
// host-network ones such as vpcnetd last), then containerd and what its
// shims left, and removes the node's cgroups. The instance's files stay
// (its namespaces go with the instance).
func (n Node) Stop() {
	pids, _ := loadPIDs(n.pidsFile())
	for _, name := range []string{"kube-proxy", "kubelet"} {
		if p, ok := pids[name]; ok && proc.Same(p.PID, p.Start) {
			proc.Stop(p.PID, 10*time.Second)
		}
	}
	if p, ok := pids["containerd"]; ok && proc.Same(p.PID, p.Start) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		n.removePods(ctx)
		cancel()
	}
	n.stopProcesses(pids)
	removeCgroupRoot(n.CgroupRoot())
	_ = os.Remove(n.pidsFile())
}

// stopProcesses stops the node's recorded processes, then the containerd
// shims (and the containers under them) that live in the node's cgroups.
func (n Node) stopProcesses(pids map[string]pidRecord) {
	for _, name := range slices.Backward(nodeComponents) {
		if p, ok := pids[name]; ok && proc.Same(p.PID, p.Start) {
			proc.Stop(p.PID, 10*time.Second)
		}
	}
	killCgroupRoot(n.CgroupRoot())
}

// removePods stops and removes every pod through the CRI, pods on the pod
// network first while the host-network ones (vpcnetd among them) still run.
func (n Node) removePods(ctx context.Context) {
	crictl := func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "crictl", append([]string{"--runtime-endpoint", "unix://" + n.HostContainerdSocket}, args...)...)
	}
	out, err := crictl("pods", "-o", "json").Output()
	if err != nil {
		return
	}
	var r struct{ Items []crictlPod }
	_ = json.Unmarshal(out, &r)
	pods := r.Items
	slices.SortStableFunc(pods, func(a, b crictlPod) int {
		return boolInt(a.hostNetwork()) - boolInt(b.hostNetwork())
	})
	for _, p := range pods {
		_ = crictl("stopp", p.ID).Run()
		_ = crictl("rmp", "-f", p.ID).Run()
	}
}

type crictlPod struct {
	ID       string            `json:"id"`
	Metadata map[string]any    `json:"metadata"`
	Labels   map[string]string `json:"labels"`
}

// hostNetwork: the pods of the vpcnetd DaemonSet, kube-system's
// host-network pods, go last.
func (p crictlPod) hostNetwork() bool {
	return p.Labels["k8s-app"] == "vpcnetd" || p.Labels["io.kubernetes.pod.namespace"] == "kube-system"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}
