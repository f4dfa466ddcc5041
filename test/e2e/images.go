package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpcnet/vpcnet/internal/localvpc/images"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The images, built offline: no registry is reachable from these machines.
const (
	// BusyboxImage is Debian's static busybox with every applet linked,
	// /etc/passwd and /etc/group: the test containers' userland.
	BusyboxImage = "localhost/vpcnet-busybox:e2e"
	// PauseImage holds test/e2e/pause, the CRI sandbox process.
	PauseImage = "localhost/vpcnet-pause:e2e"
	// BusyboxBinary is where Debian's busybox-static installs it.
	BusyboxBinary = "/bin/busybox"
)

// BusyboxLayer returns an uncompressed tar of a busybox root filesystem.
// It is a `podman import` rootfs and an OCI layer at once.
func BusyboxLayer() ([]byte, error) {
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		return nil, fmt.Errorf("read busybox (Debian busybox-static): %w", err)
	}
	out, err := exec.Command(BusyboxBinary, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w", err)
	}
	l := images.NewLayer()
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var"} {
		l.Dir(d, 0o755)
	}
	l.Dir("tmp", 0o1777)
	l.File("bin/busybox", 0o755, bin)
	l.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
	l.File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || strings.Contains(applet, "..") {
			continue
		}
		l.Dir(path.Dir(applet), 0o755)
		l.Symlink(applet, "/bin/busybox")
	}
	return l.Bytes()
}

// PauseLayer returns a layer holding the pause binary at /pause.
func PauseLayer(pauseBinary string) ([]byte, error) {
	bin, err := os.ReadFile(pauseBinary)
	if err != nil {
		return nil, err
	}
	l := images.NewLayer()
	for _, d := range []string{"dev", "proc", "sys"} {
		l.Dir(d, 0o755)
	}
	l.File("pause", 0o755, bin)
	return l.Bytes()
}

// BuildPause builds test/e2e/pause (static) into dir and returns its path.
func BuildPause(t testing.TB, dir string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./test/e2e/pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, b)
	}
	return out
}

// WriteOCIArchive writes a one-layer image as an OCI image layout in a tar
// file, the format `ctr images import` takes. name is the full reference
// (localhost/x:tag).
func WriteOCIArchive(file, name string, layer []byte, entrypoint, cmd []string) error {
	img, err := images.Image(layer, entrypoint, cmd)
	if err != nil {
		return err
	}
	return images.WriteArchive(file, name, img)
}
