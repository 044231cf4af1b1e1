#!/usr/bin/env bash
# Builds Kyverno's admission controller (cmd/kyverno) from the github.com/kyverno/kyverno Go module
# into .cache/bin/kyverno, for the peer benchmarks in bench/cluster (bench_peers.py, rollout_storm.py).
# Same pattern as tests/cluster/build.sh: a wrapper module (this directory's go.mod, with Kyverno's one
# replace line repeated) whose `tool` directive names the binary; Go's default module and build caches.
#
# Benchmark-only: never run by the tests or CI. A cold build compiles ~2,500 packages (~7 min on
# 2 shared cores); it runs under `nice -n 10` so the other work on the machine keeps priority.
# Idempotent: rebuilt only when the binary is missing or its stamp (go.mod/go.sum, Go version, RECIPE)
# changed; a warm run takes ~0.1 s.
#
#   bench/peers/kyverno/build.sh            # build (or report up to date)
#   KYVERNO_BUILD_P=1 bench/peers/kyverno/build.sh   # one compile at a time (default 2)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CACHE=${MCP_CLUSTER_CACHE:-$ROOT/.cache}
BIN=$CACHE/bin
mkdir -p "$BIN"
export PATH=$PATH:/usr/local/go/bin
export CGO_ENABLED=0   # as Kyverno's Makefile builds it

say() { printf '==> %s\n' "$*"; }
now() { date +%s; }

RECIPE=1
GO_BUILD_FLAGS=(-trimpath -buildvcs=false -p "${KYVERNO_BUILD_P:-2}")
PKG=github.com/kyverno/kyverno
version=$(awk -v m="$PKG" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$HERE/go.mod" | head -n1)
stamp=$({ go env GOVERSION 2>/dev/null || echo no-go; echo "$RECIPE ${GO_BUILD_FLAGS[*]} $CGO_ENABLED $version"
          cat "$HERE/go.mod" "$HERE/go.sum"; } | sha256sum | cut -d' ' -f1)

if [ -x "$BIN/kyverno" ] && [ -f "$BIN/.stamp-kyverno" ] && [ "$(cat "$BIN/.stamp-kyverno")" = "$stamp" ]; then
  say "kyverno $version: up to date"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "error: Go (>= 1.26.6, Kyverno's go.mod) is required" >&2; exit 1; }

exec 9>"$BIN/.kyverno-build.lock"
if ! flock -n 9; then say "another kyverno build is running; waiting for it..."; flock 9; fi

t0=$(now)
if ! (cd "$HERE" && GOPROXY=off go list -deps tool >/dev/null 2>&1); then
  say "downloading Go modules for kyverno $version (first time: ~1 GB into $(go env GOMODCACHE))..."
  (cd "$HERE" && nice -n 10 go mod download 2>&1)
  say "modules ready ($(($(now) - t0))s)"
fi

say "building kyverno $version (first time: ~2,500 packages, ~7 min on 2 shared cores, ~2.4 GB peak; cached afterwards)..."
t1=$(now)
out=$(mktemp -d "$BIN/.kyverno-build.XXXXXX")
trap 'rm -rf "$out"' EXIT
# One line per 100 compiled packages, plus errors verbatim, so a cold build is never silent.
(cd "$HERE" && nice -n 10 go build -v "${GO_BUILD_FLAGS[@]}" \
    -ldflags "-s -w -X $PKG/pkg/version.BuildVersion=$version" -o "$out/kyverno" "$PKG/cmd/kyverno" 2>&1 |
  awk '/^go: downloading/ { print "    " $0; fflush(); next }
       /^(go: |#|[^ ]+\.go:|[ \t])/ { print; fflush(); next }
       { n++; if (n % 100 == 0) { printf "    kyverno: %d packages compiled\n", n; fflush() } }
       END { if (n) printf "    kyverno: %d packages compiled in total\n", n }')
[ -x "$out/kyverno" ] || { echo "error: go build produced no binary (see above)" >&2; exit 1; }
mv -f "$out/kyverno" "$BIN/kyverno"   # rename(2): a running bench never sees a half-written binary
echo "$stamp" > "$BIN/.stamp-kyverno"
say "built kyverno $version in $(($(now) - t1))s (total $(($(now) - t0))s)"
