"""Golden files: realistic manifests through `mcp-sidecar inject`; the output is the contract.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/webhook/engine/test_golden.py``
and review the diff like code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.webhook.helpers import apply, validate_strict
from webhook.engine.config import default_config
from webhook.engine.injection import evaluate
from webhook.cli.manifests import POD_TEMPLATE_PATHS, dump_documents, inject_documents, load_documents

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
INPUTS = sorted((GOLDEN / "inputs").glob("*.yaml"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _decisions(output) -> str:
    lines = []
    for report in output.reports:
        result = report.result
        state = "injected" if result.injected else f"skipped ({result.skip_reason.value})"
        lines.append(f"document {report.index} {report.kind}/{report.name}: {state}")
        lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert actual == path.read_text(), f"{path.name} differs from golden (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_inject_matches_golden(source: Path) -> None:
    output = inject_documents(load_documents(source.read_text()), default_config())
    _check(GOLDEN / "expected" / source.name, dump_documents(output.documents))
    _check(GOLDEN / "expected" / f"{source.stem}.decisions.txt", _decisions(output))


def _pod_templates(obj):
    if obj["kind"] == "List":
        for item in obj["items"]:
            yield from _pod_templates(item)
        return
    path = POD_TEMPLATE_PATHS.get(obj["kind"])
    if path is None:
        return
    node = obj
    for token in path:
        node = node[token]
    yield node


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_golden_inputs_patch_cleanly_validate_and_are_idempotent(source: Path) -> None:
    config = default_config()
    for document in load_documents(source.read_text()):
        if document is None:
            continue
        for item in document["items"] if document["kind"] == "List" else [document]:
            validate_strict(item)  # the inputs themselves are valid manifests
        for template in _pod_templates(document):
            result = evaluate(template, None, config)
            patched = apply(template, result.patch)
            validate_strict({"apiVersion": "v1", "kind": "Pod", **patched})
            assert evaluate(patched, None, config).patch == []


def test_cli_inject_prints_golden_output_and_warnings(tmp_path: Path) -> None:
    source = GOLDEN / "inputs" / "bare-pods.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "inject", "-f", "-"],
        input=source.read_text(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "expected" / "bare-pods.yaml").read_text()
    assert "unknown backend 'mongodb'" in proc.stderr
    assert "redis-opted-out" not in proc.stderr  # an opt-out is the user's wish, not a warning
