#!/usr/bin/env bash
# Build the project's container images with whichever engine is present: docker, podman or buildah
# (CONTAINER_ENGINE=docker|podman|buildah picks one). `make images` runs `build-images.sh --mcp`.
#
#   build-images.sh [--mcp] [--tag TAG] [--dry-run]
#       --mcp      the MCP images (the only set this repository ships, so also the default):
#                    mcp/sidecar-injector:TAG  (Dockerfile.webhook; TAG defaults to the pyproject version)
#                    mcp/redis:latest, mcp/elasticsearch:latest  (Dockerfile.sidecars)
#       --dry-run  print the build commands instead of running them
#
#   build-images.sh --webhook-venv DEST [PYTHON]
#       build the injector's self-contained virtualenv (the payload of Dockerfile.webhook's final
#       stage) into DEST; the Dockerfile's build stage runs exactly this, and tests/helm measure it.
#
# buildah: BUILDAH_BUILD_FLAGS adds flags to each `buildah build` (split on spaces). On a host where
# root lacks CAP_SYS_RESOURCE, RUN steps fail in runc unless the open-files limit stays within the
# caller's own; --layers caches steps as docker does; --network=host needs no CNI set-up:
#   BUILDAH_BUILD_FLAGS="--layers --network=host --ulimit nofile=$(ulimit -Hn):$(ulimit -Hn)" \
#     CONTAINER_ENGINE=buildah scripts/build-images.sh
# buildah names the images localhost/mcp/...; tests/cluster/images.py builds them the same way but
# with full names (docker.io/mcp/...) into .cache/containers (CONTAINERS_STORAGE_CONF=
# .cache/containers/storage.conf) and FROM local stand-ins of python:3.11[-slim] when there is no
# Docker Hub, then exports them as OCI archives for a test node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# The injector's runtime dependencies: pyproject's [project].dependencies (versions pinned by
# constraints.txt) minus the sidecars' own (mcp, redis, elasticsearch), with uvicorn's fast loop and
# parser instead of uvicorn[standard] (watchfiles, websockets, dotenv are not used by `serve`).
SIDECAR_ONLY="mcp redis elasticsearch"
webhook_requirements() {
  "$1" - "$root/pyproject.toml" "$SIDECAR_ONLY" <<'PY'
import re, sys, tomllib
skip = set(sys.argv[2].split())
with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps]
print("\n".join([n for n in names if n.lower() not in skip] + ["uvloop", "httptools"]))
PY
}

webhook_venv() {
  local dest=$1 python=${2:-python3}
  rm -rf "$dest"
  "$python" -m venv "$dest"
  local pip=("$dest/bin/pip" install -q --no-cache-dir --disable-pip-version-check --no-compile)
  local requirements
  mapfile -t requirements < <(webhook_requirements "$python")
  echo "==> webhook payload: ${requirements[*]}"
  "${pip[@]}" -c "$root/constraints.txt" "${requirements[@]}"
  # The package itself (webhook/ only: the build context holds no sidecars/).
  local src
  src=$(mktemp -d)
  cp "$root/pyproject.toml" "$root/README.md" "$src/"
  cp -r "$root/webhook" "$src/webhook"
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  "${pip[@]}" --no-deps "$src"
  rm -rf "$src"
  "$dest/bin/python" -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
  # Native wheels ship debug symbols; tests directories are dead weight.
  if command -v strip >/dev/null 2>&1; then find "$dest" -name '*.so' -exec strip --strip-unneeded {} +; fi
  find "$dest" -depth -type d -path '*/site-packages/*/tests' -exec rm -rf {} +
  # kubernetes >= 35 also ships an asyncio copy of the whole client (~68 MB with bytecode) that
  # nothing here imports (webhook/ uses kubernetes.client/config, kopf has its own client).
  rm -rf "$dest"/lib/python3*/site-packages/kubernetes/aio
  # Bytecode policy (Dockerfile.webhook has the measurements): the root filesystem is read-only at
  # run time, so everything is compiled here. Modules become sourceless .pyc files where their
  # source was (compileall -b) and the sources go, except in two packages that keep source +
  # __pycache__ (unchecked-hash, so valid whatever timestamps the image gives the files): this
  # project's, so that tracebacks through our own code show their lines, and anyio, whose lazy
  # importer parses its own source (without it anyio imports all of its submodules at start).
  local site
  site=$(echo "$dest"/lib/python3*/site-packages)
  "$dest/bin/python" -m compileall -q -b -j 0 -x '/site-packages/(webhook|anyio)/' "$dest/lib" >/dev/null
  find "$dest/lib" -name '*.py' ! -path '*/site-packages/webhook/*' ! -path '*/site-packages/anyio/*' \
    -exec sh -c 'for f; do if [ -f "${f}c" ]; then rm -- "$f"; fi; done' sh {} +
  find "$dest/lib" -type d -name __pycache__ ! -path '*/site-packages/webhook/*' ! -path '*/site-packages/anyio/*' \
    -prune -exec rm -rf {} +
  "$dest/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site/webhook" "$site/anyio" >/dev/null
}

if [ "${1:-}" = "--webhook-venv" ]; then
  shift
  [ $# -ge 1 ] || { echo "usage: $0 --webhook-venv DEST [PYTHON]" >&2; exit 2; }
  webhook_venv "$@"
  exit 0
fi

tag="" dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    --mcp) ;;
    --tag) tag=$2; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,${/^#/!q;p}' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$tag" ]; then
  tag=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)
fi

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  for candidate in docker podman buildah; do
    if command -v "$candidate" >/dev/null 2>&1; then engine=$candidate; break; fi
  done
fi
if [ -z "$engine" ]; then
  echo "error: no container engine found: install docker, podman or buildah (or set CONTAINER_ENGINE)." >&2
  echo "       Nothing was built. The images are Dockerfile.webhook and Dockerfile.sidecars (targets redis, elasticsearch)." >&2
  exit 3
fi
if ! command -v "$engine" >/dev/null 2>&1; then
  echo "error: CONTAINER_ENGINE=$engine is not installed" >&2
  exit 3
fi
if [ "$engine" = docker ] && [ "$dry_run" = 0 ] && ! docker info >/dev/null 2>&1; then
  echo "error: docker is installed but its daemon is not reachable (docker info failed); start it or use podman/buildah" >&2
  exit 3
fi

# build FILE TARGET TAG...: the build context is the repository; FILE.dockerignore keeps it small
# (docker/BuildKit reads it by name, podman and buildah are given it explicitly).
build() {
  local file=$1 target=$2; shift 2
  local cmd tags=()
  for t in "$@"; do tags+=(-t "$t"); done
  case $engine in
    docker) cmd=(docker build -f "$file" ${target:+--target "$target"} "${tags[@]}" .) ;;
    podman) cmd=(podman build --ignorefile "$file.dockerignore" -f "$file" ${target:+--target "$target"} "${tags[@]}" .) ;;
    buildah)
      local extra=()
      read -r -a extra <<< "${BUILDAH_BUILD_FLAGS:-}"
      cmd=(buildah build "${extra[@]}" --ignorefile "$file.dockerignore" -f "$file" ${target:+--target "$target"} "${tags[@]}" .) ;;
    *) echo "error: unsupported engine $engine (docker, podman or buildah)" >&2; exit 3 ;;
  esac
  echo "==> ${cmd[*]}"
  if [ "$dry_run" = 0 ]; then (cd "$root" && DOCKER_BUILDKIT=1 "${cmd[@]}"); fi
}

echo "==> building the MCP images with $engine"
build Dockerfile.webhook "" "mcp/sidecar-injector:$tag" "mcp/sidecar-injector:latest"
build Dockerfile.sidecars redis "mcp/redis:latest"
build Dockerfile.sidecars elasticsearch "mcp/elasticsearch:latest"
echo "==> built mcp/sidecar-injector:$tag, mcp/redis:latest, mcp/elasticsearch:latest"
