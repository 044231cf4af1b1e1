"""Dockerfile.webhook and scripts/build-images.sh (no container engine runs here).

Proves: hadolint is clean; the final stage is scratch + the python:3.11-slim root filesystem with the
built virtualenv, pruned by scripts/slim-rootfs.py (no pip, apt or compilers), UID 1000; the build
context is limited; build-images.sh picks docker/podman/buildah (exercised with fake engines) and
fails clearly when none is present; and (slow) the image payload, built by the very command the
Dockerfile runs, has no pip, follows the bytecode policy, imports every webhook module and serves
/healthz and /mutate as UID 1000 on a read-only root (bubblewrap), with its measured size printed.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.dockerfile import check_slim_image, run_hadolint, slim_rootfs
from tests.support.dockerfile import stages as dockerfile_stages

from .helpers import REPO

DOCKERFILE = REPO / "Dockerfile.webhook"
SCRIPT = REPO / "scripts" / "build-images.sh"


def test_hadolint_clean():
    done = run_hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def stages() -> dict[str, list[str]]:
    return dockerfile_stages(DOCKERFILE, skip_comments=True)


def test_final_stage_is_slim_non_root_without_pip():
    all_stages = stages()
    assert list(all_stages) == ["build", "assemble", "runtime"]  # runtime is the last stage, i.e. the image
    runtime = all_stages["runtime"]
    body = "\n".join(runtime)
    assert runtime[0] == "FROM scratch AS runtime"
    assert "USER 1000:1000" in body and "EXPOSE 8443" in body
    assert 'ENTRYPOINT ["mcp-sidecar"]' in body
    # python:3.11-slim + the venv, pruned by scripts/slim-rootfs.py (pip, apt, dpkg, perl... gone), one layer
    check_slim_image(all_stages, final="runtime", assemble="assemble", venv_from="build")
    assert "PYTHONDONTWRITEBYTECODE=1" in body  # read-only root: never write .pyc
    assert "PATH=/opt/venv/bin:" in body and "LANG=C.UTF-8" in body  # scratch inherits no ENV
    build = "\n".join(all_stages["build"])
    assert "bash scripts/build-images.sh --webhook-venv /opt/venv /usr/local/bin/python3.11" in build
    assert "ensurepip" in slim_rootfs().STDLIB_DROP  # nothing can be installed at run time


def test_build_context_keeps_caches_out():
    lines = (REPO / "Dockerfile.webhook.dockerignore").read_text().splitlines()
    assert "*" in lines and "!webhook/" in lines and "!scripts/build-images.sh" in lines
    copied = [line.split()[1:-1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ") and "--from" not in line]
    for sources in copied:
        for src in sources:
            assert f"!{src}" in lines or f"!{src.rstrip('/')}/" in lines, src


# ------------------------------------------------------------------------------ build-images.sh

def _tool_dir(tmp_path: Path, engines: dict[str, str]) -> Path:
    """A PATH with the basic tools the script needs plus fake engines that log their arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "sed", "head", "dirname", "cat", "env"):
        target = shutil.which(tool)
        assert target, tool
        (bindir / tool).symlink_to(target)
    for name, body in engines.items():
        shim = bindir / name
        shim.write_text(f"#!{shutil.which('bash')}\n{body}\n")
        shim.chmod(0o755)
    return bindir


def run_script(tmp_path, engines, *args, env=None):
    bindir = _tool_dir(tmp_path, engines)
    return subprocess.run([str(bindir / "bash"), str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bindir), "HOME": str(tmp_path), **(env or {})})


def test_build_images_says_clearly_when_no_engine(tmp_path):
    done = run_script(tmp_path, {}, "--mcp")
    assert done.returncode == 3
    assert "no container engine found: install docker, podman or buildah" in done.stderr
    assert "Nothing was built" in done.stderr


@pytest.mark.parametrize("engine", ["docker", "podman", "buildah"])
def test_build_images_builds_all_three_images_with_the_engine_present(tmp_path, engine):
    log = tmp_path / "calls.log"
    done = run_script(tmp_path, {engine: f'echo "$*" >> {log}'}, "--mcp")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    if engine == "docker":
        assert calls[0] == "info"  # the daemon is checked first
        calls = calls[1:]
    ignore = {"docker": "", "podman": "--ignorefile {f}.dockerignore ", "buildah": "--ignorefile {f}.dockerignore "}[engine]
    verb = "build"
    expected = [
        f"{verb} {ignore.format(f='Dockerfile.webhook')}-f Dockerfile.webhook -t mcp/sidecar-injector:0.1.0 -t mcp/sidecar-injector:latest .",
        f"{verb} {ignore.format(f='Dockerfile.sidecars')}-f Dockerfile.sidecars --target redis -t mcp/redis:latest .",
        f"{verb} {ignore.format(f='Dockerfile.sidecars')}-f Dockerfile.sidecars --target elasticsearch -t mcp/elasticsearch:latest .",
    ]
    assert calls == expected
    assert f"building the MCP images with {engine}" in done.stdout


def test_build_images_reports_a_stopped_docker_daemon(tmp_path):
    done = run_script(tmp_path, {"docker": "exit 1"}, "--mcp")
    assert done.returncode == 3 and "daemon is not reachable" in done.stderr


def test_build_images_dry_run_and_engine_choice(tmp_path):
    done = run_script(tmp_path, {"docker": "exit 1", "podman": "exit 1"}, "--dry-run", "--tag", "9.9.9",
                      env={"CONTAINER_ENGINE": "podman"})
    assert done.returncode == 0, done.stderr
    assert "==> podman build --ignorefile Dockerfile.webhook.dockerignore -f Dockerfile.webhook -t mcp/sidecar-injector:9.9.9" in done.stdout


# ------------------------------------------------------------------------------ the payload itself

@pytest.mark.slow
def test_payload_is_small_pip_free_and_serves_on_a_read_only_root(tmp_path):
    """Builds the final stage's /opt/venv with the Dockerfile's own command and runs it sandboxed."""
    from tests.support.sandbox import SandboxUnavailable, sandboxed
    from tests.support.webhook_process import free_port
    import trustme

    work = REPO / ".cache" / f"webhook-payload-test-{os.getpid()}"  # outside /tmp: the sandbox mounts a fresh /tmp
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        venv = work / "venv"
        python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run(["bash", str(SCRIPT), "--webhook-venv", str(venv), python], check=True, timeout=900)
        site = next((venv / "lib").glob("python3*/site-packages"))
        assert not (venv / "bin" / "pip").exists() and not (site / "pip").exists() and not (site / "setuptools").exists()
        assert not (site / "kubernetes" / "aio").exists()
        for unwanted in ("mcp", "redis", "elasticsearch", "pytest", "hypothesis", "kubernetes_validate", "sidecars"):
            assert not (site / unwanted).exists(), unwanted
        # Bytecode policy: sourceless .pyc, except the webhook package and anyio (source + __pycache__).
        assert (site / "kubernetes" / "__init__.pyc").exists() and not list(site.glob("kubernetes/**/*.py"))
        assert (site / "webhook" / "cli" / "main.py").exists() and list((site / "webhook" / "cli" / "__pycache__").glob("main.*.pyc"))
        assert not [p for p in site.rglob("__pycache__") if p.relative_to(site).parts[0] not in ("webhook", "anyio")]
        # Every module of the package imports from the payload (dependencies follow pyproject.toml).
        subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import importlib, pkgutil, webhook; [importlib.import_module('webhook.' + m.name) "
                        "for m in pkgutil.iter_modules(webhook.__path__)]"], check=True, timeout=120, cwd="/")
        size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
        print(f"\nwebhook image payload (/opt/venv): {size / 1e6:.1f} MB apparent file size")
        assert size < 120e6

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(work / "tls.crt"))
        cert.private_key_pem.write_to_path(str(work / "tls.key"))
        for p in work.rglob("*"):
            p.chmod(p.stat().st_mode | 0o044 | (0o011 if p.is_dir() else 0))
        work.chmod(0o755)
        port = free_port()
        argv = [str(venv / "bin" / "python"), "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--tls-cert-file", str(work / "tls.crt"), "--tls-key-file", str(work / "tls.key"), "--no-operator"]
        try:
            argv = sandboxed(argv, chdir=Path("/"))
        except SandboxUnavailable as exc:
            pytest.skip(str(exc))
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=2) as r:
                        assert r.status == 200
                    break
                except OSError:
                    assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
                    assert time.monotonic() < deadline, "payload server did not answer"
                    time.sleep(0.2)
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                "namespace": "data", "object": {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "redis-0", "labels": {"mcp-sidecar.dox/backend": "redis"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}}}
            req = urllib.request.Request(f"https://127.0.0.1:{port}/mutate", data=json.dumps(review).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, context=context, timeout=10) as r:
                response = json.load(r)["response"]
            assert response["allowed"] is True and response.get("patchType") == "JSONPatch"
            assert proc.poll() is None
        finally:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
