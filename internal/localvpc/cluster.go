package localvpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc/fabric"
	"github.com/vpcnet/vpcnet/internal/localvpc/images"
	"github.com/vpcnet/vpcnet/internal/localvpc/kube"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// The cluster of a local VPC (`vpcnet local up --kubernetes`), as EKS
// builds one: the control plane (etcd, kube-apiserver, the controller
// manager and the scheduler) runs in the fabric namespace, the API server
// on the address of an endpoint ENI in the first subnet (EKS's control
// plane ENIs); every instance is a node (containerd, kubelet, kube-proxy
// in its namespaces), named and labelled as EKS names nodes, with EKS's max
// pods for its type. No CNI plugin is installed: `kubectl apply -k
// deploy/` makes the nodes Ready, as installing aws-node does.

// ClusterDir is the cluster's directory in a local VPC's state directory:
// control-plane/ (PKI, etcd's data, logs), images/, nodes/ID/ (each node's
// logs, certificates, pids) and kubeconfig (the operator's, for kubectl on
// the machine).
const ClusterDir = "kubernetes"

// EndpointsConfigMap is the ConfigMap in kube-system that tells vpcnetd
// where the local VPC's EC2 API is (deploy/'s DaemonSet takes it when it
// exists; on AWS it does not).
const EndpointsConfigMap = "vpcnetd-endpoints"

// ClusterOptions says where the binaries are.
type ClusterOptions struct {
	// KubernetesBin holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl.
	KubernetesBin string
	// VpcnetBin holds vpcnet's own static binaries (vpcnetd, vpc-pod,
	// vpcnet-pause), which go into the node images.
	VpcnetBin string
	// Progress gets a line per step.
	Progress io.Writer
}

// ClusterBinaries are what ClusterOptions.KubernetesBin must hold.
var ClusterBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// MissingClusterBinaries lists those of ClusterBinaries that dir lacks.
func MissingClusterBinaries(dir string) []string {
	var out []string
	for _, b := range ClusterBinaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			out = append(out, b)
		}
	}
	return out
}

// EC2Client is an EC2 client with the operator's credentials, for the
// API in the root namespace.
func (c *Control) EC2Client() *ec2.Client {
	return cloud.New(c.awsConfig()).EC2
}

func (c *Control) awsConfig() aws.Config {
	return aws.Config{
		Region:       c.Region,
		BaseEndpoint: aws.String(c.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
	}
}

// StartCluster brings the cluster of a local VPC made with Kubernetes up:
// what runs already is kept, what is missing (a fresh VPC, processes gone
// after a reboot, an instance without its node) is started. It returns
// once every instance's node has registered (not Ready: that takes a CNI
// plugin).
func StartCluster(ctx context.Context, c *Control, o ClusterOptions) error {
	cfg, err := readConfig(c.StateDir)
	if err != nil {
		return err
	}
	if !cfg.Kubernetes {
		return fmt.Errorf("local VPC %s was made without --kubernetes; `vpcnet local down%s` and `up --kubernetes` make one with a cluster", c.Name, NameFlag(c.Name))
	}
	if miss := MissingClusterBinaries(o.KubernetesBin); len(miss) > 0 {
		return fmt.Errorf("the Kubernetes binaries %s are not in %s: `make kubernetes` builds them (once per machine, 4-6 minutes)", strings.Join(miss, ", "), o.KubernetesBin)
	}
	say := func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
	dir := filepath.Join(c.StateDir, ClusterDir)
	cl := cloud.New(c.awsConfig())
	ec := cl.EC2

	apiAddr, eni, err := ensureAPIEndpoint(ctx, ec, c)
	if err != nil {
		return err
	}
	if err := waitFabricAddr(ctx, c.Name, apiAddr); err != nil {
		return err
	}
	// Nodes answer the API server (logs, exec, port-forward) on the
	// kubelet's port: the rule EKS's cluster security group has. The
	// fabric does not filter what its own services send (they connect
	// from the fabric's gateway address), so here the rule documents the
	// permission in EC2 rather than enforcing it.
	if err := allowFrom(ctx, ec, c.DefaultGroup, apiAddr, 10250); err != nil {
		return err
	}
	say("control plane: etcd, kube-apiserver on %s:%d (ENI %s), kube-controller-manager, kube-scheduler", apiAddr, KubeAPIPort, eni)
	cp := kube.ControlPlane{Dir: filepath.Join(dir, "control-plane"), BinDir: o.KubernetesBin,
		NetNS: netops.NamedNSPath(fabric.FabricNamespace(c.Name)), Addr: apiAddr, Port: KubeAPIPort, Controllers: true}
	if err := cp.Start(ctx); err != nil {
		return err
	}
	if c.KubernetesAPI == "" {
		return fmt.Errorf("the control plane of %s forwards no Kubernetes API (restart it: `vpcnet local restart%s`)", c.Name, NameFlag(c.Name))
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := kube.WriteKubeconfig(kubeconfig, c.KubernetesAPI, cp.PKI(), "admin"); err != nil {
		return err
	}
	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(o.KubernetesBin, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return string(out), nil
	}
	cm, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": EndpointsConfigMap, "namespace": "kube-system",
			"labels": map[string]string{"app.kubernetes.io/part-of": "vpcnet", "app.kubernetes.io/managed-by": "vpcnet-local"}},
		"data": map[string]string{"AWS_ENDPOINT_URL_EC2": c.VPCEndpoint}})
	if _, err := kubectl(string(cm), "apply", "-f", "-"); err != nil {
		return fmt.Errorf("write kube-system/%s: %w", EndpointsConfigMap, err)
	}

	say("images: %s, %s, %s", images.Pause, images.Busybox, images.Vpcnet)
	archives, err := images.WriteNodeImages(filepath.Join(dir, "images"), o.VpcnetBin)
	if err != nil {
		return err
	}
	for _, in := range c.Instances {
		n, err := clusterNode(ctx, c, cl, in, cp, o, archives)
		if err != nil {
			return err
		}
		say("node %s: instance %s (%s, %s), max pods %d", n.Name, in.ID, in.Type, in.Zone, n.MaxPods)
		if err := n.StartNode(ctx); err != nil {
			return err
		}
	}
	// Registered: the node object exists (Ready waits for a CNI plugin).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := kubectl("", "get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}")
		if err == nil && len(strings.Fields(out)) >= len(c.Instances) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes registered within 2m (%v); the kubelets' logs are in %s", len(strings.Fields(out)), len(c.Instances), err, filepath.Join(dir, "nodes"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	say("cluster up: %d nodes registered; kubeconfig %s", len(c.Instances), kubeconfig)
	return nil
}

// clusterNode describes the node of an instance.
func clusterNode(ctx context.Context, c *Control, cl *cloud.Client, in InstanceInfo, cp kube.ControlPlane, o ClusterOptions, archives []string) (kube.Node, error) {
	il, err := cl.InstanceLimits(ctx, in.Type)
	if err != nil {
		return kube.Node{}, fmt.Errorf("instance type %s: %w", in.Type, err)
	}
	t := pool.InstanceType{Name: il.Type, ENIs: il.ENIs, IPv4PerENI: il.IPv4PerENI, PrefixDelegation: il.PrefixDelegation}
	limits, err := pool.NewLimits(t, pool.Config{})
	if err != nil {
		return kube.Node{}, err
	}
	ip, err := netip.ParseAddr(in.PrivateIP)
	if err != nil {
		return kube.Node{}, fmt.Errorf("instance %s has no primary address: %w", in.ID, err)
	}
	confHost, err := InstanceHostPath(c.StateDir, in.ID, nodeConfDir)
	if err != nil {
		return kube.Node{}, err
	}
	sock, err := InstanceHostPath(c.StateDir, in.ID, kube.ContainerdSocket)
	if err != nil {
		return kube.Node{}, err
	}
	id := in.ID
	return kube.Node{
		Name: vpc.PrivateDNSName(ip, c.Region), Instance: in.ID, Zone: in.Zone, Region: c.Region, InstanceType: in.Type,
		IP: ip, MaxPods: maxPods(t, limits),
		APIServer: cp.URL(), PKI: cp.PKI(), BinDir: o.KubernetesBin,
		Images: archives, SandboxImage: images.Pause,
		Dir:     filepath.Join(c.StateDir, ClusterDir, "nodes", in.ID),
		ConfDir: nodeConfDir, HostConfDir: confHost, HostContainerdSocket: sock,
		Start: func(cmd *exec.Cmd) error { return c.StartOnInstance(id, cmd) },
	}, nil
}

// maxPods is the kubelet's max-pods: EKS's for the type, less one. EKS's
// figure leaves room for two host-network pods, aws-node and kube-proxy;
// here kube-proxy runs on the node beside the kubelet, not as a pod, so
// only vpcnetd's pod needs no address, and EKS's figure would let one
// pod more start than the node's ENIs have addresses for.
func maxPods(t pool.InstanceType, l pool.Limits) int {
	return pool.RecommendedMaxPods(t, l) - 1
}

// nodeConfDir is where a node keeps its configuration, as its instance
// sees it (a private directory of the instance).
const nodeConfDir = "/var/lib/vpcnet-node"

// ensureAPIEndpoint finds or creates the API server's endpoint ENI in the
// first subnet and returns its address.
func ensureAPIEndpoint(ctx context.Context, ec *ec2.Client, c *Control) (netip.Addr, string, error) {
	out, err := ec.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + EndpointTag), Values: []string{KubeAPIService}},
		{Name: aws.String("vpc-id"), Values: []string{c.VPCID}},
	}})
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("look for the API server's ENI: %w", err)
	}
	var eni *ec2types.NetworkInterface
	if len(out.NetworkInterfaces) > 0 {
		eni = &out.NetworkInterfaces[0]
	} else {
		if len(c.Subnets) == 0 {
			return netip.Addr{}, "", errors.New("the local VPC has no subnet for the API server")
		}
		created, err := ec.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
			SubnetId:    aws.String(c.Subnets[0].ID),
			Description: aws.String("vpcnet local cluster " + c.Name + ": kube-apiserver"),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface,
				Tags: []ec2types.Tag{{Key: aws.String(EndpointTag), Value: aws.String(KubeAPIService)}}}},
		})
		if err != nil {
			return netip.Addr{}, "", fmt.Errorf("create the API server's ENI: %w", err)
		}
		eni = created.NetworkInterface
	}
	a, err := netip.ParseAddr(aws.ToString(eni.PrivateIpAddress))
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("the API server's ENI %s has no address: %w", aws.ToString(eni.NetworkInterfaceId), err)
	}
	return a, aws.ToString(eni.NetworkInterfaceId), nil
}

// waitFabricAddr waits until the fabric has taken addr (the datapath
// follows the model within moments).
func waitFabricAddr(ctx context.Context, name string, addr netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ln, err := fabric.Listen(name, "tcp", net.JoinHostPort(addr.String(), "0"))
		if err == nil {
			ln.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the fabric did not take the API server's address %s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allowFrom lets addr reach TCP port on the members of group (once).
func allowFrom(ctx context.Context, ec *ec2.Client, group string, addr netip.Addr, port int32) error {
	_, err := ec.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(group),
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String(netip.PrefixFrom(addr, 32).String()), Description: aws.String("kube-apiserver to kubelet")}}}},
	})
	if err != nil && !strings.Contains(err.Error(), "InvalidPermission.Duplicate") {
		return fmt.Errorf("allow the API server to reach the kubelets (port %s): %w", strconv.Itoa(int(port)), err)
	}
	return nil
}

// StopCluster stops the cluster of a local VPC: every node (its pods
// first), then the control plane. The state stays (Down removes it).
func StopCluster(name string) error {
	dir := filepath.Join(StateDir(name), ClusterDir)
	entries, err := os.ReadDir(filepath.Join(dir, "nodes"))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, e := range entries {
		n, err := kube.LoadNode(filepath.Join(dir, "nodes", e.Name()))
		if err != nil {
			continue
		}
		n.Stop()
	}
	kube.ControlPlane{Dir: filepath.Join(dir, "control-plane"), Controllers: true}.Stop()
	return nil
}
