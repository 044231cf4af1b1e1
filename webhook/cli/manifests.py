"""Offline injection over manifests (``mcp-sidecar inject -f``), like ``istioctl kube-inject``.

Finds the pod (template) inside each supported kind, runs the very same engine on it and applies
the patch; everything else passes through unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import jsonpatch
import yaml

from webhook.engine.config import InjectorConfig
from webhook.engine.injection import InjectionResult, evaluate

#: kind -> path from the object to its pod template ("" = the object is the pod).
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ManifestError(ValueError):
    """A document cannot be processed; the message names its index and kind."""


@dataclass
class DocumentReport:
    index: int
    kind: str
    name: str
    result: InjectionResult | None


@dataclass
class InjectOutput:
    documents: list[Any]
    reports: list[DocumentReport] = field(default_factory=list)


def _describe(index: int, obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"document {index}"
    name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
    return f"document {index} ({obj.get('kind', 'no kind')}{'/' + name if name else ''})"


def _inject_one(obj: dict[str, Any], config: InjectorConfig, index: int, label: str) -> tuple[dict[str, Any], list[DocumentReport]]:
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{label}: has no kind")
    if kind == "List":
        items = obj.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{label}: List has no items list")
        out = dict(obj)
        out["items"] = []
        reports: list[DocumentReport] = []
        for position, item in enumerate(items):
            item_label = f"{label} item {position} ({item.get('kind', 'no kind') if isinstance(item, dict) else type(item).__name__})"
            if not isinstance(item, dict):
                raise ManifestError(f"{item_label}: is not a mapping")
            new_item, item_reports = _inject_one(item, config, index, item_label)
            out["items"].append(new_item)
            reports += item_reports
        return out, reports
    path = POD_TEMPLATE_PATHS.get(kind)
    if path is None:
        return obj, []
    template: Any = obj
    for token in path:
        template = template.get(token) if isinstance(template, dict) else None
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        where = ".".join(path) or "spec"
        raise ManifestError(f"{label}: {kind} has no pod spec at {where + '.spec' if path else where}")
    result = evaluate(template, None, config)
    name = str((obj.get("metadata") or {}).get("name", ""))
    report = DocumentReport(index=index, kind=kind, name=name, result=result)
    if not result.patch:
        return obj, [report]
    new_obj = copy.deepcopy(obj)
    parent: Any = new_obj
    for token in path[:-1]:
        parent = parent[token]
    patched = jsonpatch.apply_patch(template, result.patch)
    if path:
        parent[path[-1]] = patched
    else:
        new_obj = patched
    return new_obj, [report]


def inject_documents(documents: Iterable[Any], config: InjectorConfig) -> InjectOutput:
    output = InjectOutput(documents=[])
    for index, obj in enumerate(documents):
        if obj is None:  # empty document between '---' separators
            continue
        label = _describe(index, obj)
        if not isinstance(obj, dict):
            raise ManifestError(f"{label}: is a {type(obj).__name__}, not a Kubernetes object")
        new_obj, reports = _inject_one(obj, config, index, label)
        output.documents.append(new_obj)
        output.reports += reports
    return output


def load_documents(text: str) -> list[Any]:
    """Parse multi-document YAML (JSON is YAML too); errors name the document index."""
    documents: list[Any] = []
    loader = yaml.safe_load_all(text)
    while True:
        try:
            documents.append(next(loader))
        except StopIteration:
            return documents
        except yaml.YAMLError as exc:
            raise ManifestError(f"document {len(documents)}: not valid YAML: {exc}") from None


def dump_documents(documents: list[Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, explicit_start=len(documents) > 1)
