package sigv4

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The example credentials AWS publishes with its SigV4 test suite and
// documentation examples.
const (
	exampleKeyID  = "AKIDEXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// clock is the endpoint's time, set by the test and read by the server.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestPublishedVectors checks the canonicalisation, key derivation and
// signature against AWS's published SigV4 examples: requests built from the
// wire form, the signature from the published Authorization header. Their
// service is not EC2, so they go through the signature check only.
func TestPublishedVectors(t *testing.T) {
	const suiteScope = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
	tests := []struct {
		name    string
		method  string
		target  string // request target as sent on the wire
		host    string
		headers [][2]string
		body    string
		auth    string
	}{
		{
			name: "get-vanilla", method: "GET", target: "/", host: "example.amazonaws.com",
			headers: [][2]string{{"X-Amz-Date", "20150830T123600Z"}},
			auth:    "AWS4-HMAC-SHA256 " + suiteScope + ", SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
		},
		{
			name: "get-vanilla-query-order-key-case", method: "GET", target: "/?Param2=value2&Param1=value1", host: "example.amazonaws.com",
			headers: [][2]string{{"X-Amz-Date", "20150830T123600Z"}},
			auth:    "AWS4-HMAC-SHA256 " + suiteScope + ", SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
		},
		{
			name: "get-utf8", method: "GET", target: "/\u1234", host: "example.amazonaws.com",
			headers: [][2]string{{"X-Amz-Date", "20150830T123600Z"}},
			auth:    "AWS4-HMAC-SHA256 " + suiteScope + ", SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
		},
		{
			name: "post-vanilla", method: "POST", target: "/", host: "example.amazonaws.com",
			headers: [][2]string{{"X-Amz-Date", "20150830T123600Z"}},
			auth:    "AWS4-HMAC-SHA256 " + suiteScope + ", SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
		},
		{
			name: "post-x-www-form-urlencoded", method: "POST", target: "/", host: "example.amazonaws.com",
			headers: [][2]string{{"Content-Type", "application/x-www-form-urlencoded"}, {"X-Amz-Date", "20150830T123600Z"}},
			body:    "Param1=value1",
			auth:    "AWS4-HMAC-SHA256 " + suiteScope + ", SignedHeaders=content-length;content-type;host;x-amz-date, Signature=fec50118d90ecf934441dd37fb9a49bd7f5adb6450802ca3a0977623bbb7c27f",
		},
		{
			// The worked example of the AWS General Reference (IAM ListUsers).
			name: "iam-list-users", method: "GET", target: "/?Action=ListUsers&Version=2010-05-08", host: "iam.amazonaws.com",
			headers: [][2]string{{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}, {"X-Amz-Date", "20150830T123600Z"}},
			auth:    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", tt.method, tt.target, tt.host)
			for _, h := range tt.headers {
				raw += h[0] + ": " + h[1] + "\r\n"
			}
			if tt.body != "" {
				raw += fmt.Sprintf("Content-Length: %d\r\n", len(tt.body))
			}
			raw += "Authorization: " + tt.auth + "\r\n\r\n" + tt.body
			r, err := http.ReadRequest(bufioReader(raw))
			if err != nil {
				t.Fatalf("read request: %v", err)
			}
			sr, verr := parseSignedRequest(r)
			if verr != nil {
				t.Fatalf("parse: %v", verr)
			}
			if verr := sr.checkSignature(r, []byte(tt.body), exampleSecret); verr != nil {
				t.Fatalf("published signature rejected: %v", verr)
			}
			// The same request signed by someone else's secret must not pass.
			if verr := sr.checkSignature(r, []byte(tt.body), exampleSecret+"x"); verr == nil {
				t.Fatal("signature accepted with a different secret")
			}
		})
	}
}

// TestSigningKey checks the key derivation alone against the signing key
// the AWS General Reference publishes for its IAM example.
func TestSigningKey(t *testing.T) {
	got := hex.EncodeToString(signingKey(exampleSecret, "20150830", "us-east-1", "iam"))
	const want = "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
	if got != want {
		t.Fatalf("signing key = %s, want %s", got, want)
	}
}

func TestCanonicalQuery(t *testing.T) {
	tests := []struct {
		raw       string
		presigned bool
		want      string
	}{
		{"", false, ""},
		{"Action=DescribeVpcs&Version=2016-11-15", false, "Action=DescribeVpcs&Version=2016-11-15"},
		{"b=2&a=1&A=0", false, "A=0&a=1&b=2"},
		{"a=2&a=1", false, "a=1&a=2"},
		{"key", false, "key="},
		{"&&a=1&", false, "a=1"},
		// Decoded, then encoded with SigV4's rules: unreserved kept,
		// everything else (including '/', '+' and '*') percent-encoded.
		{"p=a%2Fb", false, "p=a%2Fb"},
		{"p=a/b", false, "p=a%2Fb"},
		{"p=a+b", false, "p=a%20b"},
		{"p=a%2Bb", false, "p=a%2Bb"},
		{"p=%7e*", false, "p=~%2A"},
		{"p=%e1%88%b4", false, "p=%E1%88%B4"},
		{"p=100%", false, "p=100%25"},
		{"X-Amz-Signature=abc&X-Amz-Date=1", true, "X-Amz-Date=1"},
		{"X-Amz-Signature=abc&X-Amz-Date=1", false, "X-Amz-Date=1&X-Amz-Signature=abc"},
	}
	for _, tt := range tests {
		if got := canonicalQuery(tt.raw, tt.presigned); got != tt.want {
			t.Errorf("canonicalQuery(%q, %v) = %q, want %q", tt.raw, tt.presigned, got, tt.want)
		}
	}
}

func TestCanonicalURIs(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"", []string{"/"}},
		{"/", []string{"/"}},
		{"/a/b", []string{"/a/b"}},
		// Signers encode the wire path once more: '%' becomes %25.
		{"/a%20b", []string{"/a%2520b"}},
		{"/a b", []string{"/a%20b"}},
		{"/~-_.", []string{"/~-_."}},
		// Go SDK form first, then the normalised form botocore signs.
		{"/a/./b/../c", []string{"/a/./b/../c", "/a/c"}},
		{"//a//b/", []string{"//a//b/", "/a/b/"}},
		{"/a/..", []string{"/a/..", "/"}},
	}
	for _, tt := range tests {
		got := canonicalURIs(tt.path)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("canonicalURIs(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestCanonicalHeaderValue(t *testing.T) {
	tests := []struct {
		values []string
		want   string
	}{
		{nil, ""},
		{[]string{"value"}, "value"},
		{[]string{"  a   b  c "}, "a b c"},
		{[]string{"\ta\t b"}, "a b"},
		{[]string{"v1", " v2 "}, "v1,v2"},
	}
	for _, tt := range tests {
		if got := canonicalHeaderValue(tt.values); got != tt.want {
			t.Errorf("canonicalHeaderValue(%q) = %q, want %q", tt.values, got, tt.want)
		}
	}
}

// TestParseErrors: malformed signatures are IncompleteSignature (400),
// no signature at all is what EC2 says to an unsigned request.
func TestParseErrors(t *testing.T) {
	const okCred = "Credential=AKID/20250101/us-east-1/ec2/aws4_request"
	tests := []struct {
		name     string
		auth     []string
		query    string
		date     string
		wantCode string
	}{
		{name: "unsigned", wantCode: CodeMissingParameter},
		{name: "signature v2 scheme", auth: []string{"AWS AKID:c2ln"}, wantCode: CodeIncompleteSignature},
		{name: "sigv4a", auth: []string{"AWS4-ECDSA-P256-SHA256 " + okCred + ", SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "no signature", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host;x-amz-date"}, wantCode: CodeIncompleteSignature},
		{name: "no credential", auth: []string{"AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "component without =", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "short credential", auth: []string{"AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/ec2, SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "bad scope date", auth: []string{"AWS4-HMAC-SHA256 Credential=AKID/2025-01-01/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "bad terminator", auth: []string{"AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/ec2/aws5_request, SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "host not signed", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=x-amz-date, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "no date", date: "-", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "bad date", date: "2025-01-01T00:00:00Z", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "two authorization headers", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host, Signature=00", "AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host, Signature=00"}, wantCode: CodeIncompleteSignature},
		{name: "header and query", auth: []string{"AWS4-HMAC-SHA256 " + okCred + ", SignedHeaders=host, Signature=00"}, query: "X-Amz-Algorithm=AWS4-HMAC-SHA256", wantCode: CodeIncompleteSignature},
		{name: "presigned without signature", query: "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fec2%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host", wantCode: CodeIncompleteSignature},
		{name: "presigned expiry too long", query: "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fec2%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature=00", wantCode: CodeIncompleteSignature},
		{name: "presigned other algorithm", query: "X-Amz-Algorithm=AWS4-HMAC-SHA1", wantCode: CodeIncompleteSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://ec2.local/?"+tt.query, nil)
			for _, a := range tt.auth {
				r.Header.Add("Authorization", a)
			}
			switch tt.date {
			case "":
				r.Header.Set("X-Amz-Date", "20250101T000000Z")
			case "-":
			default:
				r.Header.Set("X-Amz-Date", tt.date)
			}
			_, err := parseSignedRequest(r)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if err.Code != tt.wantCode || err.Status != http.StatusBadRequest {
				t.Fatalf("got %s/%d (%v), want %s/400", err.Code, err.Status, err, tt.wantCode)
			}
		})
	}
}

// issued is the credential store of the tests' EC2 endpoint.
var issued = map[string]Credentials{
	"AKIDSTATIC":  {AccessKeyID: "AKIDSTATIC", SecretAccessKey: "static-secret"},
	"ASIASESSION": {AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret", SessionToken: "session-token-1"},
}

func lookupIssued(id string) (Credentials, bool) {
	c, ok := issued[id]
	return c, ok
}

// verdict is what the test endpoint decided about one request.
type verdict struct {
	accessKeyID string
	err         *Error
}

// newVerifyingServer starts an endpoint that verifies every request with
// VerifyInRegion at the server clock now() and records the verdict.
func newVerifyingServer(t *testing.T, region string, now func() time.Time) (*httptest.Server, func() verdict) {
	t.Helper()
	var mu sync.Mutex
	var last verdict
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, verr := VerifyInRegion(r, body, now(), region, lookupIssued)
		mu.Lock()
		last = verdict{id, verr}
		mu.Unlock()
		if verr != nil {
			writeEC2Error(w, verr)
			return
		}
		writeDescribeVpcs(w)
	}))
	t.Cleanup(srv.Close)
	return srv, func() verdict {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func writeEC2Error(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, e.Code, e.Message)
}

func writeDescribeVpcs(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?>
<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>00000000-0000-0000-0000-000000000000</requestId>
    <vpcSet/>
</DescribeVpcsResponse>`)
}

const describeVpcsBody = "Action=DescribeVpcs&Version=2016-11-15"

// TestSDKSignedRequests sends requests signed by the AWS SDK for Go v2's
// own signer, as the EC2 client signs them, then tampered with in the ways
// an attacker or a broken client would.
func TestSDKSignedRequests(t *testing.T) {
	serverNow := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	srv, lastVerdict := newVerifyingServer(t, "us-east-1", func() time.Time { return serverNow })

	static := aws.Credentials{AccessKeyID: "AKIDSTATIC", SecretAccessKey: "static-secret"}
	session := aws.Credentials{AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret", SessionToken: "session-token-1"}

	type request struct {
		creds   aws.Credentials
		service string
		region  string
		at      time.Time
		body    string
		// before runs before signing, after between signing and sending.
		before, after func(r *http.Request)
		sentBody      string // body sent, if not the one signed
	}
	tests := []struct {
		name     string
		req      request
		wantCode string // "" for success
		wantHTTP int
	}{
		{name: "static credentials", req: request{creds: static}},
		{name: "session credentials", req: request{creds: session}},
		{name: "date 14 minutes behind", req: request{creds: static, at: serverNow.Add(-14 * time.Minute)}},
		{name: "date 14 minutes ahead", req: request{creds: static, at: serverNow.Add(14 * time.Minute)}},
		{name: "extra unsigned header", req: request{creds: static, after: func(r *http.Request) { r.Header.Set("X-Unsigned", "anything") }}},
		{name: "spaces in a signed header", req: request{creds: static, before: func(r *http.Request) {
			r.Header.Set("X-Amz-Meta-Note", "  two   spaces  ")
		}}},
		{name: "query parameters", req: request{creds: static, before: func(r *http.Request) {
			r.URL.RawQuery = "b=%2F+x&a=1&a=0"
		}}},
		{name: "date 16 minutes behind", req: request{creds: static, at: serverNow.Add(-16 * time.Minute)}, wantCode: CodeRequestExpired, wantHTTP: 400},
		{name: "date 16 minutes ahead", req: request{creds: static, at: serverNow.Add(16 * time.Minute)}, wantCode: CodeRequestExpired, wantHTTP: 400},
		{name: "tampered body", req: request{creds: static, sentBody: "Action=DeleteVpc&Version=2016-11-15"}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "tampered signed header", req: request{creds: static, after: func(r *http.Request) {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=latin1")
		}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "tampered query", req: request{creds: static, before: func(r *http.Request) { r.URL.RawQuery = "a=1" },
			after: func(r *http.Request) { r.URL.RawQuery = "a=2" }}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "tampered date", req: request{creds: static, after: func(r *http.Request) {
			r.Header.Set("X-Amz-Date", serverNow.Add(time.Second).Format(amzDateLayout))
		}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "tampered signature", req: request{creds: static, after: func(r *http.Request) {
			a := r.Header.Get("Authorization")
			last := a[len(a)-1]
			flipped := byte('0')
			if last == '0' {
				flipped = '1'
			}
			r.Header.Set("Authorization", a[:len(a)-1]+string(flipped))
		}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "wrong secret", req: request{creds: aws.Credentials{AccessKeyID: "AKIDSTATIC", SecretAccessKey: "guess"}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "unknown key", req: request{creds: aws.Credentials{AccessKeyID: "AKIDUNKNOWN", SecretAccessKey: "static-secret"}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "session credentials without token", req: request{creds: aws.Credentials{AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret"}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "session credentials with another token", req: request{creds: aws.Credentials{AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret", SessionToken: "session-token-2"}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "token stripped after signing", req: request{creds: session, after: func(r *http.Request) { r.Header.Del("X-Amz-Security-Token") }}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "token with static credentials", req: request{creds: aws.Credentials{AccessKeyID: "AKIDSTATIC", SecretAccessKey: "static-secret", SessionToken: "session-token-1"}}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "scoped to another service", req: request{creds: static, service: "sts"}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "scoped to another region", req: request{creds: static, region: "eu-west-1"}, wantCode: CodeAuthFailure, wantHTTP: 401},
		{name: "unsigned", req: request{after: func(r *http.Request) { r.Header.Del("Authorization") }}, wantCode: CodeMissingParameter, wantHTTP: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := tt.req
			if q.service == "" {
				q.service = "ec2"
			}
			if q.region == "" {
				q.region = "us-east-1"
			}
			if q.at.IsZero() {
				q.at = serverNow
			}
			if q.body == "" {
				q.body = describeVpcsBody
			}
			r, err := http.NewRequest("POST", srv.URL+"/", strings.NewReader(q.body))
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			if q.before != nil {
				q.before(r)
			}
			if q.creds.AccessKeyID != "" {
				if err := v4.NewSigner().SignHTTP(context.Background(), q.creds, r, sha256Hex(q.body), q.service, q.region, q.at); err != nil {
					t.Fatalf("sign: %v", err)
				}
			}
			if q.after != nil {
				q.after(r)
			}
			if q.sentBody != "" {
				r.Body = io.NopCloser(strings.NewReader(q.sentBody))
				r.ContentLength = int64(len(q.sentBody))
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			v := lastVerdict()
			if tt.wantCode == "" {
				if resp.StatusCode != http.StatusOK || v.err != nil {
					t.Fatalf("refused (%d): %v\n%s", resp.StatusCode, v.err, body)
				}
				if v.accessKeyID != q.creds.AccessKeyID {
					t.Fatalf("verified as %q, want %q", v.accessKeyID, q.creds.AccessKeyID)
				}
				return
			}
			if v.err == nil || v.err.Code != tt.wantCode || resp.StatusCode != tt.wantHTTP {
				t.Fatalf("got HTTP %d, %v; want %s with HTTP %d", resp.StatusCode, v.err, tt.wantCode, tt.wantHTTP)
			}
			if !bytes.Contains(body, []byte("<Code>"+tt.wantCode+"</Code>")) {
				t.Fatalf("error document lacks the code:\n%s", body)
			}
		})
	}
}

// TestSDKPresignedRequests: query-string authentication as the SDK's
// PresignHTTP produces it, within and past its expiry.
func TestSDKPresignedRequests(t *testing.T) {
	signedAt := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	var serverClock clock
	srv, lastVerdict := newVerifyingServer(t, "", serverClock.Now)
	session := aws.Credentials{AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret", SessionToken: "session-token-1"}

	presign := func(t *testing.T, creds aws.Credentials) string {
		r, err := http.NewRequest("GET", srv.URL+"/?Action=DescribeVpcs&Version=2016-11-15&X-Amz-Expires=300", nil)
		if err != nil {
			t.Fatal(err)
		}
		u, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, r, sha256Hex(""), "ec2", "us-east-1", signedAt)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	get := func(t *testing.T, u string) verdict {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return lastVerdict()
	}
	tests := []struct {
		name     string
		creds    aws.Credentials
		now      time.Time
		mutate   func(string) string
		wantCode string
	}{
		{name: "within expiry", creds: session, now: signedAt.Add(4 * time.Minute)},
		{name: "past expiry", creds: session, now: signedAt.Add(6 * time.Minute), wantCode: CodeRequestExpired},
		{name: "dated in the future", creds: session, now: signedAt.Add(-16 * time.Minute), wantCode: CodeRequestExpired},
		{name: "tampered action", creds: session, now: signedAt, mutate: func(u string) string {
			return strings.Replace(u, "DescribeVpcs", "DeleteVpc", 1)
		}, wantCode: CodeAuthFailure},
		{name: "longer expiry", creds: session, now: signedAt, mutate: func(u string) string {
			return strings.Replace(u, "X-Amz-Expires=300", "X-Amz-Expires=3000", 1)
		}, wantCode: CodeAuthFailure},
		{name: "foreign token", creds: aws.Credentials{AccessKeyID: "ASIASESSION", SecretAccessKey: "session-secret", SessionToken: "forged"}, now: signedAt, wantCode: CodeAuthFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := presign(t, tt.creds)
			if tt.mutate != nil {
				u = tt.mutate(u)
			}
			serverClock.Set(tt.now)
			v := get(t, u)
			switch {
			case tt.wantCode == "" && v.err != nil:
				t.Fatalf("refused: %v", v.err)
			case tt.wantCode != "" && (v.err == nil || v.err.Code != tt.wantCode):
				t.Fatalf("got %v, want %s", v.err, tt.wantCode)
			}
		})
	}
}
