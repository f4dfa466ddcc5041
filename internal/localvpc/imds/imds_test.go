package imds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// directory maps the source addresses of the tests' clients to instances.
// Loopback stands in for the VPC datapath: each instance's requests leave
// from its own address in 127/8, and the handler sees that address as the
// remote address, as the metadata service sees an ENI's address on EC2.
type directory map[netip.Addr]Instance

func (d directory) Lookup(a netip.Addr) (Instance, bool) {
	inst, ok := d[a]
	return inst, ok
}

// Source addresses of the tests' instances.
const (
	addrA       = "127.0.0.2"
	addrB       = "127.0.0.3"
	addrUnknown = "127.0.0.4"
)

// testLog sends the handler's log to the test's log, shown on failure.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newServer(t *testing.T, dir directory, opts Options) *httptest.Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := httptest.NewServer(New(dir, opts))
	t.Cleanup(srv.Close)
	return srv
}

// clientFrom returns an HTTP client whose connections leave from src.
func clientFrom(t *testing.T, src string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// sdkClient is the AWS SDK's IMDS client, as code on an instance uses it,
// pointed at srv and speaking from src.
func sdkClient(t *testing.T, srv *httptest.Server, src string) *imds.Client {
	return imds.New(imds.Options{Endpoint: srv.URL, HTTPClient: clientFrom(t, src)})
}

func getMetadata(t *testing.T, c *imds.Client, path string) (string, error) {
	t.Helper()
	out, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	return string(b), err
}

func httpStatus(err error) int {
	var s interface{ HTTPStatusCode() int }
	if errors.As(err, &s) {
		return s.HTTPStatusCode()
	}
	return 0
}

// TestSDKClient reads the tree through the AWS SDK's IMDS client, the way
// vpcnet's agents and plugins do on an instance.
func TestSDKClient(t *testing.T) {
	srv := newServer(t, directory{netip.MustParseAddr(addrA): instanceA}, Options{})
	c := sdkClient(t, srv, addrA)
	ctx := context.Background()
	const eth1 = "network/interfaces/macs/0e:00:00:00:0a:02/"

	for _, tt := range []struct{ path, want string }{
		{"instance-id", "i-0aaaaaaaaaaaaaaa1"},
		{"instance-type", "t3.medium"},
		{"ami-id", "ami-0123456789abcdef0"},
		{"local-ipv4", "10.0.1.5"},
		{"mac", "0e:00:00:00:0a:01"},
		{"placement/availability-zone", "us-east-1a"},
		{"placement/region", "us-east-1"},
		{"network/interfaces/macs/", "0e:00:00:00:0a:01/\n0e:00:00:00:0a:02/"},
		{eth1 + "device-number", "1"},
		{eth1 + "local-ipv4s", "10.0.2.7\n10.0.2.8\n10.0.2.9"},
		{eth1 + "ipv4-prefix", "10.0.2.32/28"},
		{eth1 + "ipv6s", "2600:1f18::7\n2600:1f18::8"},
		{eth1 + "subnet-ipv4-cidr-block", "10.0.2.0/24"},
		{eth1 + "vpc-ipv4-cidr-blocks", "10.0.0.0/16\n100.64.0.0/16"},
		{eth1 + "security-group-ids", "sg-0aaaaaaaaaaaaaaa1"},
		{"iam/security-credentials/", "node-role"},
	} {
		got, err := getMetadata(t, c, tt.path)
		if err != nil || got != tt.want {
			t.Errorf("GetMetadata(%s) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}

	// An ENI without IPv6 has no ipv6s: a 404, which agents read as "none".
	if _, err := getMetadata(t, c, "network/interfaces/macs/0e:00:00:00:0a:01/ipv6s"); httpStatus(err) != http.StatusNotFound {
		t.Errorf("ipv6s of an ENI without IPv6: err %v, want a 404", err)
	}

	region, err := c.GetRegion(ctx, nil)
	if err != nil || region.Region != "us-east-1" {
		t.Errorf("GetRegion = %+v, %v; want us-east-1", region, err)
	}
	doc, err := c.GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	if doc.InstanceID != instanceA.ID || doc.AccountID != "123456789012" || doc.PrivateIP != "10.0.1.5" ||
		doc.ImageID != instanceA.AMIID || doc.InstanceType != "t3.medium" || doc.AvailabilityZone != "us-east-1a" ||
		doc.Architecture != "x86_64" || !doc.PendingTime.Equal(launch) || doc.Version != "2017-09-30" {
		t.Errorf("identity document = %+v", doc.InstanceIdentityDocument)
	}
	info, err := c.GetIAMInfo(ctx, nil)
	if err != nil || info.InstanceProfileArn != "arn:aws:iam::123456789012:instance-profile/node-role" ||
		info.InstanceProfileID != "AIPAEXAMPLEPROFILE01" || !info.LastUpdated.Equal(launch) {
		t.Errorf("GetIAMInfo = %+v, %v", info, err)
	}
	dyn, err := c.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: "instance-identity/"})
	if err != nil {
		t.Errorf("GetDynamicData: %v", err)
	} else {
		b, _ := io.ReadAll(dyn.Content)
		dyn.Content.Close()
		if string(b) != "document" {
			t.Errorf("dynamic/instance-identity/ = %q", b)
		}
	}
	if _, err := c.GetUserData(ctx, nil); httpStatus(err) != http.StatusNotFound {
		t.Errorf("GetUserData: err %v, want a 404", err)
	}
}

// clock is a test-controlled time for token expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// header builds request headers from name, value pairs.
func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

type reply struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, method, url string, h http.Header) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	if req.Header == nil {
		req.Header = http.Header{}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// TestIMDSv2 drives the token protocol with plain HTTP, as curl on an
// instance would: issue, use, expiry, and the refusals around them.
func TestIMDSv2(t *testing.T) {
	required := instanceB
	required.HTTPTokensRequired = true
	clk := newClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	srv := newServer(t, directory{
		netip.MustParseAddr(addrA): instanceA, // IMDSv1 allowed
		netip.MustParseAddr(addrB): required,  // IMDSv2 only
	}, Options{Now: clk.Now})
	a, b := clientFrom(t, addrA), clientFrom(t, addrB)
	idURL := srv.URL + "/latest/meta-data/instance-id"
	tokenURL := srv.URL + tokenPath

	t.Run("IMDSv1 where allowed", func(t *testing.T) {
		if r := do(t, a, "GET", idURL, nil); r.status != 200 || r.body != instanceA.ID {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	})
	t.Run("IMDSv1 where tokens are required", func(t *testing.T) {
		if r := do(t, b, "GET", idURL, nil); r.status != 401 {
			t.Fatalf("got %d %q, want 401", r.status, r.body)
		}
	})
	t.Run("token issued and used", func(t *testing.T) {
		r := do(t, b, "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "21600"))
		if r.status != 200 || r.body == "" || r.header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "21600" {
			t.Fatalf("token reply %d %v %q", r.status, r.header, r.body)
		}
		if got := do(t, b, "GET", idURL, header("X-aws-ec2-metadata-token", r.body)); got.status != 200 || got.body != required.ID {
			t.Fatalf("GET with token: %d %q", got.status, got.body)
		}
	})
	t.Run("token expires", func(t *testing.T) {
		r := do(t, b, "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "1"))
		if r.status != 200 {
			t.Fatalf("token reply %d", r.status)
		}
		withToken := header("X-aws-ec2-metadata-token", r.body)
		clk.Add(999 * time.Millisecond)
		if got := do(t, b, "GET", idURL, withToken); got.status != 200 {
			t.Fatalf("GET before expiry: %d", got.status)
		}
		clk.Add(time.Millisecond)
		if got := do(t, b, "GET", idURL, withToken); got.status != 401 {
			t.Fatalf("GET at expiry: %d, want 401", got.status)
		}
	})
	t.Run("invalid token refused even where IMDSv1 is allowed", func(t *testing.T) {
		if r := do(t, a, "GET", idURL, header("X-aws-ec2-metadata-token", "AQAEAFakeToken==")); r.status != 401 {
			t.Fatalf("got %d, want 401", r.status)
		}
	})
	for _, tt := range []struct {
		name   string
		method string
		url    string
		h      http.Header
		want   int
	}{
		{"TTL missing", "PUT", tokenURL, nil, 400},
		{"TTL zero", "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "0"), 400},
		{"TTL above six hours", "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "21601"), 400},
		{"TTL not a number", "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "ten"), 400},
		{"token through a proxy", "PUT", tokenURL, header("X-aws-ec2-metadata-token-ttl-seconds", "60", "X-Forwarded-For", "10.0.0.9"), 403},
		{"GET of the token path", "GET", tokenURL, nil, 405},
		{"POST of metadata", "POST", idURL, nil, 405},
		{"PUT of metadata", "PUT", idURL, header("X-aws-ec2-metadata-token-ttl-seconds", "60"), 405},
		{"unknown path", "GET", srv.URL + "/latest/meta-data/no-such-thing", nil, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, a, tt.method, tt.url, tt.h)
			if r.status != tt.want {
				t.Fatalf("got %d, want %d", r.status, tt.want)
			}
			if !strings.Contains(r.body, "<title>") || r.header.Get("Content-Type") != "text/html" {
				t.Fatalf("error reply is not the service's HTML page: %v %q", r.header, r.body)
			}
		})
	}
	t.Run("SDK client where tokens are required", func(t *testing.T) {
		// The SDK gets a token first, so it works unchanged where IMDSv1 is
		// off. Its token lifetime runs on the real clock, ours on clk: give
		// it a fresh server clock.
		srv := newServer(t, directory{netip.MustParseAddr(addrB): required}, Options{})
		got, err := getMetadata(t, sdkClient(t, srv, addrB), "instance-id")
		if err != nil || got != required.ID {
			t.Fatalf("GetMetadata = %q, %v", got, err)
		}
	})
}

// TestCallerIdentification: every instance sees its own metadata, tokens
// do not travel between instances, and strangers get no answer at all.
func TestCallerIdentification(t *testing.T) {
	srv := newServer(t, directory{
		netip.MustParseAddr(addrA): instanceA,
		netip.MustParseAddr(addrB): instanceB,
	}, Options{})
	ctx := context.Background()
	for _, tt := range []struct {
		src  string
		inst Instance
	}{{addrA, instanceA}, {addrB, instanceB}} {
		c := sdkClient(t, srv, tt.src)
		id, err := getMetadata(t, c, "instance-id")
		if err != nil || id != tt.inst.ID {
			t.Errorf("from %s: instance-id %q, %v; want %s", tt.src, id, err, tt.inst.ID)
		}
		mac, err := getMetadata(t, c, "mac")
		if err != nil || mac != tt.inst.Interfaces[0].MAC {
			t.Errorf("from %s: mac %q, %v; want %s", tt.src, mac, err, tt.inst.Interfaces[0].MAC)
		}
		region, err := c.GetRegion(ctx, nil)
		if err != nil || region.Region != tt.inst.Region {
			t.Errorf("from %s: region %+v, %v; want %s", tt.src, region, err, tt.inst.Region)
		}
	}

	a, b := clientFrom(t, addrA), clientFrom(t, addrB)
	tok := do(t, a, "PUT", srv.URL+tokenPath, header("X-aws-ec2-metadata-token-ttl-seconds", "60"))
	if tok.status != 200 {
		t.Fatalf("token for A: %d", tok.status)
	}
	if r := do(t, a, "GET", srv.URL+"/latest/meta-data/instance-id", header("X-aws-ec2-metadata-token", tok.body)); r.status != 200 {
		t.Fatalf("A with its own token: %d", r.status)
	}
	if r := do(t, b, "GET", srv.URL+"/latest/meta-data/instance-id", header("X-aws-ec2-metadata-token", tok.body)); r.status != 401 {
		t.Fatalf("B with A's token: %d %q, want 401", r.status, r.body)
	}

	resp, err := clientFrom(t, addrUnknown).Get(srv.URL + "/latest/meta-data/instance-id")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a caller no instance owns got HTTP %d; want the connection dropped", resp.StatusCode)
	}
}

// TestCallerAddrOption: a server that does not see the instance's address
// as the remote address (one behind a relay) names the caller itself.
func TestCallerAddrOption(t *testing.T) {
	srv := newServer(t, directory{netip.MustParseAddr("10.1.1.9"): instanceB}, Options{
		CallerAddr: func(*http.Request) (netip.Addr, bool) { return netip.MustParseAddr("10.1.1.9"), true },
	})
	if r := do(t, http.DefaultClient, "GET", srv.URL+"/latest/meta-data/instance-id", nil); r.status != 200 || r.body != instanceB.ID {
		t.Fatalf("got %d %q, want %s", r.status, r.body, instanceB.ID)
	}
}
