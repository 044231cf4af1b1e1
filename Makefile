# The two README commands: `make demo` (main job) and `make test` (whole suite).
.PHONY: setup test test-fast demo bench lock clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	.venv/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	@bash scripts/demo.sh

bench: setup
	.venv/bin/python bench/run_all.py

# Re-resolve and pin every Python dependency (commit constraints.txt afterwards).
lock:
	rm -rf .cache/lock-venv && python3 -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q '.[test]'
	.cache/lock-venv/bin/pip freeze --exclude mcp-sidecar-injector > constraints.txt

clean:
	rm -rf .venv .pytest_cache .hypothesis
