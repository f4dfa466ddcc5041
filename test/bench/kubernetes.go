package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vpcnet/vpcnet/internal/localvpc"
	"github.com/vpcnet/vpcnet/internal/localvpc/images"
	"github.com/vpcnet/vpcnet/internal/node"
)

var (
	kubeBin  = flag.String("kubernetes-bin", envOr("VPCNET_K8S_BIN", "/var/cache/vpcnet/kubernetes-v1.36.1/bin"), "directory of the Kubernetes binaries (kubernetes section)")
	kubePods = flag.Int("kubernetes-pods", 30, "pods of the kubernetes section's Deployment")
	kubeRuns = flag.Int("kubernetes-runs", 3, "runs per plugin of the kubernetes section")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// benchKubernetes measures a Deployment of kubePods pods on a two-node
// cluster of a local VPC (`up --kubernetes`, m5.large): from the create
// call to every pod Running with an address, and per pod from its first
// sighting (its creation) to Running, watched with millisecond timestamps
// (the API's are whole seconds). Run after run, alternately with vpcnet
// (vpcnetd from deploy/, pool at its defaults, each run after the previous
// one's addresses left their cooldown) and, on the same cluster, with the
// reference bridge + host-local (a conflist that sorts first), which is
// the runtime's floor: kubelet, containerd and runc with the cheapest
// plugin that gives a pod an address.
func benchKubernetes() {
	stop := onInterrupt()
	defer stop()
	fmt.Printf("## Kubernetes: a Deployment of %d pods on two nodes\n\n", *kubePods)
	if miss := localvpc.MissingClusterBinaries(*kubeBin); len(miss) > 0 {
		fmt.Printf("**kubernetes skipped:** %v not in %s (make kubernetes builds them)\n\n", miss, *kubeBin)
		return
	}
	if err := runKubernetesBench(); err != nil {
		fmt.Printf("**kubernetes failed:** %v\n\n", err)
	}
}

func runKubernetesBench() error {
	// The cluster takes the Kubernetes binaries from the same place.
	os.Setenv("VPCNET_K8S_BIN", *kubeBin)
	v, err := upVPC("k", "--kubernetes", "--instance-type", "m5.large")
	if err != nil {
		return err
	}
	defer v.down()
	kubectl := func(args ...string) error {
		cmd := exec.Command(filepath.Join(*kubeBin, "kubectl"), append([]string{"--kubeconfig", v.KubernetesKubeconfig}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	root, err := filepath.Abs(".")
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"apply", "-k", filepath.Join(root, "deploy")},
		{"-n", "kube-system", "rollout", "status", "daemonset/vpcnetd", "--timeout=180s"},
		{"wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"},
	} {
		if err := kubectl(args...); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", v.KubernetesKubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	var rows [][]string
	row := func(plugin string, totals, perPod sample) {
		rows = append(rows, []string{plugin, fmt.Sprint(len(totals)), ms(totals.median()), ms(totals.quantile(0)), ms(totals.quantile(1)),
			ms(perPod.median()), ms(perPod.quantile(0.99))})
	}
	// Interleaved, so that neither plugin has the quieter machine: vpcnet
	// (each run after the last one's addresses are free again), then the
	// reference, run after run.
	plugins := []struct {
		name  string
		ready func() error
	}{
		{"vpcnet (vpc-pod + vpcnetd)", func() error {
			if err := setBridge(v, false); err != nil {
				return err
			}
			return waitPoolsSettled(v)
		}},
		{"bridge + host-local (reference)", func() error { return setBridge(v, true) }},
	}
	totals, perPod := make([]sample, len(plugins)), make([]sample, len(plugins))
	for r := 0; r < *kubeRuns; r++ {
		for i, p := range plugins {
			if err := p.ready(); err != nil {
				return err
			}
			total, pods, err := deploymentRun(cs, *kubePods)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", p.name, r+1, err)
			}
			totals[i], perPod[i] = append(totals[i], total), append(perPod[i], pods...)
		}
	}
	for i, p := range plugins {
		row(p.name, totals[i], perPod[i])
	}
	table([]string{"plugin", "runs", "apply → all Running (ms, median)", "min", "max", "per pod p50 (ms)", "per pod p99 (ms)"}, rows)
	fmt.Printf("Per pod: from the pod's creation to Running with an address. vpcnet's pool holds WARM_ENI_TARGET=1 (one ENI's worth of free addresses); the first run grows it by an ENI per node.\n\n")
	return nil
}

// deploymentRun creates the bench Deployment, waits for n pods Running
// with an address, then deletes it and waits for its pods to be gone.
func deploymentRun(cs *kubernetes.Clientset, n int) (total time.Duration, perPod sample, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pods := cs.CoreV1().Pods("default")
	w, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
	if err != nil {
		return 0, nil, err
	}
	defer w.Stop()
	replicas := int32(n)
	grace := int64(0)
	labels := map[string]string{"app": "bench"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					DNSPolicy:                     corev1.DNSDefault,
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
					Containers: []corev1.Container{{Name: "sleep", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
						Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}
	start := time.Now()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return 0, nil, err
	}
	seen, running := map[string]time.Time{}, map[string]bool{}
	for len(running) < n {
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("%d of %d pods Running: %w", len(running), n, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				return 0, nil, fmt.Errorf("the watch ended with %d of %d pods Running", len(running), n)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			now := time.Now()
			if _, ok := seen[p.Name]; !ok {
				seen[p.Name] = now
			}
			if !running[p.Name] && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running[p.Name] = true
				perPod = append(perPod, now.Sub(seen[p.Name]))
			}
		}
	}
	total = time.Since(start)
	fg := metav1.DeletePropagationForeground
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "bench", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		return 0, nil, err
	}
	for {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return 0, nil, err
		}
		_, gerr := cs.AppsV1().Deployments("default").Get(ctx, "bench", metav1.GetOptions{})
		if len(l.Items) == 0 && apierrors.IsNotFound(gerr) {
			return total, perPod, nil
		}
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("%d bench pods still there after delete: %w", len(l.Items), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitPoolsSettled waits until no node's pool holds an address in cooldown
// or assigned (the last run's pods are gone and their addresses free).
func waitPoolsSettled(v *benchVPC) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		settled := true
		for _, in := range v.Instances {
			out, err := exec.Command(vpcnetBin(), "node", "status", "--name", v.Name, "--instance", in.ID, "-o", "json").Output()
			if err != nil {
				return fmt.Errorf("vpcnet node status --instance %s: %w", in.ID, err)
			}
			var r node.Report
			if err := json.Unmarshal(out, &r); err != nil {
				return err
			}
			if r.Totals.Cooldown > 0 || r.Totals.Assigned > 0 {
				settled = false
			}
		}
		if settled {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pools still hold addresses in cooldown after 2m")
		}
		time.Sleep(time.Second)
	}
}

// setBridge puts the reference bridge + host-local on every node (on:
// the plugins into its /opt/cni/bin and a conflist that sorts before
// vpcnetd's, since the CRI uses the first, with a /24 of its own per node)
// or takes the conflist away (off: vpcnetd's is the first again).
func setBridge(v *benchVPC, on bool) error {
	for i, in := range v.Instances {
		conf, err := localvpc.InstanceHostPath(v.StateDir, in.ID, "/etc/cni/net.d")
		if err != nil {
			return err
		}
		file := filepath.Join(conf, "05-bench-bridge.conflist")
		if !on {
			if err := os.Remove(file); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		bin, err := localvpc.InstanceHostPath(v.StateDir, in.ID, "/opt/cni/bin")
		if err != nil {
			return err
		}
		for _, p := range []string{"bridge", "host-local"} {
			b, err := os.ReadFile(filepath.Join(*refDir, p))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(bin, p), b, 0o755); err != nil {
				return err
			}
		}
		list := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.%d.0/24"}]],"dataDir":"/var/lib/cni/bench-bridge"}}]}`, i)
		if err := os.WriteFile(file, []byte(list), 0o644); err != nil {
			return err
		}
	}
	// The CRI notices the new conflist within moments.
	time.Sleep(3 * time.Second)
	return nil
}
