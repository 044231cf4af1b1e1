"""Where does one POST /mutate spend its time? Sample our running server with py-spy under wrk load.

    .venv/bin/python bench/webhook/profile_server.py                 # 10 s at concurrency 16
    .venv/bin/python bench/webhook/profile_server.py --seconds 15 --concurrency 64 --native

Starts ``mcp-sidecar serve`` (one uvicorn worker, TLS) like ``admission_bench.py``, drives it with
wrk and the same Lua script, records it with ``py-spy record --format raw`` and prints

- the share of samples *inside* (inclusive) the parts of a request — TLS, HTTP parsing, the
  FastAPI/Starlette stack, our ``review()`` (decode, engine, encode), metrics, logging — and
- the top functions by *self* time.

py-spy is looked up on PATH, then in /tmp/pyspy (``pip install --target /tmp/pyspy py-spy`` keeps it
out of the project venv).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

#: (label, substring of a frame) — a sample counts for a label when any of its frames matches.
BUCKETS = [
    ("webhook.admission.review.review (decode + engine + encode)", "review (webhook/admission/review.py"),
    ("  json.loads of the request", "parse_review (webhook/admission/review.py"),
    ("  webhook.engine.injection.evaluate", "evaluate (webhook/engine/injection.py"),
    ("  _response: json.dumps + base64 of the patch", "_response (webhook/admission/review.py"),
    ("json.dumps of the response body (server.py)", "dumps (json/__init__.py"),
    ("mutate endpoint body (server.py)", "mutate (webhook/admission/server.py"),
    ("  prometheus metrics (.inc/.observe/.labels)", "prometheus_client"),
    ("  reading the body (_read_limited)", "_read_limited (webhook/admission/server.py"),
    ("FastAPI routing/dependency/serialisation layer", "fastapi/"),
    ("Starlette (routing, middleware, Request/Response)", "starlette/"),
    ("uvicorn protocol (httptools/h11)", "uvicorn/protocols/http"),
    ("asyncio/uvloop event-loop & ssl transport (Python side)", "asyncio/"),
    ("ssl (Python-level frames)", "ssl.py"),
    ("logging", "logging/"),
]


def find_py_spy() -> str | None:
    return shutil.which("py-spy") or (str(p) if (p := Path("/tmp/pyspy/bin/py-spy")).exists() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="profile the admission server under load with py-spy")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--native", action="store_true", help="also sample native frames (ssl, uvloop, httptools)")
    parser.add_argument("--pod", choices=("typical", "64k"), default="typical")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="keep the raw py-spy output here")
    args = parser.parse_args(argv)

    import json

    from admission_bench import WRK_LUA, pin  # noqa: PLC0415
    from engine_bench import env_pod, typical_pod  # noqa: PLC0415
    from tests.support.webhook_process import WebhookProcess  # noqa: PLC0415
    from tests.webhook.helpers import admission_review  # noqa: PLC0415

    py_spy = find_py_spy()
    if py_spy is None or shutil.which("wrk") is None:
        print("error: needs py-spy and wrk (see the docstring)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="profile-server-"))
    pod = typical_pod() if args.pod == "typical" else env_pod(1000)
    body_file = workdir / "review.json"
    body_file.write_text(json.dumps(admission_review(pod), separators=(",", ":")))
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)
    raw = args.out or workdir / "profile.txt"
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    server = WebhookProcess(workdir / "server", watch_seconds=2.0)
    spy = wrk = None
    try:
        server.start()
        if pinned:
            pin(server.process.pid, 0)
        env = dict(os.environ, BENCH_BODY_FILE=str(body_file))
        prefix = ["taskset", "-c", "1"] if pinned else []
        subprocess.run([*prefix, "wrk", "-t1", "-c", str(args.concurrency), "-d", "2s", "-s", str(lua), server.url + "/mutate"],
                       env=env, capture_output=True, timeout=60)
        spy_cmd = [py_spy, "record", "--format", "raw", "--rate", str(args.rate), "--duration", str(int(args.seconds)),
                   "--pid", str(server.process.pid), "--output", str(raw)]
        # --nonblocking (no pauses of the server while sampling) cannot unwind native frames.
        spy_cmd.append("--native" if args.native else "--nonblocking")
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        wrk = subprocess.run([*prefix, "wrk", "-t1", "-c", str(args.concurrency), "-d", f"{args.seconds:g}s", "--latency",
                              "-s", str(lua), server.url + "/mutate"], env=env, capture_output=True, text=True,
                             timeout=args.seconds + 60)
        spy.wait(timeout=args.seconds + 60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
            spy.wait()
        server.stop()
    if wrk is not None:
        line = next((l for l in wrk.stdout.splitlines() if l.startswith("BENCH_JSON ")), "")
        print(f"wrk during profiling: {line[len('BENCH_JSON '):]}")
    if not raw.exists():
        print(f"py-spy wrote no profile: {spy.stderr.read().decode(errors='replace') if spy and spy.stderr else ''}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    stacks: list[tuple[str, int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            stacks.append((stack, int(count)))
    total = sum(c for _, c in stacks) or 1
    print(f"\n{total} samples (idle excluded: py-spy only records threads that are running)\n")
    print("| part of a request | inclusive share of busy samples |\n|---|---:|")
    for label, needle in BUCKETS:
        n = sum(c for s, c in stacks if needle in s)
        print(f"| {label} | {100 * n / total:.1f}% |")
    selfs: collections.Counter[str] = collections.Counter()
    for stack, count in stacks:
        selfs[stack.rsplit(";", 1)[-1]] += count
    print(f"\n| top {args.top} functions by self time | share |\n|---|---:|")
    for frame, n in selfs.most_common(args.top):
        print(f"| `{frame.replace(str(ROOT) + '/', '').replace('|', '/')}` | {100 * n / total:.1f}% |")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
