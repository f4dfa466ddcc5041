package node_test

// Tests of vpcnetd against a local VPC that misbehaves as EC2 does: a crash
// in the middle of a burst, a node at its limit, throttling, errors, attach
// delay, metadata lag; and of the pool's other shapes: shrinking, leaked
// ENIs, prefixes with their fallback, custom networking, a graceful stop.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/node"
	"github.com/vpcnet/vpcnet/internal/node/nodeapi"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// naTag names the local VPCs of this file.
const naTag = "na"

// Settings that make the agent's slow loops fast enough for a test: the
// leaked-ENI sweep every 2 s for ENIs older than 2 s.
var fastSweep = []string{"VPCNET_LEAKED_ENI_AGE=2s", "VPCNET_LEAKED_ENI_INTERVAL=2s"}

func env(lists ...[]string) []string { return slices.Concat(lists...) }

// setFaults replaces the local VPC's fault injection; the test's end clears it.
func setFaults(t *testing.T, v *localvpctest.VPC, js string) {
	t.Helper()
	v.Vpcnet("local", "faults", "--name", v.Name, js)
	t.Cleanup(func() { _, _ = v.Command("local", "faults", "--name", v.Name, "--clear").CombinedOutput() })
}

func clearFaults(t *testing.T, v *localvpctest.VPC) {
	t.Helper()
	v.Vpcnet("local", "faults", "--name", v.Name, "--clear")
}

// addResult is one ADD of a burst.
type addResult struct {
	id    string
	reply *nodeapi.AddNetworkReply
	err   error
}

// burst sends n concurrent ADDs (pods prefix00..) with a generous deadline
// and returns their results on a channel, in the order they come.
func (a *agent) burst(prefix string, n int, deadline time.Duration) <-chan addResult {
	out := make(chan addResult, n)
	api := a.api
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s%02d", prefix, i)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			r, err := api.AddNetwork(ctx, &nodeapi.AddNetworkRequest{Attachment: attachment(id), PodNamespace: "default", PodName: id})
			out <- addResult{id: id, reply: r, err: err}
		}()
	}
	return out
}

func collect(ch <-chan addResult, n int) []addResult {
	var rs []addResult
	for range n {
		rs = append(rs, <-ch)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].id < rs[j].id })
	return rs
}

func (a *agent) del(id string) {
	a.t.Helper()
	if _, err := a.api.DelNetwork(context.Background(), &nodeapi.DelNetworkRequest{Attachment: attachment(id)}); err != nil {
		a.t.Fatalf("DelNetwork %s: %v", id, err)
	}
}

// podVeth creates the host veth vpc-pod would have made for the attachment,
// so that the agent's reconcile sees a live pod (it releases the addresses
// of pods whose veth is gone).
func (a *agent) podVeth(id string) {
	a.t.Helper()
	name := nodeapi.HostVethName("", attachment(id))
	err := ns.WithNetNSPath(netops.NamedNSPath(a.vpc.Instances[a.instance-1].Namespace), func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "q" + name[1:]})
	})
	if err != nil {
		a.t.Fatalf("create the host veth %s of %s: %v", name, id, err)
	}
}

// ec2ENI is one ENI as EC2 describes it.
type ec2ENI struct {
	ID, Subnet, AttachStatus string
	Device                   int
	Groups                   []string
	Secondary                []string
	Prefixes                 []string
	Tags                     map[string]string
}

// instanceENIs lists the ENIs EC2 has attached (in any attachment state) to
// the instance, by device index.
func instanceENIs(t *testing.T, v *localvpctest.VPC, instanceID string) []ec2ENI {
	t.Helper()
	return describeENIs(t, v, ec2types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}})
}

func describeENIs(t *testing.T, v *localvpctest.VPC, filters ...ec2types.Filter) []ec2ENI {
	t.Helper()
	out, err := v.EC2().DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	var enis []ec2ENI
	for _, n := range out.NetworkInterfaces {
		e := ec2ENI{ID: aws.ToString(n.NetworkInterfaceId), Subnet: aws.ToString(n.SubnetId), Tags: map[string]string{}}
		if n.Attachment != nil {
			e.Device = int(aws.ToInt32(n.Attachment.DeviceIndex))
			e.AttachStatus = string(n.Attachment.Status)
		}
		for _, g := range n.Groups {
			e.Groups = append(e.Groups, aws.ToString(g.GroupId))
		}
		for _, p := range n.PrivateIpAddresses {
			if !aws.ToBool(p.Primary) {
				e.Secondary = append(e.Secondary, aws.ToString(p.PrivateIpAddress))
			}
		}
		for _, p := range n.Ipv4Prefixes {
			e.Prefixes = append(e.Prefixes, aws.ToString(p.Ipv4Prefix))
		}
		for _, tg := range n.TagSet {
			e.Tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		enis = append(enis, e)
	}
	sort.Slice(enis, func(i, j int) bool { return enis[i].Device < enis[j].Device })
	return enis
}

// leakedENIs lists the available ENIs tagged for the instance, but for
// those marked vpcnet:no-manage.
func leakedENIs(t *testing.T, v *localvpctest.VPC, instanceID string) []string {
	t.Helper()
	var ids []string
	for _, e := range describeENIs(t, v,
		ec2types.Filter{Name: aws.String("tag:" + node.TagNode), Values: []string{instanceID}},
		ec2types.Filter{Name: aws.String("status"), Values: []string{"available"}}) {
		if e.Tags[node.TagNoManage] == "true" {
			continue // not the agent's to delete
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// agreesWithEC2 says how the agent's report and EC2 differ for the node
// (nil: they agree): the same ENIs, all attached, the same pod addresses on
// each, and no available ENI tagged for the node (a leak).
func agreesWithEC2(t *testing.T, a *agent) error {
	t.Helper()
	inst := a.vpc.Instances[a.instance-1].ID
	r := a.report()
	mine := map[string]string{} // address -> ENI, as the agent sees it
	var myENIs []string
	for _, e := range r.ENIs {
		myENIs = append(myENIs, e.ID)
		for _, ad := range e.Addresses {
			if ad.State != "node" {
				mine[ad.IP.String()] = e.ID
			}
		}
	}
	var theirENIs []string
	for _, e := range instanceENIs(t, a.vpc, inst) {
		if e.AttachStatus != "attached" {
			return fmt.Errorf("ENI %s is %s", e.ID, e.AttachStatus)
		}
		theirENIs = append(theirENIs, e.ID)
	}
	sort.Strings(myENIs)
	sort.Strings(theirENIs)
	if !slices.Equal(myENIs, theirENIs) {
		return fmt.Errorf("agent has ENIs %v, EC2 %v", myENIs, theirENIs)
	}
	theirs := ec2Addresses(t, a.vpc, inst)
	if r.Targets.CustomNetworking {
		for ad, eni := range theirs {
			if eni == r.Node.PrimaryENI {
				delete(theirs, ad)
			}
		}
	}
	for ad, eni := range theirs {
		if mine[ad] != eni {
			return fmt.Errorf("EC2 holds %s on %s, the agent has it on %q (a leak)", ad, eni, mine[ad])
		}
	}
	for ad, eni := range mine {
		if theirs[ad] != eni {
			return fmt.Errorf("the agent has %s on %s, EC2 has it on %q", ad, eni, theirs[ad])
		}
	}
	if l := leakedENIs(t, a.vpc, inst); len(l) > 0 {
		return fmt.Errorf("available ENIs tagged for %s: %v", inst, l)
	}
	return nil
}

// noDuplicates fails the test if two attachments were given one address.
func noDuplicates(t *testing.T, got map[string]string) {
	t.Helper()
	owner := map[string]string{}
	for id, addr := range got {
		if prev, dup := owner[addr]; dup {
			t.Errorf("%s given to both %s and %s", addr, prev, id)
		}
		owner[addr] = id
	}
}

// heldByEC2 fails the test for every reply whose address EC2 does not hold
// on the ENI the reply names.
func heldByEC2(t *testing.T, v *localvpctest.VPC, instanceID string, replies map[string]*nodeapi.AddNetworkReply) {
	t.Helper()
	held := ec2Addresses(t, v, instanceID)
	for id, r := range replies {
		if held[r.GetIpv4Address()] != r.GetEniId() {
			t.Errorf("%s was given %s on %s; EC2 holds it on %q", id, r.GetIpv4Address(), r.GetEniId(), held[r.GetIpv4Address()])
		}
	}
}

// TestAgentCrashDuringBurst kills vpcnetd with SIGKILL in the middle of 20
// concurrent ADDs that make it grow by two ENIs (each attach taking 1-3 s),
// and restarts it. Every ADD either got a reply or failed with Unavailable;
// after the restart every ADD that got a reply gets the same address again,
// the others get one, no address is given twice, each is held by EC2 on the
// ENI the reply names, and the agent's view converges to EC2's: no address
// or ENI is left that the agent does not know of, and no ENI leaks.
func TestAgentCrashDuringBurst(t *testing.T) {
	v := localvpctest.Up(t, naTag+"k", "--instances", "1", "--instance-type", "m5.large",
		"--faults", `{"attachDelay":"1s","attachDelayMax":"3s"}`)
	inst := v.Instances[0].ID
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"VPCNET_ADD_WAIT=60s"})...)
	testenv.Eventually(t, 60*time.Second, func() error {
		if r := a.report(); r.Totals.Free != 9 {
			return fmt.Errorf("pool %+v", r.Totals)
		}
		return nil
	})

	const n = 20
	ch := a.burst("crash", n, 2*time.Minute)
	// Kill once the primary ENI's 9 addresses and some of the first new
	// ENI's are given out: the agent is then creating or attaching ENIs.
	var rs []addResult
	for len(rs) < 12 {
		rs = append(rs, <-ch)
	}
	a.kill()
	rs = append(rs, collect(ch, n-len(rs))...)
	replied := map[string]*nodeapi.AddNetworkReply{}
	for _, r := range rs {
		switch {
		case r.err == nil:
			replied[r.id] = r.reply
			a.podVeth(r.id)
		case status.Code(r.err) != codes.Unavailable:
			t.Errorf("ADD %s in flight at the crash: %v, want a reply or Unavailable", r.id, r.err)
		}
	}
	t.Logf("%d of %d ADDs got a reply before the crash", len(replied), n)

	a.start()
	got := map[string]string{}
	final := map[string]*nodeapi.AddNetworkReply{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("crash%02d", i)
		r := a.mustAdd(id)
		if before, ok := replied[id]; ok && before.GetIpv4Address() != r.GetIpv4Address() {
			t.Errorf("after the restart %s has %s, before it %s", id, r.GetIpv4Address(), before.GetIpv4Address())
		}
		if _, ok := replied[id]; !ok {
			a.podVeth(id)
		}
		got[id] = r.GetIpv4Address()
		final[id] = r
	}
	noDuplicates(t, got)
	heldByEC2(t, v, inst, final)
	testenv.Eventually(t, 90*time.Second, func() error {
		if err := agreesWithEC2(t, a); err != nil {
			return err
		}
		if r := a.report(); r.Totals.Assigned != n {
			return fmt.Errorf("%d assigned, want %d", r.Totals.Assigned, n)
		}
		return nil
	})
}

// TestAgentBurstPastLimit sends 14 concurrent ADDs to a t3.small (3 ENIs of
// 4 addresses: 9 pod addresses, max pods 11): 9 succeed and 5 fail with
// RESOURCE_EXHAUSTED naming the instance type's limit, at once rather than
// after the agent's whole ADD wait (2 minutes here, which the failure
// would name). With an address in cooldown an ADD waits for it instead.
// Nothing leaks.
func TestAgentBurstPastLimit(t *testing.T) {
	v := localvpctest.Up(t, naTag+"l", "--instances", "1", "--instance-type", "t3.small")
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"VPCNET_ADD_WAIT=2m", "IP_COOLDOWN_PERIOD=3s"})...)
	if r := a.report(); r.Limits.MaxPods != 11 || r.Limits.ENIs != 3 || r.Limits.SlotsPerENI != 3 {
		t.Fatalf("t3.small limits %+v, want 3 ENIs x 3 slots, max pods 11", r.Limits)
	}
	rs := collect(a.burst("lim", 14, 4*time.Minute), 14)
	ok := map[string]*nodeapi.AddNetworkReply{}
	got := map[string]string{}
	for _, r := range rs {
		if r.err == nil {
			ok[r.id] = r.reply
			got[r.id] = r.reply.GetIpv4Address()
			continue
		}
		msg := status.Convert(r.err).Message()
		if status.Code(r.err) != codes.ResourceExhausted || !strings.Contains(msg, "ENIs the instance type allows are attached and full") {
			t.Errorf("ADD %s: %v, want RESOURCE_EXHAUSTED naming the instance type's limit", r.id, r.err)
		}
		if strings.Contains(msg, "after waiting") {
			t.Errorf("ADD %s failed only after the whole ADD wait: %v", r.id, r.err)
		}
	}
	if len(ok) != 9 {
		t.Errorf("%d ADDs succeeded, want the node's 9 addresses", len(ok))
	}
	noDuplicates(t, got)
	heldByEC2(t, v, v.Instances[0].ID, ok)
	testenv.Eventually(t, 60*time.Second, func() error {
		if err := agreesWithEC2(t, a); err != nil {
			return err
		}
		if r := a.report(); len(r.ENIs) != 3 || r.Totals.Assigned != 9 || r.Totals.Free != 0 {
			return fmt.Errorf("%d ENIs, %+v", len(r.ENIs), r.Totals)
		}
		return nil
	})

	// One pod goes: its address cools down, and an ADD now waits for the
	// cooldown (3 s) rather than fail.
	var gone string
	for id := range ok {
		gone = id
		break
	}
	a.del(gone)
	r := a.mustAdd("after-cooldown")
	if r.GetIpv4Address() != got[gone] {
		t.Errorf("the ADD after a DEL got %s, want the released %s once cooled down", r.GetIpv4Address(), got[gone])
	}
}

// TestAgentEC2Faults runs the agent against an EC2 that throttles 30% and
// fails 15% of all calls (the agent starts under them): every ADD either
// succeeds within the agent's ADD wait or fails with RESOURCE_EXHAUSTED
// naming the cause, and a retried ADD eventually succeeds. Once the faults
// end, the pool converges to its target (WARM_ENI_TARGET=1) with EC2 and
// the agent agreeing and nothing leaked.
func TestAgentEC2Faults(t *testing.T) {
	v := localvpctest.Up(t, naTag+"f", "--instances", "1", "--instance-type", "m5.large")
	setFaults(t, v, `{"actions":{"*":{"throttleRate":0.3,"errorRate":0.15}}}`)
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"VPCNET_ADD_WAIT=15s"})...)

	const n = 15
	rs := collect(a.burst("flt", n, 2*time.Minute), n)
	got := map[string]string{}
	for _, r := range rs {
		if r.err == nil {
			got[r.id] = r.reply.GetIpv4Address()
			continue
		}
		msg := status.Convert(r.err).Message()
		named := strings.Contains(msg, "throttl") || strings.Contains(msg, "InternalError")
		if status.Code(r.err) != codes.ResourceExhausted || !named {
			t.Errorf("ADD %s under faults: %v, want RESOURCE_EXHAUSTED naming throttling or the EC2 error", r.id, r.err)
		}
	}
	t.Logf("%d of %d ADDs succeeded under faults", len(got), n)
	// The kubelet retries a failed ADD: each gets an address in the end.
	final := map[string]*nodeapi.AddNetworkReply{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("flt%02d", i)
		testenv.Eventually(t, 3*time.Minute, func() error {
			r, err := a.add(id)
			if err != nil {
				return err
			}
			if prev, ok := got[id]; ok && prev != r.GetIpv4Address() {
				t.Errorf("retried ADD of %s: %s, first %s", id, r.GetIpv4Address(), prev)
			}
			final[id] = r
			return nil
		})
		a.podVeth(id)
	}
	noDuplicates(t, func() map[string]string {
		m := map[string]string{}
		for id, r := range final {
			m[id] = r.GetIpv4Address()
		}
		return m
	}())
	// The faults apply to every caller, this test's own reads of EC2
	// too: clear them first (one read failing 3 times in a row under
	// 45% faults is a 9% chance).
	clearFaults(t, v)
	heldByEC2(t, v, v.Instances[0].ID, final)

	// 15 pods on m5.large: three ENIs (27 addresses), 12 free; EC2 and the
	// agent agree, nothing is left half done.
	testenv.Eventually(t, 2*time.Minute, func() error {
		if err := agreesWithEC2(t, a); err != nil {
			return err
		}
		r := a.report()
		if len(r.ENIs) != 3 || r.Totals.Free != 12 || r.Totals.Assigned != n || r.Blocked != "" {
			return fmt.Errorf("%d ENIs, %+v, blocked %q", len(r.ENIs), r.Totals, r.Blocked)
		}
		return nil
	})
}

// TestAgentAttachDelay: each attach takes 2-5 s before the device shows;
// a burst of 20 ADDs that needs two new ENIs waits for them, and none fails.
func TestAgentAttachDelay(t *testing.T) {
	v := localvpctest.Up(t, naTag+"d", "--instances", "1", "--instance-type", "m5.large",
		"--faults", `{"attachDelay":"2s","attachDelayMax":"5s"}`)
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"VPCNET_ADD_WAIT=60s"})...)
	testenv.Eventually(t, 60*time.Second, func() error {
		if r := a.report(); r.Totals.Free != 9 {
			return fmt.Errorf("pool %+v", r.Totals)
		}
		return nil
	})
	rs := collect(a.burst("slow", 20, 2*time.Minute), 20)
	replies := map[string]*nodeapi.AddNetworkReply{}
	got := map[string]string{}
	for _, r := range rs {
		if r.err != nil {
			t.Errorf("ADD %s with a slow attach: %v", r.id, r.err)
			continue
		}
		replies[r.id], got[r.id] = r.reply, r.reply.GetIpv4Address()
	}
	noDuplicates(t, got)
	heldByEC2(t, v, v.Instances[0].ID, replies)
	testenv.Eventually(t, 60*time.Second, func() error { return agreesWithEC2(t, a) })
}

// TestAgentMetadataLag: instance metadata trails EC2 by a minute; the
// agent takes its addresses from EC2's replies, so a burst past the
// primary ENI still gets addresses, each one EC2 holds.
func TestAgentMetadataLag(t *testing.T) {
	v := localvpctest.Up(t, naTag+"m", "--instances", "1", "--instance-type", "m5.large")
	setFaults(t, v, `{"metadataLag":"60s"}`)
	a := startAgent(t, v, 1, t.TempDir(), fastSweep...)
	rs := collect(a.burst("lag", 14, 2*time.Minute), 14)
	replies := map[string]*nodeapi.AddNetworkReply{}
	got := map[string]string{}
	for _, r := range rs {
		if r.err != nil {
			t.Errorf("ADD %s with metadata lagging: %v", r.id, r.err)
			continue
		}
		replies[r.id], got[r.id] = r.reply, r.reply.GetIpv4Address()
	}
	noDuplicates(t, got)
	heldByEC2(t, v, v.Instances[0].ID, replies)
	// What metadata says meanwhile, for the log: it has not caught up.
	if out, err := v.OnInstance(1, "sh", "-c", "curl -s -m 5 http://169.254.169.254/latest/meta-data/network/interfaces/macs/ 2>&1 || wget -q -T 5 -O - http://169.254.169.254/latest/meta-data/network/interfaces/macs/ 2>&1"); err == nil {
		t.Logf("metadata lists the MACs (lagging):\n%s", out)
	}
	testenv.Eventually(t, 60*time.Second, func() error { return agreesWithEC2(t, a) })
}

// TestAgentShrink: with WARM_IP_TARGET=2, a short cooldown and ENI age,
// after 14 pods go the second ENI is detached and deleted in EC2 and the
// primary ENI's surplus addresses are released until 2 are free. A leaked
// ENI (available, tagged for this node, created an hour ago) is deleted by
// the sweep; one tagged for another node and one marked vpcnet:no-manage are
// left alone.
func TestAgentShrink(t *testing.T) {
	v := localvpctest.Up(t, naTag+"s", "--instances", "1", "--instance-type", "m5.large")
	inst := v.Instances[0].ID
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"WARM_IP_TARGET=2", "IP_COOLDOWN_PERIOD=2s", "VPCNET_MIN_ENI_AGE=1s"})...)
	testenv.Eventually(t, 60*time.Second, func() error {
		if r := a.report(); r.Totals.Free != 2 || r.Totals.Addresses != 2 {
			return fmt.Errorf("pool %+v, want 2 addresses, both free", r.Totals)
		}
		return nil
	})
	for i := 0; i < 14; i++ {
		a.mustAdd(fmt.Sprintf("shr%02d", i))
	}
	enis := instanceENIs(t, v, inst)
	if len(enis) != 2 {
		t.Fatalf("14 pods on %d ENIs, want 2", len(enis))
	}
	second := enis[1].ID

	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	leaked := createENI(t, v, map[string]string{node.TagNode: inst, node.TagCreatedAt: old})
	otherNode := createENI(t, v, map[string]string{node.TagNode: "i-0123456789abcdef0", node.TagCreatedAt: old})
	noManage := createENI(t, v, map[string]string{node.TagNode: inst, node.TagCreatedAt: old, node.TagNoManage: "true"})

	for i := 0; i < 14; i++ {
		a.del(fmt.Sprintf("shr%02d", i))
	}
	testenv.Eventually(t, 2*time.Minute, func() error {
		enis := instanceENIs(t, v, inst)
		if len(enis) != 1 || len(enis[0].Secondary) != 2 {
			return fmt.Errorf("EC2: %+v, want the primary ENI alone with 2 secondary addresses", enis)
		}
		if r := a.report(); r.Totals.Free != 2 || r.Totals.Addresses != 2 {
			return fmt.Errorf("pool %+v", r.Totals)
		}
		return agreesWithEC2(t, a)
	})
	if exists(t, v, second) {
		t.Errorf("ENI %s was detached but not deleted", second)
	}
	testenv.Eventually(t, time.Minute, func() error {
		if exists(t, v, leaked) {
			return fmt.Errorf("leaked ENI %s still exists", leaked)
		}
		return nil
	})
	for _, id := range []string{otherNode, noManage} {
		if !exists(t, v, id) {
			t.Errorf("the sweep deleted %s, which is not its to delete", id)
		}
	}
}

func createENI(t *testing.T, v *localvpctest.VPC, tags map[string]string) string {
	t.Helper()
	var ts []ec2types.Tag
	for k, val := range tags {
		ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(val)})
	}
	out, err := v.EC2().CreateNetworkInterface(context.Background(), &ec2.CreateNetworkInterfaceInput{
		SubnetId:          aws.String(v.Instances[0].SubnetID),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: ts}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	t.Cleanup(func() {
		_, _ = v.EC2().DeleteNetworkInterface(context.Background(), &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
	})
	return id
}

func exists(t *testing.T, v *localvpctest.VPC, eniID string) bool {
	t.Helper()
	for _, e := range describeENIs(t, v) {
		if e.ID == eniID {
			return true
		}
	}
	return false
}

// TestAgentPrefixes: with ENABLE_PREFIX_DELEGATION on an m5.large, pods
// get addresses of /28 prefixes EC2 holds on the node's ENIs. In a /27
// subnet, which has no free /28 (its reserved addresses sit in both), EC2
// answers InsufficientCidrBlocks and the agent falls back to single
// secondary addresses: pods still get addresses.
func TestAgentPrefixes(t *testing.T) {
	t.Run("prefixes", func(t *testing.T) {
		v := localvpctest.Up(t, naTag+"p", "--instances", "1", "--instance-type", "m5.large")
		a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"ENABLE_PREFIX_DELEGATION=true"})...)
		rs := collect(a.burst("pfx", 20, 2*time.Minute), 20)
		replies := map[string]*nodeapi.AddNetworkReply{}
		got := map[string]string{}
		for _, r := range rs {
			if r.err != nil {
				t.Fatalf("ADD %s: %v", r.id, r.err)
			}
			replies[r.id], got[r.id] = r.reply, r.reply.GetIpv4Address()
		}
		noDuplicates(t, got)
		var prefixes []netip.Prefix
		for _, e := range instanceENIs(t, v, v.Instances[0].ID) {
			if len(e.Secondary) > 0 {
				t.Errorf("ENI %s holds single addresses %v in prefix mode", e.ID, e.Secondary)
			}
			for _, p := range e.Prefixes {
				prefixes = append(prefixes, netip.MustParsePrefix(p))
			}
		}
		for id, addr := range got {
			if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr(addr)) }) {
				t.Errorf("%s got %s, in none of the node's prefixes %v", id, addr, prefixes)
			}
		}
		heldByEC2(t, v, v.Instances[0].ID, replies)
		testenv.Eventually(t, 60*time.Second, func() error {
			if err := agreesWithEC2(t, a); err != nil {
				return err
			}
			// 20 pods: two /28s used, WARM_PREFIX_TARGET=1 keeps 16 free.
			if r := a.report(); r.Totals.Prefixes != 3 || r.Totals.Free != 28 {
				return fmt.Errorf("pool %+v, want 3 prefixes, 28 free", r.Totals)
			}
			return nil
		})
	})
	t.Run("fallback", func(t *testing.T) {
		v := localvpctest.Up(t, naTag+"q", "--instances", "1", "--instance-type", "m5.large", "--subnets", "10.0.0.0/27")
		a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"ENABLE_PREFIX_DELEGATION=true"})...)
		rs := collect(a.burst("fb", 12, 2*time.Minute), 12)
		replies := map[string]*nodeapi.AddNetworkReply{}
		got := map[string]string{}
		for _, r := range rs {
			if r.err != nil {
				t.Errorf("ADD %s in a subnet without /28s: %v", r.id, r.err)
				continue
			}
			replies[r.id], got[r.id] = r.reply, r.reply.GetIpv4Address()
		}
		noDuplicates(t, got)
		heldByEC2(t, v, v.Instances[0].ID, replies)
		for _, e := range instanceENIs(t, v, v.Instances[0].ID) {
			if len(e.Prefixes) > 0 {
				t.Errorf("ENI %s holds prefixes %v in a /27", e.ID, e.Prefixes)
			}
		}
		r := a.report()
		if !slices.ContainsFunc(r.Decisions, func(d node.DecisionRecord) bool { return strings.Contains(d.Reason, "InsufficientCidrBlocks") }) {
			t.Errorf("no decision names the fallback (InsufficientCidrBlocks): %+v", r.Decisions)
		}
		testenv.Eventually(t, 60*time.Second, func() error { return agreesWithEC2(t, a) })
	})
}

// TestAgentCustomNetworking: with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG and an
// ENI config for the node's zone naming another subnet and a security group
// made for pods, pods' ENIs are created in that subnet with that group and
// pods get their addresses; the primary ENI carries none.
func TestAgentCustomNetworking(t *testing.T) {
	v := localvpctest.Up(t, naTag+"c", "--instances", "1", "--instance-type", "m5.large",
		"--subnets", "10.0.0.0/20@us-east-1a,10.0.16.0/20@us-east-1a")
	inst := v.Instances[0]
	var podSubnet localvpcSubnet
	for _, s := range v.Subnets {
		if s.ID != inst.SubnetID {
			podSubnet = localvpcSubnet{ID: s.ID, CIDR: netip.MustParsePrefix(s.CIDR)}
		}
	}
	sg, err := v.EC2().CreateSecurityGroup(context.Background(), &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("pods"), Description: aws.String("pods of vpcnet's custom networking test"), VpcId: aws.String(v.VPCID)})
	if err != nil {
		t.Fatal(err)
	}
	group := aws.ToString(sg.GroupId)
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true",
		fmt.Sprintf(`VPCNET_ENI_CONFIGS={%q:{"subnet":%q,"securityGroups":[%q]}}`, inst.Zone, podSubnet.ID, group)})...)
	if r := a.report(); r.Limits.MaxPods != 20 {
		t.Errorf("max pods under custom networking on m5.large: %d, want (3-1) x 9 + 2 = 20", r.Limits.MaxPods)
	}
	rs := collect(a.burst("cn", 12, 2*time.Minute), 12)
	replies := map[string]*nodeapi.AddNetworkReply{}
	for _, r := range rs {
		if r.err != nil {
			t.Fatalf("ADD %s: %v", r.id, r.err)
		}
		replies[r.id] = r.reply
		if !podSubnet.CIDR.Contains(netip.MustParseAddr(r.reply.GetIpv4Address())) {
			t.Errorf("%s got %s, outside the pods' subnet %s", r.id, r.reply.GetIpv4Address(), podSubnet.CIDR)
		}
	}
	heldByEC2(t, v, inst.ID, replies)
	for _, e := range instanceENIs(t, v, inst.ID) {
		if e.Device == 0 {
			if len(e.Secondary) > 0 || len(e.Prefixes) > 0 {
				t.Errorf("the primary ENI %s carries pod addresses %v %v", e.ID, e.Secondary, e.Prefixes)
			}
			continue
		}
		if e.Subnet != podSubnet.ID || !slices.Equal(e.Groups, []string{group}) {
			t.Errorf("pod ENI %s in %s with groups %v, want %s with [%s]", e.ID, e.Subnet, e.Groups, podSubnet.ID, group)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() error { return agreesWithEC2(t, a) })
}

type localvpcSubnet struct {
	ID   string
	CIDR netip.Prefix
}

// TestAgentGracefulStop sends SIGTERM while ADDs wait for a new ENI (its
// attach takes 3 s): the ADDs in flight finish with addresses and the
// agent exits (the harness fails a stop that takes 30 s).
func TestAgentGracefulStop(t *testing.T) {
	v := localvpctest.Up(t, naTag+"g", "--instances", "1", "--instance-type", "m5.large",
		"--faults", `{"attachDelay":"3s"}`)
	a := startAgent(t, v, 1, t.TempDir(), "VPCNET_ADD_WAIT=30s")
	testenv.Eventually(t, 60*time.Second, func() error {
		if r := a.report(); r.Totals.Free != 9 {
			return fmt.Errorf("pool %+v", r.Totals)
		}
		return nil
	})
	ch := a.burst("term", 12, 2*time.Minute)
	var rs []addResult
	for len(rs) < 9 {
		rs = append(rs, <-ch)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.stop() }()
	rs = append(rs, collect(ch, 12-len(rs))...)
	wg.Wait()
	for _, r := range rs {
		if r.err != nil {
			t.Errorf("ADD %s in flight at SIGTERM: %v", r.id, r.err)
		}
	}
	// Stopped: the probe fails (the DaemonSet's liveness check), and the
	// conflist stays (pods keep running; the next vpcnetd serves them).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodeapi.Probe(ctx, filepath.Join(a.dir, "vpcnetd.sock")); err == nil {
		t.Error("probe of a stopped vpcnetd succeeded")
	}
	if _, err := os.Stat(a.conflistPath()); err != nil {
		t.Errorf("conflist after a graceful stop: %v", err)
	}
}

// TestAgentStopAfterFailedAttachSetup: EC2 attaches new ENIs but every
// ModifyNetworkInterfaceAttribute (DeleteOnTermination) fails. The ENI is
// attached all the same: pods still get its addresses, the agent's view
// agrees with EC2, and SIGTERM stops the agent.
func TestAgentStopAfterFailedAttachSetup(t *testing.T) {
	v := localvpctest.Up(t, naTag+"a", "--instances", "1", "--instance-type", "m5.large")
	setFaults(t, v, `{"actions":{"ModifyNetworkInterfaceAttribute":{"errorRate":1,"errorCode":"InternalError"}}}`)
	a := startAgent(t, v, 1, t.TempDir(), env(fastSweep, []string{"VPCNET_ADD_WAIT=30s"})...)
	rs := collect(a.burst("mod", 12, 2*time.Minute), 12)
	for _, r := range rs {
		if r.err != nil {
			t.Errorf("ADD %s: %v", r.id, r.err)
		}
	}
	testenv.Eventually(t, 60*time.Second, func() error { return agreesWithEC2(t, a) })
	a.stop()
}
