#!/bin/sh
# Build the self-contained virtualenv of one sidecar image: build_venv.sh BACKEND DEST [PYTHON]
# Used by Dockerfile.sidecars (build stage) and by bench/sidecars (the benchmark runs the sidecars
# from exactly this payload, and measures its size). Needs network access to PyPI and `strip`.
set -eu
backend=$1 dest=$2 python=${3:-python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rm -rf "$dest"
"$python" -m venv "$dest"
"$dest/bin/pip" install -q --no-cache-dir --disable-pip-version-check -c "$root/constraints.txt" -r "$here/$backend.txt"
"$dest/bin/pip" install -q --no-cache-dir --disable-pip-version-check --no-deps "$root"
"$dest/bin/python" -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
# Wheels such as uvloop ship debug symbols (13 MB -> 1.6 MB stripped).
find "$dest" -name '*.so' -exec strip --strip-unneeded {} +
find "$dest" -depth -type d -path '*/site-packages/*/tests' -exec rm -rf {} +
# The root filesystem is read-only at run time: precompile so imports never try to write .pyc.
"$dest/bin/python" -m compileall -q -j 0 "$dest/lib" >/dev/null
