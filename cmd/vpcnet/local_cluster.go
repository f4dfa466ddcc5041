package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpcnet/vpcnet/internal/localvpc"
)

// kubeRelease is the Kubernetes release scripts/install-kubernetes.sh builds.
const kubeRelease = "v1.36.1"

func defaultKubeBin() string {
	if d := os.Getenv("VPCNET_K8S_BIN"); d != "" {
		return d
	}
	return "/var/cache/vpcnet/kubernetes-" + kubeRelease + "/bin"
}

// ensureKubernetesBinaries builds what is missing of the cluster's
// binaries with scripts/install-kubernetes.sh (next to this binary's bin/
// in a checkout), which shows its progress; without the script it says
// how to get them.
func ensureKubernetesBinaries(dir string) error {
	missing := localvpc.MissingClusterBinaries(dir)
	if len(missing) == 0 {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	script := filepath.Join(filepath.Dir(filepath.Dir(exe)), "scripts", "install-kubernetes.sh")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("the Kubernetes binaries %s are not in %s (--kubernetes-bin): `make kubernetes` in a vpcnet checkout builds them", strings.Join(missing, ", "), dir)
	}
	if filepath.Base(dir) != "bin" {
		return fmt.Errorf("the Kubernetes binaries %s are not in %s; scripts/install-kubernetes.sh builds into a directory named bin", strings.Join(missing, ", "), dir)
	}
	fmt.Fprintf(os.Stderr, "Kubernetes %s is not built on this machine yet: building %s (once; usually 4-6 minutes on 2 cores)\n", kubeRelease, strings.Join(missing, ", "))
	cmd := exec.Command(script, missing...)
	cmd.Env = append(os.Environ(), "VPCNET_K8S_CACHE="+filepath.Dir(dir))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build Kubernetes with %s: %w", script, err)
	}
	return nil
}

// startCluster starts (or completes) the cluster of c, with progress on
// stderr.
func startCluster(cmd *cobra.Command, c *localvpc.Control, kubeBin string) error {
	if err := ensureKubernetesBinaries(kubeBin); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now()
	err = localvpc.StartCluster(cmd.Context(), c, localvpc.ClusterOptions{
		KubernetesBin: kubeBin, VpcnetBin: filepath.Dir(exe), Progress: os.Stderr})
	if err != nil {
		return fmt.Errorf("%w\n(the VPC is up: `vpcnet local up --kubernetes%s` again completes the cluster; `vpcnet local down%s` removes everything)", err, localvpc.NameFlag(c.Name), localvpc.NameFlag(c.Name))
	}
	fmt.Fprintf(os.Stderr, "cluster ready in %s. Next: eval \"$(vpcnet local env%s)\"; kubectl apply -k deploy/; kubectl get nodes\n",
		time.Since(start).Round(100*time.Millisecond), localvpc.NameFlag(c.Name))
	return nil
}
