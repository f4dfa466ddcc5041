package ec2api

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// awsCLI runs Debian's AWS CLI v2 (botocore, an independent client) against
// the local VPC, with nothing of the machine's configuration.
type awsCLI struct {
	path string
	env  []string
	url  string
}

func newAWSCLI(t *testing.T, c *cloud) *awsCLI {
	t.Helper()
	path := testenv.Tool(t, "/usr/bin/aws")
	dir := t.TempDir()
	config, creds := filepath.Join(dir, "config"), filepath.Join(dir, "credentials")
	for _, f := range []string{config, creds} {
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := c.model.RootCredentials()
	return &awsCLI{path: path, url: c.server.URL, env: []string{
		"PATH=/usr/bin:/bin", "HOME=" + dir, "LANG=C.UTF-8",
		"AWS_CONFIG_FILE=" + config, "AWS_SHARED_CREDENTIALS_FILE=" + creds,
		"AWS_ACCESS_KEY_ID=" + root.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + root.SecretAccessKey,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=",
		"AWS_MAX_ATTEMPTS=1",
	}}
}

// run returns the parsed JSON output, or fails the test.
func (a *awsCLI) run(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out, stderr, err := a.exec(args...)
	if err != nil {
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	var v map[string]any
	if strings.TrimSpace(out) == "" {
		return v
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("aws %s printed non-JSON %q: %v", strings.Join(args, " "), out, err)
	}
	return v
}

func (a *awsCLI) exec(args ...string) (string, string, error) {
	cmd := exec.Command(a.path, append([]string{"ec2", "--endpoint-url", a.url, "--output", "json"}, args...)...)
	cmd.Env = a.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// field walks a JSON document: field(v, "Reservations", 0, "Instances").
func field(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %v is not an object", p, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: %v is not a list that long", p, v)
			}
			v = l[k]
		}
	}
	return v
}

func TestAWSCLI(t *testing.T) {
	c := newCloud(t, Config{})
	cli := newAWSCLI(t, c)

	inst := cli.run(t, "describe-instances", "--instance-ids", c.instance.ID)
	if got := field(t, inst, "Reservations", 0, "Instances", 0, "NetworkInterfaces", 0, "Attachment", "DeviceIndex"); got != float64(0) {
		t.Errorf("primary ENI device index %v", got)
	}
	if got := field(t, inst, "Reservations", 0, "Instances", 0, "State", "Name"); got != "running" {
		t.Errorf("instance state %v", got)
	}

	created := cli.run(t, "create-network-interface", "--subnet-id", c.subnet.ID, "--description", "cli eni",
		"--tag-specifications", "ResourceType=network-interface,Tags=[{Key=owner,Value=cli}]")
	eni := field(t, created, "NetworkInterface", "NetworkInterfaceId").(string)
	if got := field(t, created, "NetworkInterface", "TagSet", 0, "Value"); got != "cli" {
		t.Errorf("tag from create: %v", got)
	}

	att := cli.run(t, "attach-network-interface", "--network-interface-id", eni, "--instance-id", c.instance.ID, "--device-index", "1")
	attachment := field(t, att, "AttachmentId").(string)
	if err := c.model.CompleteAttach(attachment); err != nil {
		t.Fatal(err)
	}

	assigned := cli.run(t, "assign-private-ip-addresses", "--network-interface-id", eni, "--secondary-private-ip-address-count", "2")
	if l, _ := field(t, assigned, "AssignedPrivateIpAddresses").([]any); len(l) != 2 {
		t.Errorf("assigned %v", assigned)
	}
	cli.run(t, "create-tags", "--resources", eni, "--tags", "Key=vpcnet:task,Value=t1")

	found := cli.run(t, "describe-network-interfaces", "--filters",
		"Name=attachment.instance-id,Values="+c.instance.ID, "Name=tag:vpcnet:task,Values=t1")
	if l, _ := field(t, found, "NetworkInterfaces").([]any); len(l) != 1 || field(t, l[0], "NetworkInterfaceId") != eni {
		t.Fatalf("filtered describe: %v", found)
	}
	if l, _ := field(t, found, "NetworkInterfaces", 0, "PrivateIpAddresses").([]any); len(l) != 3 {
		t.Errorf("addresses of the ENI: %v", l)
	}
	if got := field(t, found, "NetworkInterfaces", 0, "Attachment", "Status"); got != "attached" {
		t.Errorf("attachment status %v", got)
	}

	cli.run(t, "detach-network-interface", "--attachment-id", attachment)
	if err := c.model.CompleteDetach(attachment); err != nil {
		t.Fatal(err)
	}
	cli.run(t, "delete-network-interface", "--network-interface-id", eni)

	_, stderr, err := cli.exec("delete-network-interface", "--network-interface-id", eni)
	if err == nil || !strings.Contains(stderr, "(InvalidNetworkInterfaceID.NotFound)") {
		t.Fatalf("deleting a deleted ENI: %v %s", err, stderr)
	}
}
