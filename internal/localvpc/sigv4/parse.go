package sigv4

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// signedRequest is what a request claims about its signature: who signed
// it, for which scope and date, over which headers, and the signature.
type signedRequest struct {
	accessKeyID string
	scopeDate   string // YYYYMMDD, as written in the credential scope
	region      string
	service     string

	signedHeaders    []string // lower-cased names, in the order given
	signedHeadersRaw string   // as given: it is part of the canonical request

	signature []byte

	date    time.Time
	amzDate string // date in the ISO 8601 basic form the string to sign uses

	presigned bool
	expires   time.Duration // presigned only

	sessionToken string
}

func (sr *signedRequest) scope() string {
	return sr.scopeDate + "/" + sr.region + "/" + sr.service + "/" + scopeTerminator
}

// Query parameters of a presigned request.
const (
	queryAlgorithm     = "X-Amz-Algorithm"
	queryCredential    = "X-Amz-Credential"
	queryDate          = "X-Amz-Date"
	queryExpires       = "X-Amz-Expires"
	querySignedHeaders = "X-Amz-SignedHeaders"
	querySignature     = "X-Amz-Signature"
	querySecurityToken = "X-Amz-Security-Token"
)

// parseSignedRequest reads the signature from the Authorization header or,
// failing that, from the query string of a presigned URL.
func parseSignedRequest(r *http.Request) (*signedRequest, *Error) {
	auth := r.Header.Values("Authorization")
	query := r.URL.Query()
	presigned := query.Has(queryAlgorithm)
	switch {
	case len(auth) > 0 && presigned:
		return nil, incompleteSignature("Only one authentication mechanism may be used: found both an Authorization header and %s in the query string.", queryAlgorithm)
	case len(auth) > 1:
		return nil, incompleteSignature("The request carries %d Authorization headers; exactly one is allowed.", len(auth))
	case len(auth) == 1:
		return parseAuthorizationHeader(r, auth[0])
	case presigned:
		return parsePresignedQuery(query)
	default:
		return nil, missingAuthentication()
	}
}

func parseAuthorizationHeader(r *http.Request, value string) (*signedRequest, *Error) {
	algorithm, params, _ := strings.Cut(strings.TrimSpace(value), " ")
	if algorithm != Algorithm {
		return nil, incompleteSignature("Unsupported authorization algorithm %q: EC2 accepts %s.", algorithm, Algorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, incompleteSignature("Authorization header component %q is not of the form key=value. Authorization=%s", strings.TrimSpace(part), value)
		}
		fields[k] = v
	}
	var missing []string
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			missing = append(missing, "'"+k+"'")
		}
	}
	if len(missing) > 0 {
		return nil, incompleteSignature("Authorization header requires the parameters %s. Authorization=%s", strings.Join(missing, ", "), value)
	}

	sr := &signedRequest{sessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := sr.setCredential(fields["Credential"]); err != nil {
		return nil, err
	}
	if err := sr.setSignedHeaders(fields["SignedHeaders"]); err != nil {
		return nil, err
	}
	sr.setSignature(fields["Signature"])

	switch {
	case r.Header.Get("X-Amz-Date") != "":
		d, err := time.Parse(amzDateLayout, r.Header.Get("X-Amz-Date"))
		if err != nil {
			return nil, incompleteSignature("X-Amz-Date %q is not an ISO 8601 basic date and time such as 20150830T123600Z.", r.Header.Get("X-Amz-Date"))
		}
		sr.setDate(d)
	case r.Header.Get("Date") != "":
		// SigV4 allows the HTTP Date header in place of X-Amz-Date; the
		// string to sign still carries the ISO 8601 basic form.
		d, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil {
			return nil, incompleteSignature("Date header %q is not an HTTP date.", r.Header.Get("Date"))
		}
		sr.setDate(d)
	default:
		return nil, incompleteSignature("Authorization header requires an X-Amz-Date or a Date header.")
	}
	return sr, nil
}

func parsePresignedQuery(q map[string][]string) (*signedRequest, *Error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if a := get(queryAlgorithm); a != Algorithm {
		return nil, incompleteSignature("Unsupported %s %q: EC2 accepts %s.", queryAlgorithm, a, Algorithm)
	}
	var missing []string
	for _, k := range []string{queryCredential, queryDate, queryExpires, querySignedHeaders, querySignature} {
		if get(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, incompleteSignature("A presigned request requires the query parameters %s.", strings.Join(missing, ", "))
	}
	sr := &signedRequest{presigned: true, sessionToken: get(querySecurityToken)}
	if err := sr.setCredential(get(queryCredential)); err != nil {
		return nil, err
	}
	if err := sr.setSignedHeaders(get(querySignedHeaders)); err != nil {
		return nil, err
	}
	sr.setSignature(get(querySignature))
	d, err := time.Parse(amzDateLayout, get(queryDate))
	if err != nil {
		return nil, incompleteSignature("%s %q is not an ISO 8601 basic date and time such as 20150830T123600Z.", queryDate, get(queryDate))
	}
	sr.setDate(d)
	secs, err := strconv.ParseInt(get(queryExpires), 10, 64)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxPresignExpiry {
		return nil, incompleteSignature("%s %q must be a whole number of seconds from 1 to %d.", queryExpires, get(queryExpires), int64(maxPresignExpiry/time.Second))
	}
	sr.expires = time.Duration(secs) * time.Second
	return sr, nil
}

// setCredential splits AKID/YYYYMMDD/region/service/aws4_request.
func (sr *signedRequest) setCredential(v string) *Error {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return incompleteSignature("Credential %q is not of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/%s.", v, scopeTerminator)
	}
	if _, err := time.Parse(scopeDateLayout, parts[1]); err != nil {
		return incompleteSignature("Credential %q has a scope date that is not YYYYMMDD.", v)
	}
	if parts[4] != scopeTerminator {
		return incompleteSignature("Credential %q must end with %q.", v, scopeTerminator)
	}
	sr.accessKeyID, sr.scopeDate, sr.region, sr.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// setSignedHeaders records the signed header names. The host must be among
// them: without it a signature could be replayed against another endpoint.
func (sr *signedRequest) setSignedHeaders(v string) *Error {
	sr.signedHeadersRaw = v
	sr.signedHeaders = nil
	hasHost := false
	for _, h := range strings.Split(v, ";") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			return incompleteSignature("SignedHeaders %q names an empty header.", v)
		}
		hasHost = hasHost || h == "host"
		sr.signedHeaders = append(sr.signedHeaders, h)
	}
	if !hasHost {
		return incompleteSignature("SignedHeaders %q must include host.", v)
	}
	return nil
}

// setSignature keeps the signature's bytes. One that is not hexadecimal
// decodes to nothing and so matches nothing: it is a wrong signature, not
// a malformed request.
func (sr *signedRequest) setSignature(v string) {
	b, err := hex.DecodeString(v)
	if err != nil {
		b = nil
	}
	sr.signature = b
}

func (sr *signedRequest) setDate(d time.Time) {
	sr.date = d.UTC()
	sr.amzDate = sr.date.Format(amzDateLayout)
}
