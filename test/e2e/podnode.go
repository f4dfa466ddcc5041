package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// PodNode is a local VPC instance run as a pod node: vpcnetd and a
// containerd whose one conflist is vpc-pod, both in the instance's network
// namespace. The agent's socket and store live in the node's run directory
// (named in the conflist), so several nodes share this machine's files
// without sharing an agent.
type PodNode struct {
	N       int // 1-based instance number
	VPC     *localvpctest.VPC
	ID      string
	NSPath  string
	Run     *RunDir
	Socket  string
	Agent   *Process
	CRI     *Containerd
	network string
}

// StartPodNode starts vpcnetd (with extra environment: pool targets) on
// instance n and waits for its health to say SERVING, then containerd.
// Cleanup removes the pods first (so vpc-pod's DEL reaches the agent),
// then stops the agent gracefully.
func StartPodNode(t testing.TB, v *localvpctest.VPC, n int, env ...string) *PodNode {
	t.Helper()
	run := NewRunDir(t)
	diagnoseOnFailure(t, run)
	in := v.Instances[n-1]
	p := &PodNode{N: n, VPC: v, ID: in.ID, NSPath: netops.NamedNSPath(in.Namespace), Run: run,
		Socket: run.File("vpcnetd", "vpcnetd.sock"), network: run.Network("pods")}
	if err := os.MkdirAll(filepath.Dir(p.Socket), 0o700); err != nil {
		t.Fatal(err)
	}
	// The environment of a process on the instance: the operator's AWS
	// settings (a demo's `vpcnet local env`) left out.
	agentEnv := append(v.InstanceEnv(os.Environ(), in.ID), "VPCNET_LOG_FILE="+run.File("vpcnetd.log"), "VPCNET_LOG_LEVEL=debug")
	agent, err := Command{NSPath: p.NSPath, Name: testenv.Binary(t, "vpcnetd"), KillWithTest: true, OwnEnv: true,
		Args: []string{"--socket", p.Socket, "--state", run.File("vpcnetd", "state.db"), "--metrics-addr", "127.0.0.1:61678"},
		Env:  append(agentEnv, env...)}.Start(run.File("vpcnetd.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	p.Agent = agent
	t.Cleanup(func() {
		if err := agent.Stop(30 * time.Second); err != nil {
			t.Errorf("stop vpcnetd on %s: %v", in.ID, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(run.File("vpcnetd.log"))
			t.Logf("vpcnetd log of %s:\n%s", in.ID, tail(string(b), 40))
		}
	})
	p.waitHealthy(t)

	dir := run.File("cni-bin")
	linkPlugins(t, dir, map[string]string{
		"vpc-pod":  testenv.Binary(t, "vpc-pod"),
		"loopback": filepath.Join(ReferencePluginDir, "loopback"),
	})
	confDir := WriteConflist(t, run.File("net.d"), p.network,
		map[string]any{"type": "vpc-pod", "socket": p.Socket})
	p.CRI = StartContainerd(t, run, ContainerdConfig{NSPath: p.NSPath, PluginDir: dir, ConfDir: confDir, Env: pluginLogEnv(run)})
	return p
}

func (p *PodNode) waitHealthy(t testing.TB) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := healthpb.NewHealthClient(conn)
	testenv.Eventually(t, time.Minute, func() error {
		select {
		case <-p.Agent.Done():
			b, _ := os.ReadFile(p.Run.File("vpcnetd.stderr"))
			t.Fatalf("vpcnetd on %s exited: %v\n%s", p.ID, p.Agent.Err(), b)
		default:
		}
		r, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: nodeapi.HealthService})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("vpcnetd health %s", r.GetStatus())
		}
		return nil
	})
}

// Status is the agent's report, read as `vpcnet node status -o json` does.
func (p *PodNode) Status(t testing.TB) node.Report {
	t.Helper()
	out := Command{Name: p.VPC.Bin, Args: []string{"node", "status", "--name", p.VPC.Name, "--instance", p.ID, "-o", "json"}}.MustRun(t)
	var r node.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode vpcnet node status: %v\n%s", err, out)
	}
	return r
}

// Pod is a pod sandbox and its one busybox container.
type Pod struct {
	Name, ID, Container string
	IP                  netip.Addr
}

// RunPod starts a pod (CNI ADD through the CRI) and a busybox container in
// it running cmd.
func (p *PodNode) RunPod(t testing.TB, name string, cmd ...string) Pod {
	t.Helper()
	conf := p.CRI.PodConfig(t, name)
	id, r := p.CRI.RunPod(t, conf)
	if r.Err != nil {
		t.Fatalf("crictl runp %s on %s: %v\n%s", name, p.ID, r.Err, r.Output())
	}
	st := p.CRI.InspectPod(t, id)
	ip, err := netip.ParseAddr(st.IP)
	if err != nil {
		t.Fatalf("pod %s on %s: CRI reports IP %q", name, p.ID, st.IP)
	}
	pod := Pod{Name: name, ID: id, IP: ip}
	if len(cmd) > 0 {
		pod.Container = p.CRI.StartContainer(t, id, conf, name, nil, cmd...)
	}
	return pod
}

// HTTPServer is a busybox container command serving body on port 8080.
func HTTPServer(body string) []string {
	return []string{"sh", "-c", "mkdir -p /www && echo " + body + " > /www/index.html && exec httpd -f -p 8080 -h /www"}
}

// HeldBy maps each address EC2 holds on the instance's ENIs (secondary
// addresses and prefixes) to the ENI and its device index.
func HeldBy(t testing.TB, v *localvpctest.VPC, instanceID string) map[netip.Addr]string {
	t.Helper()
	out, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[netip.Addr]string{}
	for _, n := range out.NetworkInterfaces {
		where := fmt.Sprintf("%s (device %d)", aws.ToString(n.NetworkInterfaceId), aws.ToInt32(n.Attachment.DeviceIndex))
		for _, a := range n.PrivateIpAddresses {
			if !aws.ToBool(a.Primary) {
				m[netip.MustParseAddr(aws.ToString(a.PrivateIpAddress))] = where
			}
		}
		for _, pf := range n.Ipv4Prefixes {
			pfx := netip.MustParsePrefix(aws.ToString(pf.Ipv4Prefix))
			for a := pfx.Addr(); pfx.Contains(a); a = a.Next() {
				m[a] = where
			}
		}
	}
	return m
}
