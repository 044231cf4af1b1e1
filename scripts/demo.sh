#!/usr/bin/env bash
set -euo pipefail
echo "make demo needs the local control plane (issue 4), which has not landed yet."
echo "Meanwhile try the offline injector:  .venv/bin/mcp-sidecar inject -f deploy/examples/redis-statefulset.yaml"
