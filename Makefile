# The two README commands: `make demo` (main job) and `make test` (whole suite).
.PHONY: setup test test-fast demo bench images cluster lock clean

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

# Container images (docker, podman or buildah; says so when none is present).
images:
	@bash scripts/build-images.sh --mcp

# The local control plane binaries (also built on first use by the e2e tests and the demo).
cluster:
	bash tests/cluster/build.sh

# Re-resolve and pin every Python dependency (commit constraints.txt afterwards).
lock:
	rm -rf .cache/lock-venv && python3 -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q '.[test]'
	.cache/lock-venv/bin/pip freeze --exclude mcp-sidecar-injector > constraints.txt

clean:
	rm -rf .venv .pytest_cache .hypothesis
