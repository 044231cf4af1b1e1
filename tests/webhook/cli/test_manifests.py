"""Offline injection over manifests: every workload kind, pass-through, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from webhook.engine.config import default_config
from webhook.cli.manifests import ManifestError, inject_documents, load_documents

TEMPLATE = {"metadata": {"labels": {"mcp-sidecar.dox/backend": "redis"}}, "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}


def workload(kind: str, api: str = "apps/v1") -> dict:
    spec = {"template": TEMPLATE}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}
    return {"apiVersion": api, "kind": kind, "metadata": {"name": kind.lower()}, "spec": spec}


@pytest.mark.parametrize(
    "obj, path",
    [
        (workload("Deployment"), ("spec", "template")),
        (workload("StatefulSet"), ("spec", "template")),
        (workload("DaemonSet"), ("spec", "template")),
        (workload("ReplicaSet"), ("spec", "template")),
        (workload("Job", "batch/v1"), ("spec", "template")),
        (workload("CronJob", "batch/v1"), ("spec", "jobTemplate", "spec", "template")),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **TEMPLATE["metadata"]}, "spec": TEMPLATE["spec"]}, ()),
    ],
    ids=lambda v: v["kind"] if isinstance(v, dict) else None,
)
def test_every_workload_kind_is_injected(obj, path):
    output = inject_documents([obj], default_config())
    node = output.documents[0]
    for token in path:
        node = node[token]
    names = [c["name"] for c in node["spec"].get("containers", [])] + [c["name"] for c in node["spec"].get("initContainers", [])]
    assert "mcp-sidecar" in names
    assert obj["spec"] is not node  # input untouched
    assert [c["name"] for c in TEMPLATE["spec"]["containers"]] == ["redis"]


def test_job_pods_get_native_sidecars_in_auto_mode():
    job = workload("Job", "batch/v1")
    job["spec"]["template"] = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "Never"}}
    pod_spec = inject_documents([job], default_config()).documents[0]["spec"]["template"]["spec"]
    assert pod_spec["initContainers"][0]["restartPolicy"] == "Always"


def test_unlabelled_and_unknown_kinds_pass_through_unchanged():
    docs = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x"}]}}}},
    ]
    assert inject_documents(docs, default_config()).documents == docs


def test_list_items_are_injected():
    listing = {"apiVersion": "v1", "kind": "List", "items": [workload("StatefulSet"), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}]}
    out = inject_documents([listing], default_config()).documents[0]
    assert out["items"][1] == listing["items"][1]
    assert out["items"][0]["spec"]["template"]["spec"]["containers"][-1]["name"] == "mcp-sidecar"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [}\n", "document 0: not valid YAML"),
        ("kind: Service\n---\n- just\n- a list\n", "document 1"),
        ("---\napiVersion: v1\nkind: ConfigMap\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: broken}\nspec: {}\n", "document 1 (StatefulSet/broken): StatefulSet has no pod spec at spec.template.spec"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "has no kind"),
        ("apiVersion: v1\nkind: List\nitems:\n- 42\n", "item 0"),
    ],
)
def test_bad_documents_are_named_by_index_and_kind(text, fragment):
    with pytest.raises(ManifestError) as excinfo:
        inject_documents(load_documents(text), default_config())
    assert fragment in str(excinfo.value)


def run_cli(*args: str, stdin: str = ""):
    return subprocess.run([sys.executable, "-m", "webhook.cli", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_cli_reads_a_file_and_emits_multi_document_yaml(tmp_path):
    source = tmp_path / "in.yaml"
    source.write_text(yaml.safe_dump_all([workload("Deployment"), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}]))
    proc = run_cli("inject", "-f", str(source))
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    assert docs[0]["spec"]["template"]["spec"]["containers"][-1]["name"] == "mcp-sidecar"


def test_cli_uses_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("backends: {redis: {image: 'internal/mcp-redis:9'}}")
    proc = run_cli("inject", "-f", "-", "--config", str(config), stdin=yaml.safe_dump(workload("StatefulSet")))
    assert "internal/mcp-redis:9" in proc.stdout


def test_cli_errors_are_clear_and_nonzero(tmp_path):
    bad = run_cli("inject", "-f", "-", stdin="kind: StatefulSet\nmetadata: {name: s}\nspec: {template: 3}\n")
    assert bad.returncode == 1 and "document 0 (StatefulSet/s)" in bad.stderr and bad.stdout == ""
    missing = run_cli("inject", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    config = tmp_path / "c.yaml"
    config.write_text("nativeSidecar: perhaps")
    invalid = run_cli("inject", "-f", "-", "--config", str(config), stdin="")
    assert invalid.returncode == 2 and "nativeSidecar" in invalid.stderr


def test_serve_refuses_to_start_without_tls_or_with_a_bad_config(tmp_path):
    no_tls = run_cli("serve", "--port", "0")
    assert no_tls.returncode == 2 and "TLS" in no_tls.stderr
    config = tmp_path / "c.yaml"
    config.write_text("backends: {redis: {port: 0}}")
    bad = run_cli("serve", "--plain-http", "--port", "0", "--config", str(config))
    assert bad.returncode == 2 and "backends.redis.port" in bad.stderr
