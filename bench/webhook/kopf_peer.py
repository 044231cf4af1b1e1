"""The peer a Python team would pick instead: a kopf ``@kopf.on.mutate`` handler on kopf's own server.

    .venv/bin/python bench/webhook/kopf_peer.py --port 9443 --certfile tls.crt --pkeyfile tls.key

kopf normally needs a cluster (it discovers resources and registers its webhook configuration
through the API). The admission path itself does not, so this runs exactly what ``kopf run`` runs
for an admission request, without the parts that talk to a cluster:

- ``kopf.WebhookServer`` (aiohttp, TLS) iterated with ``webhookfn`` =
  ``functools.partial(kopf._core.engines.admission.serve_admission_request, settings=...,
  registry=..., insights=..., memories=..., memobase=..., indices={})`` — the same partial that
  ``kopf._core.reactor.running.spawn_tasks`` builds;
- ``Insights.webhook_resources`` filled by hand with core v1 ``pods`` (what discovery would find);
- an ``async`` ``@kopf.on.mutate("pods", id="mutate")`` handler (kopf serves ``POST /{id}``; the id
  maps the URL path to the handler as in kopf's generated webhook configurations) that calls our
  engine and expresses its result through kopf's ``patch`` kwarg — kopf's documented merge-patch
  API: the sidecar appended to ``spec.containers`` (or prepended to ``spec.initContainers`` in
  native mode), the /tmp volume appended to ``spec.volumes`` and the status annotation set. kopf
  then builds the JSON Patch itself (``Patch.as_json_patch``: deep copy + ``jsonpatch`` diff).

Choices that favour the peer, so the comparison is not rigged against it: the handler is
``async def`` (a plain ``def`` handler would run in kopf's thread pool), the event loop is uvloop
(as ``kopf run`` uses when it is installed) and logging is at WARNING (``kopf run`` logs
"Handler 'mutate' succeeded." at INFO for every request unless ``--quiet``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import kopf  # noqa: E402
from kopf._cogs.configs import configuration  # noqa: E402
from kopf._cogs.structs import ephemera, references  # noqa: E402
from kopf._core.engines import admission  # noqa: E402
from kopf._core.intents import registries  # noqa: E402
from kopf._core.reactor import inventory  # noqa: E402

from webhook.engine.config import default_config  # noqa: E402
from webhook.engine.constants import ANNOTATION_STATUS  # noqa: E402
from webhook.engine.injection import evaluate  # noqa: E402

PODS = references.Resource(
    group="", version="v1", plural="pods", kind="Pod", singular="pod", shortcuts=frozenset({"po"}),
    categories=frozenset({"all"}), subresources=frozenset({"status", "binding", "eviction", "ephemeralcontainers", "log", "exec"}),
    namespaced=True, preferred=True,
    verbs=frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}),
)


def build_registry() -> registries.OperatorRegistry:
    registry = registries.OperatorRegistry()
    config = default_config()

    @kopf.on.mutate("pods", id="mutate", operations=["CREATE"], registry=registry)
    async def inject(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **_: Any) -> None:
        pod = dict(body)  # top level of kopf's read-only view; nested values are the raw dicts
        result = evaluate(pod, None, config)
        warnings.extend(result.warnings)
        if not result.injected or result.rendered is None:
            return
        rendered = result.rendered
        spec = pod["spec"]
        if rendered.container.get("restartPolicy") == "Always":
            patch.spec["initContainers"] = [rendered.container, *(spec.get("initContainers") or [])]
        else:
            patch.spec["containers"] = [*(spec.get("containers") or []), rendered.container]
        volumes = spec.get("volumes") or []
        present = {v.get("name") for v in volumes if isinstance(v, dict)}
        added = [v for v in rendered.volumes if v["name"] not in present]
        if added:
            patch.spec["volumes"] = [*volumes, *added]
        patch.metadata.annotations[ANNOTATION_STATUS] = json.dumps(rendered.status, sort_keys=True, separators=(",", ":"))

    return registry


async def serve(addr: str, port: int, certfile: str, pkeyfile: str) -> None:
    registry = build_registry()
    settings = configuration.OperatorSettings()
    insights = references.Insights()
    insights.webhook_resources.add(PODS)
    insights.ready_resources.set()
    webhookfn = functools.partial(
        admission.serve_admission_request,
        settings=settings, registry=registry, insights=insights,
        memories=inventory.ResourceMemories(), memobase=ephemera.AnyMemo(ephemera.Memo()), indices={},
    )
    server = kopf.WebhookServer(addr=addr, port=port, certfile=certfile, pkeyfile=pkeyfile)
    async for client_config in server(webhookfn):
        print(f"kopf webhook server listening: {client_config['url']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kopf peer of the admission benchmark")
    parser.add_argument("--addr", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--pkeyfile", required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is in the venv
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(serve(args.addr, args.port, args.certfile, args.pkeyfile))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
