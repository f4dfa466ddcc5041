// Package k8s tests vpcnet's Kubernetes side against a real control plane:
// etcd and kube-apiserver of the pinned release (scripts/install-kubernetes.sh)
// in a network namespace of the test's own.
package k8s

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"net/netip"

	"github.com/vpcnet/vpcnet/internal/localvpc/kube"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

const nsTag = "k8s"

func TestMain(m *testing.M) {
	testenv.CleanLeftovers(nsTag)
	localvpctest.CleanLeftovers("kc")
	localvpctest.CleanLeftovers("k8a")
	os.Exit(m.Run())
}

// binDir is where scripts/install-kubernetes.sh put the binaries.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VPCNET_K8S_BIN")
	if dir == "" {
		dir = "/var/cache/vpcnet/kubernetes-v1.36.1/bin"
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			testenv.Skip(t, "the Kubernetes binaries are not built ("+err.Error()+"): make test runs scripts/install-kubernetes.sh")
		}
	}
	return dir
}

// cluster is a kubectl that reaches an API server: from inside netns
// (empty: the machine's namespace) with kubeconfig.
type cluster struct {
	t                 *testing.T
	bin               string
	kubeconfig, netns string
}

func newCluster(t *testing.T, cp kube.ControlPlane, bin string) *cluster {
	return &cluster{t: t, bin: bin, kubeconfig: cp.Kubeconfig(), netns: cp.NetNS}
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	bin := binDir(t)
	n := testenv.NewNS(t, nsTag)
	cp := kube.ControlPlane{Dir: t.TempDir(), BinDir: bin, NetNS: n.Path(), Addr: netip.MustParseAddr("127.0.0.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(cp.Stop) // registered after NewNS's: runs before the namespace goes
	if err := cp.Start(ctx); err != nil {
		for _, l := range []string{"etcd.log", "kube-apiserver.log"} {
			b, _ := os.ReadFile(filepath.Join(cp.Dir, l))
			t.Logf("%s (tail):\n%s", l, tail(string(b), 30))
		}
		t.Fatal(err)
	}
	return newCluster(t, cp, bin)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kubectl runs kubectl in the cluster's namespace; it returns the output
// and the error (with stderr) rather than failing, so that a test can
// expect refusals.
func (c *cluster) kubectl(stdin string, args ...string) (string, error) {
	c.t.Helper()
	argv := append([]string{filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kubeconfig}, args...)
	if c.netns != "" {
		argv = append([]string{"nsenter", "--net=" + c.netns, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &kubectlError{args: args, err: err, stderr: stderr.String()}
	}
	return string(out), nil
}

func (c *cluster) mustKubectl(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

type kubectlError struct {
	args   []string
	err    error
	stderr string
}

func (e *kubectlError) Error() string {
	return "kubectl " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}

func deployDir(t *testing.T, sub string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", sub)
}

// TestManifestsApply applies deploy/ to a real API server: every object is accepted and reads back as written; the
// ENIConfig schema refuses what vpcnetd could not use; the service account
// may do what vpcnetd needs and nothing more; the conflist in the
// ConfigMap is one vpcnetd accepts.
func TestManifestsApply(t *testing.T) {
	c := startCluster(t)
	// As a server-side dry run first: it changes nothing.
	if out := c.mustKubectl("", "apply", "-k", deployDir(t, ""), "--dry-run=server"); !strings.Contains(out, "daemonset.apps/vpcnetd created (server dry run)") {
		t.Errorf("kubectl apply -k deploy --dry-run=server:\n%s", out)
	}
	out := c.mustKubectl("", "apply", "-k", deployDir(t, ""))
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/eniconfigs.vpcnet.io created",
		"serviceaccount/vpcnetd created",
		"clusterrole.rbac.authorization.k8s.io/vpcnetd created",
		"clusterrolebinding.rbac.authorization.k8s.io/vpcnetd created",
		"configmap/vpcnetd-config created",
		"configmap/vpcnetd-cni created",
		"daemonset.apps/vpcnetd created",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply -k deploy/: no %q in\n%s", want, out)
		}
	}
	// Applying again changes nothing.
	if again := c.mustKubectl("", "apply", "-k", deployDir(t, "")); strings.Contains(again, "configured") || strings.Contains(again, "created") {
		t.Errorf("a second apply changed objects:\n%s", again)
	}

	// The DaemonSet as the API server stored it.
	var ds struct {
		Metadata struct{ Namespace string }
		Spec     struct {
			Template struct {
				Spec struct {
					HostNetwork        bool
					PriorityClassName  string
					ServiceAccountName string
					Tolerations        []struct{ Operator string }
					InitContainers     []struct {
						Name    string
						Command []string
					}
					Containers []struct {
						Name           string
						Image          string
						Command        []string
						Ports          []struct{ Name string }
						ReadinessProbe struct{ Exec struct{ Command []string } }
						LivenessProbe  struct{ Exec struct{ Command []string } }
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(c.mustKubectl("", "-n", "kube-system", "get", "daemonset", "vpcnetd", "-o", "json")), &ds); err != nil {
		t.Fatal(err)
	}
	ps := ds.Spec.Template.Spec
	switch {
	case ds.Metadata.Namespace != "kube-system", !ps.HostNetwork, ps.PriorityClassName != "system-node-critical",
		ps.ServiceAccountName != "vpcnetd", len(ps.Tolerations) != 1 || ps.Tolerations[0].Operator != "Exists":
		t.Errorf("DaemonSet pod spec %+v: want kube-system, host network, system-node-critical, vpcnetd's account, every taint tolerated", ps)
	case len(ps.InitContainers) != 1 || !strings.Contains(strings.Join(ps.InitContainers[0].Command, " "), "vpcnetd install-cni --to /host/opt/cni/bin"):
		t.Errorf("init containers %+v: want vpcnetd install-cni", ps.InitContainers)
	case len(ps.Containers) != 1:
		t.Errorf("containers %+v", ps.Containers)
	default:
		v := ps.Containers[0]
		cmd := strings.Join(v.Command, " ")
		if v.Image != "localhost/vpcnet:latest" || !strings.Contains(cmd, "--cni-conf=/host/etc/cni/net.d/10-vpcnet.conflist") ||
			!strings.HasSuffix(strings.Join(v.ReadinessProbe.Exec.Command, " "), "vpcnetd probe") ||
			!strings.HasSuffix(strings.Join(v.LivenessProbe.Exec.Command, " "), "vpcnetd probe") ||
			len(v.Ports) != 1 || v.Ports[0].Name != "metrics" {
			t.Errorf("vpcnetd container %+v: want the image, --cni-conf, probes through vpcnetd probe, the metrics port", v)
		}
	}

	// The pool targets, and no endpoint (on AWS the SDK's regional one;
	// on a local VPC's cluster, vpcnetd-endpoints); the conflist is one
	// vpcnetd's --cni-conf-template takes (libcni parses it, vpc-pod first).
	var cm struct{ Data map[string]string }
	if err := json.Unmarshal([]byte(c.mustKubectl("", "-n", "kube-system", "get", "configmap", "vpcnetd-config", "-o", "json")), &cm); err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.Data["AWS_ENDPOINT_URL_EC2"]; ok || cm.Data["WARM_ENI_TARGET"] != "1" || cm.Data["IP_COOLDOWN_PERIOD"] != "30" {
		t.Errorf("vpcnetd-config %v", cm.Data)
	}
	if err := json.Unmarshal([]byte(c.mustKubectl("", "-n", "kube-system", "get", "configmap", "vpcnetd-cni", "-o", "json")), &cm); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes([]byte(cm.Data["10-vpcnet.conflist"]))
	if err != nil || len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "vpc-pod" || list.Plugins[1].Network.Type != "portmap" {
		t.Errorf("conflist in vpcnetd-cni: %v %+v", err, list)
	}

	// ENIConfig: the CRD serves, its schema refuses what vpcnetd cannot
	// use, naming the field.
	c.mustKubectl("", "wait", "--for=condition=Established", "--timeout=60s", "crd/eniconfigs.vpcnet.io")
	c.mustKubectl(`{"apiVersion":"vpcnet.io/v1alpha1","kind":"ENIConfig","metadata":{"name":"us-east-1a"},
		"spec":{"subnet":"subnet-0a1b2c","securityGroups":["sg-0c2d"]}}`, "apply", "-f", "-")
	if got := c.mustKubectl("", "get", "eniconfig", "us-east-1a", "-o", "jsonpath={.spec.subnet}"); got != "subnet-0a1b2c" {
		t.Errorf("ENIConfig us-east-1a subnet %q", got)
	}
	for _, bad := range []struct{ spec, field string }{
		{`{"securityGroups":["sg-1"]}`, "spec.subnet"},
		{`{"subnet":"vpc-123"}`, "spec.subnet"},
		{`{"subnet":"subnet-1","securityGroups":["default"]}`, "spec.securityGroups[0]"},
		{`{"subnet":"subnet-1","securityGroups":["sg-1","sg-2","sg-3","sg-4","sg-5","sg-6"]}`, "spec.securityGroups"},
	} {
		_, err := c.kubectl(`{"apiVersion":"vpcnet.io/v1alpha1","kind":"ENIConfig","metadata":{"name":"bad"},"spec":`+bad.spec+`}`, "apply", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("ENIConfig spec %s: %v, want a refusal naming %s", bad.spec, err, bad.field)
		}
	}

	// RBAC: what vpcnetd needs, and not more.
	sa := "--as=system:serviceaccount:kube-system:vpcnetd"
	for _, tc := range []struct {
		verb, resource string
		allowed        bool
	}{
		{"get", "nodes", true}, {"watch", "nodes", true}, {"patch", "pods", true}, {"list", "eniconfigs.vpcnet.io", true},
		{"create", "events", true},
		{"update", "nodes", false}, {"delete", "pods", false}, {"get", "secrets", false}, {"create", "eniconfigs.vpcnet.io", false},
		{"patch", "daemonsets.apps", false},
	} {
		out, err := c.kubectl("", "auth", "can-i", sa, tc.verb, tc.resource)
		if answer := strings.TrimSpace(out); answer != "yes" && answer != "no" {
			t.Fatalf("kubectl auth can-i %s %s: %q, %v", tc.verb, tc.resource, answer, err)
		}
		if got := strings.TrimSpace(out) == "yes"; got != tc.allowed {
			t.Errorf("vpcnetd may %s %s: %q, want allowed=%v", tc.verb, tc.resource, strings.TrimSpace(out), tc.allowed)
		}
	}

	// Deleting deploy/ removes what it made.
	c.mustKubectl("", "delete", "-k", deployDir(t, ""), "--wait=true", "--timeout=60s")
	if out, _ := c.kubectl("", "-n", "kube-system", "get", "daemonset,configmap,serviceaccount", "-o", "name"); strings.Contains(out, "vpcnetd") {
		t.Errorf("after delete -k: %s", out)
	}
}
