package imds

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc/sigv4"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// withRole returns inst with role credentials that are valid now, issued
// under accessKeyID.
func withRole(inst Instance, role, accessKeyID string) Instance {
	now := time.Now().UTC().Truncate(time.Second)
	inst.RoleName = role
	inst.Credentials = Credentials{
		AccessKeyID:     accessKeyID,
		SecretAccessKey: "secret-of-" + accessKeyID,
		Token:           "token-of-" + accessKeyID,
		LastUpdated:     now,
		Expiration:      now.Add(6 * time.Hour),
	}
	return inst
}

// ec2Endpoint is a minimal EC2 Query API: it authenticates every request
// with sigv4 against the credentials it issued and answers DescribeVpcs
// with no VPCs. It records who signed the last request.
type ec2Endpoint struct {
	*httptest.Server
	mu   sync.Mutex
	last string
	err  *sigv4.Error
}

func newEC2Endpoint(t *testing.T, region string, issued ...Credentials) *ec2Endpoint {
	t.Helper()
	keys := map[string]sigv4.Credentials{}
	for _, c := range issued {
		keys[c.AccessKeyID] = sigv4.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}
	}
	e := &ec2Endpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, verr := sigv4.VerifyInRegion(r, body, time.Now(), region, func(id string) (sigv4.Credentials, bool) {
			c, ok := keys[id]
			return c, ok
		})
		e.mu.Lock()
		e.last, e.err = id, verr
		e.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		if verr != nil {
			w.WriteHeader(verr.Status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, verr.Code, verr.Message)
			return
		}
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>
<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>00000000-0000-0000-0000-000000000000</requestId>
    <vpcSet/>
</DescribeVpcsResponse>`)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *ec2Endpoint) verdict() (string, *sigv4.Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last, e.err
}

// awsFreeEnv returns the environment with every AWS_* variable removed and
// AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE pointing at empty files,
// plus extra: nothing of the machine's AWS configuration can leak into a
// client that runs with it.
func awsFreeEnv(t *testing.T, extra map[string]string) []string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "credentials"))
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// setProcessEnv makes env this test's process environment, restored when
// the test ends.
func setProcessEnv(t *testing.T, env []string) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		t.Setenv(k, "") // registers the restore
		os.Unsetenv(k)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// TestDefaultCredentialChain: the SDK's default configuration, with nothing
// configured but the metadata endpoint, finds the region and the role
// credentials of the instance it runs on, and its EC2 client signs with
// them so that sigv4 verification accepts the request.
func TestDefaultCredentialChain(t *testing.T) {
	optional := withRole(instanceA, "node-role", "ASIACHAINA")
	required := withRole(instanceB, "tokens-only-role", "ASIACHAINB")
	required.HTTPTokensRequired = true

	for _, tt := range []struct {
		name string
		inst Instance
	}{
		{"IMDSv1 allowed", optional},
		{"IMDSv2 required", required},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The SDK's own clients connect from 127.0.0.1: that is the
			// instance's address here, as it would be its ENI's on EC2.
			srv := newServer(t, directory{netip.MustParseAddr("127.0.0.1"): tt.inst}, Options{})
			setProcessEnv(t, awsFreeEnv(t, map[string]string{"AWS_EC2_METADATA_SERVICE_ENDPOINT": srv.URL}))
			ctx := context.Background()
			cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
			if err != nil {
				t.Fatalf("LoadDefaultConfig: %v", err)
			}
			if cfg.Region != tt.inst.Region {
				t.Errorf("region %q, want %q", cfg.Region, tt.inst.Region)
			}
			creds, err := cfg.Credentials.Retrieve(ctx)
			if err != nil {
				t.Fatalf("retrieve credentials: %v", err)
			}
			want := tt.inst.Credentials
			if creds.Source != ec2rolecreds.ProviderName || creds.AccessKeyID != want.AccessKeyID ||
				creds.SecretAccessKey != want.SecretAccessKey || creds.SessionToken != want.Token || !creds.CanExpire {
				t.Fatalf("credentials %+v, want the role credentials %+v", creds, want)
			}

			ec2srv := newEC2Endpoint(t, tt.inst.Region, tt.inst.Credentials)
			client := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(ec2srv.URL) })
			if _, err := client.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
				t.Fatalf("DescribeVpcs: %v", err)
			}
			if id, verr := ec2srv.verdict(); verr != nil || id != want.AccessKeyID {
				t.Fatalf("EC2 verified %q, %v; want %s", id, verr, want.AccessKeyID)
			}
		})
	}
}

// TestAWSCLIUsesInstanceRole: the pip AWS CLI v1 and Debian's AWS CLI v2,
// given no credentials but the metadata endpoint, take their credentials
// from this service, over IMDSv2 since the instance requires it, and sign EC2 requests that sigv4 accepts. When the metadata
// service hands out credentials EC2 never issued, EC2 refuses them: the
// CLI really used what the metadata service gave it.
func TestAWSCLIUsesInstanceRole(t *testing.T) {
	v1 := testenv.Tool(t, "aws")
	if out, err := exec.Command(v1, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "aws-cli/1.") {
		testenv.Skip(t, "`aws` on PATH is not the pip AWS CLI v1: "+strings.TrimSpace(string(out)))
	}
	v2 := testenv.Tool(t, "/usr/bin/aws")

	// The CLIs cannot choose their source address: they reach the service
	// from 127.0.0.1, so that is the instance's address here.
	inst := withRole(instanceB, "cli-role", "ASIACLIROLE")
	inst.HTTPTokensRequired = true
	rogue := withRole(instanceB, "cli-role", "ASIAROGUE")
	rogue.HTTPTokensRequired = true
	ec2srv := newEC2Endpoint(t, inst.Region, inst.Credentials)

	// Neither CLI looks up its region in the metadata service unless told
	// to (botocore does only for defaults_mode auto), so it is given.
	for _, cli := range []struct{ name, path string }{{"cli-v1", v1}, {"cli-v2", v2}} {
		for _, tt := range []struct {
			name     string
			served   Instance
			wantCode string
		}{
			{"issued role credentials", inst, ""},
			{"credentials EC2 never issued", rogue, sigv4.CodeAuthFailure},
		} {
			t.Run(cli.name+"/"+tt.name, func(t *testing.T) {
				srv := newServer(t, directory{netip.MustParseAddr("127.0.0.1"): tt.served}, Options{})
				env := awsFreeEnv(t, map[string]string{
					"AWS_EC2_METADATA_SERVICE_ENDPOINT": srv.URL + "/",
					"AWS_PAGER":                         "",
				})
				args := []string{"ec2", "describe-vpcs", "--endpoint-url", ec2srv.URL, "--region", inst.Region, "--output", "json"}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, cli.path, args...)
				cmd.Env = env
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				id, verr := ec2srv.verdict()
				if tt.wantCode == "" {
					if err != nil || verr != nil || id != inst.Credentials.AccessKeyID {
						t.Fatalf("run: %v; EC2 verified %q, %v; want %s\nstdout:\n%s\nstderr:\n%s",
							err, id, verr, inst.Credentials.AccessKeyID, stdout.String(), stderr.String())
					}
					if !strings.Contains(stdout.String(), `"Vpcs"`) {
						t.Fatalf("no Vpcs in the output:\n%s", stdout.String())
					}
					return
				}
				if err == nil || !strings.Contains(stderr.String(), "("+tt.wantCode+")") {
					t.Fatalf("run: %v; want %s\nstderr:\n%s", err, tt.wantCode, stderr.String())
				}
			})
		}
	}
}
