"""Static checks of Dockerfile.sidecars (no container engine runs here): hadolint and the contract."""

from __future__ import annotations

from tests.support.dockerfile import check_slim_image, run_hadolint, slim_rootfs
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
    assert all_stages["runtime"][0] == "FROM scratch AS runtime"  # settings only; each target adds one layer
    assert "USER 1000:1000" in runtime and "EXPOSE 9000" in runtime
    assert "PATH=/opt/venv/bin:" in runtime and "LANG=C.UTF-8" in runtime  # scratch inherits no ENV
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime  # read-only root: never write .pyc
    for target, entry in (("redis", "mcp-redis"), ("elasticsearch", "mcp-elasticsearch")):
        body = "\n".join(all_stages[target])
        assert all_stages[target][0] == f"FROM runtime AS {target}"
        assert f'ENTRYPOINT ["{entry}"]' in body
        # python:3.11-slim + this target's venv, pruned by scripts/slim-rootfs.py, flattened into scratch
        check_slim_image(all_stages, final=target, assemble=f"assemble-{target}", venv_from=f"build-{target}")
        assert f"RUN sh sidecars/requirements/build_venv.sh {target} /opt/venv /usr/local/bin/python3.11" \
            in all_stages[f"build-{target}"]


def test_slim_rootfs_keeps_what_the_sidecar_contract_needs():
    """tests/node run `kubectl exec -c mcp-sidecar -- id` and `touch /x` (read-only root) and keep a shell."""
    script = slim_rootfs()
    assert {"sh", "id", "touch", "cat", "ls", "env"} <= script.KEEP_COMMANDS
    assert "ensurepip" in script.STDLIB_DROP  # nothing can be installed at run time (pip goes with purelib)
    assert "ca-certificates" in script.USR_SHARE_KEEP  # the targets of /etc/ssl/certs' hashed links


def test_build_context_keeps_caches_out():
    lines = (REPO / "Dockerfile.sidecars.dockerignore").read_text().splitlines()
    assert "*" in lines and "!sidecars/" in lines  # .venv, .cache (ES jars, npm) never reach the daemon
    copied = [line.split()[1:-1] for line in DOCKERFILE.read_text().splitlines()
              if line.startswith("COPY ") and "--from" not in line]
    for sources in copied:
        for src in sources:
            assert f"!{src}" in lines or f"!{src.rstrip('/')}/" in lines, src
