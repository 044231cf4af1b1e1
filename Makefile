# The two README commands: `make demo` (main job) and `make test` (whole suite).
.PHONY: setup test test-fast demo images cluster node lock clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	.venv/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

# Benchmarks: one target each (each prints a Markdown section with command, machine, date and load;
# figures go into BENCHMARKS.md). `make bench` runs them all (~1.5 h on 2 cores). Never part of `make test`.
BENCH_TARGETS := bench-engine bench-admission bench-sidecars bench-pod-create bench-peers bench-storm \
	bench-operator-scale bench-node
.PHONY: bench $(BENCH_TARGETS)
bench: $(BENCH_TARGETS)

bench-engine: setup             # the pure engine: evaluate() per pod shape (~1 min)
	.venv/bin/python bench/webhook/engine_bench.py --seconds 2

bench-admission: setup          # admission server, 1 and 2 workers, vs a kopf on.mutate peer (~5 min)
	.venv/bin/python bench/webhook/admission_bench.py --duration 10 --workers 1,2

bench-sidecars: setup           # MCP sidecars vs redis-mcp-server / elasticsearch-mcp-server (~5 min)
	.venv/bin/python bench/sidecars/run.py

bench-pod-create: setup         # pod-create latency through the real API server with / without the webhook (~2 min)
	.venv/bin/python bench/cluster/bench_pod_create.py

bench-peers: setup              # pod-create latency: ours vs Kyverno (built from Go modules, ~7 min the first time)
	bash bench/peers/kyverno/build.sh
	.venv/bin/python bench/cluster/bench_peers.py

bench-storm: setup              # a Deployment scaled 0 -> 1,000: none / ours / Kyverno (~10 min)
	bash bench/peers/kyverno/build.sh
	.venv/bin/python bench/cluster/rollout_storm.py

bench-operator-scale: setup     # the operator at 1,000 and 10,000 labelled pods, and 10,000 unlabelled + 100 labelled (~20 min)
	.venv/bin/python bench/cluster/operator_scale.py --pods 1000
	.venv/bin/python bench/cluster/operator_scale.py --pods 10000 --max-pass-seconds 400
	.venv/bin/python bench/cluster/operator_scale.py --pods 100 --unlabelled 10000

bench-node: setup               # pod create -> Ready on the real node, with and without the sidecar (root)
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
