package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vpcnet/vpcnet/internal/node/pool"
)

// vpcnetd's Kubernetes side, when it runs in a cluster: it reads its Node
// (the zone label that names its ENIConfig), the ENIConfig resources of
// custom networking, annotates pods with their addresses when asked (as
// aws-node's ANNOTATE_POD_IP), and reports pool failures as events on its
// Node. Everything here is best effort beside the pool: the API server
// being away never stops an ADD.

// Names shared with aws-node, so that tooling that reads them keeps working.
const (
	// PodIPsAnnotation holds a pod's addresses (ANNOTATE_POD_IP).
	PodIPsAnnotation = "vpc.amazonaws.com/pod-ips"
	// ZoneLabel is the Node label whose value names the ENIConfig to use
	// (aws-node's ENI_CONFIG_LABEL_DEF default).
	ZoneLabel = "topology.kubernetes.io/zone"
)

// eniConfigResource is the ENIConfig CRD of deploy/vpcnetd/eniconfig-crd.yaml.
var eniConfigResource = schema.GroupVersionResource{Group: "vpcnet.io", Version: "v1alpha1", Resource: "eniconfigs"}

// KubeConfig is how vpcnetd reaches the API server.
type KubeConfig struct {
	// Kubeconfig is a kubeconfig file; empty: in-cluster (the service
	// account) when KUBERNETES_SERVICE_HOST is set, else no Kubernetes.
	Kubeconfig string
	// NodeName is the agent's Node (NODE_NAME, from the DaemonSet's
	// downward API).
	NodeName string
	// AnnotatePodIP (ANNOTATE_POD_IP) writes PodIPsAnnotation on each pod
	// that gets an address.
	AnnotatePodIP bool
}

// LoadKubeConfig reads the Kubernetes settings from the environment:
// KUBECONFIG, NODE_NAME, ANNOTATE_POD_IP.
func LoadKubeConfig(cfg *Config) error {
	cfg.Kube.Kubeconfig = os.Getenv("KUBECONFIG")
	cfg.Kube.NodeName = os.Getenv("NODE_NAME")
	switch v := os.Getenv("ANNOTATE_POD_IP"); v {
	case "", "false":
	case "true":
		cfg.Kube.AnnotatePodIP = true
	default:
		return &pool.ConfigError{Name: "ANNOTATE_POD_IP", Problem: fmt.Sprintf("%q is not true or false", v)}
	}
	return nil
}

// kube is the agent's client of the API server.
type kube struct {
	cfg  KubeConfig
	log  *slog.Logger
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	node string

	mu         sync.Mutex
	lastEvents map[string]time.Time // reason -> when last reported
}

// newKube connects to the API server, or returns nil when the agent does
// not run in a cluster. NodeName is required in a cluster.
func newKube(cfg KubeConfig, log *slog.Logger) (*kube, error) {
	var rc *rest.Config
	var err error
	switch {
	case cfg.Kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configure the Kubernetes client: %w", err)
	}
	if cfg.NodeName == "" {
		return nil, errors.New("NODE_NAME: not set; on Kubernetes vpcnetd needs its Node's name (the DaemonSet sets it from spec.nodeName)")
	}
	rc.UserAgent = "vpcnetd"
	rc.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create the Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create the Kubernetes client: %w", err)
	}
	return &kube{cfg: cfg, log: log, cs: cs, dyn: dyn, node: cfg.NodeName, lastEvents: map[string]time.Time{}}, nil
}

// nodeZone reads the agent's Node and returns the value of its zone label
// (empty if it has none).
func (k *kube) nodeZone(ctx context.Context) (string, error) {
	n, err := k.cs.CoreV1().Nodes().Get(ctx, k.node, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read node %s: %w", k.node, err)
	}
	return n.Labels[ZoneLabel], nil
}

// eniConfig reads the ENIConfig named name: found false when there is none.
func (k *kube) eniConfig(ctx context.Context, name string) (pool.ENIConfig, bool, error) {
	u, err := k.dyn.Resource(eniConfigResource).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return pool.ENIConfig{}, false, nil
	}
	if err != nil {
		return pool.ENIConfig{}, false, fmt.Errorf("read ENIConfig %s: %w", name, err)
	}
	var ec pool.ENIConfig
	spec, _ := u.Object["spec"].(map[string]any)
	b, _ := json.Marshal(spec)
	if err := json.Unmarshal(b, &ec); err != nil || ec.Subnet == "" {
		return pool.ENIConfig{}, false, fmt.Errorf("ENIConfig %s: spec.subnet missing or malformed (%v)", name, err)
	}
	return ec, true, nil
}

// annotatePod writes the pod's addresses where aws-node does.
func (k *kube) annotatePod(ctx context.Context, namespace, name, ip string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{PodIPsAnnotation: ip}}})
	_, err := k.cs.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// eventEvery is how often one reason is reported on the Node, so that a
// stream of failing ADDs does not flood the API server.
const eventEvery = 30 * time.Second

// warn records a Warning event on the agent's Node, at most once per
// eventEvery per reason.
func (k *kube) warn(ctx context.Context, reason, message string) {
	k.mu.Lock()
	if t, ok := k.lastEvents[reason]; ok && time.Since(t) < eventEvery {
		k.mu.Unlock()
		return
	}
	k.lastEvents[reason] = time.Now()
	k.mu.Unlock()
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: k.node + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: k.node, UID: types.UID(k.node), APIVersion: "v1"},
		Reason:         reason, Message: message, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "vpcnetd", Host: k.node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := k.cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		k.log.Warn("report an event on the node", "reason", reason, "err", err)
	}
}

// toKube runs f against the API server in the background (bounded, and
// waited for at stop), so that an ADD never waits for Kubernetes. Nothing
// happens off Kubernetes.
func (a *Agent) toKube(f func(context.Context, *kube)) {
	if a.kube == nil {
		return
	}
	a.background.Add(1)
	go func() {
		defer a.background.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f(ctx, a.kube)
	}()
}

// syncKube reads what the pool takes from Kubernetes: under custom
// networking, the ENIConfig named by the Node's zone label. It runs with
// every slow resync (VPCNET_RECONCILE_INTERVAL), so a changed or new
// ENIConfig applies to the ENIs created after it. A failure keeps what was
// read before.
func (a *Agent) syncKube(ctx context.Context) {
	if a.kube == nil || !a.cfg.Pool.CustomNetworking {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	zone, err := a.kube.nodeZone(ctx)
	if err != nil {
		a.log.Warn("read the node's zone label", "err", err)
		return
	}
	name := zone
	if name == "" {
		name = a.id.Zone // a Node without the label: the instance's zone
	}
	ec, found, err := a.kube.eniConfig(ctx, name)
	if err != nil {
		a.log.Warn("read the node's ENIConfig", "name", name, "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var next *pool.ENIConfig
	if found {
		next = &ec
	}
	if fmt.Sprint(next) != fmt.Sprint(a.kubeENIConfig) {
		a.log.Info("ENIConfig", "name", name, "found", found, "subnet", ec.Subnet, "groups", ec.SecurityGroups)
		a.kubeENIConfig = next
		a.broadcast() // waiting ADDs may now be served
		a.kick()
	}
}

// poolConfigLocked is the pool configuration the policy decides with: the
// agent's, with the zone's ENIConfig resource where the file and the
// environment name none for the zone (they win: an operator's explicit
// setting). Callers hold mu.
func (a *Agent) poolConfigLocked() pool.Config {
	c := a.cfg.Pool
	if a.kubeENIConfig == nil {
		return c
	}
	if _, ok := c.ENIConfigs[a.id.Zone]; ok {
		return c
	}
	m := make(map[string]pool.ENIConfig, len(c.ENIConfigs)+1)
	for k, v := range c.ENIConfigs {
		m[k] = v
	}
	m[a.id.Zone] = *a.kubeENIConfig
	c.ENIConfigs = m
	return c
}
