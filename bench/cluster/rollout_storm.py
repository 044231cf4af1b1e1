"""Rollout storm: a Deployment scaled 0 -> 1,000 replicas, with our webhook, with Kyverno, and with none.

    .venv/bin/python bench/cluster/rollout_storm.py                   # 3 runs per mode, 1,000 pods
    .venv/bin/python bench/cluster/rollout_storm.py --runs 2 --replicas 500
    .venv/bin/python bench/cluster/rollout_storm.py --webhook-arg=--workers --webhook-arg=2
    .venv/bin/python bench/cluster/rollout_storm.py --no-kyverno      # ours vs none only
    .venv/bin/python bench/cluster/rollout_storm.py --modes none,ours,ours-h2   # + our app on HTTP/2 (H2_STORM.md)

One control plane (tests/cluster: etcd, kube-apiserver, kube-controller-manager; no scheduler and no
kubelet, so pods stay Pending), our admission server (as tests/support/webhook_process.py starts
it; --webhook-arg passes extra `mcp-sidecar serve` arguments) and Kyverno's admission controller
(bench/peers/kyverno) on 127.0.0.1, all running for the whole measurement. Each mode has its own
namespace, selected by only that mode's webhook (storm-none by neither), exactly as in
bench_peers.py.

One storm: create a Deployment (the bench pod as template, labelled mcp-sidecar.dox/backend=redis)
with 0 replicas, wait for its ReplicaSet, open a watch on the namespace's pods, PATCH the scale
subresource to --replicas, and stop the clock when the watch has seen that many pods ADDED: the
kube-controller-manager's ReplicaSet controller creates them (slow-start batches, up to 500 per
sync, limited by the controller manager's client rate limit: --kube-api-qps=200/--kube-api-burst=400
in tests/cluster; --kcm-arg overrides it). Every watched pod is checked for the mcp-sidecar container
(present with ours/Kyverno, absent with none). Between storms the Deployment and its ReplicaSet are
deleted with orphaning and the pods with one deletecollection, and the run waits until the namespace
is empty plus --settle seconds. Modes alternate (the order rotates every run).

Mode ours-h2 (bench-only, bench/cluster/h2_server.py): the same admission app served by hypercorn
with TLS ALPN h2, so the API server multiplexes its calls over HTTP/2 instead of opening HTTP/1.1
connections; mode ours-hc1 is that server offering only http/1.1 (the control: hypercorn without
HTTP/2); --h2-arg passes both extra arguments.

--serial N (mode ours-h2/ours-hc1 runs; default 0 = off): after the storms, N pod creates per mode
(after 20 discarded warm-ups per mode), serially over one keep-alive connection, modes interleaved pod
by pod in rotating order, as bench_peers.py measures pod-create latency; p50/p90/p99 per mode and
each webhook's CPU-ms per create. --pprof-dir DIR: kube-apiserver runs with --profiling=true and its CPU
profile of the first --pprof-seconds of every storm is saved as DIR/MODE-runN.pprof (pprof_top.py reads it).

During each storm, CPU seconds and peak RSS of every webhook process tree (/proc, sampled every
50 ms), the CPU seconds of kube-apiserver and kube-controller-manager, and the TCP connections to
each webhook's port (`ss` every 50 ms: client ends seen, a lower bound, and the most open at once)
are recorded.

Prints a Markdown section and appends it to bench/cluster/PEERS_RESULTS.md (--out to change).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "peers" / "kyverno"))

from bench_peers import add_server_args, apiserver_webhook_means, our_namespace_selector  # noqa: E402
from bench_pod_create import ApiClient, arm_watchdog, has_sidecar, load, log, machine, pod_body, summary  # noqa: E402
from conn_sampler import ConnSampler  # noqa: E402
from h2_server import H2WebhookProcess  # noqa: E402
from kyverno_process import KyvernoProcess, ensure_built  # noqa: E402
from proctree import TreeSampler, cpu_seconds, descendants  # noqa: E402

from tests.cluster.controlplane import ControlPlane, ensure_binaries, pinned_kubernetes_version  # noqa: E402
from tests.support.webhook_process import WebhookProcess  # noqa: E402

RESULTS = HERE / "PEERS_RESULTS.md"
NAMESPACES = {"none": "storm-none", "ours": "storm-ours", "ours-h2": "storm-ours-h2", "ours-hc1": "storm-ours-hc1",
              "kyverno": "storm-kyverno"}
WEBHOOKS = ("ours", "ours-h2", "ours-hc1", "kyverno")
#: Bench-only hypercorn modes (h2_server.py) -> the ALPN protocols they offer.
HYPERCORN_MODES = {"ours-h2": "h2,http/1.1", "ours-hc1": "http/1.1"}
TARGET_SLOWDOWN = 0.10
API_TIMEOUT = 120  # s; a 1,000-pod deletecollection under load takes longer than the default 10 s


def deployment(name: str, replicas: int) -> dict:
    template = json.loads(pod_body("unused", labelled=True))
    template["metadata"] = {"labels": {**template["metadata"]["labels"], "storm": name}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"storm": name}}, "template": template},
    }


def delete_admission_reports(cp: ControlPlane, ns: str) -> int:
    """Delete Kyverno's EphemeralReports in ``ns``, as its reports controller would after aggregating
    them (it does not run here). Otherwise they pile up to --maxAdmissionReports (1,000) and Kyverno
    stops writing them, so later storms would be cheaper than the first. Returns how many there were."""
    path = f"/apis/reports.kyverno.io/v1/namespaces/{ns}/ephemeralreports"
    status, body = cp.request("GET", path, timeout=API_TIMEOUT)
    if status != 200:  # Kyverno's CRDs not installed (--no-kyverno)
        return 0
    n = len(body.get("items") or [])
    if n:
        cp.request("DELETE", path, timeout=API_TIMEOUT)
        cp.wait_for(lambda: not cp.request("GET", path, timeout=API_TIMEOUT)[1].get("items"), 60, f"EphemeralReports in {ns} gone")
    return n


class PodWatch(threading.Thread):
    """Counts pods ADDED in a namespace from a watch; notes when ``target`` distinct pods were seen.

    The API server drops a watcher that falls behind a burst (its cacher's per-watcher buffer); the
    watch is then resumed from a fresh LIST, whose pods count as seen when the LIST returns."""

    def __init__(self, cp: ControlPlane, namespace: str, resource_version: str, target: int) -> None:
        super().__init__(daemon=True)
        url = urllib.parse.urlsplit(cp.server)
        self.ctx = ssl.create_default_context(cafile=str(cp.ca_file))
        self.ctx.load_cert_chain(str(cp.admin_cert), str(cp.admin_key))
        self.host, self.port = url.hostname, url.port
        self.base = f"/api/v1/namespaces/{namespace}/pods"
        self.resource_version = resource_version
        self.target = target
        self.seen: set[str] = set()
        self.with_sidecar = 0
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.resumed = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.opened = threading.Event()

    def _add(self, pod: dict, now: float) -> None:
        name = pod["metadata"]["name"]
        if name in self.seen:
            return
        self.seen.add(name)
        self.with_sidecar += has_sidecar(pod)
        if self.first_at is None:
            self.first_at = now
        if len(self.seen) >= self.target and not self.done.is_set():
            self.done_at = now
            self.done.set()

    def _connect(self, path: str) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=600)
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}: {resp.read()[:300]!r}")
        return conn, resp

    def _relist(self) -> None:
        conn, resp = self._connect(self.base)
        body = json.loads(resp.read())
        conn.close()
        now = time.monotonic()
        for pod in body["items"]:
            self._add(pod, now)
        self.resource_version = body["metadata"]["resourceVersion"]
        self.resumed += 1

    def run(self) -> None:
        try:
            while not self.done.is_set():
                conn, resp = self._connect(f"{self.base}?watch=1&resourceVersion={self.resource_version}"
                                           "&timeoutSeconds=590")
                self.opened.set()
                try:
                    while not self.done.is_set():
                        line = resp.readline()
                        if not line:
                            break  # dropped by the API server: resume from a LIST
                        event = json.loads(line)
                        if event.get("type") == "ADDED":
                            self._add(event["object"], time.monotonic())
                        elif event.get("type") == "ERROR":
                            break  # e.g. 410 Gone
                finally:
                    with contextlib.suppress(Exception):
                        conn.close()
                if not self.done.is_set():
                    self._relist()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.opened.set()
            self.done.set()


class Storm:
    def __init__(self, cp: ControlPlane, pids: dict[str, int], replicas: int, settle: float,
                 ports: dict[str, int] | None = None, pprof_dir: Path | None = None, pprof_seconds: int = 8) -> None:
        self.cp, self.pids, self.replicas, self.settle = cp, pids, replicas, settle
        self.pprof_dir, self.pprof_seconds = pprof_dir, pprof_seconds
        self.ports = ports or {}  # webhook -> listening port, for the connection count
        self.results: list[dict] = []
        self.reports_left: dict[str, int] = {}

    def pod_count(self, ns: str) -> int:
        status, body = self.cp.request("GET", f"/api/v1/namespaces/{ns}/pods?limit=1", timeout=API_TIMEOUT)
        if status != 200:
            raise RuntimeError(f"list pods in {ns}: {status}")
        return len(body["items"]) + int(body["metadata"].get("remainingItemCount") or 0)

    def clean(self, ns: str) -> None:
        """Delete Deployments and ReplicaSets orphaning their pods, then all pods at once."""
        for kind in ("deployments", "replicasets"):
            status, body = self.cp.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/{kind}",
                                           {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}, timeout=API_TIMEOUT)
            if status != 200:
                raise RuntimeError(f"deletecollection {kind} in {ns}: {status} {body}")
        self.cp.wait_for(lambda: not self.cp.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets", timeout=API_TIMEOUT)[1]["items"],
                         60, f"ReplicaSets in {ns} gone")
        status, body = self.cp.request("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0", timeout=API_TIMEOUT)
        if status != 200:
            raise RuntimeError(f"deletecollection pods in {ns}: {status} {body}")
        self.cp.wait_for(lambda: self.pod_count(ns) == 0, 120, f"pods in {ns} gone")
        self.reports_left[ns] = self.reports_left.get(ns, 0) + delete_admission_reports(self.cp, ns)

    def run_one(self, mode: str, run: int, timeout: float) -> dict:
        ns = NAMESPACES[mode]
        name = f"storm-{run}"
        status, body = self.cp.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(name, 0), timeout=API_TIMEOUT)
        if status != 201:
            raise RuntimeError(f"create Deployment {ns}/{name}: {status} {body}")
        self.cp.wait_for(lambda: self.cp.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets", timeout=API_TIMEOUT)[1]["items"],
                         60, f"the ReplicaSet of {ns}/{name}")
        time.sleep(self.settle)
        _, pods = self.cp.request("GET", f"/api/v1/namespaces/{ns}/pods", timeout=API_TIMEOUT)
        watch = PodWatch(self.cp, ns, pods["metadata"]["resourceVersion"], self.replicas)
        watch.start()
        watch.opened.wait(30)
        samplers = {who: TreeSampler(pid).start() for who, pid in self.pids.items()}
        conn_samplers = {who: ConnSampler(port).start() for who, port in self.ports.items()}
        profile = self.start_apiserver_profile(self.pprof_dir / f"{mode}-run{run}.pprof") if self.pprof_dir else None
        t0 = time.monotonic()
        status, body = self.cp.request(
            "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            {"spec": {"replicas": self.replicas}}, content_type="application/merge-patch+json", timeout=API_TIMEOUT)
        if status != 200:
            raise RuntimeError(f"scale {ns}/{name}: {status} {body}")
        finished = watch.done.wait(timeout)
        usage = {who: s.stop() for who, s in samplers.items()}
        conns = {who: s.stop() for who, s in conn_samplers.items()}
        if profile is not None:
            profile.join()
        if watch.error:
            raise RuntimeError(f"watch failed: {watch.error}")
        if not finished:
            raise RuntimeError(f"{mode} run {run}: only {len(watch.seen)} of {self.replicas} pods after {timeout:.0f}s")
        result = {
            "mode": mode, "run": run,
            "seconds": watch.done_at - t0,
            "first_pod_s": watch.first_at - t0,
            "pods": len(watch.seen),
            "with_sidecar": watch.with_sidecar,
            "watch_resumed": watch.resumed,
            "usage": usage,
            "conns": conns,
        }
        expected = self.replicas if mode != "none" else 0
        result["verified"] = watch.with_sidecar == expected
        log(f"{mode} run {run}: {self.replicas} pods in {result['seconds']:.2f}s "
            f"(first after {result['first_pod_s']:.2f}s), {watch.with_sidecar} with mcp-sidecar, watch resumed {watch.resumed}x; "
            + ", ".join(f"{who} {u['cpu_s']:.2f} CPU-s / {u['peak_rss_mb']:.0f} MB" for who, u in usage.items())
            + (f"; {mode} connections >= {conns[mode]['distinct']} (at most {conns[mode]['peak_open']} open)" if mode in conns else ""))
        self.clean(ns)
        return result

    def start_apiserver_profile(self, out: Path) -> threading.Thread:
        """kube-apiserver's CPU profile (/debug/pprof; --pprof-dir starts it with --profiling=true) over the
        first --pprof-seconds of the storm. A failed fetch is raised by join()."""
        ctx = ssl.create_default_context(cafile=str(self.cp.ca_file))
        ctx.load_cert_chain(str(self.cp.admin_cert), str(self.cp.admin_key))

        class Fetch(threading.Thread):
            error: BaseException | None = None

            def run(self) -> None:
                try:
                    url = f"{storm.cp.server}/debug/pprof/profile?seconds={storm.pprof_seconds}"
                    with urllib.request.urlopen(url, context=ctx, timeout=storm.pprof_seconds + 60) as resp:
                        out.write_bytes(resp.read())
                except BaseException as exc:  # noqa: BLE001 - raised by join()
                    self.error = exc

            def join(self, timeout: float | None = None) -> None:
                super().join(timeout)
                if self.error is not None:
                    raise RuntimeError(f"kube-apiserver profile: {self.error}")

        storm = self
        thread = Fetch(daemon=True)
        thread.start()
        return thread

    def run(self, modes: list[str], runs: int, timeout: float) -> None:
        for ns in NAMESPACES.values():
            self.clean(ns)
        for r in range(runs):
            k = r % len(modes)
            for mode in modes[k:] + modes[:k]:
                self.results.append(self.run_one(mode, r + 1, timeout))


def serial_creates(cp: ControlPlane, modes: list[str], pids: dict[str, int], n: int, warmup: int = 20) -> dict:
    """Pod-create latency (ms, request sent -> body read) per mode, serial over one keep-alive
    connection, modes interleaved pod by pod in rotating order; and each webhook's CPU-ms per create."""
    api = ApiClient(cp)
    samples: dict[str, list[float]] = {m: [] for m in modes}
    cpu = {m: 0.0 for m in modes if m in pids}
    seq = 0
    try:
        for phase, count in (("warm-up", warmup), ("measured", n)):
            trees = {m: descendants(pids[m]) for m in cpu}
            cpu0 = {m: cpu_seconds(t) for m, t in trees.items()}
            for i in range(count):
                k = i % len(modes)
                for mode in modes[k:] + modes[:k]:
                    seq += 1
                    status, raw, elapsed = api.call("POST", f"/api/v1/namespaces/{NAMESPACES[mode]}/pods",
                                                    pod_body(f"serial-{seq}", labelled=True))
                    if status != 201:
                        raise RuntimeError(f"serial create in {mode}: HTTP {status}: {raw[:300]!r}")
                    if has_sidecar(json.loads(raw)) != (mode != "none"):
                        raise RuntimeError(f"serial create in {mode}: sidecar {'missing' if mode != 'none' else 'present'}")
                    if phase == "measured":
                        samples[mode].append(elapsed * 1000)
            if phase == "measured":
                cpu = {m: (cpu_seconds(t) - cpu0[m]) * 1000 / n for m, t in trees.items()}
            for mode in modes:
                api.call("DELETE", f"/api/v1/namespaces/{NAMESPACES[mode]}/pods?gracePeriodSeconds=0")
    finally:
        api.close()
    return {"n": n, "warmup": warmup, "latency": {m: summary(v) for m, v in samples.items()}, "cpu_ms": cpu}


def failed_open_calls(apiserver_log: Path) -> dict[str, int]:
    """'Failed calling webhook, failing open NAME: ... REASON' lines in the API server log, per name and reason."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in apiserver_log.read_text(errors="replace").splitlines():
            m = re.search(r"Failed calling webhook, failing open ([^:]+):.*?(context deadline exceeded|connection refused|EOF)?$", line)
            if m:
                key = f"{m.group(1)} ({m.group(2) or 'other error'})"
                counts[key] = counts.get(key, 0) + 1
    return counts


def copy_logs(log_dir: Path, cp: ControlPlane, hooks: dict[str, WebhookProcess], kyverno: KyvernoProcess | None) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    files = [(f"{who}-{h.log_file.name}", h.log_file) for who, h in hooks.items()]
    files += [(c.log_path.name, c.log_path) for c in cp.components.values()]
    files += [(kyverno.log_file.name, kyverno.log_file)] if kyverno is not None else []
    for name, f in files:
        with contextlib.suppress(OSError):
            shutil.copy(f, log_dir / name)
    log(f"logs copied to {log_dir}")


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def report(args: argparse.Namespace, storm: Storm, modes: list[str], extra: dict) -> str:
    cmd = " ".join([".venv/bin/python bench/cluster/rollout_storm.py", *sys.argv[1:]])
    whos = list(storm.pids)
    lines = [
        f"## Rollout storm: Deployment scaled 0 -> {args.replicas}, {' vs '.join(modes)} — run started "
        f"{extra['started']} UTC",
        "",
        f"- Command: `{cmd}`",
        f"- Machine: {machine()}; k8s {extra['k8s']}; kube-controller-manager `--kube-api-qps=200 "
        f"--kube-api-burst=400`{(' + ' + ' '.join(args.kcm_arg)) if args.kcm_arg else ''}; ours = `mcp-sidecar serve` "
        f"(uvicorn, TLS{', args ' + ' '.join(args.webhook_arg) if args.webhook_arg else ''})"
        + "".join(f"; {m} = the same app on hypercorn 0.18 (TLS, ALPN {HYPERCORN_MODES[m]}, bench/cluster/h2_server.py"
                  + (f", args {' '.join(args.h2_arg)}" if args.h2_arg else "") + ")" for m in modes if m in HYPERCORN_MODES)
        + (f"; Kyverno {extra['kyverno_version']} admission controller (chart-default flags"
           + (f" + {' '.join(args.kyverno_arg)}" if args.kyverno_arg else "") + ", out of cluster)"
           if "kyverno" in modes else ""),
        f"- Load (`uptime` 1/5/15 min): before {extra['load_before']}, after {extra['load_after']} — "
        "other engineers' work shared the 2 cores",
        f"- Method: time from the scale PATCH until a pod watch has seen {args.replicas} pods ADDED; "
        f"{args.runs} runs per mode, modes alternating (order rotates per run); all webhooks running "
        "throughout, each mode's namespace selected by only its webhook (none: by neither). CPU = user+sys "
        "seconds of the process tree over the storm; RSS = peak of the summed tree RSS (50 ms samples); "
        "conns = TCP connections to the storm's own webhook port seen by `ss` every 50 ms (client ends "
        "seen: a lower bound on those made / the most open at once).",
        "",
        "| mode | run | s to all pods | first pod s | pods with sidecar | "
        + " | ".join(f"{w} CPU s" for w in whos) + " | "
        + " | ".join(f"{w} peak RSS MB" for w in whos if w in WEBHOOKS) + " | conns seen / max open |",
        "|---|---|---|---|---|" + "---|" * (len(whos) + len([w for w in whos if w in WEBHOOKS]) + 1),
    ]
    for r in storm.results:
        u = r["usage"]
        c = r["conns"].get(r["mode"])
        lines.append(f"| {r['mode']} | {r['run']} | {fmt(r['seconds'])} | {fmt(r['first_pod_s'])} | "
                     f"{r['with_sidecar']}/{r['pods']} | "
                     + " | ".join(fmt(u[w]['cpu_s']) for w in whos) + " | "
                     + " | ".join(fmt(u[w]['peak_rss_mb'], 0) for w in whos if w in WEBHOOKS)
                     + (f" | {c['distinct']} / {c['peak_open']} |" if c else " | — |"))
    med = {m: statistics.median(r["seconds"] for r in storm.results if r["mode"] == m) for m in modes}
    lines += ["", "- Median seconds to all pods: " + ", ".join(f"{m} **{fmt(med[m])} s**" for m in modes) + "."]
    for m in modes:
        if m == "none":
            continue
        own = [r["usage"][m] for r in storm.results if r["mode"] == m]
        vs_none = f"{fmt((med[m] / med['none'] - 1) * 100, 1)} % slower than none (median); " if "none" in med else ""
        lines.append(
            f"- {m}: {vs_none}its own storms cost "
            f"it {fmt(statistics.median(u['cpu_s'] for u in own))} CPU-s (median), "
            f"{fmt(statistics.median(u['cpu_s'] for u in own) * 1000 / args.replicas)} CPU-ms per pod, "
            f"peak RSS {fmt(max(u['peak_rss_mb'] for u in own), 0)} MB (RSS before: "
            f"{fmt(statistics.median(u['rss_before_mb'] for u in own), 0)} MB).")
    for ours in ("ours", *HYPERCORN_MODES):
        if ours in med and "none" in med:
            slow = med[ours] / med["none"] - 1
            lines.append(f"- Goal: storm with {ours} ≤ {TARGET_SLOWDOWN * 100:.0f} % slower than without a webhook — "
                         f"**{'met' if slow <= TARGET_SLOWDOWN else 'NOT met'}** ({fmt(slow * 100, 1)} %)"
                         + (f"; {ours} vs Kyverno: {fmt(med[ours], 2)} s vs {fmt(med['kyverno'], 2)} s." if "kyverno" in med else "."))
    resumed = [f"{r['mode']} run {r['run']}" for r in storm.results if r["watch_resumed"]]
    lines.append("- The API server dropped the pod watch (a watcher falling behind the burst) and it was resumed "
                 f"from a LIST in: {', '.join(resumed) if resumed else 'no storm'}; pods found by that LIST count "
                 "as seen when it returned (a slightly late stop of the clock).")
    failed = extra.get("failed_open") or {}
    lines.append("- Webhook calls that failed and were let through without mutation (failurePolicy Ignore), from "
                 "the API server log: " + ("; ".join(f"`{k}`: {v}" for k, v in sorted(failed.items())) or "none") + ".")
    for m in modes:
        runs = [r for r in storm.results if r["mode"] == m]
        ok = all(r["verified"] for r in runs)
        what = "carries `mcp-sidecar`" if m != "none" else "is without `mcp-sidecar`"
        lines.append(f"- Verified ({m}): {'every' if ok else 'NOT every'} watched pod {what}"
                     + ("" if ok else " — with sidecar per run: " + ", ".join(
                         f"{r['with_sidecar']}/{r['pods']}" for r in runs)) + ".")
    if extra.get("ephemeral_reports") is not None:
        lines.append(f"- Kyverno wrote {extra['ephemeral_reports']} admission reports (EphemeralReports) in its "
                     f"{args.runs} storms (deleted after every storm, as its reports controller, which does not run "
                     "here, would after aggregating them).")
    if extra.get("apiserver"):
        lines.append("- API server's mean call time per webhook over the storms and registration probes "
                     "(`apiserver_admission_webhook_admission_duration_seconds`): "
                     + "; ".join(f"`{n}` {fmt(m)} ms ({int(c)} calls)" for n, (m, c) in sorted(extra["apiserver"].items())) + ".")
    serial = extra.get("serial")
    if serial:
        lat = serial["latency"]
        lines += ["", f"Pod-create latency, serial: {serial['n']} creates per mode over one keep-alive connection, "
                  f"modes interleaved pod by pod (rotating), {serial['warmup']} warm-ups per mode discarded "
                  "(after the storms, same processes):", "",
                  "| mode | n | p50 ms | p90 ms | p99 ms | mean ms | max ms | added p50 | added p99 | webhook CPU ms per create |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, x in lat.items():
            added = (f"{fmt(x['p50'] - lat['none']['p50'])} | {fmt(x['p99'] - lat['none']['p99'])}"
                     if "none" in lat and m != "none" else "— | —")
            cpu = fmt(serial["cpu_ms"][m]) if m in serial["cpu_ms"] else "—"
            lines.append(f"| {m} | {x['n']} | {fmt(x['p50'])} | {fmt(x['p90'])} | {fmt(x['p99'])} | {fmt(x['mean'])} | "
                         f"{fmt(x['max'])} | {added} | {cpu} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="storms per mode")
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before every storm")
    parser.add_argument("--storm-timeout", type=float, default=300.0)
    parser.add_argument("--modes", default="none,ours,kyverno", help="comma-separated subset of none,ours,ours-h2,ours-hc1,kyverno")
    parser.add_argument("--serial", type=int, default=0, help="serial pod creates per mode after the storms (0: none)")
    parser.add_argument("--pprof-dir", type=Path, help="save kube-apiserver's CPU profile of every storm here (read with pprof_top.py)")
    parser.add_argument("--pprof-seconds", type=int, default=8, help="length of each storm's profile")
    parser.add_argument("--no-kyverno", action="store_true", help="only ours and none (no Kyverno build needed)")
    parser.add_argument("--log-dir", type=Path, help="copy the webhooks' and control plane's logs here at the end")
    add_server_args(parser)
    parser.add_argument("--h2-arg", action="append", default=[],
                        help="extra argument for bench/cluster/h2_server.py (modes ours-h2, ours-hc1)")
    parser.add_argument("--kcm-arg", action="append", default=[],
                        help="extra kube-controller-manager argument (e.g. --kcm-arg=--kube-api-qps=1000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown file the section is appended to")
    parser.add_argument("--max-seconds", type=int, default=1800, help="watchdog for the whole run")
    args = parser.parse_args()

    arm_watchdog(args.max_seconds)

    modes = [m for m in args.modes.split(",") if m and not (args.no_kyverno and m == "kyverno")]
    if not modes or set(modes) - set(NAMESPACES):
        parser.error(f"--modes: choose from {', '.join(NAMESPACES)}")
    args.no_kyverno = "kyverno" not in modes
    extra: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_before": load(),
                   "k8s": pinned_kubernetes_version()}
    try:
        ensure_binaries(("etcd", "kube", "tools"))
        if not args.no_kyverno:
            ensure_built()
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rollout-storm-")))
            cp = stack.enter_context(ControlPlane(build=False, log=lambda m: log(f"control plane: {m}"),
                                                  extra_controller_manager_args=args.kcm_arg,
                                                  extra_apiserver_args=["--profiling=true"] if args.pprof_dir else []))
            for ns in NAMESPACES.values():
                cp.create_namespace(ns)
            hook = stack.enter_context(WebhookProcess(workdir / "webhook", extra_args=tuple(args.webhook_arg)))
            cp.register_mutating_webhook(
                hook.url + "/mutate", hook.ca_pem, probe_namespace=NAMESPACES["ours"],
                namespace_selector=our_namespace_selector(
                    ["kyverno", NAMESPACES["kyverno"], NAMESPACES["none"], *(NAMESPACES[m] for m in HYPERCORN_MODES)]))
            hooks = {"ours": hook}
            for m in (m for m in modes if m in HYPERCORN_MODES):
                hooks[m] = h = stack.enter_context(H2WebhookProcess(
                    workdir / f"webhook-{m}", extra_args=("--alpn", HYPERCORN_MODES[m], *args.h2_arg)))
                # Same webhook settings as ours, selecting only its own namespace.
                cp.register_mutating_webhook(
                    h.url + "/mutate", h.ca_pem, name=f"mcp-sidecar-injector-{m}", webhook_name=f"inject-{m}.mcp-sidecar.dox",
                    probe_namespace=NAMESPACES[m], namespace_selector={"matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NAMESPACES[m]]}]})
            pids = {who: h.process.pid for who, h in hooks.items()}
            ports = {who: h.port for who, h in hooks.items()}
            if not args.no_kyverno:
                kyverno = stack.enter_context(KyvernoProcess(
                    cp, workdir / "kyverno", excluded_namespaces=[NAMESPACES[m] for m in NAMESPACES if m != "kyverno"],
                    extra_args=args.kyverno_arg, log=lambda m: log(f"kyverno: {m}")))
                kyverno.wait_mutates(NAMESPACES["kyverno"], json.loads(pod_body("probe", True)))
                extra["kyverno_version"] = kyverno.version()
                pids["kyverno"] = kyverno.pid
                ports["kyverno"] = kyverno.port
            pids["kube-apiserver"] = cp.components["kube-apiserver"].pid
            pids["kube-controller-manager"] = cp.components["kube-controller-manager"].pid
            if args.pprof_dir:
                args.pprof_dir.mkdir(parents=True, exist_ok=True)
            storm = Storm(cp, pids, args.replicas, args.settle, ports, args.pprof_dir, args.pprof_seconds)
            if args.log_dir:
                stack.callback(copy_logs, args.log_dir, cp, hooks, None if args.no_kyverno else kyverno)
            storm.run(modes, args.runs, args.storm_timeout)
            extra["apiserver"] = apiserver_webhook_means(cp)
            if args.serial:
                log(f"serial pod creates: {args.serial} per mode")
                extra["serial"] = serial_creates(cp, modes, pids, args.serial)
            if not args.no_kyverno:
                extra["ephemeral_reports"] = storm.reports_left.get(NAMESPACES["kyverno"], 0)
            extra["failed_open"] = failed_open_calls(cp.components["kube-apiserver"].log_path)
    finally:
        signal.alarm(0)
    extra["load_after"] = load()
    text = report(args, storm, modes, extra)
    print(text)
    new = not args.out.exists()
    with open(args.out, "a") as fh:
        fh.write(("# Against the real peer: Kyverno (bench/cluster/bench_peers.py, rollout_storm.py)\n\n" if new else "\n")
                 + text)
    log(f"appended to {args.out}")
    # A Kyverno shortfall (calls timing out under the storm, failing open) is a result, not a broken bench.
    return 0 if all(r["verified"] for r in storm.results if r["mode"] != "kyverno") else 1


if __name__ == "__main__":
    sys.exit(main())
