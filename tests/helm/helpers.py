"""Render the chart with the pinned Helm binaries (.cache/bin/helm3 = 3.19, helm4 = 4.3)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mcp-sidecar-injector"
BIN = REPO / ".cache" / "bin"
HELMS = ("helm3", "helm4")
RELEASE, NAMESPACE = "inj", "mcp-system"
FULLNAME = f"{RELEASE}-mcp-sidecar-injector"
OPERATOR = f"{FULLNAME}-operator"

# Kinds kubernetes-validate has no schema for (CRDs): checked by assertions in the tests instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
             ("cert-manager.io/v1", "Issuer")}

# Every values switch, each rendered and validated on its own (name -> --set/--set-string flags).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "no-operator": ("--set", "operator.enabled=false"),
    "operator-options": ("--set", "operator.companionService=false", "--set", "operator.healing=true"),
    "operator-namespaced": ("--set", "operator.namespaces={data,search}", "--set", "operator.replicaCount=2",
                            "--set", "webhook.excludedNamespaces={infra}"),
    "cert-manager": ("--set", "tls.certManager.enabled=true"),
    "cert-manager-issuer": ("--set", "tls.certManager.enabled=true", "--set", "tls.certManager.issuerRef.name=corp-ca",
                            "--set", "tls.certManager.issuerRef.kind=ClusterIssuer"),
    "dev-url": ("--set", "webhook.url=https://127.0.0.1:8443", "--set-string",
                "webhook.caBundle=-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
    "fail-closed": ("--set", "webhook.failurePolicy=Fail", "--set", "webhook.excludedNamespaces={infra,ci}"),
    "service-monitor": ("--set", "serviceMonitor.enabled=true", "--set", "prometheusAnnotations=false"),
    "network-policy": ("--set", "networkPolicy.enabled=true", "--set", "networkPolicy.namespaces={data,search}",
                       "--set", "networkPolicy.from[0].namespaceSelector.matchLabels.team=ai"),
    "no-pdb-hard-affinity": ("--set", "podDisruptionBudget.enabled=false", "--set", "podAntiAffinity=hard",
                             "--set", "replicaCount=3"),
    "native-digest": ("--set", "sidecarConfig.nativeSidecar=true", "--set",
                      "image.digest=sha256:" + "a" * 64, "--set", "sidecarConfig.backends.redis.image=registry.example/mcp/redis:1.2"),
    "no-rbac-no-sa": ("--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                      "--set", "serviceAccount.name=injector"),
}


def helm(which: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    path = BIN / which
    if not path.exists():
        pytest.skip(f"{path} missing: run tests/cluster/build.sh helm")
    done = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{which} {' '.join(args)} failed:\n{done.stderr}")
    return done


@functools.lru_cache(maxsize=None)
def render(which: str, *flags: str) -> tuple[dict, ...]:
    out = helm(which, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def by_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def is_hook(doc) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def dumps(doc) -> str:
    return json.dumps(doc, indent=1, sort_keys=True)
