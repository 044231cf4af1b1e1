"""Side-by-side benchmark of the MCP sidecars against their peers, on one machine, in one run.

    .venv/bin/python bench/sidecars/run.py            # writes bench/sidecars/results.{json,md}
    .venv/bin/python bench/sidecars/run.py --allocators   # and idle RSS under allocator settings

Same backends (a real redis-server and a real Elasticsearch 8 node from tests/backends), same client
(bench/sidecars/mcpclient.py: plain JSON-RPC over one keep-alive HTTP connection per client) for:

- our ``mcp-redis`` / ``mcp-elasticsearch``, run from the very payload of the images
  (sidecars/requirements/build_venv.sh into .cache/bench/),
- ``redis-mcp-server`` 0.5.1 (stdio-only: wrapped on streamable HTTP by peer_redis_http.py),
- ``elasticsearch-mcp-server`` 2.1.6 (its own streamable-http mode),
- direct ``redis.asyncio`` calls as the floor (no MCP at all).

Peers get their own venvs under .cache/bench/ (each installs a top-level module named ``src``).
Every loop is bounded; every process started here is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.sidecars.mcpclient import McpHttpClient  # noqa: E402
from tests.backends.elasticsearch_node import ElasticsearchNode  # noqa: E402
from tests.backends.redis_server import RedisServer  # noqa: E402
from tests.sidecars.helpers import DEFAULT_TOKEN, SidecarProcess  # noqa: E402

CACHE = REPO / ".cache" / "bench"
PEERS = {"redis": "redis-mcp-server==0.5.1", "elasticsearch": "elasticsearch-mcp-server==2.1.6"}
SEQUENTIAL = 1000
CONCURRENCY = [(32, 50), (100, 20)]  # (clients, calls per client)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- venvs
def _fingerprint(backend: str) -> str:
    h = hashlib.sha256()
    for path in sorted([*REPO.glob("sidecars/**/*.py"), REPO / "constraints.txt",
                        REPO / f"sidecars/requirements/{backend}.txt", REPO / "sidecars/requirements/build_venv.sh"]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def sidecar_venv(backend: str) -> Path:
    """The image payload for ``backend``, rebuilt when the sources change."""
    dest = CACHE / f"sidecar-{backend}"
    stamp = dest / ".fingerprint"
    if not stamp.exists() or stamp.read_text() != _fingerprint(backend):
        log(f"building the {backend} image payload into {dest} (sidecars/requirements/build_venv.sh)")
        base_python = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run(["sh", str(REPO / "sidecars/requirements/build_venv.sh"), backend, str(dest), str(base_python)],
                       check=True)
        stamp.write_text(_fingerprint(backend))
    return dest


def peer_venv(backend: str) -> Path:
    dest = CACHE / f"peer-{backend}"
    stamp = dest / ".installed"
    if not stamp.exists() or stamp.read_text() != PEERS[backend]:
        log(f"installing {PEERS[backend]} into {dest}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(dest)], check=True)
        subprocess.run([str(dest / "bin/pip"), "install", "-q", "--no-cache-dir", PEERS[backend]], check=True)
        stamp.write_text(PEERS[backend])
    return dest


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 2**20


# ------------------------------------------------------------------------------------ measure
def status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Result:
    name: str
    transport: str
    tool: str
    start_listen_s: float | None = None
    start_first_call_s: float | None = None
    idle_rss_mib: float | None = None
    seq_p50_ms: float | None = None
    seq_p99_ms: float | None = None
    rss_after_1000_mib: float | None = None
    load: dict = field(default_factory=dict)
    peak_rss_mib: float | None = None
    errors: int = 0
    #: 1-minute load average when this server's measurement started (the machine is shared).
    load_1min: float | None = None


async def _client_loop(url: str, tool: str, args: dict, calls: int, latencies: list[float], errors: list[str]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=1)) as http:
        client = McpHttpClient(url, http, token=DEFAULT_TOKEN)
        try:
            await client.initialize()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"initialize: {exc}")
            return
        for _ in range(calls):
            t0 = time.perf_counter()
            try:
                await client.call(tool, args)
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc)[:200])
                continue
            latencies.append((time.perf_counter() - t0) * 1000)


async def concurrent_load(url: str, tool: str, args: dict, clients: int, calls: int, pid: int | None) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    peak = [0]

    async def sample() -> None:
        while True:
            if pid:
                peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*[_client_loop(url, tool, args, calls, latencies, errors)
                                            for _ in range(clients)]), timeout=600)
    elapsed = time.perf_counter() - t0
    sampler.cancel()
    return {"clients": clients, "calls": clients * calls, "ok": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "p50_ms": round(pct(latencies, 50), 2) if latencies else None,
            "p95_ms": round(pct(latencies, 95), 2) if latencies else None,
            "p99_ms": round(pct(latencies, 99), 2) if latencies else None,
            "calls_per_s": round(len(latencies) / elapsed, 1), "peak_rss_mib": round(peak[0] / 1024, 1) if pid else None}


async def sequential(url: str, tool: str, args: dict, n: int) -> list[float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = McpHttpClient(url, http, token=DEFAULT_TOKEN)
        await client.initialize()
        for _ in range(50):
            await client.call(tool, args)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.call(tool, args)
            lat.append((time.perf_counter() - t0) * 1000)
        return lat


def first_call_time(proc: SidecarProcess, tool: str, args: dict, t_spawn: float, timeout: float = 60) -> float:
    async def attempt() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            client = McpHttpClient(proc.url, http, token=DEFAULT_TOKEN)
            await client.initialize()
            await client.call(tool, args)

    deadline = t_spawn + timeout
    while time.monotonic() < deadline:
        try:
            asyncio.run(attempt())
            return time.monotonic() - t_spawn
        except Exception:  # noqa: BLE001 - not ready yet
            time.sleep(0.02)
    raise RuntimeError(f"{proc.command} never answered {tool}")


def measure(name: str, transport: str, proc: SidecarProcess, tool: str, args: dict) -> Result:
    log(f"{name}: starting")
    res = Result(name=name, transport=transport, tool=tool, load_1min=round(os.getloadavg()[0], 2))
    t_spawn = time.monotonic()
    proc.start(timeout=60)
    res.start_listen_s = round(proc.started_in, 3)
    res.start_first_call_s = round(first_call_time(proc, tool, args, t_spawn), 3)
    pid = proc.proc.pid
    time.sleep(3)  # idle: after start-up work settles (our sidecar trims the heap at +1 s)
    res.idle_rss_mib = round(status_kib(pid, "VmRSS") / 1024, 1)
    lat = asyncio.run(sequential(proc.url, tool, args, SEQUENTIAL))
    res.seq_p50_ms, res.seq_p99_ms = round(pct(lat, 50), 3), round(pct(lat, 99), 3)
    res.rss_after_1000_mib = round(status_kib(pid, "VmRSS") / 1024, 1)
    for clients, calls in CONCURRENCY:
        log(f"{name}: {clients} concurrent clients x {calls} calls")
        res.load[clients] = asyncio.run(concurrent_load(proc.url, tool, args, clients, calls, pid))
        res.errors += res.load[clients]["errors"]
    res.peak_rss_mib = round(status_kib(pid, "VmHWM") / 1024, 1)
    log(f"{name}: p50 {res.seq_p50_ms} ms, idle {res.idle_rss_mib} MiB, peak {res.peak_rss_mib} MiB")
    return res


async def redis_floor(port: int) -> Result:
    import redis.asyncio as aioredis

    res = Result(name="redis.asyncio direct (floor)", transport="RESP, no MCP", tool="GET",
                 load_1min=round(os.getloadavg()[0], 2))
    r = aioredis.Redis(host="127.0.0.1", port=port, max_connections=128)
    for _ in range(50):
        await r.get("bench:key")
    lat = []
    for _ in range(SEQUENTIAL):
        t0 = time.perf_counter()
        await r.get("bench:key")
        lat.append((time.perf_counter() - t0) * 1000)
    res.seq_p50_ms, res.seq_p99_ms = round(pct(lat, 50), 3), round(pct(lat, 99), 3)
    for clients, calls in CONCURRENCY:
        conc: list[float] = []

        async def one() -> None:
            for _ in range(calls):
                t0 = time.perf_counter()
                await r.get("bench:key")
                conc.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(clients)])
        res.load[clients] = {"clients": clients, "calls": clients * calls, "ok": len(conc), "errors": 0,
                             "p50_ms": round(pct(conc, 50), 2), "p95_ms": round(pct(conc, 95), 2),
                             "p99_ms": round(pct(conc, 99), 2),
                             "calls_per_s": round(len(conc) / (time.perf_counter() - t0), 1), "peak_rss_mib": None}
    await r.aclose()
    return res


# -------------------------------------------------------------------------------------- report
def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(), "loadavg_start": os.getloadavg()}


def markdown(results: list[Result], meta: dict) -> str:
    def f(v, unit=""):
        return "–" if v is None else f"{v}{unit}"

    lines = [
        "| server | transport | tool | start→listen | start→first result | idle RSS | "
        "p50 / p99 (1,000 sequential) | RSS after 1,000 | 32 clients p50 / p99, peak RSS | "
        "100 clients p95, errors | peak RSS (VmHWM) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c32, c100 = r.load.get(32, {}), r.load.get(100, {})
        lines.append(
            f"| {r.name} | {r.transport} | `{r.tool}` | {f(r.start_listen_s, ' s')} | {f(r.start_first_call_s, ' s')} | "
            f"{f(r.idle_rss_mib, ' MiB')} | {f(r.seq_p50_ms)} / {f(r.seq_p99_ms)} ms | {f(r.rss_after_1000_mib, ' MiB')} | "
            f"{f(c32.get('p50_ms'))} / {f(c32.get('p99_ms'))} ms, {f(c32.get('peak_rss_mib'), ' MiB')} | "
            f"{f(c100.get('p95_ms'), ' ms')}, {c100.get('errors', '–')} errors | {f(r.peak_rss_mib, ' MiB')} | "
            f"{f(r.load_1min)} |")
    lines += ["", "Image payload (the venv the image copies, built by sidecars/requirements/build_venv.sh, "
              "measured with `du -s --block-size=1`): " + ", ".join(f"{k} {v:.1f} MiB"
                                                                  for k, v in meta["payload_mib"].items())]
    if meta.get("allocators"):
        lines += ["", "mcp-redis idle RSS by allocator setting (after start, 200 calls, 3 s; 3 runs each):", "",
                  "| setting | idle RSS (MiB) |", "|---|---|"]
        lines += [f"| `{row['setting']}` | {', '.join(map(str, row['idle_rss_mib']))} |" for row in meta["allocators"]]
    return "\n".join(lines)


#: Allocator settings tried on the idle sidecar (--allocators); the image ships MALLOC_ARENA_MAX=2.
ALLOCATORS = [
    {"MALLOC_ARENA_MAX": "2"},
    {"MALLOC_ARENA_MAX": "1"},
    {"MALLOC_ARENA_MAX": "2", "PYTHONMALLOC": "malloc"},
    {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_TOP_PAD_": "0"},
    {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"},
]


def allocator_rss(venv: Path, port: int, runs: int = 3) -> list[dict]:
    """Idle RSS of our Redis sidecar (after start, 200 calls and 3 s) under each allocator setting."""
    rows = []
    for setting in ALLOCATORS:
        rss = []
        for _ in range(runs):
            proc = SidecarProcess("redis", {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), **setting},
                                  command=[str(venv / "bin/mcp-redis")])
            try:
                proc.start(timeout=60)
                asyncio.run(_calls(proc.url, "get", {"key": "bench:key"}, 200))
                time.sleep(3)
                rss.append(round(status_kib(proc.proc.pid, "VmRSS") / 1024, 1))
            finally:
                proc.close()
        rows.append({"setting": " ".join(f"{k}={v}" for k, v in setting.items()), "idle_rss_mib": rss})
        log(f"allocator {rows[-1]}")
    return rows


async def _calls(url: str, tool: str, args: dict, n: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        client = McpHttpClient(url, http, token=DEFAULT_TOKEN)
        await client.initialize()
        for _ in range(n):
            await client.call(tool, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["redis", "elasticsearch"], help="run one backend only")
    parser.add_argument("--allocators", action="store_true",
                        help="also measure the Redis sidecar's idle RSS under several allocator settings")
    opts = parser.parse_args()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "payload_mib": {}}
    backends = [opts.only] if opts.only else ["redis", "elasticsearch"]
    venvs = {b: sidecar_venv(b) for b in backends}
    peers = {b: peer_venv(b) for b in backends}
    for b, v in venvs.items():
        meta["payload_mib"][b] = round(du_mib(v), 1)
    results: list[Result] = []
    if "redis" in backends:
        with RedisServer() as redis:
            redis.command("SET", "bench:key", "x" * 100)
            env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)}
            ours = SidecarProcess("redis", env, command=[str(venvs["redis"] / "bin/mcp-redis")])
            peer = SidecarProcess("redis-peer", env)
            peer.command = [str(peers["redis"] / "bin/python"), str(HERE / "peer_redis_http.py"), str(peer.port)]
            for name, transport, proc in (("mcp-redis (ours)", "streamable HTTP, stateless JSON", ours),
                                          ("redis-mcp-server 0.5.1", "stdio server wrapped on streamable HTTP "
                                           "(stateless JSON)", peer)):
                try:
                    results.append(measure(name, transport, proc, "get", {"key": "bench:key"}))
                finally:
                    proc.close()
            results.append(asyncio.run(redis_floor(redis.port)))
            if opts.allocators:
                meta["allocators"] = allocator_rss(venvs["redis"], redis.port)
    if "elasticsearch" in backends:
        with ElasticsearchNode() as node:
            node.request("PUT", "/bench", {"settings": {"number_of_replicas": 0}})
            node.request("PUT", "/bench/_doc/1?refresh=true", {"title": "benchmark document", "n": 1})
            meta["elasticsearch"] = node.engine
            ours = SidecarProcess("elasticsearch", {"ES_HOST": "127.0.0.1", "ES_PORT": str(node.port)},
                                  command=[str(venvs["elasticsearch"] / "bin/mcp-elasticsearch")])
            peer = SidecarProcess("es-peer", {"ELASTICSEARCH_HOSTS": node.url, "VERIFY_CERTS": "false"})
            peer.command = [str(peers["elasticsearch"] / "bin/elasticsearch-mcp-server"), "--transport",
                            "streamable-http", "--host", "127.0.0.1", "--port", str(peer.port), "--path", "/mcp"]
            for name, transport, proc in (("mcp-elasticsearch (ours)", "streamable HTTP, stateless JSON", ours),
                                          ("elasticsearch-mcp-server 2.1.6", "its streamable-http mode", peer)):
                try:
                    results.append(measure(name, transport, proc, "get_document", {"index": "bench", "id": "1"}))
                finally:
                    proc.close()
    meta["machine"]["loadavg_end"] = os.getloadavg()
    table = markdown(results, meta)
    (HERE / "results.json").write_text(json.dumps({"meta": meta, "results": [r.__dict__ for r in results]},
                                                  indent=2, default=str))
    (HERE / "results.md").write_text(f"Run {meta['date']} on {meta['machine']}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
