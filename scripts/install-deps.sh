#!/usr/bin/env bash
# Installs what vpcnet's tests, benchmarks and demo use, when it is missing.
# Safe to run again: it only installs what is not there.
set -euo pipefail
export PATH="$HOME/go/bin:/usr/local/go/bin:$PATH"

# Debian packages: the binary each one provides, and the package.
need=()
while read -r bin pkg; do
	[ -z "$bin" ] && continue
	command -v "$bin" >/dev/null 2>&1 || [ -e "$bin" ] || need+=("$pkg")
done <<'LIST'
ip iproute2
runc runc
nft nftables
ping iputils-ping
/usr/lib/cni/bridge containernetworking-plugins
busybox busybox-static
curl curl
hyperfine hyperfine
/usr/bin/aws awscli
LIST

if [ ${#need[@]} -gt 0 ]; then
	echo "install-deps: apt-get install ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# cnitool, from the same libcni release the plugins are built with.
if ! command -v cnitool >/dev/null 2>&1; then
	echo "install-deps: go install cnitool" >&2
	go install github.com/containernetworking/cni/cnitool@v1.3.0
fi

# The real container runtimes the end-to-end tests drive.
"$(dirname "$0")/install-runtimes.sh"
