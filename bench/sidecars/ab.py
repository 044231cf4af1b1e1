"""Before/after of the hot call on a busy machine: two builds of a sidecar, interleaved.

    .venv/bin/python bench/sidecars/ab.py --base 5e4d879            # Redis `get`
    .venv/bin/python bench/sidecars/ab.py --base 5e4d879 --elasticsearch

run.py measures one server after the other, so on a shared machine each one meets a different load.
Here the base build (``git archive BASE sidecars``) and the working tree run side by side from the same
image payload (run.py's venv; PYTHONPATH picks the tree), against the same backend, and the client
alternates short bursts between them (and the direct client, the floor), so every build sees the same
load. Reports p50/p90 of each, the CPU time each sidecar spends per call (/proc/PID/stat: what the
code costs, whatever the load) and the ratios; appends them to bench/sidecars/ab_results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.sidecars.mcpclient import McpHttpClient  # noqa: E402
from bench.sidecars.run import HERE as BENCH, pct, peer_venv, sidecar_venv  # noqa: E402
from tests.sidecars.helpers import DEFAULT_TOKEN, SidecarProcess  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bursts(targets: dict, pids: dict, rounds: int, calls: int) -> tuple[dict, dict]:
    """``targets``: name -> async callable doing one call. Rotates the order every round. Returns the
    latencies and, for the sidecars, their CPU time per call: on a loaded machine wall-clock latency is
    mostly waiting for a core, while the CPU a call costs the sidecar is what the code decides."""
    lat: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, float] = dict.fromkeys(pids, 0.0)
    names = list(targets)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call = targets[name]
            c0 = cpu_seconds(pids[name]) if name in pids else 0.0
            for _ in range(calls):
                t0 = time.perf_counter()
                await call()
                lat[name].append((time.perf_counter() - t0) * 1000)
            if name in pids:
                cpu[name] += cpu_seconds(pids[name]) - c0
    return lat, {name: total / (rounds * calls) * 1e6 for name, total in cpu.items()}


def peer_process(backend: str, env: dict, url: str | None) -> SidecarProcess:
    """The peer run.py measures (redis-mcp-server wrapped on HTTP, elasticsearch-mcp-server)."""
    venv = peer_venv(backend)
    if backend == "redis":
        proc = SidecarProcess("redis-peer", env)
        proc.command = [str(venv / "bin/python"), str(BENCH / "peer_redis_http.py"), str(proc.port)]
    else:
        proc = SidecarProcess("es-peer", {"ELASTICSEARCH_HOSTS": url, "VERIFY_CERTS": "false"})
        proc.command = [str(venv / "bin/elasticsearch-mcp-server"), "--transport", "streamable-http", "--host",
                        "127.0.0.1", "--port", str(proc.port), "--path", "/mcp"]
    return proc


async def run(backend: str, trees: dict[str, Path], venv: Path, env: dict, tool: str, args: dict,
              floor, rounds: int, calls: int, peer: SidecarProcess | None = None) -> tuple[dict, dict]:
    procs = {}
    try:
        for name, tree in trees.items():
            proc = SidecarProcess(backend, {**env, "PYTHONPATH": str(tree)},
                                  command=[str(venv / "bin/python"), "-P", "-m", f"sidecars.{backend}"])  # -P: PYTHONPATH, not the cwd
            procs[name] = proc.start(timeout=60)
            # Which tree the process runs: the check that PYTHONPATH, not an installed copy, decided.
            origin = subprocess.run([str(venv / "bin/python"), "-P", "-c", f"import sidecars.{backend}.server as m; print(m.__file__)"],
                                    env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True).stdout.strip()
            assert origin.startswith(str(tree)), (name, origin)
        others = {}
        if peer is not None:
            others["peer"] = peer.start(timeout=60)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            targets = {}
            for name, proc in {**procs, **others}.items():
                client = McpHttpClient(proc.url, http, token=DEFAULT_TOKEN)
                await client.initialize()
                targets[name] = (lambda c: lambda: c.call(tool, args))(client)
            if floor is not None:
                targets["direct client (floor)"] = floor
            for call in targets.values():  # warm up
                for _ in range(50):
                    await call()
            return await bursts(targets, {name: proc.proc.pid for name, proc in procs.items()}, rounds, calls)
    finally:
        for proc in procs.values():
            proc.close()
        if peer is not None:
            peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision of the 'before' build")
    parser.add_argument("--elasticsearch", action="store_true", help="get_document on Elasticsearch, not Redis get")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100, help="calls per burst")
    parser.add_argument("--peer", action="store_true", help="interleave the peer server too (run.py's)")
    opts = parser.parse_args()
    backend = "elasticsearch" if opts.elasticsearch else "redis"
    venv = sidecar_venv(backend)
    rev = subprocess.run(["git", "rev-parse", "--short", opts.base], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ab-base-") as base:
        archive = subprocess.run(["git", "archive", rev, "sidecars"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", base], input=archive.stdout, check=True)
        trees = {f"before ({rev})": Path(base), "after (working tree)": REPO}
        if backend == "redis":
            from tests.backends.redis_server import RedisServer
            import redis.asyncio as aioredis

            with RedisServer() as redis:
                redis.command("SET", "bench:key", "x" * 100)

                async def go():
                    direct = aioredis.Redis(host="127.0.0.1", port=redis.port)
                    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)}
                    try:
                        return await run(backend, trees, venv, env, "get", {"key": "bench:key"},
                                         lambda: direct.get("bench:key"), opts.rounds, opts.calls,
                                         peer_process(backend, env, None) if opts.peer else None)
                    finally:
                        await direct.aclose()

                lat, cpu = asyncio.run(go())
            tool = "get"
        else:
            from tests.backends.elasticsearch_node import ElasticsearchNode

            with ElasticsearchNode() as node:
                node.request("PUT", "/bench", {"settings": {"number_of_replicas": 0}})
                node.request("PUT", "/bench/_doc/1?refresh=true", {"title": "benchmark document", "n": 1})
                lat, cpu = asyncio.run(run(backend, trees, venv, {"ES_HOST": "127.0.0.1", "ES_PORT": str(node.port)},
                                           "get_document", {"index": "bench", "id": "1"}, None, opts.rounds, opts.calls,
                                           peer_process(backend, {}, node.url) if opts.peer else None))
            tool = "get_document"
    load_end = os.getloadavg()
    rows = {name: (pct(v, 50), pct(v, 90)) for name, v in lat.items()}
    before, after = rows[f"before ({rev})"][0], rows["after (working tree)"][0]
    lines = [f"### {backend} `{tool}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{opts.rounds} rounds x {opts.calls} calls each, interleaved; load (1/5/15 min) "
             f"{', '.join(f'{x:.2f}' for x in load_start)} -> {', '.join(f'{x:.2f}' for x in load_end)}",
             "", "| build | p50 | p90 | sidecar CPU per call |", "|---|---|---|---|"]
    lines += [f"| {name} | {p50:.3f} ms | {p90:.3f} ms | {f'{cpu[name]:.0f} µs' if name in cpu else '–'} |"
              for name, (p50, p90) in rows.items()]
    cpu_before, cpu_after = cpu[f"before ({rev})"], cpu["after (working tree)"]
    lines += ["", f"after / before: p50 {after / before:.2f}, CPU per call {cpu_after / cpu_before:.2f}"]
    if "peer" in rows:
        lines[-1] += f"; peer / after p50: {rows['peer'][0] / after:.1f}x, peer / before: {rows['peer'][0] / before:.1f}x"
    if "direct client (floor)" in rows:
        floor = rows["direct client (floor)"][0]
        lines[-1] += f"; after / floor: {after / floor:.1f}x; before / floor: {before / floor:.1f}x"
    text = "\n".join(lines) + "\n"
    print(text)
    with open(HERE / "ab_results.md", "a") as out:
        out.write(text + "\n")


if __name__ == "__main__":
    main()
