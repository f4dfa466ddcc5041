package cloud_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/vpcnet/vpcnet/internal/cloud"
	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

// tag names this package's local VPCs.
const tag = "hc"

// envProgram makes the test binary run one of the programs below instead
// of the tests; the tests start it on an instance, where it talks to
// instance metadata and EC2 as the node agent does.
const envProgram = "VPCNET_CLOUD_TEST_PROGRAM"

func TestMain(m *testing.M) {
	switch p := os.Getenv(envProgram); p {
	case "":
	case "metadata":
		os.Exit(metadataProgram())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envProgram, p)
		os.Exit(2)
	}
	localvpctest.CleanLeftovers(tag)
	localvpctest.CleanLeftovers("cloud") // the tag this package used before
	os.Exit(m.Run())
}

// resultPrefix starts the line on which a program prints its result: the
// rest of its output (SDK warnings) is not JSON.
const resultPrefix = "RESULT "

// metadataReport is what metadataProgram prints.
type metadataReport struct {
	Identity   cloud.Identity
	Interfaces []cloud.InterfaceMetadata
	// ENIIDs lists the instance's ENIs as EC2 reports them to the
	// instance itself (its role, the VPC's endpoint).
	ENIIDs []string
	Error  string
}

// metadataProgram is how the node agent starts on an instance: the SDK
// configuration an instance has (region and credentials from metadata),
// its identity and every ENI from metadata, and one EC2 call.
func metadataProgram() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r metadataReport
	err := func() error {
		cfg, err := cloud.LoadConfig(ctx, cloud.AgentRetryPolicy)
		if err != nil {
			return err
		}
		c := cloud.New(cfg)
		if r.Identity, err = c.Identity(ctx); err != nil {
			return err
		}
		if r.Interfaces, err = c.InterfacesMetadata(ctx); err != nil {
			return err
		}
		enis, err := c.InstanceENIs(ctx, r.Identity.InstanceID)
		for _, e := range enis {
			r.ENIIDs = append(r.ENIIDs, e.ID)
		}
		return err
	}()
	if err != nil {
		r.Error = err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println(resultPrefix + string(b))
	if err != nil {
		return 1
	}
	return 0
}

// onInstance runs metadataProgram on instance n and returns its report.
func onInstance(t *testing.T, v *localvpctest.VPC, n int) metadataReport {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envProgram, "metadata")
	out, err := v.OnInstance(n, self)
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, resultPrefix); ok {
			var r metadataReport
			if jerr := json.Unmarshal([]byte(rest), &r); jerr != nil {
				t.Fatalf("metadata program printed %q: %v", rest, jerr)
			}
			if err != nil || r.Error != "" {
				t.Fatalf("metadata program on instance %d: %v: %s", n, err, r.Error)
			}
			return r
		}
	}
	t.Fatalf("metadata program on instance %d printed no result (%v):\n%s", n, err, out)
	return metadataReport{}
}

// interfaceOf returns the metadata of the ENI with the MAC, if listed.
func (r metadataReport) interfaceOf(mac string) (cloud.InterfaceMetadata, bool) {
	for _, im := range r.Interfaces {
		if im.MAC.String() == mac {
			return im, true
		}
	}
	return cloud.InterfaceMetadata{}, false
}

// newClient returns a client of the operator (root namespace) with a retry
// policy.
func newClient(v *localvpctest.VPC, policy cloud.RetryPolicy) *cloud.Client {
	return cloud.New(aws.Config{
		Region:       v.Region,
		BaseEndpoint: aws.String(v.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(v.AccessKeyID, v.SecretAccessKey, ""),
		Retryer:      policy.NewRetryer,
	})
}

// actionCounter is an HTTP client that counts the EC2 actions sent through
// it: what the tests observe of the traffic, nothing changed.
type actionCounter struct {
	next aws.HTTPClient
	mu   sync.Mutex
	sent map[string]int
}

func (a *actionCounter) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil {
			a.mu.Lock()
			a.sent[form.Get("Action")]++
			a.mu.Unlock()
		}
	}
	return a.next.Do(req)
}

func (a *actionCounter) count(action string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent[action]
}

// countingClient is newClient with its EC2 actions counted.
func countingClient(v *localvpctest.VPC, policy cloud.RetryPolicy) (*cloud.Client, *actionCounter) {
	counter := &actionCounter{next: awshttp.NewBuildableClient(), sent: map[string]int{}}
	return cloud.New(aws.Config{
		Region:       v.Region,
		BaseEndpoint: aws.String(v.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(v.AccessKeyID, v.SecretAccessKey, ""),
		Retryer:      policy.NewRetryer,
		HTTPClient:   counter,
	}), counter
}

// converge bounds every wait for something the local VPC does in the
// background (an attachment, metadata catching up): a bound for a hang, not
// a speed requirement.
const converge = time.Minute

// setFaults replaces the local VPC's faults ("" clears them) and clears
// them when the test ends.
func setFaults(t *testing.T, v *localvpctest.VPC, js string) {
	t.Helper()
	if js == "" {
		v.Vpcnet("local", "faults", "--name", v.Name, "--clear")
		return
	}
	v.Vpcnet("local", "faults", "--name", v.Name, js)
	t.Cleanup(func() { v.Vpcnet("local", "faults", "--name", v.Name, "--clear") })
}

// nth returns the address n after the start of p.
func nth(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
