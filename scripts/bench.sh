#!/usr/bin/env bash
# Runs vpcnet's benchmarks side by side with the reference CNI plugins and
# prints markdown tables. Arguments go to test/bench (e.g. -n 20 -sections cni).
# Needs root, the binaries in $VPCNET_BIN_DIR (make bench builds them) and
# what `make deps` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/go/bin:/usr/local/go/bin:$PATH"
: "${VPCNET_BIN_DIR:=$PWD/bin}"
export VPCNET_BIN_DIR

# The no-op plugin is the floor of the CNI table; it is not shipped.
go build -o "$VPCNET_BIN_DIR/cninoop" ./test/cninoop
go run ./test/bench -bin "$VPCNET_BIN_DIR" "$@"

# Real runtimes: podman run --rm and crictl runp with our plugins and the
# reference ones, as Go benchmarks (ns/op is the median-free mean).
echo "## Container runtimes (Go benchmarks, 20 runs each)"
echo
echo '```'
go test -count=1 -run '^$' -bench . -benchtime 20x ./test/e2e/ 2>&1 | grep -E '^(Benchmark|ok|FAIL)' || true
echo '```'
