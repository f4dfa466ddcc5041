// Package imds serves the local VPC's instance metadata service: the
// plain-text tree at 169.254.169.254 that code on an EC2 instance reads for
// its identity, network interfaces, region and role credentials, in both
// its versions (IMDSv1, plain GETs; IMDSv2, GETs carrying a session token
// obtained with a PUT).
//
// As on EC2 the service has no notion of a logged-in caller: it answers for
// the instance that owns the source address of the request, which the
// local VPC's datapath preserves from the instance's (or the task's) ENI to
// the service. A Directory maps that address to the instance; the handler
// renders what the Directory returns, so it serves whatever view of the
// control plane the Directory gives it, stale or not.
package imds

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Directory finds the instance a request is from.
type Directory interface {
	// Lookup returns the instance one of whose network interfaces holds
	// addr: any IPv4 or IPv6 address assigned to any of its ENIs, including
	// addresses inside delegated prefixes. It is called concurrently.
	Lookup(addr netip.Addr) (Instance, bool)
}

// Instance is what the metadata service knows about one instance. It is a
// plain value: the Directory builds it, the handler only reads it.
type Instance struct {
	ID           string // i-...
	Type         string // t3.medium
	AMIID        string
	Architecture string // x86_64 when empty, as most instance types are
	AccountID    string
	LaunchTime   time.Time

	Region             string
	AvailabilityZone   string // us-east-1a
	AvailabilityZoneID string // use1-az1; not served when empty

	// Hostname is the private DNS name (hostname, local-hostname). When
	// empty it is derived from the primary private IPv4 address and the
	// region, as EC2 names instances (ip-10-0-1-5.ec2.internal).
	Hostname string

	// Interfaces are the attached ENIs. The primary one is device 0 on
	// network card 0; it gives the instance its mac and local-ipv4.
	Interfaces []Interface

	// RoleName is the role of the instance profile; empty when the
	// instance has none, and then there is no iam/ category at all.
	RoleName          string
	InstanceProfileID string // AIPA...
	Credentials       Credentials

	// HTTPTokensRequired is the instance's metadata option HttpTokens:
	// when true, only IMDSv2 (token) requests are answered.
	HTTPTokensRequired bool
}

// Interface is one attached ENI as the metadata service describes it.
// Empty lists are absent from the tree, as on EC2 (a GET of ipv6s on an
// ENI without IPv6 addresses is a 404, not an empty body).
type Interface struct {
	MAC          string // lower-case, colon-separated
	InterfaceID  string // eni-...
	DeviceNumber int
	NetworkCard  int

	LocalIPv4s   []string // primary first
	IPv4Prefixes []string // delegated /28s
	IPv6s        []string
	IPv6Prefixes []string // delegated /80s

	SubnetID        string
	SubnetIPv4CIDR  string
	SubnetIPv6CIDRs []string

	VPCID        string
	VPCIPv4CIDRs []string // primary first
	VPCIPv6CIDRs []string

	SecurityGroupIDs   []string
	SecurityGroupNames []string
}

// Credentials are the role credentials the instance profile hands out.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	Token           string
	Expiration      time.Time
	LastUpdated     time.Time
}

// Options adjust a Handler. The zero value serves real clients.
type Options struct {
	// CallerAddr returns the address a request came from. The default is
	// the remote address of the connection, which is right whenever the
	// handler is served directly on the metadata address.
	CallerAddr func(r *http.Request) (netip.Addr, bool)
	// Now is the clock for token issue and expiry; time.Now by default.
	Now func() time.Time
	// Logger receives refusals; slog.Default() by default.
	Logger *slog.Logger
}

// Handler is the metadata service: an http.Handler for every path under
// 169.254.169.254.
type Handler struct {
	dir    Directory
	tokens *tokenIssuer
	caller func(*http.Request) (netip.Addr, bool)
	now    func() time.Time
	log    *slog.Logger
}

// New returns the metadata service answering from dir. Tokens are signed
// with a key made here, so they do not outlive the Handler, as IMDSv2
// tokens do not outlive the instance's metadata service.
func New(dir Directory, opts Options) *Handler {
	h := &Handler{dir: dir, tokens: newTokenIssuer(), caller: opts.CallerAddr, now: opts.Now, log: opts.Logger}
	if h.caller == nil {
		h.caller = remoteAddr
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	return h
}

func remoteAddr(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// IMDSv2 headers.
const (
	headerToken    = "X-Aws-Ec2-Metadata-Token"
	headerTokenTTL = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

// tokenPath is where IMDSv2 tokens are issued; it exists under latest only.
const tokenPath = "/latest/api/token"

// ServeHTTP answers one metadata request for the instance it comes from.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	addr, ok := h.caller(r)
	var inst Instance
	if ok {
		inst, ok = h.dir.Lookup(addr)
	}
	if !ok {
		// On EC2 nothing but an instance can reach its metadata service,
		// so no HTTP answer exists for a stranger. Dropping the connection
		// is what such a client sees from a link-local address that is not
		// there; a 404 would instead tell IMDS clients that they are on an
		// instance that lacks the path asked for (no role, no region), and
		// send them down the wrong error path.
		h.log.Warn("imds: request from an address no instance owns; dropping the connection",
			"remote", r.RemoteAddr, "path", r.URL.Path)
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Server", "EC2ws")

	if r.URL.Path == tokenPath {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			writeStatus(w, http.StatusMethodNotAllowed)
			return
		}
		h.issueToken(w, r, inst)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeStatus(w, http.StatusMethodNotAllowed)
		return
	}
	if !h.authorized(r, inst) {
		writeStatus(w, http.StatusUnauthorized)
		return
	}
	n := resolve(inst, r.URL.Path)
	if n == nil {
		writeStatus(w, http.StatusNotFound)
		return
	}
	body := n.text()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(body))
	}
}

// issueToken answers PUT /latest/api/token: a token for the caller's
// instance, valid for the seconds the caller asked for.
func (h *Handler) issueToken(w http.ResponseWriter, r *http.Request, inst Instance) {
	// A PUT that went through a proxy is refused: the token is meant for
	// software on the instance, not for whoever can reach a proxy on it
	// (the reason IMDSv2 exists).
	if len(r.Header.Values("X-Forwarded-For")) > 0 {
		h.log.Info("imds: token request through a proxy refused", "instance", inst.ID)
		writeStatus(w, http.StatusForbidden)
		return
	}
	ttl, err := parseTokenTTL(r.Header.Values(headerTokenTTL))
	if err != nil {
		h.log.Info("imds: token request refused", "instance", inst.ID, "err", err)
		writeStatus(w, http.StatusBadRequest)
		return
	}
	tok := h.tokens.issue(inst.ID, h.now().Add(ttl))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set(headerTokenTTL, strconv.Itoa(int(ttl/time.Second)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
}

// authorized applies IMDSv2: a token, when sent, must be one issued to this
// instance and not expired, even where IMDSv1 is allowed; without one, the
// request is answered only if the instance allows IMDSv1.
func (h *Handler) authorized(r *http.Request, inst Instance) bool {
	tok := r.Header.Get(headerToken)
	if tok == "" {
		if inst.HTTPTokensRequired {
			h.log.Debug("imds: request without token refused (HttpTokens required)", "instance", inst.ID, "path", r.URL.Path)
			return false
		}
		return true
	}
	if err := h.tokens.verify(tok, inst.ID, h.now()); err != nil {
		h.log.Info("imds: token refused", "instance", inst.ID, "path", r.URL.Path, "err", err)
		return false
	}
	return true
}

// writeStatus answers an error as the metadata service does: a small XHTML
// page naming the status, not a plain-text body a client could mistake for
// a value.
func writeStatus(w http.ResponseWriter, code int) {
	title := strconv.Itoa(code) + " - " + http.StatusText(code)
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="iso-8859-1"?>` + "\n")
	b.WriteString(`<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"` + "\n")
	b.WriteString(`	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">` + "\n")
	b.WriteString(`<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">` + "\n")
	b.WriteString(" <head>\n  <title>" + title + "</title>\n </head>\n")
	b.WriteString(" <body>\n  <h1>" + title + "</h1>\n </body>\n</html>\n")
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}
