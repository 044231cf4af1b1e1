#!/usr/bin/env bash
# `make demo` entry point (after scripts/setup.sh): see scripts/demo.py for the steps.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py "$@"
