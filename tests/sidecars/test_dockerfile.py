"""Static checks of Dockerfile.sidecars (no container engine runs here): hadolint and the contract."""

from __future__ import annotations

from tests.support.dockerfile import run_hadolint
from tests.support.dockerfile import stages as dockerfile_stages

from .helpers import REPO

DOCKERFILE = REPO / "Dockerfile.sidecars"


def test_hadolint_clean():
    done = run_hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def stages() -> dict[str, list[str]]:
    return dockerfile_stages(DOCKERFILE)


def test_final_images_are_slim_non_root_and_expose_9000():
    all_stages = stages()
    runtime = "\n".join(all_stages["runtime"])
    assert all_stages["runtime"][0] == "FROM python:3.11-slim AS runtime"
    assert "USER 1000:1000" in runtime and "EXPOSE 9000" in runtime
    assert "site-packages/pip" in runtime and "ensurepip" in runtime  # pip removed from the final image
    for target, entry in (("redis", "mcp-redis"), ("elasticsearch", "mcp-elasticsearch")):
        body = "\n".join(all_stages[target])
        assert all_stages[target][0] == f"FROM runtime AS {target}"
        assert f'ENTRYPOINT ["{entry}"]' in body and f"--from=build-{target} /opt/venv" in body
        assert "RUN " not in body  # nothing is built or installed in the final stage


def test_build_context_keeps_caches_out():
    lines = (REPO / "Dockerfile.sidecars.dockerignore").read_text().splitlines()
    assert "*" in lines and "!sidecars/" in lines  # .venv, .cache (ES jars, npm) never reach the daemon
