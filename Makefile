# The two README commands: `make demo` (main job) and `make test` (whole suite).
.PHONY: setup test test-fast demo bench images cluster node lock clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	.venv/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

# Benchmarks (each prints a Markdown section; figures go into BENCHMARKS.md).
bench: setup
	.venv/bin/python bench/webhook/engine_bench.py --seconds 2
	.venv/bin/python bench/webhook/admission_bench.py --duration 10
	.venv/bin/python bench/sidecars/run.py
	.venv/bin/python bench/cluster/bench_pod_create.py
	.venv/bin/python bench/node/bench_pod_ready.py

# Container images (docker, podman or buildah; says so when none is present).
images:
	@bash scripts/build-images.sh --mcp

# The local control plane binaries (also built on first use by the e2e tests and the demo).
cluster:
	bash tests/cluster/build.sh

# A control plane plus one real node (root), with every test image imported, until Ctrl-C:
# `export KUBECONFIG=.cache/node.kubeconfig`, or MCP_NODE_ATTACH=.cache/node.json for tests/node.
node: setup
	.venv/bin/python -m tests.cluster.node --state-out .cache/node.json --kubeconfig-out .cache/node.kubeconfig

# Re-resolve and pin every Python dependency (commit constraints.txt afterwards).
lock:
	rm -rf .cache/lock-venv && python3 -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q '.[test]'
	.cache/lock-venv/bin/pip freeze --exclude mcp-sidecar-injector > constraints.txt

clean:
	rm -rf .venv .pytest_cache .hypothesis
