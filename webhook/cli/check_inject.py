"""``mcp-sidecar check-inject``: would this pod be injected, and if not, exactly why.

Like ``istioctl x check-inject``: evaluates the live MutatingWebhookConfigurations' rules and
object/namespace selectors, then the engine's own decision, and names the first thing in the way.
The explanation itself (``explain``) is pure; ``run_check`` only gathers the inputs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TextIO

from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.cli.manifests import POD_TEMPLATE_PATHS, ManifestError, load_documents
from webhook.engine.config import InjectorConfig
from webhook.engine.constants import ANNOTATION_STATUS, LABEL_BACKEND
from webhook.engine.injection import evaluate
from webhook.engine.selectors import describe_selector, selector_matches
from webhook.shared.kube import KubeAccessError, explain as explain_error

#: Our webhooks are recognised by this name suffix (the chart registers inject.mcp-sidecar.dox).
WEBHOOK_NAME_SUFFIX = ".mcp-sidecar.dox"


@dataclass
class Verdict:
    injected: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)


def _rule_matches(rule: Mapping[str, Any]) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return value in values or "*" in values

    resources = rule.get("resources") or []
    return has("operations", "CREATE") and has("apiGroups", "") and has("apiVersions", "v1") and ("pods" in resources or "*" in resources or "*/*" in resources)


def explain(
    pod: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    webhook_configurations: Sequence[Mapping[str, Any]],
    config: InjectorConfig,
    *,
    workload: Mapping[str, Any] | None = None,
) -> Verdict:
    verdict = Verdict(injected=False)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}

    if ANNOTATION_STATUS in annotations:
        verdict.injected = True
        verdict.notes.append(f"already injected: {annotations[ANNOTATION_STATUS]}")
        return verdict

    if workload is not None and LABEL_BACKEND not in labels:
        workload_labels = (workload.get("metadata") or {}).get("labels") or {}
        if LABEL_BACKEND in workload_labels:
            verdict.reasons.append(
                f"the label {LABEL_BACKEND}={workload_labels[LABEL_BACKEND]} is on the {workload.get('kind')} {((workload.get('metadata') or {}).get('name'))}, "
                "not on its pod template: the operator copies it there (is it running?), or add it to spec.template.metadata.labels"
            )
            return verdict

    ours = [(cfg, hook) for cfg in webhook_configurations for hook in cfg.get("webhooks") or [] if str(hook.get("name", "")).endswith(WEBHOOK_NAME_SUFFIX)]
    if not ours:
        verdict.reasons.append(f"no MutatingWebhookConfiguration has a webhook named *{WEBHOOK_NAME_SUFFIX}: is the injector installed?")
        return verdict
    matching = []
    for cfg, hook in ours:
        where = f"{cfg['metadata']['name']}/{hook['name']}"
        if not any(_rule_matches(rule) for rule in hook.get("rules") or []):
            verdict.notes.append(f"{where}: its rules do not cover CREATE pods")
        elif not selector_matches(hook.get("objectSelector"), labels):
            verdict.notes.append(f"{where}: objectSelector [{describe_selector(hook.get('objectSelector'))}] does not match the pod's labels")
        elif not selector_matches(hook.get("namespaceSelector"), namespace_labels):
            verdict.notes.append(f"{where}: namespaceSelector [{describe_selector(hook.get('namespaceSelector'))}] excludes the namespace")
        else:
            matching.append(where)
    verdict.webhooks = matching
    if not matching:
        verdict.reasons.append("no injector webhook is called for this pod: " + "; ".join(verdict.notes))
        verdict.notes = []
        return verdict
    if len(matching) > 1:
        verdict.notes.append(f"more than one webhook matches ({', '.join(matching)}): each would be called; remove the duplicate installation")

    result = evaluate(pod, namespace_labels, config)
    if result.injected:
        verdict.injected = True
        verdict.notes += result.warnings
        return verdict
    verdict.reasons.append(f"{result.skip_reason.value if result.skip_reason else 'skipped'}: {result.message}")
    return verdict


def _namespace_labels(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    try:
        return core.read_namespace(namespace).metadata.labels or {}
    except ApiException as exc:
        if exc.status == 404:
            return {"kubernetes.io/metadata.name": namespace}
        raise


def _owning_workload(api: client.ApiClient, pod: Mapping[str, Any]) -> dict[str, Any] | None:
    apps = client.AppsV1Api(api)
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        kind, name, namespace = ref.get("kind"), ref.get("name"), meta.get("namespace")
        try:
            if kind == "ReplicaSet":
                rs = apps.read_namespaced_replica_set(name, namespace)
                for rs_ref in rs.metadata.owner_references or []:
                    if rs_ref.controller and rs_ref.kind == "Deployment":
                        return api.sanitize_for_serialization(apps.read_namespaced_deployment(rs_ref.name, namespace)) | {"kind": "Deployment"}
            reader = {"StatefulSet": apps.read_namespaced_stateful_set, "DaemonSet": apps.read_namespaced_daemon_set}.get(kind)
            if reader:
                return api.sanitize_for_serialization(reader(name, namespace)) | {"kind": kind}
        except ApiException:
            return None
    return None


def targets_from_manifest(text: str, default_namespace: str) -> list[tuple[str, dict[str, Any], dict[str, Any] | None, str]]:
    """(description, pod-shaped dict, workload or None, namespace) for each object with a pod spec."""
    targets = []
    for index, obj in enumerate(load_documents(text)):
        if not isinstance(obj, dict):
            continue
        path = POD_TEMPLATE_PATHS.get(str(obj.get("kind")))
        if path is None:
            continue
        node: Any = obj
        for token in path:
            node = node.get(token) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ManifestError(f"document {index} ({obj.get('kind')}): no pod template")
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or default_namespace
        pod = {"metadata": {**(node.get("metadata") or {}), "namespace": namespace}, "spec": node.get("spec") or {}}
        targets.append((f"{obj['kind']}/{meta.get('name', '?')}", pod, obj if path else None, namespace))
    return targets


def run_check(api: client.ApiClient, config: InjectorConfig, *, pod_name: str | None, manifest: str | None, namespace: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr, output: str = "text") -> int:
    core = client.CoreV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    try:
        configurations = api.sanitize_for_serialization(admission.list_mutating_webhook_configuration()).get("items", [])
        if pod_name:
            pod = api.sanitize_for_serialization(core.read_namespaced_pod(pod_name, namespace))
            targets = [(f"Pod/{pod_name}", pod, _owning_workload(api, pod), namespace)]
        else:
            targets = targets_from_manifest(manifest or "", namespace)
        results = []
        for description, pod, workload, ns in targets:
            verdict = explain(pod, _namespace_labels(core, ns), configurations, config, workload=workload)
            results.append((description, ns, verdict))
    except ManifestError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except ApiException as exc:
        if exc.status == 404 and pod_name:
            print(f"error: pod {namespace}/{pod_name} not found", file=err)
            return 2
        print(f"error: {explain_error(exc, 'read the cluster')}", file=err)
        return 2
    except KubeAccessError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except Exception as exc:  # transport errors: unreachable cluster
        print(f"error: {explain_error(exc, 'read the cluster')}", file=err)
        return 2
    if not results:
        print("error: no Pod or workload with a pod template found", file=err)
        return 2
    if output == "json":
        out.write(json.dumps([{"object": d, "namespace": ns, "injected": v.injected, "reasons": v.reasons, "notes": v.notes, "webhooks": v.webhooks} for d, ns, v in results], indent=2) + "\n")
    else:
        for description, ns, verdict in results:
            if verdict.injected:
                via = f" by {', '.join(verdict.webhooks)}" if verdict.webhooks else ""
                out.write(f"{ns}/{description}: WOULD BE INJECTED{via}\n")
            else:
                out.write(f"{ns}/{description}: NOT INJECTED\n")
            for reason in verdict.reasons:
                out.write(f"  why: {reason}\n")
            for note in verdict.notes:
                out.write(f"  note: {note}\n")
    return 0 if all(v.injected for _, _, v in results) else 1
