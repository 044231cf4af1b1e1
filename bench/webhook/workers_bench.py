"""What `serve --workers N` costs and why it listens with SO_REUSEPORT (issue 12). Light: ~30 s.

    .venv/bin/python bench/webhook/workers_bench.py

1. **Connection spread**: two forked uvloop servers, 64 connections opened at once (what wrk and a
   restarted API server do), five trials each: one shared listening socket (uvicorn's own
   ``--workers``) vs one ``SO_REUSEPORT`` socket per worker (ours). Prints the connections each
   worker accepted.
2. **Metrics**: CPU per review of the metric updates a review makes (reviews counter, injections
   counter, latency histogram) with prometheus_client in-process vs in multiprocess mode (memory-mapped
   files, what several workers need for one /metrics).
3. **Memory**: proportional set size (PSS, shared pages split between the processes that map them) of a
   whole idle `mcp-sidecar serve` (supervisor + workers) after 200 reviews, for 1 and 2 workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.processes import free_port, stop_group, wait_listening  # noqa: E402


def _count_connections(sock: socket.socket, out: int, seconds: float) -> None:
    import uvloop

    async def main() -> None:
        accepted = 0

        def on_connection(reader, writer) -> None:
            nonlocal accepted
            accepted += 1

        await asyncio.start_server(on_connection, sock=sock)
        await asyncio.sleep(seconds)
        os.write(out, f"{accepted}\n".encode())

    uvloop.run(main())


def spread(mode: str, connections: int = 64) -> list[int]:
    port = free_port()
    read_end, write_end = os.pipe()
    shared = None
    if mode == "shared":
        shared = socket.socket()
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.bind(("127.0.0.1", port))
        shared.listen(2048)
    pids = []
    for _ in range(2):
        sock = shared
        if sock is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
        pid = os.fork()
        if pid == 0:
            try:
                _count_connections(sock, write_end, 3.0)
            finally:
                os._exit(0)
        pids.append(pid)
    time.sleep(1.0)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(write_end)
    counts = sorted(int(line) for line in os.read(read_end, 1000).decode().split())
    for c in clients:
        c.close()
    return counts


METRIC_SCRIPT = r"""
import sys, tempfile, time
if sys.argv[1] == "multiprocess":
    from webhook.admission.workers import enable_multiprocess_metrics
    enable_multiprocess_metrics(tempfile.mkdtemp())
from webhook.shared.metrics import Metrics
m = Metrics()
def one():
    m.reviews.labels(operation="CREATE", result="injected").inc()
    m.injections.labels(backend="redis").inc()
    m.latency.observe(0.0004)
for _ in range(2000): one()
n = 100000
t = time.process_time()
for _ in range(n): one()
print((time.process_time() - t) / n * 1e6)
"""


def metric_cost(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", METRIC_SCRIPT, mode], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(done.stdout)


def tree_pss_kib(pid: int) -> int:
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def serve_memory(workers: int) -> int:
    port = free_port()
    cmd = [sys.executable, "-m", "webhook.cli", "serve", "--plain-http", "--host", "127.0.0.1", "--port", str(port),
           "--no-operator", "--workers", str(workers)]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        wait_listening(process, port, what="serve", log=lambda: "")
        time.sleep(1.5)  # every worker up
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": {}}}).encode()
        for _ in range(200):
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/mutate", data=body, method="POST")).read()
        return tree_pss_kib(process.pid)
    finally:
        stop_group(process)


def main() -> int:
    print("## Connections accepted per worker (2 workers, 64 connections at once, 5 trials)\n")
    for mode, label in (("shared", "one shared listening socket"), ("reuseport", "SO_REUSEPORT socket per worker (ours)")):
        print(f"- {label}: {', '.join('/'.join(map(str, spread(mode))) for _ in range(5))}")
    print("\n## CPU of one review's metric updates (median of 3 runs)\n")
    for mode in ("in-process", "multiprocess"):
        runs = sorted(metric_cost(mode) for _ in range(3))
        print(f"- {mode}: {runs[1]:.1f} µs")
    print("\n## Memory of an idle `serve` after 200 reviews (PSS of the supervisor and its workers)\n")
    for workers in (1, 2, 3):
        print(f"- {workers} worker{'s' if workers > 1 else ''}: {tree_pss_kib_label(serve_memory(workers))}")
    print(f"\nMachine: nproc {os.cpu_count()}; load: `{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}`")
    return 0


def tree_pss_kib_label(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
