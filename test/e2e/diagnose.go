package e2e

import (
	"os"
	"strings"
	"testing"
)

// pluginLogEnv sends the vpcnet plugins' logs to the run, for diagnoseOnFailure.
func pluginLogEnv(run *RunDir) []string {
	return []string{"VPCNET_LOG_FILE=" + run.File("plugins.log"), "VPCNET_LOG_LEVEL=debug"}
}

// diagnoseOnFailure logs, if the test fails, the plugin calls recorded and
// the plugins' own log, which say more than a runtime's error message.
func diagnoseOnFailure(t testing.TB, run *RunDir) {
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
