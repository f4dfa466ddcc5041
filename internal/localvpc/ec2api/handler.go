// Package ec2api serves the local VPC's model over the EC2 Query API: form
// encoded requests (Action=...&Version=2016-11-15), XML replies in the EC2
// namespace and EC2 error documents, so that aws-sdk-go-v2 and the AWS CLI
// talk to it as to EC2. Every request is authenticated through an
// Authenticator, throttled by EC2's token buckets, and subject to injected
// faults.
package ec2api

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// Namespace is the XML namespace of EC2 API version 2016-11-15.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// maxBody bounds a request body; EC2 requests are small. Up to maxDrain
// more is read and dropped (at memory speed, never kept) to answer an
// oversized one with an error document; a client that sends more than
// that sees its connection closed.
const (
	maxBody  = 1 << 20
	maxDrain = 1 << 30
)

// APIVersion is the EC2 API version served, the only one accepted.
const APIVersion = "2016-11-15"

// Authenticator checks a request's signature. It returns the principal
// the request acts as, or an error; a *vpc.Error's code (AuthFailure,
// SignatureDoesNotMatch, RequestExpired ...) is sent as is, any other error
// as AuthFailure.
type Authenticator interface {
	Authenticate(r *http.Request, body []byte) (principal string, err error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request, body []byte) (string, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(r *http.Request, body []byte) (string, error) {
	return f(r, body)
}

// Config sets up a Handler.
type Config struct {
	// Auth is required: without it every request is refused.
	Auth     Authenticator
	Throttle ThrottleConfig // DefaultThrottle() when zero
	Faults   Faults
	Logger   *slog.Logger
	// Now is the clock of the token buckets (time.Now when nil).
	Now func() time.Time
}

// Handler is the EC2 Query API as an http.Handler.
type Handler struct {
	model    *vpc.Model
	auth     Authenticator
	log      *slog.Logger
	throttle *throttle
	actions  map[string]func(params) (response, error)

	faultsMu sync.RWMutex
	faults   Faults
}

// New returns a Handler serving model.
func New(model *vpc.Model, cfg Config) (*Handler, error) {
	if err := cfg.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("invalid fault configuration: %w", err)
	}
	if cfg.Throttle.NonMutating == (Bucket{}) && !cfg.Throttle.Disabled {
		cfg.Throttle = DefaultThrottle()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{model: model, auth: cfg.Auth, log: cfg.Logger, throttle: newThrottle(cfg.Throttle, cfg.Now), faults: cfg.Faults}
	h.actions = map[string]func(params) (response, error){
		"AssignIpv6Addresses":             h.assignIPv6Addresses,
		"AssignPrivateIpAddresses":        h.assignPrivateIPAddresses,
		"AttachNetworkInterface":          h.attachNetworkInterface,
		"AuthorizeSecurityGroupEgress":    h.authorize(true),
		"AuthorizeSecurityGroupIngress":   h.authorize(false),
		"CreateNetworkInterface":          h.createNetworkInterface,
		"CreateSecurityGroup":             h.createSecurityGroup,
		"CreateTags":                      h.createTags,
		"DeleteNetworkInterface":          h.deleteNetworkInterface,
		"DeleteSecurityGroup":             h.deleteSecurityGroup,
		"DeleteTags":                      h.deleteTags,
		"DescribeInstanceTypes":           h.describeInstanceTypes,
		"DescribeInstances":               h.describeInstances,
		"DescribeNetworkInterfaces":       h.describeNetworkInterfaces,
		"DescribeSecurityGroups":          h.describeSecurityGroups,
		"DescribeSubnets":                 h.describeSubnets,
		"DescribeVpcs":                    h.describeVPCs,
		"DetachNetworkInterface":          h.detachNetworkInterface,
		"ModifyNetworkInterfaceAttribute": h.modifyNetworkInterfaceAttribute,
		"RevokeSecurityGroupEgress":       h.revoke(true),
		"RevokeSecurityGroupIngress":      h.revoke(false),
		"UnassignIpv6Addresses":           h.unassignIPv6Addresses,
		"UnassignPrivateIpAddresses":      h.unassignPrivateIPAddresses,
	}
	if err := h.knownActions(cfg.Faults); err != nil {
		return nil, fmt.Errorf("invalid fault configuration: %w", err)
	}
	return h, nil
}

// knownActions refuses faults for an action this API does not serve: a
// misspelt name would inject nothing.
func (h *Handler) knownActions(f Faults) error {
	var unknown []string
	for name := range f.Actions {
		if _, ok := h.actions[name]; !ok && name != "*" {
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("no action %s in this EC2 API (actions: \"*\", %s)", strings.Join(unknown, ", "), strings.Join(slices.Sorted(maps.Keys(h.actions)), ", "))
}

// SetFaults replaces the fault configuration; calls in flight keep the one
// they started with.
func (h *Handler) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("invalid fault configuration: %w", err)
	}
	if err := h.knownActions(f); err != nil {
		return fmt.Errorf("invalid fault configuration: %w", err)
	}
	h.faultsMu.Lock()
	defer h.faultsMu.Unlock()
	h.faults = f
	return nil
}

// Faults returns the fault configuration in force.
func (h *Handler) Faults() Faults {
	h.faultsMu.RLock()
	defer h.faultsMu.RUnlock()
	return h.faults
}

// ServeHTTP answers one EC2 Query API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := requestID()
	action, err := h.serve(w, r, id)
	if err != nil {
		e := asEC2Error(err)
		if e.Code == vpc.CodeInternalError && !errors.As(err, new(*vpc.Error)) {
			h.log.Error("EC2 action failed", "action", action, "requestId", id, "err", err)
		}
		writeError(w, id, e)
	}
	h.log.Debug("EC2 request", "action", action, "requestId", id, "err", err, "duration", time.Since(start))
}

// serve runs the request through authentication, faults, throttling and
// the action, and writes the reply when there is no error.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, id string) (string, error) {
	body, p, err := readRequest(r)
	if err != nil {
		return "", err
	}
	action := p.str("Action")
	switch v := p.str("Version"); {
	case v == "":
		return action, &vpc.Error{Code: vpc.CodeMissingParameter, Message: "The request must contain the parameter Version"}
	case v != APIVersion:
		return action, &vpc.Error{Code: vpc.CodeNoSuchVersion, Message: fmt.Sprintf("The requested version (%s) of service AmazonEC2 does not exist", v)}
	}
	if err := h.authenticate(r, body); err != nil {
		return action, err
	}
	run, ok := h.actions[action]
	if !ok {
		return action, &vpc.Error{Code: vpc.CodeInvalidAction, Message: fmt.Sprintf("The action %s is not valid for this web service.", action)}
	}
	if err := h.injectFaults(r.Context(), action); err != nil {
		return action, err
	}
	filtered := len(p.members("Filter")) > 0 || p.has("MaxResults") || p.has("NextToken")
	if !h.throttle.allow(action, filtered) {
		return action, requestLimitExceeded()
	}
	if dry, err := p.boolean("DryRun"); err != nil {
		return action, err
	} else if dry != nil && *dry {
		return action, &vpc.Error{Code: vpc.CodeDryRunOperation, Message: "Request would have succeeded, but DryRun flag is set."}
	}
	resp, err := run(p)
	if err != nil {
		return action, err
	}
	resp.setRequestID(id)
	return action, writeResponse(w, action, resp)
}

func readRequest(r *http.Request) ([]byte, params, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read request body: %w", err)
	}
	if len(body) > maxBody {
		// Read (and drop) the rest before answering: a reply sent while
		// the client still writes makes the server close the connection
		// under it, and the client sees a reset instead of this error.
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
		size := fmt.Sprintf("more than %d", maxBody+1+maxDrain)
		if n < maxDrain {
			size = strconv.FormatInt(int64(len(body))+n, 10)
		}
		return nil, nil, &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: fmt.Sprintf("The request body is too large: %s bytes, at most %d.", size, maxBody)}
	}
	values := r.URL.Query()
	if r.Method == http.MethodPost {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, nil, &vpc.Error{Code: vpc.CodeInvalidParameterValue, Message: "The request body is not form-encoded: " + err.Error()}
		}
		for k, vs := range form {
			values[k] = append(values[k], vs...)
		}
	}
	return body, params(values), nil
}

func (h *Handler) authenticate(r *http.Request, body []byte) error {
	if h.auth == nil {
		return &vpc.Error{Code: vpc.CodeAuthFailure, Message: "AWS was not able to validate the provided access credentials"}
	}
	// The authenticator reads the body from the bytes, not r.Body, which
	// has been consumed; give it a fresh copy for implementations that do.
	r.Body = io.NopCloser(bytes.NewReader(body))
	if _, err := h.auth.Authenticate(r, body); err != nil {
		var e *vpc.Error
		if errors.As(err, &e) {
			return e
		}
		return &vpc.Error{Code: vpc.CodeAuthFailure, Message: err.Error()}
	}
	return nil
}

func (h *Handler) injectFaults(ctx context.Context, action string) error {
	plan := h.Faults().For(action).plan(rand.Float64(), rand.Float64(), rand.Float64())
	if plan.delay > 0 {
		t := time.NewTimer(plan.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("request cancelled during injected latency: %w", ctx.Err())
		}
	}
	if plan.err != nil {
		return plan.err
	}
	return nil
}

func writeResponse(w http.ResponseWriter, action string, resp response) error {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	start := xml.StartElement{Name: xml.Name{Space: Namespace, Local: action + "Response"}}
	if err := xml.NewEncoder(&buf).EncodeElement(resp, start); err != nil {
		return fmt.Errorf("encode %s response: %w", action, err)
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// errorDocument is EC2's error reply.
type errorDocument struct {
	XMLName   xml.Name `xml:"Response"`
	Errors    []xmlErr `xml:"Errors>Error"`
	RequestID string   `xml:"RequestID"`
}

type xmlErr struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func writeError(w http.ResponseWriter, id string, e *vpc.Error) {
	b, _ := xml.Marshal(errorDocument{Errors: []xmlErr{{Code: e.Code, Message: e.Message}}, RequestID: id})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(HTTPStatus(e.Code))
	_, _ = w.Write(append([]byte(xml.Header), b...))
}

func asEC2Error(err error) *vpc.Error {
	var e *vpc.Error
	if errors.As(err, &e) {
		return e
	}
	return &vpc.Error{Code: vpc.CodeInternalError, Message: "An internal error has occurred"}
}

// HTTPStatus is the status EC2 sends with an error code: 503 for
// throttling (which SDK retryers back off on), 401 for credentials it
// cannot validate, 403 for a refused permission, 412 for a dry run, 500
// for its own failures and 400 for everything the client got wrong.
func HTTPStatus(code string) int {
	switch code {
	case vpc.CodeRequestLimitExceeded, "Unavailable", "ServiceUnavailable", "InsufficientInstanceCapacity":
		return http.StatusServiceUnavailable
	case vpc.CodeAuthFailure, "MissingAuthenticationToken":
		return http.StatusUnauthorized
	case vpc.CodeUnauthorizedOperation, "Blocked", "OptInRequired", "SignatureDoesNotMatch", "InvalidClientTokenId":
		return http.StatusForbidden
	case vpc.CodeDryRunOperation:
		return http.StatusPreconditionFailed
	case vpc.CodeInternalError, "InternalFailure":
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// requestID returns a random UUID, the form of EC2's request IDs.
func requestID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
