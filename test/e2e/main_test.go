package e2e

import (
	"os"
	"sort"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

func TestMain(m *testing.M) {
	CleanLeftovers()
	localvpctest.CleanLeftovers(nsTag)
	os.Exit(m.Run())
}

// median of durations, for the latency figures the tests log.
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
