package localvpc_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// ec2State is what EC2 says about a local VPC, as comparable JSON.
func ec2State(t *testing.T, c *ec2.Client) string {
	t.Helper()
	enis, err := c.DescribeNetworkInterfaces(t.Context(), &ec2.DescribeNetworkInterfacesInput{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(enis.NetworkInterfaces, func(i, j int) bool {
		return *enis.NetworkInterfaces[i].NetworkInterfaceId < *enis.NetworkInterfaces[j].NetworkInterfaceId
	})
	groups, err := c.DescribeSecurityGroups(t.Context(), &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(groups.SecurityGroups, func(i, j int) bool { return *groups.SecurityGroups[i].GroupId < *groups.SecurityGroups[j].GroupId })
	b, err := json.MarshalIndent(map[string]any{"enis": enis.NetworkInterfaces, "groups": groups.SecurityGroups}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type roleCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	Token           string
}

func instanceRole(t *testing.T, nsName string) roleCredentials {
	t.Helper()
	var r roleCredentials
	if err := json.Unmarshal([]byte(imdsGet(t, nsName, "iam/security-credentials/"+localvpc.InstanceRole)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func nsInode(t *testing.T, nsName string) uint64 {
	t.Helper()
	fi, err := os.Stat(netops.NamedNSPath(nsName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// pinger runs ping in a namespace and records which sequence numbers were
// answered.
type pinger struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seqs map[int]bool
	max  int
	done chan struct{}
}

var icmpSeq = regexp.MustCompile(`icmp_seq=(\d+) `)

func startPing(t *testing.T, nsName, dst string) *pinger {
	t.Helper()
	p := &pinger{cmd: exec.Command("ping", "-n", "-i", "0.05", dst), seqs: map[int]bool{}, done: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := netops.StartIn(netops.NamedNSPath(nsName), p.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := icmpSeq.FindStringSubmatch(sc.Text()); m != nil {
				n, _ := strconv.Atoi(m[1])
				p.mu.Lock()
				p.seqs[n] = true
				p.max = max(p.max, n)
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *pinger) answered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

func (p *pinger) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		_ = p.cmd.Wait()
	}
}

// lost lists the sequence numbers up to the highest answered one that got
// no answer.
func (p *pinger) lost() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for i := 1; i <= p.max; i++ {
		if !p.seqs[i] {
			out = append(out, i)
		}
	}
	return out
}

// TestRestartKeepsStateAndTraffic restarts the control plane with `vpcnet
// local restart` and checks that EC2 says the same before and after, that
// issued credentials still work, and that the datapath never stopped: a
// ping running across the restart loses nothing and a TCP connection
// opened before carries data after.
func TestRestartKeepsStateAndTraffic(t *testing.T) {
	testenv.Tool(t, "ping")
	v := up(t, tagRestart)
	c := v.EC2()
	in1, in2 := v.Instances[0], v.Instances[1]

	a := createENI(t, c, v.Subnets[0].ID, ec2types.Tag{Key: aws.String("owner"), Value: aws.String("restart")})
	aID := *a.NetworkInterfaceId
	attachENI(t, c, aID, in1.ID, 1)
	waitDevice(t, in1.Namespace, *a.MacAddress)
	waitAttachment(t, c, aID, "attached")
	if _, err := c.AssignPrivateIpAddresses(t.Context(), &ec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(aID), SecondaryPrivateIpAddressCount: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	b := createENI(t, c, v.Subnets[1].ID)
	if _, err := c.CreateTags(t.Context(), &ec2.CreateTagsInput{Resources: []string{*b.NetworkInterfaceId},
		Tags: []ec2types.Tag{{Key: aws.String("spare"), Value: aws.String("yes")}}}); err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateSecurityGroup(t.Context(), &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("web"), Description: aws.String("web"), VpcId: aws.String(v.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthorizeSecurityGroupIngress(t.Context(), &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: web.GroupId, IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"),
			FromPort: aws.Int32(443), ToPort: aws.Int32(443), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("10.0.0.0/16")}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(t.Context(), &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(aID), Groups: []string{v.DefaultGroup, *web.GroupId}}); err != nil {
		t.Fatal(err)
	}

	before := ec2State(t, c)
	role := instanceRole(t, in2.Namespace)
	envBefore := v.Vpcnet("local", "env", "--name", v.Name)
	inodes := map[string]uint64{}
	for _, n := range []string{in1.Namespace, in2.Namespace} {
		inodes[n] = nsInode(t, n)
	}
	eth1 := deviceIn(t, in1.Namespace, *a.MacAddress).Attrs().Index
	serveEcho(t, in2.Namespace, ":8080")
	conn, err := dial(in1.Namespace, in2.PrivateIP+":8080", converge)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := echo(conn, "before"); err != nil {
		t.Fatal(err)
	}
	ping := startPing(t, in1.Namespace, in2.PrivateIP)
	testenv.EventuallyTrue(t, "ping from instance 1 to instance 2 is answered", converge, func() bool { return ping.answered() > 0 })

	v.Vpcnet("local", "restart", "--name", v.Name)
	sent := ping.answered()

	ctl, err := localvpc.Find(v.Name)
	if err != nil {
		t.Fatal(err)
	}
	if ctl.PID == v.PID {
		t.Fatalf("control plane pid %d before and after the restart", ctl.PID)
	}
	testenv.EventuallyTrue(t, "ping keeps being answered after the restart", converge, func() bool { return ping.answered() >= sent+10 })
	ping.stop()
	if lost := ping.lost(); len(lost) > 0 {
		t.Errorf("pings lost across the restart: icmp_seq %v of 1..%d", lost, ping.answered())
	}
	if err := echo(conn, "after"); err != nil {
		t.Errorf("the TCP connection opened before the restart: %v", err)
	}
	for n, ino := range inodes {
		if got := nsInode(t, n); got != ino {
			t.Errorf("namespace %s was replaced by the restart", n)
		}
	}
	if dev := deviceIn(t, in1.Namespace, *a.MacAddress); dev == nil || dev.Attrs().Index != eth1 {
		t.Errorf("the attached ENI's device was rebuilt by the restart: %v", dev)
	}

	if envAfter := v.Vpcnet("local", "env", "--name", v.Name); envAfter != envBefore {
		t.Errorf("`vpcnet local env` changed with the restart; clients set up before it are lost:\n%s\nthen\n%s", envBefore, envAfter)
	}
	c = operator(ctl)
	if after := ec2State(t, c); after != before {
		t.Errorf("EC2 state changed across the restart:\nbefore %s\nafter %s", before, after)
	}
	if ctl.AccessKeyID != v.AccessKeyID {
		t.Errorf("operator key %s became %s", v.AccessKeyID, ctl.AccessKeyID)
	}
	withRole := ec2.New(ec2.Options{Region: ctl.Region, BaseEndpoint: aws.String(ctl.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(role.AccessKeyID, role.SecretAccessKey, role.Token)}, noRetries)
	if _, err := withRole.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("instance 2's role key issued before the restart: %v", err)
	}
	if got := instanceRole(t, in2.Namespace); got.AccessKeyID != role.AccessKeyID {
		t.Errorf("instance 2's role key %s became %s", role.AccessKeyID, got.AccessKeyID)
	}
	if got := imdsGet(t, in1.Namespace, "instance-id"); got != in1.ID {
		t.Errorf("metadata after the restart: %q", got)
	}

	// The restarted control plane drives the datapath: a new attachment
	// gets its device.
	attachENI(t, c, *b.NetworkInterfaceId, in2.ID, 1)
	waitDevice(t, in2.Namespace, *b.MacAddress)
	waitAttachment(t, c, *b.NetworkInterfaceId, "attached")
}
