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
pip_install() { "$dest/bin/pip" install -q --no-cache-dir --disable-pip-version-check --no-compile "$@"; }
pip_install -c "$root/constraints.txt" -r "$here/$backend.txt"
pip_install --no-deps "$root"
"$dest/bin/python" -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
# Wheels such as uvloop ship debug symbols (13 MB -> 1.6 MB stripped).
find "$dest" -name '*.so' -exec strip --strip-unneeded {} +
find "$dest" -depth -type d -path '*/site-packages/*/tests' -exec rm -rf {} +
# Bytecode policy (Dockerfile.sidecars has the measurements): the root filesystem is read-only at
# run time, so everything is compiled here. Modules become sourceless .pyc files where their source
# was (compileall -b) and the sources go, except in two packages that keep source + __pycache__
# (unchecked-hash, so valid whatever timestamps the image gives the files): this project's, so that
# tracebacks through our own code show their lines, and anyio, whose lazy importer parses its own
# source (without it anyio imports all of its submodules at start).
keep='/site-packages/(sidecars|anyio)/'
"$dest/bin/python" -m compileall -q -b -j 0 -x "$keep" "$dest/lib" >/dev/null
find "$dest/lib" -name '*.py' ! -path '*/site-packages/sidecars/*' ! -path '*/site-packages/anyio/*' \
  -exec sh -c 'for f; do if [ -f "${f}c" ]; then rm -- "$f"; fi; done' sh {} +
find "$dest/lib" -type d -name __pycache__ ! -path '*/site-packages/sidecars/*' ! -path '*/site-packages/anyio/*' \
  -prune -exec rm -rf {} +
"$dest/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
  "$dest"/lib/python3*/site-packages/sidecars "$dest"/lib/python3*/site-packages/anyio >/dev/null
