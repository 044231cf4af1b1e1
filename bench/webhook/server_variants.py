"""How much of a review's cost is the web stack? The same ``review()`` behind thinner servers.

    .venv/bin/python bench/webhook/server_variants.py                    # 8 s per cell, c=16 and 64
    .venv/bin/python bench/webhook/server_variants.py --duration 5 --concurrency 1,16,64

An experiment for the profile of issue 2, not a second implementation: each variant serves
``POST /mutate`` with the very same ``webhook.admission.review.review`` and ``json.dumps`` of the answer
on uvicorn (uvloop + httptools, access log off, one worker) and the same TLS certificate; only the
layer between the socket and ``review()`` changes:

- ``production``: ``mcp-sidecar serve`` itself (FastAPI, body limit, Prometheus metrics, logging);
- ``starlette``: one Starlette ``Route`` (``await request.body()``, ``Response``) — no FastAPI;
- ``asgi``: a bare ASGI callable (reads ``http.request`` messages, sends start + body);
- ``asgi-plain``: the bare ASGI callable over plain HTTP, to show what TLS costs.

Same wrk load generator, pinning and figures as ``admission_bench.py``; ``--repeat`` rounds over all
variants, best of the rounds shown (a shared machine only ever makes a run slower).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from tests.support.processes import stop_group, wait_listening  # noqa: E402

VARIANTS = ("production", "starlette", "asgi", "asgi-plain")


def make_app(variant: str) -> Any:
    from webhook.admission.review import review
    from webhook.engine.config import default_config

    config = default_config()

    def answer(raw: bytes) -> bytes:
        return json.dumps(review(raw, config).body, separators=(",", ":")).encode()

    if variant == "starlette":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def mutate(request: Request) -> Response:
            return Response(answer(await request.body()), media_type="application/json")

        return Starlette(routes=[Route("/mutate", mutate, methods=["POST"])])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = answer(b"".join(chunks))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_variant(variant: str, port: int, cert: str | None, key: str | None) -> None:
    import uvicorn

    uvicorn.run(make_app(variant), host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key,
                log_level="warning", access_log=False, lifespan="off")


class VariantProcess:
    def __init__(self, variant: str, port: int, cert: Path | None, key: Path | None, ca: Path, log: Path):
        self.variant, self.port, self.cert, self.key, self.ca, self.log = variant, port, cert, key, ca, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "VariantProcess":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_serve", self.variant, str(self.port),
               str(self.cert or ""), str(self.key or "")]
        self._log = open(self.log, "ab")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        try:
            wait_listening(self.process, self.port, what=self.variant, log=self.log.read_text, tls_ca=self.ca if self.cert else None)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self._log.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_serve"]:
        variant, port, cert, key = argv[1:5]
        serve_variant(variant, int(port), cert or None, key or None)
        return 0
    parser = argparse.ArgumentParser(description="the same review() behind thinner servers")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all variants; the table shows the best (default 3)")
    parser.add_argument("--pod", choices=("typical", "64k"), default="typical")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import httpx

    from admission_bench import WRK_LUA, apply_answer, cell, pin, run_load, sh  # noqa: PLC0415
    from engine_bench import env_pod, typical_pod  # noqa: PLC0415
    from tests.support.webhook_process import WebhookProcess, free_port  # noqa: PLC0415
    from tests.webhook.helpers import admission_review  # noqa: PLC0415

    if shutil.which("wrk") is None:
        print("error: needs wrk (apt-get install -y wrk, or run admission_bench.py once)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, client_cpu = (0, 1) if pinned else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="server-variants-"))
    pod = typical_pod() if args.pod == "typical" else env_pod(1000)
    body = json.dumps(admission_review(pod), separators=(",", ":")).encode()
    body_file = workdir / "review.json"
    body_file.write_bytes(body)
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    production = WebhookProcess(workdir / "certs", watch_seconds=2.0)  # only its certificate (never started)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {}
    load_before = sh("uptime")
    expected = None
    variants = args.variants.split(",")
    for rep in range(args.repeat):
        for variant in variants:
            if variant == "production":
                server: Any = WebhookProcess(workdir / f"production-{rep}", watch_seconds=2.0)
            else:
                tls = variant != "asgi-plain"
                server = VariantProcess(variant, free_port(), production.cert_file if tls else None,
                                        production.key_file if tls else None, production.ca_file, workdir / f"{variant}.log")
            try:
                server.start()
                pin(server.process.pid, server_cpu)
                verify = str(server.ca_file) if variant == "production" else str(production.ca_file)
                answer = httpx.post(server.url + "/mutate", content=body, verify=verify, timeout=10).raise_for_status().json()
                patched = apply_answer(pod, answer)
                expected = expected or patched
                assert patched == expected, f"{variant}: different patch"
                run_load("wrk", server.url, body_file, lua, 16, 2, production.ca_file, client_cpu)  # warm-up
                for c in concurrency:
                    r = cell("wrk", server, server.process.pid, body_file, lua, c, args.duration, production.ca_file, client_cpu)
                    results.setdefault(variant, {}).setdefault(c, []).append(r)
                    print(f"[{rep + 1}/{args.repeat}] {variant:<11} c={c:<3} {r['rps']:8.0f} rev/s  p50 {r['p50_ms']:.2f} ms  "
                          f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  server CPU {r['server_cpu_pct']:.0f}% "
                          f"({r['server_cpu_us_per_review']:.0f} µs/review)  other load {r['other_load_cores']:.2f}", file=sys.stderr)
            finally:
                server.stop()
    print(f"Pod: {args.pod}; wrk 1 thread, keep-alive, {args.duration:g} s per cell, {args.repeat} rounds over all variants; "
          f"{'servers on CPU 0, wrk on CPU 1' if pinned else 'no pinning'}. Best of the rounds: highest reviews/s, lowest "
          f"server CPU per review (other processes only ever add to both). Load before: `{load_before}`; after: `{sh('uptime')}`.\n")
    print("| variant | concurrency | best reviews/s | p50 / p99 of that run | least server CPU per review | all rounds, reviews/s |")
    print("|---|---:|---:|---:|---:|---|")
    for variant, per in results.items():
        for c, runs in per.items():
            best = max(runs, key=lambda r: r["rps"])
            cpu = min(r["server_cpu_us_per_review"] for r in runs)
            print(f"| {variant} | {c} | {best['rps']:,.0f} | {best['p50_ms']:.2f} / {best['p99_ms']:.2f} ms | {cpu:.0f} µs "
                  f"| {', '.join(format(r['rps'], ',.0f') for r in runs)} |")
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
