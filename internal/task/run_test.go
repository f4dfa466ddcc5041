package task

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// createGroup makes a security group in the VPC. With from set, it lets
// in TCP on port from members of group from (a group reference, as a
// service's group usually names its clients').
func createGroup(t *testing.T, v *taskVPC, name string, port int32, from string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := v.EC2()
	out, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		VpcId: aws.String(v.VPCID), GroupName: aws.String(name), Description: aws.String("vpcnet task test " + name),
	})
	if err != nil {
		t.Fatalf("CreateSecurityGroup %s: %v", name, err)
	}
	id := aws.ToString(out.GroupId)
	if from != "" {
		_, err := api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: aws.String(id),
			IpPermissions: []ec2types.IpPermission{{
				IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port),
				UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(from)}},
			}},
		})
		if err != nil {
			t.Fatalf("AuthorizeSecurityGroupIngress %s: %v", name, err)
		}
	}
	return id
}

// serving waits until the server in a detached task answers from inside
// the task itself, so that a peer that cannot reach it is refused by the
// VPC, not early.
func serving(t *testing.T, v *taskVPC, id string) {
	t.Helper()
	var out []byte
	var err error
	for range 200 {
		out, err = v.task("exec", id, "--", probeBin(t), probeCommand, "get", "http://127.0.0.1:8080/").CombinedOutput()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the server of task %s never answered inside its task: %v: %s", ShortID(id), err, out)
}

// TestRunForeground runs a task in the foreground on instance 1 and checks
// what it sees from inside (its ENI as eth0 with the subnet's prefix, the
// default route via the subnet gateway, instance metadata blackholed, its
// own task metadata and no other task's, peers on instance 2 reachable
// exactly where security groups allow), that its output is streamed and
// its exit status passed on, and that nothing is left once it exits.
func TestRunForeground(t *testing.T) {
	v := upVPC(t, tagRun)
	probe := probeBin(t)
	suffix := testenv.RandomHex(3)
	client := createGroup(t, v, "client-"+suffix, 0, "")
	allow := createGroup(t, v, "allow-"+suffix, 8080, client)
	deny := createGroup(t, v, "deny-"+suffix, 0, "")

	// Two servers on instance 2, identical but for their security group.
	b := v.detach(2, v.subnet(2), allow, "b-"+suffix, probe, probeCommand, "serve", "8080", "b")
	c := v.detach(2, v.subnet(2), deny, "c-"+suffix, probe, probeCommand, "serve", "8080", "c")
	serving(t, v, b)
	serving(t, v, c)
	bAddr, cAddr := v.record(b).Addresses[0], v.record(c).Addresses[0]

	name := "a-" + suffix
	cmd := v.task("run", "--instance", "1", "--subnet", v.subnet(1), "--security-group", client, "--name", name, "--",
		probe, probeCommand, "inspect", fmt.Sprintf("http://%s:8080/", bAddr), fmt.Sprintf("http://%s:8080/", cAddr), b)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := watchLines(stdout, func(l string) bool { return l == "started" })
	progress := watchLines(stderr, nil)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-out.seen:
	case <-out.done:
		_ = cmd.Wait()
		<-progress.done
		t.Fatalf("the task ended before printing anything:\nstdout: %s\nstderr: %s", out.text(), progress.text())
	case <-time.After(2 * time.Minute):
		t.Fatal("no output from the task")
	}
	// The command is blocked reading stdin: its first line arrived while
	// it runs, so output is streamed, not collected at exit. Meanwhile EC2
	// has its ENI, attached to instance 1.
	enis := v.enisTagged(TagName, name)
	if len(enis) != 1 || enis[0].Attachment == nil || aws.ToString(enis[0].Attachment.InstanceId) != v.Instances[0].ID {
		t.Fatalf("while the task runs, EC2 has %d ENIs named %s (%+v); want one attached to %s", len(enis), name, enis, v.Instances[0].ID)
	}
	eni := enis[0]
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	err = cmd.Wait()
	<-out.done
	<-progress.done
	if got := exitStatus(err); got != inspectExit {
		t.Fatalf("task run exited with %d (%v), want the command's %d\nstdout: %s\nstderr: %s", got, err, inspectExit, out.text(), progress.text())
	}
	var rep inspectReport
	for _, l := range strings.Split(out.text(), "\n") {
		if j, ok := strings.CutPrefix(l, "REPORT "); ok {
			if err := json.Unmarshal([]byte(j), &rep); err != nil {
				t.Fatal(err)
			}
		}
	}

	subnetCIDR := netip.MustParsePrefix(v.Subnets[0].CIDR)
	gateway := subnetCIDR.Addr().Next()
	eniAddr := aws.ToString(eni.PrivateIpAddress)
	t.Run("eth0", func(t *testing.T) {
		want := fmt.Sprintf("%s/%d", eniAddr, subnetCIDR.Bits())
		if !slices.Equal(rep.Eth0, []string{want}) || rep.Eth0MAC != aws.ToString(eni.MacAddress) {
			t.Errorf("eth0 has %v (MAC %s); want %s, the ENI's address with the subnet's prefix, and MAC %s", rep.Eth0, rep.Eth0MAC, want, aws.ToString(eni.MacAddress))
		}
		if rep.Gateway != gateway.String() || rep.GatewayDev != eniIfName {
			t.Errorf("default route via %s dev %s; want via the subnet gateway %s dev eth0", rep.Gateway, rep.GatewayDev, gateway)
		}
	})
	t.Run("instance metadata blocked", func(t *testing.T) {
		if !slices.Contains(rep.Blackholes, "169.254.169.254") {
			t.Errorf("blackhole routes %v; want one for 169.254.169.254", rep.Blackholes)
		}
		if rep.IMDS == "ok" {
			t.Error("the task reached 169.254.169.254:80")
		}
		// The instance itself does reach it: the block is the task's.
		if got, err := v.OnInstance(1, probe, probeCommand, "get", "http://169.254.169.254/latest/meta-data/instance-id"); err != nil || got != v.Instances[0].ID {
			t.Errorf("instance metadata from the instance: %q, %v; want %s", got, err, v.Instances[0].ID)
		}
	})
	t.Run("task metadata", func(t *testing.T) {
		if rep.ContainerStatus != 200 || rep.TaskStatus != 200 {
			t.Fatalf("metadata answered %d and %d: %s %s", rep.ContainerStatus, rep.TaskStatus, rep.Container, rep.Task)
		}
		// Field names as in ECS task metadata v4, read without our types.
		var doc struct {
			Networks []map[string]any
		}
		if err := json.Unmarshal(rep.Container, &doc); err != nil || len(doc.Networks) != 1 {
			t.Fatalf("container document %s: %v", rep.Container, err)
		}
		n := doc.Networks[0]
		want := map[string]any{
			"NetworkMode":              "awsvpc",
			"IPv4Addresses":            []any{eniAddr},
			"MACAddress":               aws.ToString(eni.MacAddress),
			"IPv4SubnetCIDRBlock":      subnetCIDR.String(),
			"SubnetGatewayIpv4Address": fmt.Sprintf("%s/%d", gateway, subnetCIDR.Bits()),
			"NetworkInterfaceId":       aws.ToString(eni.NetworkInterfaceId),
			"SecurityGroupIds":         []any{client},
		}
		for k, w := range want {
			if got, _ := json.Marshal(n[k]); string(got) != mustJSON(w) {
				t.Errorf("Networks[0].%s = %s, want %s", k, got, mustJSON(w))
			}
		}
		var task struct{ TaskARN string }
		if err := json.Unmarshal(rep.Task, &task); err != nil || !strings.HasSuffix(task.TaskARN, "/"+v.record(name).ID) {
			t.Errorf("task document %s: want the task's own ARN", rep.Task)
		}
		if rep.OtherStatus != 403 {
			t.Errorf("asking for another task's ID (%s) answered %d, want 403", b, rep.OtherStatus)
		}
	})
	t.Run("security groups", func(t *testing.T) {
		if rep.Allowed != "ok: hello from b" {
			t.Errorf("to %s, whose group lets the client's group in: %s", bAddr, rep.Allowed)
		}
		if strings.HasPrefix(rep.Denied, "ok") {
			t.Errorf("to %s, whose group lets nothing in: %s", cAddr, rep.Denied)
		}
	})

	// After exit: nothing of the task, its record stopped with the status.
	v.assertClean(1)
	if enis := v.enisTagged(TagName, name); len(enis) != 0 {
		t.Errorf("the task's ENI is still there: %+v", enis)
	}
	r := v.record(name)
	if r.State != StateStopped || r.ExitCode == nil || *r.ExitCode != inspectExit {
		t.Errorf("record: state %s, exit code %v; want stopped with %d", r.State, r.ExitCode, inspectExit)
	}
	for _, step := range []string{"create-eni", "attach-eni", "wait-device", "cni-eni", "cni-bridge", "delete-eni"} {
		if !strings.Contains(progress.text(), " "+step+" ") {
			t.Errorf("no progress line for %s in:\n%s", step, progress.text())
		}
	}

	v.mustTask("stop", b)
	v.mustTask("stop", c)
	v.assertClean(2)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
