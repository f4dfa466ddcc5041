package imds

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Token lifetimes IMDSv2 accepts, in whole seconds: one second to six hours.
const (
	minTokenTTL = 1 * time.Second
	maxTokenTTL = 6 * time.Hour
)

// parseTokenTTL reads the X-aws-ec2-metadata-token-ttl-seconds header of a
// token request. It is required, once, and a whole number of seconds in
// range.
func parseTokenTTL(values []string) (time.Duration, error) {
	if len(values) != 1 {
		return 0, fmt.Errorf("want exactly one %s header, got %d", headerTokenTTL, len(values))
	}
	secs, err := strconv.ParseInt(values[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("token TTL %q is not a whole number of seconds", values[0])
	}
	ttl := time.Duration(secs) * time.Second
	if secs < int64(minTokenTTL/time.Second) || secs > int64(maxTokenTTL/time.Second) {
		return 0, fmt.Errorf("token TTL %d s is outside %d..%d s", secs, int64(minTokenTTL/time.Second), int64(maxTokenTTL/time.Second))
	}
	return ttl, nil
}

// tokenIssuer makes and checks IMDSv2 tokens. A token carries the instance
// it was issued to and its expiry, authenticated with a key only this
// issuer holds, so checking one needs no table of issued tokens and a
// token copied to another instance is refused there.
type tokenIssuer struct {
	key []byte
}

func newTokenIssuer() *tokenIssuer {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		// crypto/rand does not fail on Linux; if it ever does, serving
		// forgeable tokens would be worse than stopping.
		panic(fmt.Sprintf("imds: read random token key: %v", err))
	}
	return &tokenIssuer{key: key}
}

const tokenVersion = 1

var (
	errTokenMalformed = errors.New("token is malformed")
	errTokenForged    = errors.New("token was not issued by this service")
	errTokenExpired   = errors.New("token has expired")
	errTokenInstance  = errors.New("token was issued to another instance")
)

// issue returns a token for instanceID valid until expires: version byte,
// expiry in Unix milliseconds, instance ID, then an HMAC-SHA256 of all three.
func (ti *tokenIssuer) issue(instanceID string, expires time.Time) string {
	payload := make([]byte, 9, 9+len(instanceID)+sha256.Size)
	payload[0] = tokenVersion
	binary.BigEndian.PutUint64(payload[1:9], uint64(expires.UnixMilli()))
	payload = append(payload, instanceID...)
	return base64.StdEncoding.EncodeToString(append(payload, ti.mac(payload)...))
}

// verify checks that tok was issued here, to instanceID, and is unexpired
// at now.
func (ti *tokenIssuer) verify(tok, instanceID string, now time.Time) error {
	raw, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || len(raw) < 9+sha256.Size || raw[0] != tokenVersion {
		return errTokenMalformed
	}
	payload, sum := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	if !hmac.Equal(sum, ti.mac(payload)) {
		return errTokenForged
	}
	if string(payload[9:]) != instanceID {
		return errTokenInstance
	}
	expires := time.UnixMilli(int64(binary.BigEndian.Uint64(payload[1:9])))
	if !now.Before(expires) {
		return errTokenExpired
	}
	return nil
}

func (ti *tokenIssuer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, ti.key)
	m.Write(payload)
	return m.Sum(nil)
}
