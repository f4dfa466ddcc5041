package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestWriteArchive writes a one-layer image, unpacks the archive and reads
// it back as an OCI layout: one manifest named by containerd's annotation,
// whose layer is the layer given, with the entrypoint and command; the same
// inputs give the same digest.
func TestWriteArchive(t *testing.T) {
	l := NewLayer()
	l.Dir("bin", 0o755)
	l.File("bin/hello", 0o755, []byte("#!/bin/sh\necho hello\n"))
	l.Symlink("hello", "/bin/hello")
	layer, err := l.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	digest := func() string {
		img, err := Image(layer, []string{"/bin/hello"}, []string{"world"})
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	if a, b := digest(), digest(); a != b {
		t.Errorf("the same inputs gave digests %s and %s", a, b)
	}

	dir := t.TempDir()
	img, err := Image(layer, []string{"/bin/hello"}, []string{"world"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "hello.tar")
	if err := WriteArchive(file, "localhost/hello:v1", img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "unpacked")
	untar(t, file, out)
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index %+v, %v: want one manifest", im, err)
	}
	m := im.Manifests[0]
	if m.Annotations["io.containerd.image.name"] != "localhost/hello:v1" || m.Annotations["org.opencontainers.image.ref.name"] != "v1" {
		t.Errorf("annotations %v", m.Annotations)
	}
	back, err := idx.Image(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// The blob is the layer itself, as its media type says (containerd
	// reads an uncompressed layer's blob as a tar).
	man, err := back.Manifest()
	if err != nil || len(man.Layers) != 1 {
		t.Fatalf("manifest %+v, %v", man, err)
	}
	blob, err := os.ReadFile(filepath.Join(out, "blobs", man.Layers[0].Digest.Algorithm, man.Layers[0].Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(blob) != sha256.Sum256(layer) || man.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
		t.Errorf("layer blob (%s, %d bytes) is not the layer given (%d bytes)", man.Layers[0].MediaType, len(blob), len(layer))
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v, %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	want := sha256.Sum256(layer)
	if sum := sha256.Sum256(got); sum != want {
		t.Errorf("layer read back %s, want %s", hex.EncodeToString(sum[:]), hex.EncodeToString(want[:]))
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/bin/hello"}) || !slices.Equal(cf.Config.Cmd, []string{"world"}) || cf.OS != "linux" {
		t.Errorf("config %+v", cf.Config)
	}
	// A failed write leaves no file.
	if err := WriteArchive(filepath.Join(dir, "missing", "x.tar"), "localhost/x:v1", img); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing", "x.tar")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failed write: %v", err)
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
