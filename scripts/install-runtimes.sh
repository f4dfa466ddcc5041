#!/usr/bin/env bash
# Installs the real container runtimes that test/e2e drives: podman (CNI
# backend) with runc and conmon, containerd 1.6 with ctr, crictl, cnitool,
# the reference CNI plugins (loopback, and bridge/host-local/host-device as
# the baseline) and busybox-static (the containers' userland).
# Idempotent and quiet: when everything is there it only checks and exits.
# Nothing is configured globally: the tests write their own containers.conf,
# storage.conf, containerd config and crictl config into temp dirs.
set -euo pipefail
export PATH="$HOME/go/bin:/usr/local/go/bin:$PATH"

# Debian packages: a file each one provides, and the package.
need=()
while read -r file pkg; do
	[ -z "$file" ] && continue
	command -v "$file" >/dev/null 2>&1 || [ -e "$file" ] || need+=("$pkg")
done <<'LIST'
ip iproute2
ping iputils-ping
podman podman
runc runc
conmon conmon
containerd containerd
ctr containerd
/usr/lib/cni/loopback containernetworking-plugins
/bin/busybox busybox-static
LIST

if [ ${#need[@]} -gt 0 ]; then
	echo "install-runtimes: apt-get install ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# --no-install-recommends keeps crun, slirp4netns, fuse-overlayfs and
	# the like out: the tests run rootful podman on runc (crun 1.8 fails on
	# this cgroup layout, RUNTIMES.md).
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Go tools, from the module proxy, into $HOME/go/bin. Their download log is
# shown only if the install fails.
go_install() {
	local bin=$1 pkg=$2 out
	command -v "$bin" >/dev/null 2>&1 && return 0
	echo "install-runtimes: go install $pkg" >&2
	if ! out=$(go install "$pkg" 2>&1); then
		echo "$out" >&2
		return 1
	fi
}
# Only cri-tools v1.34.0 and v1.37.0 are served here; v1.34.0 talks to
# containerd 1.6. Cold, it takes about 100 s on 2 cores.
go_install crictl sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0
go_install cnitool github.com/containernetworking/cni/cnitool@v1.3.0
