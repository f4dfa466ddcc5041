// Package sigv4 verifies AWS Signature Version 4 on the requests that reach
// the local VPC's EC2 Query API, so that the AWS SDKs and CLIs authenticate
// against it exactly as they do against EC2: the server rebuilds the
// canonical request from what arrived on the wire, derives the signing key
// from the secret it issued, and accepts the request only if the signatures
// match. A wrong secret, an unknown key, a missing or foreign session token
// or a date outside EC2's 15-minute window is refused with the error code
// and HTTP status EC2 returns for it.
//
// Both ways of carrying a signature are accepted: the Authorization header
// (what the SDKs and CLIs send) and the query string (presigned URLs).
//
// The package uses only the standard library: it is the server side, and it
// must not share code with the signers it is checked against.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"
)

// Algorithm is the only signing algorithm EC2 accepts with SigV4.
const Algorithm = "AWS4-HMAC-SHA256"

// Service is the service name a credential scope must carry for EC2.
const Service = "ec2"

// MaxSkew is how far a request's date may be from the server's clock, in
// either direction, before EC2 refuses it as expired.
const MaxSkew = 15 * time.Minute

// maxPresignExpiry is the longest X-Amz-Expires SigV4 allows: seven days.
const maxPresignExpiry = 7 * 24 * time.Hour

const (
	unsignedPayload = "UNSIGNED-PAYLOAD"
	amzDateLayout   = "20060102T150405Z"
	scopeDateLayout = "20060102"
	scopeTerminator = "aws4_request"
)

// Credentials are what the control plane issued to a caller: the secret
// that signs, and for temporary credentials the session token that must
// travel with every request signed by them.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Error is a refusal in EC2's terms: the error code the EC2 API puts in its
// error document, the message, and the HTTP status that goes with it.
type Error struct {
	Code    string
	Message string
	Status  int
	// Detail says why, for the server's log. EC2 does not tell the client
	// which check failed, so neither does the error document; the operator
	// of a local VPC, however, wants to know.
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code + ": " + e.Message
	}
	return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Detail)
}

// EC2's error codes for authentication. EC2 answers almost every failure to
// authenticate (unknown key, wrong signature, wrong token, wrong scope)
// with the same AuthFailure and 401, without saying which; it reports a
// stale or future date separately so that SDKs can correct their clock and
// retry; and a header it cannot parse is an IncompleteSignature.
const (
	CodeAuthFailure         = "AuthFailure"
	CodeRequestExpired      = "RequestExpired"
	CodeIncompleteSignature = "IncompleteSignature"
	// CodeMissingParameter is what EC2, which still understands the
	// signature version 2 parameters, answers to a request that carries no
	// signature at all.
	CodeMissingParameter = "MissingParameter"
)

func authFailure(format string, args ...any) *Error {
	return &Error{
		Code:    CodeAuthFailure,
		Message: "AWS was not able to validate the provided access credentials",
		Status:  http.StatusUnauthorized,
		Detail:  fmt.Sprintf(format, args...),
	}
}

func requestExpired(format string, args ...any) *Error {
	return &Error{
		Code:    CodeRequestExpired,
		Message: "Request has expired.",
		Status:  http.StatusBadRequest,
		Detail:  fmt.Sprintf(format, args...),
	}
}

func incompleteSignature(format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: CodeIncompleteSignature, Message: msg, Status: http.StatusBadRequest, Detail: msg}
}

func missingAuthentication() *Error {
	return &Error{
		Code:    CodeMissingParameter,
		Message: "The request must contain the parameter AWSAccessKeyId",
		Status:  http.StatusBadRequest,
		Detail:  "no Authorization header and no X-Amz-Algorithm query parameter",
	}
}

// Verify authenticates an EC2 Query API request signed for any region. See
// VerifyInRegion.
func Verify(r *http.Request, body []byte, now time.Time, lookup func(accessKeyID string) (Credentials, bool)) (accessKeyID string, err *Error) {
	return VerifyInRegion(r, body, now, "", lookup)
}

// VerifyInRegion authenticates an EC2 Query API request. body is the request
// body the caller has already read (the form-encoded parameters), now the
// server's clock, and lookup finds the credentials issued under an access
// key ID. A non-empty region must match the region of the credential scope,
// as a regional EC2 endpoint requires. It returns the access key ID that
// signed the request, or the error EC2 would answer with.
func VerifyInRegion(r *http.Request, body []byte, now time.Time, region string, lookup func(accessKeyID string) (Credentials, bool)) (accessKeyID string, err *Error) {
	sr, err := parseSignedRequest(r)
	if err != nil {
		return "", err
	}
	if err := sr.checkTime(now); err != nil {
		return "", err
	}
	if err := sr.checkScope(region); err != nil {
		return "", err
	}
	creds, ok := lookup(sr.accessKeyID)
	if !ok {
		return "", authFailure("access key %q is not known", sr.accessKeyID)
	}
	if err := checkSessionToken(creds, sr.sessionToken); err != nil {
		return "", err
	}
	if err := sr.checkSignature(r, body, creds.SecretAccessKey); err != nil {
		return "", err
	}
	return sr.accessKeyID, nil
}

// checkSessionToken: temporary credentials are only valid together with
// the token they were issued with, and a token presented with long-term
// credentials belongs to some other credential, so it is refused too.
func checkSessionToken(creds Credentials, presented string) *Error {
	switch {
	case creds.SessionToken == "" && presented != "":
		return authFailure("a session token was sent with long-term credentials %s", creds.AccessKeyID)
	case creds.SessionToken != "" && presented == "":
		return authFailure("temporary credentials %s used without their session token", creds.AccessKeyID)
	case !hmac.Equal([]byte(creds.SessionToken), []byte(presented)):
		return authFailure("the session token does not belong to credentials %s", creds.AccessKeyID)
	}
	return nil
}

// checkTime refuses requests dated more than MaxSkew away from now, and
// presigned requests past their expiry.
func (sr *signedRequest) checkTime(now time.Time) *Error {
	if sr.date.After(now.Add(MaxSkew)) {
		return requestExpired("request date %s is more than %s ahead of the server's clock %s",
			sr.date.Format(amzDateLayout), MaxSkew, now.UTC().Format(amzDateLayout))
	}
	if sr.presigned {
		if now.After(sr.date.Add(sr.expires)) {
			return requestExpired("presigned request dated %s expired after %s",
				sr.date.Format(amzDateLayout), sr.expires)
		}
		return nil
	}
	if now.After(sr.date.Add(MaxSkew)) {
		return requestExpired("request date %s is more than %s behind the server's clock %s",
			sr.date.Format(amzDateLayout), MaxSkew, now.UTC().Format(amzDateLayout))
	}
	return nil
}

// checkScope checks the credential scope against what this endpoint is:
// EC2, in region (when given), on the day the request is dated.
func (sr *signedRequest) checkScope(region string) *Error {
	if sr.service != Service {
		return authFailure("credential scoped to service %q, not %q", sr.service, Service)
	}
	if region != "" && sr.region != region {
		return authFailure("credential scoped to region %q, this endpoint is %q", sr.region, region)
	}
	if day := sr.date.Format(scopeDateLayout); sr.scopeDate != day {
		return authFailure("credential scope date %s is not the request's date %s", sr.scopeDate, day)
	}
	return nil
}

// checkSignature recomputes the signature and compares it in constant
// time. Signers do not all canonicalise a request the same way (the AWS CLI
// normalises the path, the Go SDK does not; a presigned URL may or may not
// cover the payload), so where they differ each variant is tried: every
// variant still needs the secret, so accepting any of them admits no
// request that its signer did not sign.
func (sr *signedRequest) checkSignature(r *http.Request, body []byte, secret string) *Error {
	payloads, err := sr.payloadHashes(r, body)
	if err != nil {
		return err
	}
	key := signingKey(secret, sr.scopeDate, sr.region, sr.service)
	query := canonicalQuery(r.URL.RawQuery, sr.presigned)
	headers := canonicalHeaders(r, sr.signedHeaders)
	for _, uri := range canonicalURIs(wirePath(r)) {
		for _, payload := range payloads {
			creq := canonicalRequest(r.Method, uri, query, headers, sr.signedHeadersRaw, payload)
			got := signature(key, stringToSign(sr.amzDate, sr.scope(), creq))
			if hmac.Equal(got, sr.signature) {
				return nil
			}
		}
	}
	return authFailure("signature does not match for access key %s", sr.accessKeyID)
}

// payloadHashes returns the payload hashes the signer may have used. A
// declared X-Amz-Content-Sha256 is what the signer hashed into the
// canonical request, so it is used as is, but it must then be the hash of
// the body that actually arrived, or the signature would vouch for a body
// nobody signed.
func (sr *signedRequest) payloadHashes(r *http.Request, body []byte) ([]string, *Error) {
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	if declared := r.Header.Get("X-Amz-Content-Sha256"); declared != "" {
		if declared != unsignedPayload && declared != bodyHash {
			return nil, authFailure("X-Amz-Content-Sha256 %s is not the hash of the body received", declared)
		}
		return []string{declared}, nil
	}
	if sr.presigned {
		return []string{bodyHash, unsignedPayload}, nil
	}
	return []string{bodyHash}, nil
}

func signingKey(secret, day, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), day)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, scopeTerminator)
}

func stringToSign(amzDate, scope, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
}

func signature(key []byte, stringToSign string) []byte {
	return hmacSHA256(key, stringToSign)
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
