package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

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

// epoch is the modification time of every file in the images, so that the
// same inputs make the same digests.
var epoch = time.Unix(0, 0)

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
	l := newLayer()
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var"} {
		l.dir(d, 0o755)
	}
	l.dir("tmp", 0o1777)
	l.file("bin/busybox", 0o755, bin)
	l.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
	l.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" || strings.Contains(applet, "..") {
			continue
		}
		l.dir(path.Dir(applet), 0o755)
		l.symlink(applet, "/bin/busybox")
	}
	return l.close()
}

// PauseLayer returns a layer holding the pause binary at /pause.
func PauseLayer(pauseBinary string) ([]byte, error) {
	bin, err := os.ReadFile(pauseBinary)
	if err != nil {
		return nil, err
	}
	l := newLayer()
	for _, d := range []string{"dev", "proc", "sys"} {
		l.dir(d, 0o755)
	}
	l.file("pause", 0o755, bin)
	return l.close()
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
// (localhost/x:tag), recorded in the io.containerd.image.name annotation.
func WriteOCIArchive(file, name string, layer []byte, entrypoint, cmd []string) error {
	tag := name[strings.LastIndexByte(name, ':')+1:]
	blobs := map[string][]byte{}
	add := func(b []byte) (digest string) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d
	}
	layerDigest := add(layer)
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": entrypoint,
			"Cmd":        cmd,
			"Env":        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest := add(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{
			"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest":    configDigest, "size": len(config),
		},
		"layers": []map[string]any{{
			"mediaType": "application/vnd.oci.image.layer.v1.tar",
			"digest":    layerDigest, "size": len(layer),
		}},
	})
	manifestDigest := add(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []map[string]any{{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    manifestDigest, "size": len(manifest),
			"platform": map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{
				"io.containerd.image.name":          name,
				"org.opencontainers.image.ref.name": tag,
			},
		}},
	})

	l := newLayer()
	l.file("oci-layout", 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`))
	l.file("index.json", 0o644, index)
	l.dir("blobs", 0o755)
	l.dir("blobs/sha256", 0o755)
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		l.file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), 0o644, blobs[d])
	}
	archive, err := l.close()
	if err != nil {
		return err
	}
	return os.WriteFile(file, archive, 0o644)
}

// layer builds a tar archive in memory; the first error sticks.
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
	err  error
}

func newLayer() *layer {
	l := &layer{dirs: map[string]bool{".": true, "": true}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) header(h *tar.Header) {
	if l.err != nil {
		return
	}
	h.ModTime, h.Format = epoch, tar.FormatPAX
	l.err = l.tw.WriteHeader(h)
}

func (l *layer) dir(name string, mode int64) {
	if l.dirs[name] {
		return
	}
	l.dirs[name] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
}

func (l *layer) file(name string, mode int64, data []byte) {
	l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
	if l.err == nil {
		_, l.err = l.tw.Write(data)
	}
}

func (l *layer) symlink(name, target string) {
	l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

func (l *layer) close() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	return l.buf.Bytes(), nil
}
