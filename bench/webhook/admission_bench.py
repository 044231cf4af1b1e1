"""Admission throughput and latency over TLS: our server vs the kopf peer, side by side in one run.

    .venv/bin/python bench/webhook/admission_bench.py                  # 10 s per cell, typical pod
    .venv/bin/python bench/webhook/admission_bench.py --duration 5 --repeat 3 --json out.json
    .venv/bin/python bench/webhook/admission_bench.py --pod 64k        # the 1,000-env-var (~64 KB) pod
    .venv/bin/python bench/webhook/admission_bench.py --client python  # the Python fallback client

What it does, all on 127.0.0.1 and bounded in time (every process it starts is stopped at exit):

1. starts our server exactly as deployed: ``mcp-sidecar serve`` (one uvicorn worker, TLS) through
   ``tests/support/webhook_process.WebhookProcess`` with a throwaway trustme CA; ``--workers 1,2`` adds
   a ``serve --workers 2`` server (``ours-2w``) with the same certificate, measured in the same cells;
2. starts the kopf peer (``bench/webhook/kopf_peer.py``: kopf's own aiohttp ``WebhookServer`` and
   its real ``serve_admission_request`` path with a ``@kopf.on.mutate`` handler calling our engine)
   on another free port with the same certificate;
3. checks that both answer the same review with an equivalent patch: each patch is decoded,
   applied with ``jsonpatch`` to the pod and the resulting pods (containers, volumes, annotations)
   must be equal — no figure is printed for servers that disagree;
4. drives both with the same load generator, the same request body and keep-alive connections at
   concurrency 1, 16 and 64 (``--duration`` seconds per cell after a warm-up), alternating servers
   cell by cell so background load hits both alike; ``--repeat`` runs the whole grid again and
   reports, per cell, the repeat with the median throughput;
5. prints a Markdown table: reviews/s, p50, p99, errors, the CPU the server and the load generator
   used, the ours/kopf ratio and which issue-2 targets are met.

Load generator: ``wrk`` (C, epoll, OpenSSL; installed with ``apt-get install -y wrk`` when missing
and we are root) with a Lua script that POSTs the AdmissionReview and prints exact percentiles from
wrk's latency histogram. When wrk is unavailable it falls back to a Python client (uvloop + raw
asyncio TLS streams, pre-built request bytes); on a 2-core machine that client can be the
bottleneck, so the table says which one produced the figures. With 2+ CPUs the servers are pinned
to CPU 0 and the load generator to CPU 1 (``taskset``; ``--no-pin`` turns that off). A server of N
workers gets CPUs 0..N-1 (so on 2 cores its second worker shares CPU 1 with the load generator), or
CPU 0 only with ``--worker-cpus shared``; its CPU time is the supervisor's plus its workers'.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from tests.support.processes import stop_group, wait_listening  # noqa: E402

CONCURRENCY = (1, 16, 64)
TARGET_RPS = 1500
TARGET_RATIO = 3.0
TARGET_P99_MS = 10.0
TARGET_P99_AT = 64

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()

-- Paced cells: each connection waits a random 0..2*BENCH_DELAY_MS between requests, so that
-- c connections offer about c / BENCH_DELAY_MS reviews per ms without marching in lockstep.
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms then
  delay = function() return math.random() * 2 * delay_ms end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


# --------------------------------------------------------------------------------------------
# Python fallback load generator (runs in its own process: `admission_bench.py --_client ...`).
# --------------------------------------------------------------------------------------------

async def _client_worker(host: str, port: int, ctx: ssl.SSLContext, request: bytes, deadline: float, lat: list[int], errors: list[int]) -> int:
    done = 0
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
    clock = time.perf_counter_ns
    try:
        while time.monotonic() < deadline:
            start = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if not match:
                raise RuntimeError("response without Content-Length")
            await reader.readexactly(int(match.group(1)))
            lat.append(clock() - start)
            if status != b"200":
                errors[0] += 1
            done += 1
    finally:
        writer.close()
    return done


async def _client_main(url: str, body: bytes, concurrency: int, duration: float, cafile: str) -> dict[str, Any]:
    match = re.match(r"https://([^:/]+):(\d+)(/.*)", url)
    assert match, url
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    ctx = ssl.create_default_context(cafile=cafile)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[int] = []
    errors = [0]
    started = time.monotonic()
    results = await asyncio.gather(
        *(_client_worker(host, port, ctx, request, started + duration, lat, errors) for _ in range(concurrency)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    failures = sum(1 for r in results if isinstance(r, BaseException))
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] // 1000 if lat else 0  # noqa: E731
    return {
        "requests": len(lat), "duration_us": int(elapsed * 1e6), "bytes": 0, "connect": failures, "read": 0,
        "write": 0, "status": errors[0], "timeout": 0, "p50_us": pick(0.5), "p90_us": pick(0.9),
        "p99_us": pick(0.99), "p999_us": pick(0.999), "max_us": lat[-1] // 1000 if lat else 0,
        "mean_us": (sum(lat) / len(lat) / 1000) if lat else 0.0,
    }


def _client_entry(argv: list[str]) -> int:
    url, body_file, concurrency, duration, cafile = argv
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        out = runner.run(_client_main(url, Path(body_file).read_bytes(), int(concurrency), float(duration), cafile))
    print("BENCH_JSON " + json.dumps(out), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------

def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return ""


def machine() -> dict[str, Any]:
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    model = re.search(r"Model name:\s*(.+)", sh("lscpu"))
    return {
        "nproc": int(sh("nproc") or os.cpu_count() or 0),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def ensure_wrk(allow_install: bool) -> str | None:
    wrk = shutil.which("wrk")
    if wrk or not allow_install:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, timeout=300)
            if not shutil.which("wrk"):
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
                subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            pass
    return shutil.which("wrk")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``serve --workers N``: the supervisor and its workers)."""
    tree = [pid]
    for p in tree:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                tree += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return list(dict.fromkeys(tree))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its threads and its live child processes, from /proc."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds spent not idle on the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: str | None) -> None:
    """Pin a server and its worker processes (a replaced worker inherits the supervisor's CPUs)."""
    if cpus is not None:
        for p in process_tree(pid):
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True, check=True)


class KopfPeer:
    def __init__(self, workdir: Path, cert_file: Path, key_file: Path, port: int, ca_file: Path):
        self.workdir, self.cert_file, self.key_file, self.port, self.ca_file = workdir, cert_file, key_file, port, ca_file
        self.log_file = workdir / "kopf-peer.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "KopfPeer":
        cmd = [sys.executable, str(HERE / "kopf_peer.py"), "--addr", "127.0.0.1", "--port", str(self.port),
               "--certfile", str(self.cert_file), "--pkeyfile", str(self.key_file)]
        self._log = open(self.log_file, "ab")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        try:
            wait_listening(self.process, self.port, what="kopf peer", log=self.log_file.read_text, timeout=timeout, tls_ca=self.ca_file)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        stop_group(self.process)
        self._log.close()


def apply_answer(pod: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    import jsonpatch

    response = answer["response"]
    assert response["allowed"] is True, response
    assert response.get("patchType") == "JSONPatch", response
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


def verify_equivalent(pod: dict[str, Any], body: bytes, servers: dict[str, Any], ca_file: Path) -> dict[str, Any]:
    """POST the same review to every server; the patched pods must be identical."""
    import httpx

    patched: dict[str, dict[str, Any]] = {}
    ops_count: dict[str, int] = {}
    for name, server in servers.items():
        answer = httpx.post(server.url + "/mutate", content=body, headers={"Content-Type": "application/json"},
                            verify=str(ca_file), timeout=10).raise_for_status().json()
        patched[name] = apply_answer(pod, answer)
        ops_count[name] = len(json.loads(base64.b64decode(answer["response"]["patch"])))
    kopf_pod = patched["kopf"]
    for name in patched:
        ours = patched[name]
        assert ours["spec"]["containers"] == kopf_pod["spec"]["containers"], f"{name}: containers differ"
        assert ours["spec"].get("initContainers") == kopf_pod["spec"].get("initContainers"), f"{name}: initContainers differ"
        assert ours["spec"].get("volumes") == kopf_pod["spec"].get("volumes"), f"{name}: volumes differ"
        assert ours["metadata"]["annotations"] == kopf_pod["metadata"]["annotations"], f"{name}: annotations differ"
        assert ours == kopf_pod, f"{name}: patched pods differ"
    names = [c["name"] for c in kopf_pod["spec"]["containers"]]
    assert "mcp-sidecar" in names, names
    return {"containers": names, "ops": ops_count}


def run_load(tool: str, url: str, body_file: Path, lua: Path, concurrency: int, duration: float, cafile: Path, client_cpu: int | None, rate: float | None = None) -> dict[str, Any]:
    prefix = ["taskset", "-c", str(client_cpu)] if client_cpu is not None else []
    if tool == "wrk":
        cmd = [*prefix, "wrk", "-t", "1", "-c", str(concurrency), "-d", f"{duration:g}s", "--timeout", "5s",
               "--latency", "-s", str(lua), url + "/mutate"]
    else:
        cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), "--_client", url + "/mutate", str(body_file),
               str(concurrency), str(duration), str(cafile)]
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file))
    if rate:
        if tool != "wrk":
            raise RuntimeError("paced cells need wrk")
        env["BENCH_DELAY_MS"] = f"{1000 * concurrency / rate:.3f}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(line[len("BENCH_JSON "):])
    out["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out


def cell(tool: str, server: Any, pid: int, body_file: Path, lua: Path, concurrency: int, duration: float, cafile: Path, client_cpu: int | None, rate: float | None = None) -> dict[str, Any]:
    cpu0, busy0 = cpu_seconds(pid), busy_cpu_seconds()
    raw = run_load(tool, server.url, body_file, lua, concurrency, duration, cafile, client_cpu, rate)
    server_cpu, busy = cpu_seconds(pid) - cpu0, busy_cpu_seconds() - busy0
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "concurrency": concurrency, "offered_rps": rate, "requests": raw["requests"], "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000, "max_ms": raw["max_us"] / 1000, "errors": errors,
        "error_detail": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        "server_cpu_pct": 100 * server_cpu / seconds if seconds else 0.0,
        "client_cpu_pct": 100 * raw["client_cpu_s"] / seconds if seconds else 0.0,
        "server_cpu_us_per_review": 1e6 * server_cpu / raw["requests"] if raw["requests"] else 0.0,
        # Everything else the machine did meanwhile (other engineers' builds and tests), in cores.
        "other_load_cores": max(0.0, busy - server_cpu - raw["client_cpu_s"]) / seconds if seconds else 0.0,
    }


def pick(per_server: dict[str, list[dict[str, Any]]], how: str) -> dict[str, dict[str, Any]]:
    """One repeat per cell, the same for both servers (they ran back to back): the repeat during which
    the rest of the machine was quietest (lowest max other load of the pair), or the repeat with the
    median throughput of our server."""
    names = list(per_server)
    repeats = range(len(per_server[names[0]]))
    if how == "quietest":
        index = min(repeats, key=lambda i: max(per_server[n][i]["other_load_cores"] for n in names))
    else:
        index = sorted(repeats, key=lambda i: per_server["ours"][i]["rps"])[(len(repeats) - 1) // 2]
    chosen = {}
    for name in names:
        chosen[name] = dict(per_server[name][index], repeat=index + 1, rps_all=[round(r["rps"]) for r in per_server[name]])
    return chosen


def cell_keys(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(results key, label) of every cell, saturating ones first."""
    keys = [(str(c), str(c)) for c in report["concurrency"]]
    keys += [(f"{report['paced_concurrency']}@{r:g}", f"{report['paced_concurrency']}, paced {r:,.0f}/s") for r in report["paced"]]
    return keys


def markdown(report: dict[str, Any]) -> str:
    rows = report["results"]
    out = [
        f"Pod: {report['pod']} ({report['review_bytes']:,} bytes of AdmissionReview). Load generator: {report['client']}, "
        f"keep-alive, {report['duration']:g} s per cell after a {report['warmup']:g} s warm-up per server; "
        f"{(report['pick'] + ' of ' + str(report['repeat']) + ' runs') if report['repeat'] > 1 else 'one run'} per cell "
        f"(servers alternate cell by cell). "
        f"Pinning: {report['pinning']}. \"server CPU\" is the server process's CPU time over the cell (100% = one core); "
        f"\"µs/review\" is that CPU time divided by the reviews answered; \"other load\" is the CPU the rest of the "
        f"machine used meanwhile, in cores (of {report['machine']['nproc']}).",
        "",
        "| concurrency | server | reviews/s | p50 | p99 | p99.9 | errors | server CPU | µs/review | load-gen CPU | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in cell_keys(report):
        for name in rows:
            r = rows[name][key]
            server = server_label(report, name)
            out.append(
                f"| {label} | {server} | {r['rps']:,.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['p999_ms']:.2f} ms "
                f"| {r['errors']} / {r['requests']:,} | {r['server_cpu_pct']:.0f}% | {r['server_cpu_us_per_review']:.0f} "
                f"| {r['client_cpu_pct']:.0f}% | {r['other_load_cores']:.2f} |"
            )
        peer = rows["kopf"][key]
        for name in ours_names(rows):
            ours = rows[name][key]
            out.append(
                f"| {label} | **{name} / kopf** | **{ours['rps'] / peer['rps']:.2f}×** | {ours['p50_ms'] / peer['p50_ms']:.2f}× "
                f"| {ours['p99_ms'] / peer['p99_ms']:.2f}× | | | | {ours['server_cpu_us_per_review'] / peer['server_cpu_us_per_review']:.2f}× | | |"
            )
    out.append("")
    out += verdicts(report)
    return "\n".join(out)


def ours_names(rows: dict[str, Any]) -> list[str]:
    return [n for n in rows if n != "kopf"]


def server_name(workers: int) -> str:
    """``ours`` is the one-worker server (the default deployment), ``ours-2w`` the two-worker one..."""
    return "ours" if workers == 1 else f"ours-{workers}w"


def server_label(report: dict[str, Any], name: str) -> str:
    if name == "kopf":
        return "kopf peer (aiohttp)"
    workers = report["workers"][name]
    cpus = report["server_cpus"].get(name)
    return (f"ours (FastAPI/uvicorn), {workers} worker{'s' if workers > 1 else ''}"
            + (f", CPU {cpus}" if cpus is not None else ""))


def verdicts(report: dict[str, Any]) -> list[str]:
    rows = report["results"]
    cs = [str(c) for c in report["concurrency"]]
    best_rps = max(rows["ours"][c]["rps"] for c in cs)
    lines = [
        f"- ≥ {TARGET_RPS:,} reviews/s on one worker: best {best_rps:,.0f}/s "
        f"({', '.join('c=%s: %s' % (c, format(rows['ours'][c]['rps'], ',.0f')) for c in cs)}) — "
        f"**{'met' if best_rps >= TARGET_RPS else 'MISSED'}**",
    ]
    ratios = {c: rows["ours"][c]["rps"] / rows["kopf"][c]["rps"] for c in cs}
    listed = ", ".join("c=%s: %.2f×" % (c, r) for c, r in ratios.items())
    missed = [c for c, r in ratios.items() if r < TARGET_RATIO]
    verdict = "met at every concurrency" if not missed else "MISSED at " + ", ".join("c=" + c for c in missed)
    lines.append(f"- ≥ {TARGET_RATIO:g}× the kopf peer: {listed} — **{verdict}**")
    cpu_ours = statistics.median(rows["ours"][c]["server_cpu_us_per_review"] for c in cs)
    cpu_kopf = statistics.median(rows["kopf"][c]["server_cpu_us_per_review"] for c in cs)
    lines.append(
        f"- Server CPU per review (median over the cells; the figure a busy machine distorts least): ours "
        f"{cpu_ours:.0f} µs, kopf {cpu_kopf:.0f} µs — kopf needs {cpu_kopf / cpu_ours:.2f}× the CPU per review; "
        f"a whole core for our one worker would mean about {1e6 / cpu_ours:,.0f} reviews/s"
    )
    key = str(TARGET_P99_AT)
    for name in ours_names(rows):
        if key not in rows[name]:
            continue
        p99 = rows[name][key]["p99_ms"]
        rps = rows[name][key]["rps"]
        lines.append(
            f"- {name}: p99 ≤ {TARGET_P99_MS:g} ms at concurrency {TARGET_P99_AT} (saturating, closed loop): {p99:.2f} ms — "
            f"**{'met' if p99 <= TARGET_P99_MS else 'MISSED'}**. Little's law: {TARGET_P99_AT} requests always in flight at "
            f"{rps:,.0f}/s means a mean latency of {1000 * TARGET_P99_AT / rps:.1f} ms; a p99 ≤ {TARGET_P99_MS:g} ms needs "
            f"≥ {1000 * TARGET_P99_AT / TARGET_P99_MS:,.0f} reviews/s."
        )
    for paced_key, label in cell_keys(report)[len(report["concurrency"]):]:
        for name in ours_names(rows):
            r = rows[name][paced_key]
            lines.append(
                f"- concurrency {label} (offered, achieved {r['rps']:,.0f}/s): {name} p99 {r['p99_ms']:.2f} ms "
                f"({'within' if r['p99_ms'] <= TARGET_P99_MS else 'over'} {TARGET_P99_MS:g} ms), kopf p99 {rows['kopf'][paced_key]['p99_ms']:.2f} ms"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_client"]:
        return _client_entry(argv[1:])
    parser = argparse.ArgumentParser(description="admission throughput/latency: ours vs kopf, over TLS")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per server (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="run the grid this many times; report the median (default 1)")
    parser.add_argument("--pick", choices=("quietest", "median"), default="quietest",
                        help="with --repeat: per cell, the run with the least other load on the machine (default) or the median throughput")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="comma list (default 1,16,64)")
    parser.add_argument("--paced", default="1000", help="offered rates (reviews/s, comma list, '' for none) of extra paced cells at --paced-concurrency (default 1000)")
    parser.add_argument("--paced-concurrency", type=int, default=64)
    parser.add_argument("--pod", choices=("typical", "64k"), default="typical", help="typical Redis pod or the 1,000-env-var pod")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto", help="load generator (default: wrk if available)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install wrk when it is missing")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0 and the client to CPU 1")
    parser.add_argument("--workers", default="1",
                        help="comma list of `serve --workers` values, one server of ours each (default 1; e.g. 1,2)")
    parser.add_argument("--worker-cpus", choices=("one-each", "shared"), default="one-each",
                        help="pinned servers of N workers get CPUs 0..N-1 (one-each, default; the load generator's "
                             "CPU 1 is then shared) or CPU 0 only (shared: the same core as the one-worker server)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (logs, certs); default a temp dir")
    parser.add_argument("--json", type=Path, help="write the raw figures as JSON here")
    args = parser.parse_args(argv)

    from engine_bench import env_pod, typical_pod  # noqa: PLC0415
    from tests.support.webhook_process import WebhookProcess, free_port  # noqa: PLC0415
    from tests.webhook.helpers import admission_review  # noqa: PLC0415

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks below
    concurrency = [int(c) for c in args.concurrency.split(",")]
    tool = args.client
    if tool in ("auto", "wrk"):
        wrk = ensure_wrk(allow_install=not args.no_install)
        if wrk is None and tool == "wrk":
            print("error: wrk is not available", file=sys.stderr)
            return 2
        tool = "wrk" if wrk else "python"
    client_label = {
        "wrk": f"wrk ({sh('wrk --version 2>&1 | head -1') or 'wrk'}), 1 thread, Lua POST script",
        "python": "Python fallback client (uvloop + asyncio TLS streams) — may itself be the bottleneck",
    }[tool]
    nproc = os.cpu_count() or 1
    pinned = not args.no_pin and nproc >= 2 and shutil.which("taskset") is not None
    client_cpu = 1 if pinned else None
    worker_counts = list(dict.fromkeys(int(w) for w in args.workers.split(",")))
    if 1 not in worker_counts or min(worker_counts) < 1:
        print("error: --workers must list 1 (the reference server the targets are judged on)", file=sys.stderr)
        return 2

    def cpus_for(workers: int) -> str | None:
        if not pinned:
            return None
        if args.worker_cpus == "shared" or workers == 1:
            return "0"
        return ",".join(str(c) for c in range(min(workers, nproc)))

    pod = typical_pod() if args.pod == "typical" else env_pod(1000)
    body = json.dumps(admission_review(pod), separators=(",", ":")).encode()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="admission-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / "review.json"
    body_file.write_bytes(body)
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)

    ourselves: dict[str, Any] = {}
    for workers in worker_counts:
        extra = ("--workers", str(workers)) if workers > 1 else ()
        ourselves[server_name(workers)] = WebhookProcess(workdir / server_name(workers), watch_seconds=2.0, extra_args=extra)  # the production poll interval
    first = next(iter(ourselves.values()))
    for other in ourselves.values():  # one certificate for every server, as for the peer
        if other is not first:
            other.ca = first.ca
            other.write_serving_cert(first.ca)
            other.ca.cert_pem.write_to_path(str(other.ca_file))
    peer = KopfPeer(workdir, first.cert_file, first.key_file, free_port(), first.ca_file)
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "machine": machine(), "client": client_label, "pod": args.pod,
        "review_bytes": len(body), "duration": args.duration, "pick": args.pick, "warmup": args.warmup, "repeat": args.repeat,
        "concurrency": concurrency, "paced": [float(r) for r in args.paced.split(",") if r.strip()],
        "paced_concurrency": args.paced_concurrency,
        "pinning": (f"one-worker servers on CPU 0, load generator on CPU 1, {args.worker_cpus} CPUs for multi-worker servers (taskset)"
                    if pinned else "none"),
        "workers": {server_name(w): w for w in worker_counts},
        "server_cpus": {server_name(w): cpus_for(w) for w in worker_counts},
        "load_before": sh("uptime"),
    }
    ca_file = first.ca_file
    try:
        for server in ourselves.values():
            server.start()
        peer.start()
        time.sleep(1.0)  # every worker of a multi-worker server listening, so that pinning covers them all
        servers = {**ourselves, "kopf": peer}
        pids = {name: server.process.pid for name, server in servers.items()}
        for name, pid in pids.items():
            pin(pid, report["server_cpus"].get(name, cpus_for(1)))
        report["equivalence"] = verify_equivalent(pod, body, servers, ca_file)
        print(f"equivalent patches: {report['equivalence']}", file=sys.stderr)
        for name, server in servers.items():
            run_load(tool, server.url, body_file, lua, 16, args.warmup, ca_file, client_cpu)
        plan = [(str(c), c, None) for c in concurrency]
        plan += [(f"{args.paced_concurrency}@{r:g}", args.paced_concurrency, r) for r in report["paced"]]
        if tool != "wrk":
            plan = [p for p in plan if p[2] is None]
            report["paced"] = []
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {key: [] for key, _, _ in plan} for n in servers}
        for rep in range(args.repeat):
            for key, c, rate in plan:
                for name, server in servers.items():
                    result = cell(tool, server, pids[name], body_file, lua, c, args.duration, ca_file, client_cpu, rate)
                    runs[name][key].append(result)
                    print(f"[{rep + 1}/{args.repeat}] c={key:<8} {name:<5} {result['rps']:8.0f} rev/s  p50 {result['p50_ms']:.2f} ms  "
                          f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  server CPU {result['server_cpu_pct']:.0f}% "
                          f"({result['server_cpu_us_per_review']:.0f} µs/review)  client CPU {result['client_cpu_pct']:.0f}%  "
                          f"other load {result['other_load_cores']:.2f} cores", file=sys.stderr)
        # Check the answers are still right after the load.
        verify_equivalent(pod, body, servers, ca_file)
        report["results"] = {n: {} for n in runs}
        for key, _, _ in plan:
            for name, row in pick({n: runs[n][key] for n in runs}, args.pick).items():
                report["results"][name][key] = row
        report["all_runs"] = runs
    finally:
        peer.stop()
        for server in ourselves.values():
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["load_after"] = sh("uptime")
    print(markdown(report))
    print(f"\nLoad before: `{report['load_before']}`; after: `{report['load_after']}`.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
