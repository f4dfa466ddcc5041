package localvpc_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/vishvananda/netlink"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// onInstance runs a program with `vpcnet local exec`, as an operator runs
// one on an instance: from a shell with the operator's AWS configuration,
// in the environment and in ~/.aws, none of which may reach the instance.
func onInstance(t *testing.T, v *localvpctest.VPC, instance string, extraEnv []string, argv ...string) (string, error) {
	t.Helper()
	home := operatorHome(t)
	cmd := v.Command(append([]string{"local", "exec", "--name", v.Name, instance, "--"}, argv...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8",
		"AWS_ACCESS_KEY_ID=AKIAOPERATORENV00000", "AWS_SECRET_ACCESS_KEY=operator-secret", "AWS_REGION=ap-south-1"}, extraEnv...)
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderrOf(err))
	}
	return string(out), nil
}

// operatorHome is a home directory with an operator's ~/.aws: a default
// profile with keys and a region of its own.
func operatorHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	if err := os.Mkdir(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"config":      "[default]\nregion = sa-east-1\n",
		"credentials": "[default]\naws_access_key_id = AKIAOPERATORFILE0000\naws_secret_access_key = operator-file-secret\n",
	} {
		if err := os.WriteFile(filepath.Join(home, ".aws", name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

// TestSDKDefaultChainOnInstance runs a Go program built with the AWS SDK on
// each instance through `vpcnet local exec`, from an operator's shell: the
// SDK's default chain must find credentials and region in instance
// metadata, not in the operator's environment or files, and reach EC2
// through the endpoint inside the VPC (nothing else is reachable from an
// instance).
func TestSDKDefaultChainOnInstance(t *testing.T) {
	v := up(t, tagMetadata)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range v.Instances {
		out, err := onInstance(t, v, in.ID, []string{envProgram + "=sdk-default-chain"}, self)
		if err != nil {
			t.Fatalf("SDK program on instance %d: %v\n%s", i+1, err, out)
		}
		var r chainReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("SDK program printed %q: %v", out, err)
		}
		if r.Region != v.Region || r.CredSource != ec2rolecreds.ProviderName || !r.HasToken || r.AccessKeyID == v.AccessKeyID {
			t.Errorf("instance %d: region %q, credentials from %q (session token %v, key %s); want %s from %s with a session token, not the operator's key",
				i+1, r.Region, r.CredSource, r.HasToken, r.AccessKeyID, v.Region, ec2rolecreds.ProviderName)
		}
		if r.Endpoint != v.VPCEndpoint {
			t.Errorf("instance %d: EC2 endpoint %q, want the VPC's %s", i+1, r.Endpoint, v.VPCEndpoint)
		}
		if r.InstanceID != in.ID {
			t.Errorf("instance %d: metadata says it is %q, want %s", i+1, r.InstanceID, in.ID)
		}
		if !slices.Contains(r.InstanceIDs, v.Instances[0].ID) || !slices.Contains(r.InstanceIDs, v.Instances[1].ID) {
			t.Errorf("instance %d: DescribeInstances returned %v", i+1, r.InstanceIDs)
		}
		// The key the SDK found is the one metadata serves this instance.
		var creds struct {
			AccessKeyID string `json:"AccessKeyId"`
		}
		if err := json.Unmarshal([]byte(imdsGet(t, in.Namespace, "iam/security-credentials/"+localvpc.InstanceRole)), &creds); err != nil {
			t.Fatal(err)
		}
		if creds.AccessKeyID != r.AccessKeyID {
			t.Errorf("instance %d: SDK used key %s, metadata serves %s", i+1, r.AccessKeyID, creds.AccessKeyID)
		}
	}
}

// TestCLIv1OnInstance runs the pip AWS CLI (v1, first on PATH) on an
// instance: credentials from instance metadata, the endpoint from
// AWS_ENDPOINT_URL_EC2 as `vpcnet local exec` sets it.
func TestCLIv1OnInstance(t *testing.T) {
	testenv.Tool(t, "aws")
	v := up(t, tagMetadata)
	inst := v.Instances[1]
	out, err := onInstance(t, v, "2", nil, "aws", "ec2", "describe-network-interfaces", "--region", v.Region,
		"--output", "json", "--filters", "Name=attachment.instance-id,Values="+inst.ID)
	if err != nil {
		t.Fatalf("aws on instance 2: %v\n%s", err, out)
	}
	var l cliENIs
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("aws printed %q: %v", out, err)
	}
	if len(l.NetworkInterfaces) != 1 || l.NetworkInterfaces[0].PrivateIPAddress != inst.PrivateIP {
		t.Fatalf("ENIs of instance 2 as its own CLI sees them: %+v; want its primary ENI with %s", l, inst.PrivateIP)
	}
	// It found the instance role's key: the one metadata serves.
	var creds struct {
		AccessKeyID string `json:"AccessKeyId"`
	}
	if err := json.Unmarshal([]byte(imdsGet(t, inst.Namespace, "iam/security-credentials/"+localvpc.InstanceRole)), &creds); err != nil {
		t.Fatal(err)
	}
	out, err = onInstance(t, v, "2", nil, "aws", "configure", "list")
	if err != nil {
		t.Fatalf("aws configure list on instance 2: %v\n%s", err, out)
	}
	if !regexp.MustCompile(creds.AccessKeyID[len(creds.AccessKeyID)-4:] + `\s+iam-role`).MatchString(out) {
		t.Errorf("aws configure list on instance 2 does not show the role key ...%s from iam-role:\n%s",
			creds.AccessKeyID[len(creds.AccessKeyID)-4:], out)
	}
}

// TestMetadataAnswersForTheCallersInstance asks the metadata service from
// each instance, and from an ENI of instance 2 moved into a namespace of
// the test's own: the answer is always about the instance the source
// address's ENI is attached to.
func TestMetadataAnswersForTheCallersInstance(t *testing.T) {
	v := up(t, tagMetadata)
	c := v.EC2()
	for i, in := range v.Instances {
		if got := imdsGet(t, in.Namespace, "instance-id"); got != in.ID {
			t.Errorf("instance-id from instance %d: %q, want %s", i+1, got, in.ID)
		}
		if got := imdsGet(t, in.Namespace, "local-ipv4"); got != in.PrivateIP {
			t.Errorf("local-ipv4 from instance %d: %q, want %s", i+1, got, in.PrivateIP)
		}
		if got := imdsGet(t, in.Namespace, "placement/availability-zone"); got != in.Zone {
			t.Errorf("availability zone from instance %d: %q, want %s", i+1, got, in.Zone)
		}
	}

	inst2, subnet2 := v.Instances[1], v.Subnets[1]
	eni := createENI(t, c, subnet2.ID)
	attachENI(t, c, *eni.NetworkInterfaceId, inst2.ID, 1)
	waitAttachment(t, c, *eni.NetworkInterfaceId, "attached")
	dev := waitDevice(t, inst2.Namespace, *eni.MacAddress)

	task := testenv.NewNS(t, nsTag)
	taskNS := testenv.NSName(task)
	var moved netlink.Link
	inNS(t, inst2.Namespace, func() error {
		var err error
		moved, err = netops.MoveLink(dev, task, "eth0")
		return err
	})
	cidr := netip.MustParsePrefix(subnet2.CIDR)
	gw := cidr.Masked().Addr().Next()
	inNS(t, taskNS, func() error {
		if err := netops.LoopbackUp(task); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(moved); err != nil {
			return err
		}
		addr := netip.PrefixFrom(netip.MustParseAddr(*eni.PrivateIpAddress), cidr.Bits())
		if err := netops.AddAddress(moved, addr); err != nil {
			return err
		}
		return netops.AddDefaultRoute(moved, gw)
	})
	if got := imdsGet(t, taskNS, "instance-id"); got != inst2.ID {
		t.Errorf("instance-id asked from instance 2's extra ENI: %q, want %s", got, inst2.ID)
	}
	macPath := "network/interfaces/macs/" + *eni.MacAddress + "/interface-id"
	if got := imdsGet(t, taskNS, macPath); got != *eni.NetworkInterfaceId {
		t.Errorf("%s from the ENI: %q, want %s", macPath, got, *eni.NetworkInterfaceId)
	}
	// Instance 1 has no such interface.
	if body, code := curl(t, v.Instances[0].Namespace, "http://169.254.169.254/latest/meta-data/"+macPath); code != 404 {
		t.Errorf("%s from instance 1: HTTP %d %q, want 404", macPath, code, body)
	}
}

// TestIMDSv2Tokens walks the IMDSv2 session flow with curl: a token PUT,
// GETs carrying it, and the tokens the service must refuse.
func TestIMDSv2Tokens(t *testing.T) {
	v := up(t, tagMetadata)
	ns1, ns2 := v.Instances[0].Namespace, v.Instances[1].Namespace
	const api = "http://169.254.169.254/latest/api/token"
	const idPath = "http://169.254.169.254/latest/meta-data/instance-id"
	token := func(nsName string) string {
		t.Helper()
		tok, code := curl(t, nsName, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", api)
		if code != 200 || tok == "" {
			t.Fatalf("token PUT from %s: HTTP %d %q", nsName, code, tok)
		}
		return tok
	}
	tok1, tok2 := token(ns1), token(ns2)
	if body, code := curl(t, ns1, "-H", "X-aws-ec2-metadata-token: "+tok1, idPath); code != 200 || body != v.Instances[0].ID {
		t.Errorf("GET with instance 1's token from instance 1: HTTP %d %q, want %s", code, body, v.Instances[0].ID)
	}
	if body, code := curl(t, ns2, "-H", "X-aws-ec2-metadata-token: "+tok2, idPath); code != 200 || body != v.Instances[1].ID {
		t.Errorf("GET with instance 2's token from instance 2: HTTP %d %q, want %s", code, body, v.Instances[1].ID)
	}
	if _, code := curl(t, ns2, "-H", "X-aws-ec2-metadata-token: "+tok1, idPath); code != 401 {
		t.Errorf("GET with instance 1's token from instance 2: HTTP %d, want 401", code)
	}
	if _, code := curl(t, ns1, "-H", "X-aws-ec2-metadata-token: "+tok1+"x", idPath); code != 401 {
		t.Errorf("GET with a forged token: HTTP %d, want 401", code)
	}
	if _, code := curl(t, ns1, "-X", "PUT", api); code != 400 {
		t.Errorf("token PUT without a TTL: HTTP %d, want 400", code)
	}
	if _, code := curl(t, ns1, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "-H", "X-Forwarded-For: 10.0.0.9", api); code != 403 {
		t.Errorf("token PUT through a proxy: HTTP %d, want 403", code)
	}
	if _, code := curl(t, ns1, api); code != 405 {
		t.Errorf("token GET: HTTP %d, want 405", code)
	}
}
