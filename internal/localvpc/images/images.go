// Package images builds the container images a local VPC's nodes run
// (pause, busybox, vpcnet's own) without a registry or a Docker engine: a
// layer is a tar of files made here; the image around it (config, manifest,
// digests, the OCI image layout) is go-containerregistry's; the result is
// an archive that `ctr images import` takes.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time of every file and of every image, so that the same
// inputs make the same digests.
var Epoch = time.Unix(0, 0)

// Layer builds a layer (an uncompressed tar of a root filesystem) in
// memory; the first error sticks and Bytes returns it. Parent directories
// are not implied: add them first.
type Layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	dirs map[string]bool
	err  error
}

// NewLayer starts an empty layer.
func NewLayer() *Layer {
	l := &Layer{dirs: map[string]bool{".": true, "": true}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *Layer) header(h *tar.Header) {
	if l.err != nil {
		return
	}
	h.ModTime, h.Format = Epoch, tar.FormatPAX
	l.err = l.tw.WriteHeader(h)
}

// Dir adds a directory (once, however often it is named).
func (l *Layer) Dir(name string, mode int64) {
	if l.dirs[name] {
		return
	}
	l.dirs[name] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
}

// File adds a regular file.
func (l *Layer) File(name string, mode int64, data []byte) {
	l.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
	if l.err == nil {
		_, l.err = l.tw.Write(data)
	}
}

// Symlink adds a symbolic link.
func (l *Layer) Symlink(name, target string) {
	l.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
}

// Bytes ends the layer and returns it.
func (l *Layer) Bytes() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	return l.buf.Bytes(), nil
}

// Image is a one-layer OCI image for this machine's architecture, with
// the entrypoint, command and a PATH.
func Image(layer []byte, entrypoint, cmd []string) (v1.Image, error) {
	// Stored as it is, uncompressed: its digest is its diff ID (a tarball
	// layer would be gzipped whatever media type it is given).
	l := static.NewLayer(layer, types.OCIUncompressedLayer)
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, l)
	if err != nil {
		return nil, fmt.Errorf("add the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = runtime.GOARCH, "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.Entrypoint, cf.Config.Cmd = entrypoint, cmd
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("set the image's config: %w", err)
	}
	return img, nil
}

// WriteArchive writes img as an OCI image layout in a tar file (what `ctr
// images import` takes), named ref (localhost/NAME:TAG) in the
// io.containerd.image.name annotation that containerd names it by.
func WriteArchive(file, ref string, img v1.Image) error {
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	dir, err := os.MkdirTemp(filepath.Dir(file), ".oci-layout-*")
	if err != nil {
		return fmt.Errorf("write image %s: %w", ref, err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write image %s: %w", ref, err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{Architecture: runtime.GOARCH, OS: "linux"}),
		layout.WithAnnotations(map[string]string{
			"io.containerd.image.name":          ref,
			"org.opencontainers.image.ref.name": tag,
		})); err != nil {
		return fmt.Errorf("write image %s: %w", ref, err)
	}
	return tarDir(dir, file)
}

// tarDir writes the files under dir into the tar file out, paths relative
// to dir.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: Epoch, Format: tar.FormatPAX})
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(data)), ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
