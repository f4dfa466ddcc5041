package images

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// The images a local VPC's nodes run, named as containerd names them.
const (
	// Busybox is Debian's static busybox with every applet linked,
	// /etc/passwd and /etc/group: a userland for test pods.
	Busybox = "localhost/vpcnet-busybox:latest"
	// Pause holds vpcnet-pause, the CRI sandbox process.
	Pause = "localhost/vpcnet-pause:latest"
	// Vpcnet holds vpcnetd, vpc-pod and the reference plugins a conflist
	// chains after it, under /opt/vpcnet/bin: what deploy/'s DaemonSet
	// runs.
	Vpcnet = "localhost/vpcnet:latest"
)

// Where the binaries come from on this machine.
const (
	// BusyboxBinary is where Debian's busybox-static installs it.
	BusyboxBinary = "/bin/busybox"
	// ReferencePluginDir is where Debian's containernetworking-plugins
	// installs the reference plugins.
	ReferencePluginDir = "/usr/lib/cni"
	// VpcnetBinDir is where the vpcnet image holds its binaries.
	VpcnetBinDir = "/opt/vpcnet/bin"
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
	l := NewLayer()
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
		return nil, fmt.Errorf("read the pause binary: %w", err)
	}
	l := NewLayer()
	for _, d := range []string{"dev", "proc", "sys"} {
		l.Dir(d, 0o755)
	}
	l.File("pause", 0o755, bin)
	return l.Bytes()
}

// VpcnetLayer returns the vpcnet image's layer: vpcnetd and vpc-pod from
// binDir (static builds), portmap, bandwidth and loopback from the
// reference plugins, under VpcnetBinDir; and the machine's CA bundle, for
// an EC2 endpoint on HTTPS.
func VpcnetLayer(binDir string) ([]byte, error) {
	l := NewLayer()
	for _, d := range []string{"dev", "etc", "opt", "opt/vpcnet", "opt/vpcnet/bin", "proc", "run", "sys", "var", "var/lib", "var/log"} {
		l.Dir(d, 0o755)
	}
	l.Dir("tmp", 0o1777)
	add := func(from, name string) error {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			return fmt.Errorf("build the vpcnet image: %w", err)
		}
		l.File(path.Join(VpcnetBinDir[1:], name), 0o755, b)
		return nil
	}
	for _, b := range []string{"vpcnetd", "vpc-pod"} {
		if err := add(binDir, b); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"portmap", "bandwidth", "loopback"} {
		if err := add(ReferencePluginDir, b); err != nil {
			return nil, err
		}
	}
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		l.Dir("etc/ssl", 0o755)
		l.Dir("etc/ssl/certs", 0o755)
		l.File("etc/ssl/certs/ca-certificates.crt", 0o644, ca)
	}
	return l.Bytes()
}

// WriteNodeImages writes the archives of the three images into dir
// (busybox.tar, pause.tar, vpcnet.tar) from the binaries in binDir
// (vpcnet-pause, vpcnetd, vpc-pod), and returns their paths.
func WriteNodeImages(dir, binDir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type image struct {
		file, ref  string
		layer      func() ([]byte, error)
		entry, cmd []string
	}
	list := []image{
		{"pause.tar", Pause, func() ([]byte, error) { return PauseLayer(filepath.Join(binDir, "vpcnet-pause")) }, []string{"/pause"}, nil},
		{"busybox.tar", Busybox, BusyboxLayer, nil, []string{"sh"}},
		{"vpcnet.tar", Vpcnet, func() ([]byte, error) { return VpcnetLayer(binDir) }, nil, []string{VpcnetBinDir + "/vpcnetd"}},
	}
	var out []string
	for _, im := range list {
		layer, err := im.layer()
		if err != nil {
			return nil, err
		}
		img, err := Image(layer, im.entry, im.cmd)
		if err != nil {
			return nil, fmt.Errorf("build image %s: %w", im.ref, err)
		}
		p := filepath.Join(dir, im.file)
		if err := WriteArchive(p, im.ref, img); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
