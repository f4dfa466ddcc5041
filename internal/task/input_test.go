package task

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpcnet/vpcnet/internal/proc"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  string // "" when valid
	}{
		{"", ""},
		{"web-1", ""},
		{"tâche numéro 1", ""},
		{strings.Repeat("a", 255), ""},
		{strings.Repeat("é", 255), ""},
		{strings.Repeat("a", 256), "256 characters, at most 255"},
		{"two\nlines", "character 4 (U+000A) is not printable"},
		{"éé\tx", "character 3 (U+0009) is not printable"},
		{"tab\there", "not printable"},
		{"bell\x07", "not printable"},
		{"del\x7f", "not printable"},
		{"\xff\xfe", "not valid UTF-8"},
	} {
		err := ValidateName(tc.name)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ValidateName(%q) = %v, want valid", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--name")):
			t.Errorf("ValidateName(%q) = %v, want an error about --name saying %q", tc.name, err, tc.err)
		}
	}
}

func TestPick(t *testing.T) {
	self := os.Getpid()
	old := Record{ID: "aaaa", Name: "web", State: StateStopped}
	live := Record{ID: "bbbb", Name: "web", State: StateRunning, Supervisor: self}
	orphan := Record{ID: "cccc", Name: "web", State: StateRunning, Supervisor: 1 << 30}
	for _, tc := range []struct {
		name  string
		found []Record
		want  string
		err   string
	}{
		{"one", []Record{old}, "aaaa", ""},
		{"the live one among old ones", []Record{old, live}, "bbbb", ""},
		{"no live one", []Record{old, orphan}, "", "matches 2 tasks"},
		{"none", nil, "", "no task"},
	} {
		r, err := pick("web", tc.found)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: pick = %v, %v; want %q", tc.name, r.ID, err, tc.err)
			}
		} else if err != nil || r.ID != tc.want {
			t.Errorf("%s: pick = %v, %v; want %s", tc.name, r.ID, err, tc.want)
		}
	}
}

// TestInputChecks: bad names, a name a running task has, a subnet in
// another zone than the instance are refused with an error naming the
// problem, before any ENI or record is made; a name an old task had is
// free again, and `exec`/`stop` by that name pick the live task; a custom
// --state-dir gets the default's permissions (0700 directories, 0600
// files).
func TestInputChecks(t *testing.T) {
	v := upVPC(t, tagInput, "--instances", "1")
	in := v.Instances[0]
	// refused runs a task that must be refused, and checks that nothing
	// was made for it: no ENI and, when noRecord, no record either (a
	// launch that got as far as EC2 records its failure).
	refused := func(what string, noRecord bool, says []string, args ...string) {
		t.Helper()
		before, enis := len(v.records()), len(v.enisTagged(TagInstance, in.ID))
		out, err := v.task("run", append([]string{"--instance", "1"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("%s: run succeeded:\n%s", what, out)
			return
		}
		for _, s := range says {
			if !strings.Contains(string(out), s) {
				t.Errorf("%s: the error does not say %q:\n%s", what, s, out)
			}
		}
		if after := len(v.enisTagged(TagInstance, in.ID)); after != enis {
			t.Errorf("%s: %d ENIs for the instance before, %d after", what, enis, after)
		}
		if after := len(v.records()); noRecord && after != before {
			t.Errorf("%s: %d records before, %d after", what, before, after)
		}
	}
	for _, name := range []string{strings.Repeat("n", 256), "two\nlines", "tab\there", "esc\x1b[31m"} {
		refused("name "+strings.ToValidUTF8(name[:min(len(name), 10)], "?"), true, []string{"--name"}, "--subnet", v.subnet(1), "--name", name, "--", "true")
	}
	var other string
	for _, s := range v.Subnets {
		if s.Zone != in.Zone {
			other = s.ID
		}
	}
	if other == "" {
		t.Fatalf("the local VPC has no subnet outside %s: %+v", in.Zone, v.Subnets)
	}
	refused("subnet in another zone", false, []string{other, "availability zone", in.Zone}, "--subnet", other, "--", "true")

	t.Run("unique names", func(t *testing.T) {
		release := releaseFile(t)
		t.Cleanup(func() { _ = writeFile(release) })
		name := "dup-" + testenv.RandomHex(3)
		first := v.detach(1, v.subnet(1), "", name, probeBin(t), probeCommand, "wait", release)
		refused("a running task's name", true, []string{name, "already has that name"}, "--subnet", v.subnet(1), "--name", name, "--", "true")
		if n := len(v.enisTagged(TagInstance, in.ID)); n != 1 {
			t.Errorf("with one task running, %d ENIs", n)
		}
		v.mustTask("stop", name)
		second := v.detach(1, v.subnet(1), "", name, probeBin(t), probeCommand, "wait", release)
		if second == first {
			t.Fatal("the second task has the first's ID")
		}
		// The old record (stopped, not yet collected) shares the name.
		if r := v.record(first); r.State != StateStopped || r.Name != name {
			t.Fatalf("the first task's record: %+v, want it stopped and named %s", r, name)
		}
		if out := v.mustTask("exec", name, "--", "sh", "-c", "echo $VPCNET_TASK_ID"); strings.TrimSpace(out) != second {
			t.Errorf("exec %s ran in task %q, want the live one %s", name, strings.TrimSpace(out), second)
		}
		v.mustTask("stop", name)
		if r := v.record(second); r.State != StateStopped {
			t.Errorf("stop %s: the live task is %s", name, r.State)
		}
	})

	t.Run("state directory permissions", func(t *testing.T) {
		custom := filepath.Join(t.TempDir(), "state")
		// Its tasks directory made by hand, wider than vpcnet makes it.
		if err := os.MkdirAll(filepath.Join(custom, "tasks"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(custom, 0o700); err != nil {
			t.Fatal(err)
		}
		v.mustTask("run", "--state-dir", custom, "--endpoint-idle", "1s", "--instance", "1", "--subnet", v.subnet(1), "--", "true")
		// The endpoint started for the custom directory (if it got the
		// address) is idle at once.
		waitFor(t, "the custom directory's endpoint to exit", time.Minute, func() bool {
			return !proc.Alive(v.endpointPIDIn(custom, 1))
		})
		// All of the custom directory, which vpcnet made; of the default,
		// the instance's part (the rest predates this test).
		for _, root := range []string{custom, v.instanceDir(1)} {
			checked := 0
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := os.Lstat(path)
				if err != nil {
					return err
				}
				want := os.FileMode(0o600)
				switch {
				case fi.Mode()&fs.ModeSymlink != 0 || fi.Mode()&fs.ModeSocket != 0:
					return nil
				case fi.IsDir():
					want = 0o700 | fs.ModeDir
				}
				checked++
				if fi.Mode() != want {
					t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if checked < 5 {
				t.Errorf("only %d entries in %s", checked, root)
			}
		}
	})
	v.assertClean(1)
}

// endpointPIDIn is endpointPID for a state directory of its own.
func (v *taskVPC) endpointPIDIn(dir string, n int) int {
	return readPID(filepath.Join(dir, "tasks", v.Instances[n-1].ID, "endpoint.pid"))
}
