package ec2api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/vpcnet/vpcnet/internal/localvpc/sigv4"
	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// cloud is a local VPC served over HTTP on 127.0.0.1: the model, the
// handler, and what the server saw.
type cloud struct {
	model    *vpc.Model
	handler  *Handler
	server   *httptest.Server
	vpc      vpc.VPC
	subnet   vpc.Subnet
	subnetB  vpc.Subnet
	instance vpc.Instance
	statuses serverStats
}

// serverStats counts the responses the server sent, and the throttled ones.
type serverStats struct{ throttled, total atomic.Int64 }

// sigv4Auth adapts the sigv4 package to the handler, with the model's keys,
// as the control plane does.
func sigv4Auth(m *vpc.Model) Authenticator {
	return AuthenticatorFunc(func(r *http.Request, body []byte) (string, error) {
		id, e := sigv4.Verify(r, body, time.Now(), func(accessKeyID string) (sigv4.Credentials, bool) {
			k, ok := m.ResolveAccessKey(accessKeyID)
			if !ok || k.Expired {
				return sigv4.Credentials{}, false
			}
			return sigv4.Credentials{AccessKeyID: accessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}, true
		})
		if e != nil {
			return "", &vpc.Error{Code: e.Code, Message: e.Message}
		}
		k, _ := m.ResolveAccessKey(id)
		return k.Principal, nil
	})
}

func newCloud(t testing.TB, cfg Config) *cloud {
	t.Helper()
	return newCloudAt(t, t.TempDir(), cfg)
}

// newCloudAt keeps the state in dir; "" keeps it in memory only.
func newCloudAt(t testing.TB, dir string, cfg Config) *cloud {
	t.Helper()
	m, err := vpc.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c := &cloud{model: m}
	if c.vpc, err = m.CreateVPC(vpc.VPCSpec{}); err != nil {
		t.Fatal(err)
	}
	if c.subnet, err = m.CreateSubnet(vpc.SubnetSpec{VPCID: c.vpc.ID, CIDR: netip.MustParsePrefix("10.0.1.0/24"), AvailabilityZone: "us-east-1a"}); err != nil {
		t.Fatal(err)
	}
	if c.subnetB, err = m.CreateSubnet(vpc.SubnetSpec{VPCID: c.vpc.ID, CIDR: netip.MustParsePrefix("10.0.2.0/24"), AvailabilityZone: "us-east-1b"}); err != nil {
		t.Fatal(err)
	}
	if c.instance, err = m.RunInstance(vpc.InstanceSpec{Type: "t3.medium", SubnetID: c.subnet.ID, RoleName: "node"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Auth == nil {
		cfg.Auth = sigv4Auth(m)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.handler, err = New(m, cfg); err != nil {
		t.Fatal(err)
	}
	c.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		c.handler.ServeHTTP(rec, r)
		c.statuses.total.Add(1)
		if rec.status == http.StatusServiceUnavailable {
			c.statuses.throttled.Add(1)
		}
	}))
	t.Cleanup(c.server.Close)
	return c
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// client is an aws-sdk-go-v2 EC2 client with the operator's credentials.
func (c *cloud) client(opts ...func(*ec2.Options)) *ec2.Client {
	root := c.model.RootCredentials()
	return c.clientWith(root.AccessKeyID, root.SecretAccessKey, "", opts...)
}

func (c *cloud) clientWith(ak, sk, token string, opts ...func(*ec2.Options)) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(c.server.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(ak, sk, token),
		HTTPClient:   c.server.Client(),
	}, opts...)
}

func noRetries(o *ec2.Options) { o.RetryMaxAttempts = 1 }

// apiCode returns the EC2 error code of an SDK error.
func apiCode(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("not an API error: %v", err)
	}
	return ae.ErrorCode()
}

func wantAPIError(t testing.TB, err error, code string) {
	t.Helper()
	if got := apiCode(t, err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

var ctx = context.Background()

type vpcCreateInput = vpc.CreateNetworkInterfaceInput

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func vpcSubnetSpec(c *cloud, cidr string) vpc.SubnetSpec {
	return vpc.SubnetSpec{VPCID: c.vpc.ID, CIDR: netip.MustParsePrefix(cidr), AvailabilityZone: "us-east-1a"}
}
