#!/usr/bin/env bash
# vpcnet on Kubernetes, on a local VPC: `vpcnet local up --kubernetes`
# (the control plane on an ENI inside the VPC, both instances nodes),
# vpcnetd installed as operators install aws-node (kubectl apply -k
# deploy/), a Deployment whose pods get VPC addresses on two nodes and reach
# each other by address and through a ClusterIP Service, the pool as
# vpcnetd reports it and the ENIs as EC2 describes them. Every check prints
# ok or FAIL; the script exits non-zero if any failed. The local VPC is
# removed even on failure. The first run on a machine builds Kubernetes
# (make kubernetes, before this script): 4-6 minutes, with progress.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VPCNET_BIN_DIR:-$ROOT/bin}
V="$BIN/vpcnet"
NAME=${VPCNET_DEMO_NAME:-vpcnet-k8s-demo}
export PATH="${VPCNET_K8S_BIN:-/var/cache/vpcnet/kubernetes-v1.36.1/bin}:$PATH"
START=$(date +%s)
source "$(dirname "$0")/demo-lib.sh"

cleanup() {
	local rc=$?
	section "Teardown"
	"$V" local down --name "$NAME" 2>&1 | indent || true
	if ip netns list | grep -q "^$NAME-" || ls -d /sys/fs/cgroup/*/vpcnet-node-* >/dev/null 2>&1; then
		printf '   %sFAIL%s  namespaces or node cgroups of %s are left\n' "$red" "$off" "$NAME"
		rc=1
	else
		say "nothing left: no namespace, node cgroup or process of $NAME remains"
	fi
	say "took $(($(date +%s) - START)) s"
	exit "$rc"
}
trap cleanup EXIT

section "1. A local VPC with a Kubernetes cluster"
"$V" local down --name "$NAME" >/dev/null 2>&1 || true # what a crashed demo left
"$V" local up --name "$NAME" --kubernetes 2>&1 | indent
eval "$("$V" local env --name "$NAME")"
say "KUBECONFIG=$KUBECONFIG"
kubectl get nodes -o wide | indent

section "2. vpcnetd as a DaemonSet: kubectl apply -k deploy/"
kubectl apply -k "$ROOT/deploy" | indent
check "the DaemonSet rolled out on both nodes" kubectl -n kube-system rollout status daemonset/vpcnetd --timeout=180s
check "both nodes are Ready" kubectl wait --for=condition=Ready node --all --timeout=120s
kubectl get nodes | indent

section "3. A Deployment over both nodes, a ClusterIP Service"
kubectl apply -f - <<'YAML' | indent
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      dnsPolicy: Default
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
        - name: web
          image: localhost/vpcnet-busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
YAML
check "6 pods Running" kubectl rollout status deployment/web --timeout=180s
kubectl get pods -o wide | indent

section "4. Across nodes, by pod address and by Service"
pods=$(kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}')
read -r a_name a_ip a_node < <(echo "$pods" | head -1)
read -r b_name b_ip b_node < <(echo "$pods" | awk -v n="$a_node" '$3 != n' | head -1)
say "$a_name ($a_ip on $a_node) -> $b_name ($b_ip on $b_node)"
check "HTTP by pod address across nodes answers $b_name" \
	bash -c "[ \"\$(kubectl exec $a_name -- wget -qO- http://$b_ip:8080/)\" = $b_name ]"
svc=$(kubectl get service web -o jsonpath='{.spec.clusterIP}')
check "HTTP through the Service $svc answers a web pod" \
	bash -c "kubectl exec $a_name -- wget -qO- http://$svc/ | grep -q '^web-'"

section "5. The pool on a node (vpcnet node status) and the ENIs as EC2 describes them"
"$V" node status --name "$NAME" --instance 1 | indent
aws --endpoint-url "$AWS_ENDPOINT_URL_EC2" --output table ec2 describe-network-interfaces \
	--query 'NetworkInterfaces[].{ENI:NetworkInterfaceId,Instance:Attachment.InstanceId,Subnet:SubnetId,Addresses:length(PrivateIpAddresses),Description:Description}' | indent

if [ "$failures" -gt 0 ]; then
	printf '\n%s%d check(s) failed%s\n' "$red" "$failures" "$off"
	exit 1
fi
printf '\n%sall checks passed%s\n' "$green" "$off"
