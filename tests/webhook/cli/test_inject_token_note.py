"""`mcp-sidecar inject -f` users have no operator: the output tells them to create the token Secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
POD = """apiVersion: v1
kind: Pod
metadata: {name: cache, labels: {mcp-sidecar.dox/backend: redis}}
spec: {containers: [{name: redis, image: redis:7}]}
"""


def inject(manifest: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook.cli", "inject", "-f", "-", *args], input=manifest,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_inject_names_the_secret_and_the_command_to_create_it():
    done = inject(POD)
    assert done.returncode == 0
    assert "kubectl create secret generic mcp-sidecar-token -n NAMESPACE --from-literal=token=$(openssl rand -hex 32)" in done.stderr
    assert "note:" not in done.stdout and "mcp-sidecar-auth" in done.stdout  # the manifest stays clean YAML


def test_no_note_when_auth_is_off(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("sidecar: {auth: none}\n")
    done = inject(POD, "--config", str(config))
    assert "create secret" not in done.stderr and "authentication is off" in done.stderr
