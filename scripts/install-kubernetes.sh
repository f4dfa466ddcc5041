#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries vpcnet's tests use, once per
# machine, from the Go module proxy, into a cache outside the repository:
#
#   $VPCNET_K8S_CACHE (default /var/cache/vpcnet/kubernetes-v1.36.1)/bin/
#     etcd            go.etcd.io/etcd/server/v3 v3.6.16
#     kube-apiserver  k8s.io/kubernetes v1.36.1
#     kubectl         k8s.io/kubernetes v1.36.1
#
# Usage: scripts/install-kubernetes.sh [COMPONENT...]
#   COMPONENT is etcd or a command of k8s.io/kubernetes/cmd (kube-apiserver,
#   kubectl, kubelet, kube-controller-manager, kube-scheduler, kube-proxy);
#   the default is "etcd kube-apiserver kubectl".
#
# Idempotent and quiet: what is in the cache already is not built again, and
# when everything is there it prints nothing. A binary appears in bin/ only
# once it is complete (built elsewhere, then renamed). Two runs at once take
# turns on a lock instead of building twice.
#
# Why a wrapper module: k8s.io/kubernetes is not meant to be required (its
# go.mod replaces each k8s.io/<staging> module by ./staging/src/..., which a
# module consumer cannot see), so `go install k8s.io/kubernetes/cmd/...@v`
# refuses. A module of our own that requires it and replaces each staging
# module by the published k8s.io/<name> of the same release builds it. etcd's
# server module has the same kind of relative replaces, so it gets a wrapper
# of its own (its own module graph, so that neither pins the other's
# dependencies).
set -euo pipefail
export PATH="$HOME/go/bin:/usr/local/go/bin:$PATH"
# Build with this machine's Go; never fetch a toolchain.
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
# Static binaries: they can be copied into instance namespaces or images.
export CGO_ENABLED=0

K8S_VERSION=v1.36.1        # k8s.io/kubernetes
STAGING_VERSION=v0.36.1    # the published k8s.io/<staging> modules of that release
ETCD_VERSION=v3.6.16       # go.etcd.io/etcd/server/v3 (3.4 lacks RequestWatchProgress)

CACHE=${VPCNET_K8S_CACHE:-/var/cache/vpcnet/kubernetes-$K8S_VERSION}
BIN=$CACHE/bin

# The staging modules of k8s.io/kubernetes v1.36.1: the replace block of its
# go.mod (https://proxy.golang.org/k8s.io/kubernetes/@v/v1.36.1.mod).
STAGING=(
	api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
	cloud-provider cluster-bootstrap code-generator component-base
	component-helpers controller-manager cri-api cri-client cri-streaming
	csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
	kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler
	kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
	sample-cli-plugin sample-controller streaming
)

# Version stamps (without them the binaries report v0.0.0-master).
K8S_MINOR=${K8S_VERSION#v1.}
K8S_MINOR=${K8S_MINOR%%.*}
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
	K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kube-apiserver kubectl kubelet kube-proxy kube-controller-manager kube-scheduler)

missing() {
	local c out=()
	for c in "${components[@]}"; do
		[ -x "$BIN/$c" ] || out+=("$c")
	done
	echo "${out[@]:-}"
}

# The common case: everything is there. Say nothing.
[ -z "$(missing)" ] && exit 0

for c in "${components[@]}"; do
	case $c in
	etcd | kube-apiserver | kubectl | kubelet | kube-controller-manager | kube-scheduler | kube-proxy) ;;
	*) echo "install-kubernetes: unknown component $c" >&2; exit 2 ;;
	esac
done

mkdir -p "$BIN"
# Unfinished output of this run (out.*) goes when it ends, however it ends.
trap 'rm -rf "$CACHE"/out.$$.*' EXIT
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
	echo "install-kubernetes: another build holds $CACHE/.lock; waiting for it" >&2
	flock 9
fi
# Another run may have built them while we waited.
todo=$(missing)
[ -z "$todo" ] && exit 0

# progress LABEL LOG PID: one line every 20 s while PID builds (elapsed time,
# packages compiled so far from `go build -v`), so a cold build does not look
# hung.
progress() {
	local label=$1 log=$2 pid=$3 start=$SECONDS n d
	while kill -0 "$pid" 2>/dev/null; do
		sleep 20 &
		wait $! || true
		kill -0 "$pid" 2>/dev/null || break
		# go build -v names each package it compiles, one a line;
		# "go: downloading" lines come first, while modules are fetched.
		n=$(grep -c '^[^ ]*$' "$log" 2>/dev/null || true)
		d=$(grep -c '^go: downloading' "$log" 2>/dev/null || true)
		printf 'install-kubernetes:   %s: %dm%02ds, %s modules downloaded, %s packages compiled\n' \
			"$label" $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "${d:-0}" "${n:-0}" >&2
	done
}

# build LABEL MODDIR LDFLAGS OUT PKG...: go build -o OUT (a file, or a
# directory ending in /) in the wrapper module, showing progress, the log
# only on failure.
build() {
	local label=$1 dir=$2 ldflags=$3 out=$4
	shift 4
	local log=$CACHE/build-$label.log rc=0 start=$SECONDS
	(cd "$dir" && exec go build -v -trimpath -ldflags "$ldflags" -o "$out" "$@") >"$log" 2>&1 &
	local pid=$!
	progress "$label" "$log" "$pid" &
	local ppid=$!
	wait "$pid" || rc=$?
	kill "$ppid" 2>/dev/null || true
	wait "$ppid" 2>/dev/null || true
	if [ "$rc" -ne 0 ]; then
		echo "install-kubernetes: building $label failed (exit $rc); the last lines of $log:" >&2
		tail -n 40 "$log" >&2
		return "$rc"
	fi
	printf 'install-kubernetes: %s built in %dm%02ds\n' "$label" \
		$(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) >&2
}

# install OUTDIR NAME...: move finished binaries into bin/ (rename: a reader
# sees the whole binary or none).
install_bins() {
	local out=$1 name
	shift
	for name in "$@"; do
		mv -f "$out/$name" "$BIN/$name"
	done
}

k8s_cmds=()
etcd=false
for c in $todo; do
	if [ "$c" = etcd ]; then etcd=true; else k8s_cmds+=("$c"); fi
done

echo "install-kubernetes: building ${todo} into $BIN (once per machine)." >&2
echo "install-kubernetes: a cold build on 2 cores usually takes 4-6 minutes with downloads:" >&2
echo "install-kubernetes: etcd about 20 s, kube-apiserver about 3.5 min, kubectl about 25 s more;" >&2
echo "install-kubernetes: kubelet adds about 3 min. Later runs find them and say nothing." >&2

if $etcd; then
	mod=$CACHE/src/etcd
	mkdir -p "$mod"
	if [ ! -f "$mod/go.mod" ]; then
		cat >"$mod/go.mod" <<EOF
// Generated by scripts/install-kubernetes.sh: builds etcd $ETCD_VERSION.
module vpcnet.local/build/etcd

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
EOF
	fi
	out=$(mktemp -d "$CACHE/out.$$.XXXXXX")
	# The server module's root is its main package.
	build etcd "$mod" "-s -w" "$out/etcd" go.etcd.io/etcd/server/v3
	install_bins "$out" etcd
	rm -rf "$out"
fi

if [ ${#k8s_cmds[@]} -gt 0 ]; then
	mod=$CACHE/src/kubernetes
	mkdir -p "$mod"
	if [ ! -f "$mod/go.mod" ]; then
		{
			echo "// Generated by scripts/install-kubernetes.sh: builds k8s.io/kubernetes $K8S_VERSION,"
			echo "// each staging module replaced by its published release."
			echo "module vpcnet.local/build/kubernetes"
			echo
			echo "go 1.26.0"
			echo
			echo "godebug default=go1.26"
			echo
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo
			echo "replace ("
			for m in "${STAGING[@]}"; do
				echo "	k8s.io/$m => k8s.io/$m $STAGING_VERSION"
			done
			echo ")"
		} >"$mod/go.mod"
	fi
	pkgs=()
	for c in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	out=$(mktemp -d "$CACHE/out.$$.XXXXXX")
	label=$(IFS=+; echo "${k8s_cmds[*]}")
	build "$label" "$mod" "$K8S_LDFLAGS" "$out/" "${pkgs[@]}"
	install_bins "$out" "${k8s_cmds[@]}"
	rm -rf "$out"
fi

for c in $todo; do
	echo "install-kubernetes: $BIN/$c" >&2
done
