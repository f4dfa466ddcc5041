package vpc

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
)

// newID returns the next ID of a kind: EC2's 17 hex digits after the
// prefix, made of the state's seed and a persisted counter, so IDs are
// never reused, not even across restarts.
func (st *State) newID(prefix string) string {
	st.Counters[prefix]++
	return fmt.Sprintf("%s-%s%09x", prefix, st.Seed, st.Counters[prefix])
}

// newMAC returns a unique, locally administered unicast MAC address.
func (st *State) newMAC() string {
	st.Counters["mac"]++
	n := st.Counters["mac"]
	seed, _ := hex.DecodeString(st.Seed)
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", seed[0], seed[1], byte(n>>16), byte(n>>8), byte(n))
}

// hasPrefix reports whether id has the form "<prefix>-<something>".
func hasPrefix(id, prefix string) bool {
	return strings.HasPrefix(id, prefix+"-") && len(id) > len(prefix)+1
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err)) // the kernel's RNG does not fail
	}
	return hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return b
}

// randomAccountID returns a 12-digit account number that does not start
// with 0, so that tools treating it as a number keep all digits.
func randomAccountID() string {
	n, err := rand.Int(rand.Reader, big.NewInt(9e11))
	if err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return fmt.Sprintf("%012d", n.Int64()+1e11)
}

// accessKeyID returns an AWS-shaped key ID: AKIA for long-term keys, ASIA
// for temporary ones, then 16 upper-case base32 characters.
func accessKeyID(prefix string) string {
	s := base32.StdEncoding.EncodeToString(randomBytes(10))
	return prefix + s[:16]
}

func secretAccessKey() string { return base64.StdEncoding.EncodeToString(randomBytes(30)) }

func sessionToken() string { return base64.StdEncoding.EncodeToString(randomBytes(192)) }
