package e2e

import (
	"testing"

	"github.com/vpcnet/vpcnet/internal/localvpc/images"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The images, built offline: no registry is reachable from these machines.
const (
	// BusyboxImage is Debian's static busybox (images.BusyboxLayer): the
	// test containers' userland.
	BusyboxImage = "localhost/vpcnet-busybox:e2e"
	// PauseImage holds vpcnet-pause, the CRI sandbox process.
	PauseImage = "localhost/vpcnet-pause:e2e"
	// BusyboxBinary is where Debian's busybox-static installs it.
	BusyboxBinary = images.BusyboxBinary
)

// BusyboxLayer returns an uncompressed tar of a busybox root filesystem.
func BusyboxLayer() ([]byte, error) { return images.BusyboxLayer() }

// PauseLayer returns a layer holding the pause binary at /pause.
func PauseLayer(pauseBinary string) ([]byte, error) { return images.PauseLayer(pauseBinary) }

// BuildPause returns the path of vpcnet-pause (built by make build, or
// by the test).
func BuildPause(t testing.TB, _ string) string {
	t.Helper()
	return testenv.Binary(t, "vpcnet-pause")
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
