package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       stat
		ok         bool
	}{
		{"running", "4242 (vpcnet) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 987654 1000 100", stat{'S', 987654}, true},
		{"zombie", "4242 (vpcnet) Z 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 0 0", stat{'Z', 5}, true},
		{"name with spaces and parentheses", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123 0 0", stat{'R', 123}, true},
		{"truncated", "7 (x) S 1 2 3", stat{}, false},
		{"no command name", "garbage", stat{}, false},
		{"start not a number", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0 0", stat{}, false},
	} {
		got, ok := parseStat(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: parseStat = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSame(t *testing.T) {
	self := os.Getpid()
	start := StartTime(self)
	if start == 0 {
		t.Fatal("no start time for this process")
	}
	for _, tc := range []struct {
		name  string
		pid   int
		start uint64
		want  bool
	}{
		{"this process", self, start, true},
		{"this process, start not recorded", self, 0, true},
		{"a recycled PID: another start time", self, start + 1, false},
		{"no PID", 0, 0, false},
		{"a PID that does not exist", 1 << 30, 0, false},
	} {
		if got := Same(tc.pid, tc.start); got != tc.want {
			t.Errorf("%s: Same(%d, %d) = %v, want %v", tc.name, tc.pid, tc.start, got, tc.want)
		}
	}
}

// TestZombieIsNotAlive: a child that exited but was not waited for still
// takes signal 0; it is not alive.
func TestZombieIsNotAlive(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := cmd.Process.Pid
	// Wait (without reaping) until the child has exited.
	for syscall.Kill(pid, 0) == nil {
		if st, ok := readStat(pid); ok && st.state == 'Z' {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("the exited, unreaped child %d is alive", pid)
	}
}

func TestStartDetachedAndStop(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "logs", "d.log")
	// A process that ignores SIGTERM must be killed; one that does not is
	// stopped by SIGTERM alone.
	for _, tc := range []struct {
		name   string
		script string
		killed bool
	}{
		{"stops on SIGTERM", "echo started; while :; do sleep 0.05; done", false},
		{"ignores SIGTERM", "trap '' TERM; echo started; while :; do sleep 0.05; done", true},
	} {
		pid, err := StartDetached(logPath, []string{"sh", "-c", tc.script}, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
		// Wait until the shell runs and has set its trap (it prints after).
		WaitGone(func() bool {
			b, _ := os.ReadFile(logPath)
			return strings.Count(string(b), "started") < 1
		}, time.Minute)
		if !RunsBinary(pid, "sh") && !RunsBinary(pid, "dash") && !RunsBinary(pid, "bash") {
			t.Errorf("%s: pid %d does not run a shell", tc.name, pid)
		}
		if RunsBinary(pid, "vpcnet") {
			t.Errorf("%s: pid %d is taken for vpcnet", tc.name, pid)
		}
		if sid, _ := unix.Getsid(pid); sid != pid {
			t.Errorf("%s: the detached process is in session %d, not its own", tc.name, sid)
		}
		if !Alive(pid) {
			t.Fatalf("%s: the detached process is not alive", tc.name)
		}
		if got := Stop(pid, time.Second); got != tc.killed {
			t.Errorf("%s: Stop killed = %v, want %v", tc.name, got, tc.killed)
		}
		if Alive(pid) {
			t.Errorf("%s: pid %d alive after Stop", tc.name, pid)
		}
		if err := os.Truncate(logPath, 0); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(logPath): 0o700 | os.ModeDir, logPath: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode(), err, want)
		}
	}
}

// TestAnyInNamespace: this process is in its own namespace; nothing is
// in a path with no namespace.
func TestAnyInNamespace(t *testing.T) {
	self := "/proc/self/ns/net"
	if !InNamespace(os.Getpid(), self) {
		t.Error("this process is not in its own network namespace")
	}
	if !AnyInNamespace(self) {
		t.Error("no process in this process's network namespace")
	}
	if AnyInNamespace(filepath.Join(t.TempDir(), "none")) {
		t.Error("a process in a namespace that does not exist")
	}

	// A namespace of its own: empty, then holding a child, then empty.
	n := testenv.NewNS(t, "htproc")
	if AnyInNamespace(n.Path()) {
		t.Fatalf("a process in the new, empty namespace %s", n.Path())
	}
	cmd := exec.Command("sleep", "60")
	if err := netops.StartIn(n.Path(), cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !AnyInNamespace(n.Path()) || !InNamespace(cmd.Process.Pid, n.Path()) {
		t.Errorf("the child %d in %s is not seen there", cmd.Process.Pid, n.Path())
	}
	if InNamespace(os.Getpid(), n.Path()) {
		t.Error("this process is taken for one in the new namespace")
	}
	_ = cmd.Process.Kill()
	// Killed but not yet reaped: a zombie holds no namespace.
	WaitGone(func() bool { return Alive(cmd.Process.Pid) }, time.Minute)
	if AnyInNamespace(n.Path()) {
		t.Error("a process in the namespace after its only one was killed")
	}
}
