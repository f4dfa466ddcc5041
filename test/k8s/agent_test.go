package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc/kube"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// TestAgentOnKubernetes runs vpcnetd on a local VPC instance against a real
// API server (in the instance's network namespace, at its loopback): under
// custom networking it takes the subnet and groups of the ENIConfig named
// by its Node's zone label; before that resource exists, ADDs fail and a
// Warning event on the Node says why; with ANNOTATE_POD_IP each pod gets
// aws-node's vpc.amazonaws.com/pod-ips annotation.
func TestAgentOnKubernetes(t *testing.T) {
	bin := binDir(t)
	v := localvpctest.Up(t, "k8a", "--instances", "1", "--instance-type", "m5.large",
		"--subnets", "10.0.0.0/20@us-east-1a,10.0.16.0/20@us-east-1a")
	inst := v.Instances[0]
	var podSubnet, podCIDR string
	for _, s := range v.Subnets {
		if s.ID != inst.SubnetID {
			podSubnet, podCIDR = s.ID, s.CIDR
		}
	}
	sg, err := v.EC2().CreateSecurityGroup(context.Background(), &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("pods"), Description: aws.String("pods of the Kubernetes test"), VpcId: aws.String(v.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	cp := kube.ControlPlane{Dir: t.TempDir(), BinDir: bin, NetNS: netops.NamedNSPath(inst.Namespace), Addr: netip.MustParseAddr("127.0.0.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(cp.Stop)
	if err := cp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, cp, bin)
	c.mustKubectl("", "apply", "-f", filepath.Join(deployDir(t, "vpcnetd"), "eniconfig-crd.yaml"))
	c.mustKubectl("", "wait", "--for=condition=Established", "--timeout=60s", "crd/eniconfigs.vpcnet.io")
	node := "ip-" + strings.ReplaceAll(inst.PrivateIP, ".", "-") + ".ec2.internal"
	// The zone label names the ENIConfig: "pods-a", not the zone itself,
	// so that the agent demonstrably follows the label.
	c.mustKubectl(fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{"topology.kubernetes.io/zone":"pods-a"}},
		"spec":{"providerID":"aws:///%s/%s"}}`, node, inst.Zone, inst.ID), "apply", "-f", "-")
	// No controller manager runs here to make the namespace's default
	// service account, which admission wants for a pod.
	c.mustKubectl("", "create", "serviceaccount", "default", "-n", "default")
	c.mustKubectl(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default"},
		"spec":{"containers":[{"name":"c","image":"busybox"}]}}`, "apply", "-f", "-")

	dir := t.TempDir()
	sock := filepath.Join(dir, "vpcnetd.sock")
	cmd := exec.Command(testenv.Binary(t, "vpcnetd"), "--socket", sock, "--state", filepath.Join(dir, "state.db"),
		"--metrics-addr", "", "--introspection-addr", "")
	cmd.Env = append(v.InstanceEnv(os.Environ(), inst.ID),
		"KUBECONFIG="+cp.Kubeconfig(), "NODE_NAME="+node, "ANNOTATE_POD_IP=true",
		"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true", "VPCNET_RECONCILE_INTERVAL=1s", "VPCNET_ADD_WAIT=2s",
		"VPCNET_LOG_FILE="+filepath.Join(dir, "vpcnetd.log"))
	logf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := v.StartOnInstance(inst.ID, cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			l, _ := os.ReadFile(filepath.Join(dir, "vpcnetd.log"))
			t.Logf("vpcnetd stderr:\n%s\nlog (tail):\n%s", b, tail(string(l), 30))
		}
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return nodeapi.Probe(pctx, sock)
	})
	conn, err := nodeapi.Dial(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := nodeapi.NewCNIBackendClient(conn)
	add := func(name string) (*nodeapi.AddNetworkReply, error) {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return api.AddNetwork(actx, &nodeapi.AddNetworkRequest{
			Attachment:   &nodeapi.Attachment{Network: "k8s-pod-network", ContainerId: "c-" + name, IfName: "eth0"},
			PodNamespace: "default", PodName: name, PodUid: "uid-" + name})
	}

	// No ENIConfig "pods-a" yet: under custom networking the pool cannot
	// grow; the ADD fails naming that, and the Node gets a Warning event.
	if _, err := add("web-0"); err == nil || !strings.Contains(err.Error(), "ENI config") {
		t.Fatalf("ADD with no ENIConfig: %v, want a failure naming the missing ENI config", err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		out, err := c.kubectl("", "get", "events", "-n", "default", "--field-selector", "involvedObject.name="+node,
			"-o", "jsonpath={range .items[*]}{.type} {.reason} {.source.component}: {.message}{\"\\n\"}{end}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Warning NoPodAddress vpcnetd: ") {
			return fmt.Errorf("events of %s: %q", node, out)
		}
		return nil
	})

	// The ENIConfig appears: the agent reads it at its next resync and
	// pods' ENIs go into its subnet and group.
	c.mustKubectl(fmt.Sprintf(`{"apiVersion":"vpcnet.io/v1alpha1","kind":"ENIConfig","metadata":{"name":"pods-a"},
		"spec":{"subnet":%q,"securityGroups":[%q]}}`, podSubnet, aws.ToString(sg.GroupId)), "apply", "-f", "-")
	var r *nodeapi.AddNetworkReply
	testenv.Eventually(t, 60*time.Second, func() error {
		r, err = add("web-1")
		return err
	})
	if !netip.MustParsePrefix(podCIDR).Contains(netip.MustParseAddr(r.GetIpv4Address())) {
		t.Errorf("web-1 got %s, outside the ENIConfig's subnet %s (%s)", r.GetIpv4Address(), podSubnet, podCIDR)
	}
	out, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
		NetworkInterfaceIds: []string{r.GetEniId()}})
	if err != nil {
		t.Fatal(err)
	}
	if e := out.NetworkInterfaces[0]; aws.ToString(e.SubnetId) != podSubnet || len(e.Groups) != 1 || aws.ToString(e.Groups[0].GroupId) != aws.ToString(sg.GroupId) {
		t.Errorf("web-1's ENI %s: subnet %s, groups %v; want the ENIConfig's %s and %s",
			r.GetEniId(), aws.ToString(e.SubnetId), e.Groups, podSubnet, aws.ToString(sg.GroupId))
	}

	// ANNOTATE_POD_IP: the pod carries its address where aws-node puts it.
	testenv.Eventually(t, 30*time.Second, func() error {
		got, err := c.kubectl("", "get", "pod", "web-1", "-n", "default", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-ips}`)
		if err != nil {
			return err
		}
		if got != r.GetIpv4Address() {
			return fmt.Errorf("pod web-1's %s annotation %q, want %s", "vpc.amazonaws.com/pod-ips", got, r.GetIpv4Address())
		}
		return nil
	})
}
