// Command pods is the pod half of `make demo` (scripts/demo.sh runs it on
// the demo's local VPC): vpcnetd and containerd with vpc-pod on both
// instances, pods with VPC addresses, cross-instance HTTP, a pod in a locked
// custom networking group refused, `vpcnet node status`, the ENIs as EC2
// describes them, then teardown. It drives the same harness as the
// end-to-end tests (test/e2e), so what the demo shows is what they prove.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/test/e2e"
)

// demoT lets the test harness run outside `go test`: failures print FAIL
// and count, Fatal ends the demo's goroutine, cleanups run at the end in
// reverse order, as in a test.
type demoT struct {
	testing.TB
	cleanups []func()
	failures int
}

func (d *demoT) Helper()          {}
func (d *demoT) Name() string     { return "demo" }
func (d *demoT) Failed() bool     { return d.failures > 0 }
func (d *demoT) Cleanup(f func()) { d.cleanups = append(d.cleanups, f) }
func (d *demoT) Logf(f string, args ...any) {
	fmt.Printf("         %s\n", indent(fmt.Sprintf(f, args...)))
}
func (d *demoT) Errorf(f string, args ...any) {
	d.failures++
	fmt.Printf("   FAIL  %s\n", indent(fmt.Sprintf(f, args...)))
}
func (d *demoT) Error(args ...any)            { d.Errorf("%s", fmt.Sprint(args...)) }
func (d *demoT) Fatalf(f string, args ...any) { d.Errorf(f, args...); runtime.Goexit() }
func (d *demoT) Fatal(args ...any)            { d.Errorf("%s", fmt.Sprint(args...)); runtime.Goexit() }
func (d *demoT) Skip(args ...any)             { d.Fatal(args...) }
func (d *demoT) TempDir() string {
	dir, err := os.MkdirTemp("", "vpcnet-demo-")
	if err != nil {
		d.Fatal(err)
	}
	d.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func indent(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n         ")
}

func section(s string)          { fmt.Printf("\n== %s\n", s) }
func say(f string, args ...any) { fmt.Printf("   %s\n", fmt.Sprintf(f, args...)) }

func main() {
	name := flag.String("name", localvpc.DefaultName, "the demo's local VPC")
	configs := flag.String("eni-configs", "", "VPCNET_ENI_CONFIGS for custom networking (zone -> subnet and groups)")
	locked := flag.String("locked", "", "the security group that takes no inbound traffic")
	flag.Parse()
	d := &demoT{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		demo(d, *name, *configs, *locked)
	}()
	<-done
	section("Pods teardown")
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
	say("pods removed (CNI DEL through the CRI), containerds and agents stopped by their PIDs")
	if d.failures > 0 {
		os.Exit(1)
	}
}

func check(d *demoT, desc string, err error) {
	if err != nil {
		d.Errorf("%s\n%v", desc, err)
		return
	}
	fmt.Printf("   ok    %s\n", desc)
}

func demo(d *demoT, name, configs, locked string) {
	ctl, err := localvpc.Find(name)
	if err != nil {
		d.Fatal(err)
	}
	bin, _ := exec.LookPath(os.Getenv("VPCNET_BIN_DIR") + "/vpcnet")
	v := &localvpctest.VPC{Control: ctl, Bin: bin}

	section("7. Pods: vpcnetd and containerd (CRI) with vpc-pod on both instances")
	say("custom networking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG): pods' ENIs in their own subnets and groups: %s", configs)
	env := []string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true", "VPCNET_ENI_CONFIGS=" + configs, "WARM_IP_TARGET=3"}
	n1 := e2e.StartPodNode(d, v, 1, env...)
	n2 := e2e.StartPodNode(d, v, 2, env...)
	say("vpcnetd ready on %s and %s", n1.ID, n2.ID)

	web := n2.RunPod(d, "web", e2e.HTTPServer("hello-from-a-pod-on-"+n2.ID)...)
	vault := n1.RunPod(d, "vault", e2e.HTTPServer("secret")...)
	client := n1.RunPod(d, "client", "sleep", "600")
	held1, held2 := e2e.HeldBy(d, v, n1.ID), e2e.HeldBy(d, v, n2.ID)
	say("web    on instance 2: %s  (EC2: %s)", web.IP, held2[web.IP])
	say("vault  on instance 1: %s  (EC2: %s)", vault.IP, held1[vault.IP])
	say("client on instance 1: %s  (EC2: %s)", client.IP, held1[client.IP])

	section("8. What the VPC lets through, pod to pod")
	get := func(n *e2e.PodNode, p e2e.Pod, url string) error {
		r := n.CRI.Exec(p.Container, "timeout", "3", "wget", "-q", "-O", "-", url).Run()
		return r.Err
	}
	check(d, fmt.Sprintf("client (instance 1) -> web %s:8080 on instance 2, by pod address across subnets", web.IP),
		get(n1, client, fmt.Sprintf("http://%s:8080/", web.IP)))
	err = get(n2, web, fmt.Sprintf("http://%s:8080/", vault.IP))
	if err == nil {
		err = fmt.Errorf("the request went through")
	} else {
		err = nil
	}
	check(d, fmt.Sprintf("web (instance 2) -> vault %s:8080: dropped, vault's ENI is in the locked group %s", vault.IP, locked), err)
	if held1[client.IP] == "" || held2[web.IP] == "" {
		d.Errorf("a pod address is not held by EC2 on its node's ENIs")
	} else {
		fmt.Printf("   ok    every pod address is one EC2 holds on an ENI of its node\n")
	}

	section("9. vpcnet node status, on both instances")
	for _, n := range []*e2e.PodNode{n1, n2} {
		out, err := exec.Command(v.Bin, "node", "status", "--name", name, "--instance", n.ID).CombinedOutput()
		if err != nil {
			d.Errorf("vpcnet node status on %s: %v\n%s", n.ID, err, out)
			continue
		}
		say("$ vpcnet node status --instance %s", n.ID)
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			say("  %s", l)
		}
	}

	section("10. The pods' ENIs, as EC2 describes them")
	out, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{"vpcnet:node"}}}})
	if err != nil {
		d.Fatal(err)
	}
	say("%-24s %-20s %-16s %-26s %-6s %s", "ENI", "INSTANCE", "PRIMARY", "SUBNET", "ADDRS", "GROUPS")
	for _, n := range out.NetworkInterfaces {
		var groups []string
		for _, g := range n.Groups {
			groups = append(groups, aws.ToString(g.GroupId))
		}
		inst := ""
		if n.Attachment != nil {
			inst = aws.ToString(n.Attachment.InstanceId)
		}
		say("%-24s %-20s %-16s %-26s %-6d %s", aws.ToString(n.NetworkInterfaceId), inst, aws.ToString(n.PrivateIpAddress),
			aws.ToString(n.SubnetId), len(n.PrivateIpAddresses)-1, strings.Join(groups, ","))
	}
}
