package e2e

import (
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
)

func TestMain(m *testing.M) {
	CleanLeftovers()
	localvpctest.CleanLeftovers(nsTag)
	os.Exit(m.Run())
}

// pluginLogEnv sends the vpcnet plugins' logs to the run, for diagnoseOnFailure.
func pluginLogEnv(run *RunDir) []string {
	return []string{"VPCNET_LOG_FILE=" + run.File("plugins.log"), "VPCNET_LOG_LEVEL=debug"}
}

// diagnoseOnFailure logs, if the test fails, the plugin calls recorded and
// the plugins' own log, which say more than a runtime's error message.
func diagnoseOnFailure(t *testing.T, run *RunDir) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var b strings.Builder
		for _, c := range Calls(t, run) {
			b.WriteString("  " + c.String() + "\n")
		}
		t.Logf("CNI calls recorded:\n%s", b.String())
		if log, err := os.ReadFile(run.File("plugins.log")); err == nil {
			t.Logf("plugin log (%s):\n%s", run.File("plugins.log"), tail(string(log), 60))
		}
	})
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
