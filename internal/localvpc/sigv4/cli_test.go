package sigv4

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/testenv"
)

// awsCLI is one of the two independent AWS CLIs on the machine.
type awsCLI struct {
	name string
	path string
}

// awsCLIs returns the pip AWS CLI v1 (first on PATH as `aws`) and Debian's
// AWS CLI v2. Each signs with its own copy of botocore, so each is a second
// and third implementation of SigV4 next to the Go SDK's.
func awsCLIs(t *testing.T) []awsCLI {
	t.Helper()
	v1 := testenv.Tool(t, "aws")
	if out, err := exec.Command(v1, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "aws-cli/1.") {
		testenv.Skip(t, "`aws` on PATH is not the pip AWS CLI v1: "+strings.TrimSpace(string(out)))
	}
	v2 := testenv.Tool(t, "/usr/bin/aws")
	return []awsCLI{{"cli-v1", v1}, {"cli-v2", v2}}
}

// run runs the CLI with nothing of the caller's AWS configuration: every
// AWS_* variable is dropped and the config and credentials files are empty
// files of this test, so only what env sets can reach it.
func (c awsCLI) run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var environ []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			environ = append(environ, kv)
		}
	}
	environ = append(environ,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "credentials"),
		"AWS_PAGER=",
	)
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Env = environ
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// TestAWSCLIs: both AWS CLIs sign DescribeVpcs in a way Verify accepts with
// the right secret, with and without a session token, and get AuthFailure,
// the code EC2 answers, with a wrong one.
func TestAWSCLIs(t *testing.T) {
	srv, lastVerdict := newVerifyingServer(t, "us-east-1", time.Now)
	tests := []struct {
		name     string
		env      map[string]string
		wantCode string
	}{
		{name: "static credentials", env: map[string]string{
			"AWS_ACCESS_KEY_ID": "AKIDSTATIC", "AWS_SECRET_ACCESS_KEY": "static-secret"}},
		{name: "session credentials", env: map[string]string{
			"AWS_ACCESS_KEY_ID": "ASIASESSION", "AWS_SECRET_ACCESS_KEY": "session-secret", "AWS_SESSION_TOKEN": "session-token-1"}},
		{name: "wrong secret", env: map[string]string{
			"AWS_ACCESS_KEY_ID": "AKIDSTATIC", "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, wantCode: CodeAuthFailure},
		{name: "wrong session token", env: map[string]string{
			"AWS_ACCESS_KEY_ID": "ASIASESSION", "AWS_SECRET_ACCESS_KEY": "session-secret", "AWS_SESSION_TOKEN": "session-token-2"}, wantCode: CodeAuthFailure},
	}
	for _, cli := range awsCLIs(t) {
		for _, tt := range tests {
			t.Run(cli.name+"/"+tt.name, func(t *testing.T) {
				stdout, stderr, err := cli.run(t, tt.env,
					"ec2", "describe-vpcs", "--endpoint-url", srv.URL, "--region", "us-east-1", "--output", "json")
				v := lastVerdict()
				if tt.wantCode == "" {
					if err != nil || v.err != nil {
						t.Fatalf("refused: %v, verdict %v\nstdout:\n%s\nstderr:\n%s", err, v.err, stdout, stderr)
					}
					if !strings.Contains(stdout, `"Vpcs"`) {
						t.Fatalf("no Vpcs in the output:\n%s", stdout)
					}
					if v.accessKeyID != tt.env["AWS_ACCESS_KEY_ID"] {
						t.Fatalf("verified as %q, want %q", v.accessKeyID, tt.env["AWS_ACCESS_KEY_ID"])
					}
					return
				}
				if err == nil {
					t.Fatalf("the CLI succeeded; want %s\nstdout:\n%s", tt.wantCode, stdout)
				}
				if !strings.Contains(stderr, "("+tt.wantCode+")") {
					t.Fatalf("stderr does not name %s:\n%s", tt.wantCode, stderr)
				}
			})
		}
	}
}
