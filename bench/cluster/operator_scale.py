"""The operator at scale: memory, start-up pass, repeated Events, label latency, resync CPU, audit (issue 12).

    nice -n 10 .venv/bin/python bench/cluster/operator_scale.py --pods 1000
    nice -n 10 .venv/bin/python bench/cluster/operator_scale.py --pods 10000 \\
        --variant before=/tmp/before-operator --variant after=.
    nice -n 10 .venv/bin/python bench/cluster/operator_scale.py --pods 100 --unlabelled 10000

One control plane (tests/cluster; kube-apiserver with --max-requests-inflight raised), kubelet-less.
``--pods`` labelled pods come from StatefulSets of ``--replicas`` pods (podManagementPolicy Parallel:
without a kubelet no pod becomes Ready) spread over ``--namespaces`` namespaces; ``--unlabelled``
more pods come from StatefulSets without the label. No webhook is registered, so every labelled pod
is "missed": the operator posts a Warning Event for each. The cluster is built once and every
``--variant NAME=REPO`` (a checkout of this repository; default: this one) runs against it in
turn, its Events deleted before it starts (the operator's own Events are its memory).

Per variant, `python -m webhook.cli operator` is started as tests/support/operator_process.py does
(cwd and PYTHONPATH = the variant's checkout) with ``--resync-seconds`` (default 20) and measured:

- start-up pass: from the process start until the Missed Event of the last labelled pod arrived
  (a watch on Events with fieldSelector source=mcp-sidecar-operator), then until 3 s of quiet;
  Events posted, by kind;
- label -> template latency: while the pass runs, a probe StatefulSet (replicas 0) is labelled
  every ~1.5 s (PATCH of its metadata.labels) and its pod template polled every 20 ms;
- RSS: VmHWM and VmRSS (/proc) after the pass and after two resync periods (idle);
- resync: the operator's CPU seconds over two resync periods after the pass, per period;
- second start: the operator is stopped (SIGTERM) and started again: Events posted in the 15 s
  after it has started (no new Event arrives for 15 s) or until the pass repeats fully;
- ``mcp-sidecar audit -A`` (table output to /dev/null): wall time, CPU and peak RSS (/usr/bin/time).

Appends a Markdown section to bench/cluster/OPERATOR_SCALE.md. The whole cluster lives in a
temporary directory and is removed at the end (nothing is cached); `uptime` is printed before and
after. Creating 10,000 pods takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.controlplane import ControlPlane, ensure_binaries  # noqa: E402

BACKEND = "mcp-sidecar.dox/backend"
SOURCE = "mcp-sidecar-operator"
RESULTS = ROOT / "bench" / "cluster" / "OPERATOR_SCALE.md"
PROBE_NS = "bench-probe"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """Raw JSON calls as cluster admin over the control plane's TLS context (one connection per thread)."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.host = urllib.parse.urlparse(cp.server)
        self._local = threading.local()

    def conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host.hostname, self.host.port, context=self.cp._ssl, timeout=60)
            self._local.conn = conn
        return conn

    def call(self, method: str, path: str, body=None, content_type: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            conn = self.conn()
            try:
                conn.request(method, path, body=data, headers={"Content-Type": content_type, "Accept": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError


def count_pods(api: Api, selector: str) -> int:
    """Number of pods matching ``selector`` (paginated list of names only)."""
    total, token = 0, ""
    while True:
        q = urllib.parse.urlencode({"labelSelector": selector, "limit": 5000, **({"continue": token} if token else {})})
        status, body = api.call("GET", f"/api/v1/pods?{q}")
        assert status == 200, body
        total += len(body["items"])
        token = body["metadata"].get("continue") or ""
        if not token:
            return total


def statefulset(ns: str, name: str, replicas: int, labelled: bool) -> dict:
    labels = {"app": name, **({BACKEND: "redis"} if labelled else {})}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"automountServiceAccountToken": False,
                                       "containers": [{"name": "redis", "image": "redis:7", "ports": [{"containerPort": 6379}]}]}}},
    }


def build_cluster(cp: ControlPlane, api: Api, args) -> None:
    namespaces = [f"bench-{i:03d}" for i in range(args.namespaces)] + [PROBE_NS]
    for ns in namespaces:
        status, body = api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        assert status in (201, 409), body
    for ns in namespaces:
        cp.wait_for(lambda: api.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] == 200, 120, f"{ns}/default")
    sets = []
    for kind, count in (("l", args.pods), ("u", args.unlabelled)):
        for i in range(count // args.replicas):
            sets.append((namespaces[i % args.namespaces], f"{kind}{i:05d}", kind == "l"))
    t0 = time.monotonic()
    for ns, name, labelled in sets:
        status, body = api.call("POST", f"/apis/apps/v1/namespaces/{ns}/statefulsets", statefulset(ns, name, args.replicas, labelled))
        assert status in (201, 409), body
    want_l, want_all = args.pods // args.replicas * args.replicas, (args.pods + args.unlabelled) // args.replicas * args.replicas
    log(f"{len(sets)} StatefulSets created; waiting for {want_all} pods ({want_l} labelled)")
    while True:
        have = count_pods(api, "app")
        if have >= want_all:
            break
        log(f"  {have}/{want_all} pods after {time.monotonic() - t0:.0f} s")
        time.sleep(10)
    assert count_pods(api, BACKEND) == want_l
    log(f"{want_all} pods in {time.monotonic() - t0:.0f} s")


class EventWatch:
    """Counts the operator's Events as they are created (watch with fieldSelector source=...)."""

    def __init__(self, api: Api):
        self.api = api
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str, str]] = []  # (monotonic, reason, involved kind)
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        status, body = api.call("GET", f"/api/v1/events?fieldSelector=source%3D{SOURCE}&limit=1")
        self.rv = body["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            host = self.api.host
            conn = http.client.HTTPSConnection(host.hostname, host.port, context=self.api.cp._ssl, timeout=3600)
            self._conn = conn
            q = urllib.parse.urlencode({"watch": "true", "fieldSelector": f"source={SOURCE}", "resourceVersion": self.rv,
                                        "allowWatchBookmarks": "true", "timeoutSeconds": 3000})
            try:
                conn.request("GET", f"/api/v1/events?{q}")
                resp = conn.getresponse()
                for line in resp:
                    event = json.loads(line)
                    obj = event["object"]
                    self.rv = obj.get("metadata", {}).get("resourceVersion", self.rv)
                    if event["type"] == "ADDED":
                        with self.lock:
                            self.arrivals.append((time.monotonic(), obj.get("reason", ""), obj.get("involvedObject", {}).get("kind", "")))
            except (OSError, http.client.HTTPException, ValueError):
                if self._stop.is_set():
                    return
                time.sleep(0.5)

    def since(self, t0: float) -> list[tuple[float, str, str]]:
        with self.lock:
            return [a for a in self.arrivals if a[0] >= t0]

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            try:
                self._conn.sock.shutdown(2)
            except OSError:
                pass


@dataclass
class Result:
    name: str
    figures: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


def start_operator(repo: Path, kubeconfig: Path, workdir: Path, resync: float, tag: str) -> tuple[subprocess.Popen, float]:
    log_path = workdir / f"operator-{tag}.log"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    t0 = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook.cli", "--log-level", "info", "operator", "--kubeconfig", str(kubeconfig),
         "--resync-seconds", str(resync)],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=repo, env=env)
    return process, t0


def stop_operator(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def label_probe(api: Api, name: str) -> float | None:
    """Label the probe StatefulSet; seconds until its pod template carries the label."""
    path = f"/apis/apps/v1/namespaces/{PROBE_NS}/statefulsets/{name}"
    t0 = time.monotonic()
    status, body = api.call("PATCH", path, {"metadata": {"labels": {BACKEND: "redis"}}}, "application/merge-patch+json")
    assert status == 200, body
    while time.monotonic() - t0 < 120:
        status, body = api.call("GET", path)
        if BACKEND in (body["spec"]["template"]["metadata"].get("labels") or {}):
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def run_variant(cp: ControlPlane, api: Api, events: EventWatch, name: str, repo: Path, args, workdir: Path) -> Result:
    result = Result(name)
    labelled = args.pods // args.replicas * args.replicas
    # a clean slate: no Events of a previous variant, fresh unlabelled probe StatefulSets
    for i in range(args.namespaces):
        api.call("DELETE", f"/api/v1/namespaces/bench-{i:03d}/events")
    api.call("DELETE", f"/api/v1/namespaces/{PROBE_NS}/events")
    api.call("DELETE", f"/apis/apps/v1/namespaces/{PROBE_NS}/statefulsets")
    probes = [f"probe-{name}-{i}" for i in range(args.probes)]
    for probe in probes:
        status, body = api.call("POST", f"/apis/apps/v1/namespaces/{PROBE_NS}/statefulsets", statefulset(PROBE_NS, probe, 0, False))
        assert status == 201, body
    time.sleep(2)
    log(f"[{name}] starting the operator ({repo}), load {uptime()}")
    process, t0 = start_operator(repo, cp.kubeconfig, workdir, args.resync_seconds, f"{name}-1")
    # label probes while the start-up pass runs (the first once the operator posted anything)
    latencies: list[float | None] = []

    def probing() -> None:
        while not events.since(t0) and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        for probe in probes:
            if sum(1 for a in events.since(t0) if a[2] == "Pod") >= labelled:
                break
            latencies.append(label_probe(api, probe))
            time.sleep(1.5)

    prober = threading.Thread(target=probing, daemon=True)
    prober.start()
    deadline = t0 + args.max_pass_seconds
    last_pod_event = None
    while time.monotonic() < deadline:
        seen = events.since(t0)
        pod_missed = [a for a in seen if a[2] == "Pod" and a[1] == "MCPSidecarMissed"]
        if len(pod_missed) >= labelled:
            last_pod_event = pod_missed[-1][0]
            break
        if process.poll() is not None:
            result.notes.append(f"operator exited ({process.returncode}) during the pass")
            break
        time.sleep(0.2)
    peak_during = proc_status(process.pid)
    result.figures["pass_cpu_s"] = cpu_seconds(process.pid)
    while True:  # 3 s of quiet
        seen = events.since(t0)
        if not seen or time.monotonic() - seen[-1][0] > 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    prober.join(150)
    seen = events.since(t0)
    result.figures["pass_s"] = (last_pod_event - t0) if last_pod_event else None
    result.figures["pass_all_events_s"] = (seen[-1][0] - t0) if seen else None
    result.figures["events"] = len([a for a in seen if a[1] in ("MCPSidecarMissed", "MCPSidecarStale")])
    result.figures["events_pod"] = len([a for a in seen if a[1] == "MCPSidecarMissed" and a[2] == "Pod"])
    result.figures["events_owner"] = len([a for a in seen if a[1] == "MCPSidecarMissed" and a[2] != "Pod"])
    result.figures["label_latency_s"] = latencies
    judged = re.search(r"start-up pass: \d+ labelled pods in all namespaces judged in ([\d.]+) s",
                       (workdir / f"operator-{name}-1.log").read_text(errors="replace"))
    result.figures["judged_s"] = float(judged.group(1)) if judged else None  # logged since issue 12 only
    result.figures["rss_after_pass_mib"] = peak_during.get("VmRSS", 0) / 1024
    log(f"[{name}] pass {result.figures['pass_s']} s, {len(seen)} events, label latencies {latencies}")
    # resync: CPU over two periods, once the pass is over
    c0, w0 = cpu_seconds(process.pid), time.monotonic()
    time.sleep(2 * args.resync_seconds + 1)
    result.figures["resync_cpu_s"] = (cpu_seconds(process.pid) - c0) / 2
    status = proc_status(process.pid)
    result.figures["peak_rss_mib"] = status.get("VmHWM", 0) / 1024
    result.figures["idle_rss_mib"] = status.get("VmRSS", 0) / 1024
    log(f"[{name}] resync {result.figures['resync_cpu_s']:.2f} CPU-s/period over {time.monotonic() - w0:.0f} s; "
        f"VmHWM {result.figures['peak_rss_mib']:.0f} MiB, VmRSS {result.figures['idle_rss_mib']:.0f} MiB")
    # second start
    stop_operator(process)
    time.sleep(1)
    process, t1 = start_operator(repo, cp.kubeconfig, workdir, args.resync_seconds, f"{name}-2")
    while True:
        seen = events.since(t1)
        last = seen[-1][0] if seen else t1
        if time.monotonic() - last > 15 or len([a for a in seen if a[2] == "Pod"]) >= labelled:
            break
        time.sleep(0.5)
    time.sleep(3)
    seen = events.since(t1)
    result.figures["events_second_start"] = len(seen)
    result.figures["rss_second_start_mib"] = proc_status(process.pid).get("VmHWM", 0) / 1024
    stop_operator(process)
    log(f"[{name}] second start: {len(seen)} events")
    # audit -A, under /usr/bin/time: wait4's ru_maxrss of our own child would count the pages it
    # shared with this (large) process between fork and exec
    env = {**os.environ, "PYTHONPATH": str(repo)}
    stats = workdir / f"audit-{name}.time"
    a0 = time.monotonic()
    audit = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(stats), sys.executable, "-m", "webhook.cli", "audit", "-A",
                            "--kubeconfig", str(cp.kubeconfig)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=repo, env=env)
    result.figures["audit_s"] = time.monotonic() - a0
    max_kib, user, system = stats.read_text().split()[-3:]
    result.figures["audit_rss_mib"] = int(max_kib) / 1024
    result.figures["audit_cpu_s"] = float(user) + float(system)
    result.figures["audit_exit"] = audit.returncode
    log(f"[{name}] audit -A {result.figures['audit_s']:.1f} s, {result.figures['audit_cpu_s']:.1f} CPU s, "
        f"{result.figures['audit_rss_mib']:.0f} MiB (exit {result.figures['audit_exit']})")
    return result


def fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: list[Result], args, load_before: str, load_after: str, build_s: float) -> str:
    labelled = args.pods // args.replicas * args.replicas
    lines = [
        f"## {labelled:,} labelled pods" + (f" + {args.unlabelled:,} unlabelled" if args.unlabelled else "")
        + f" ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`nice -n 10 .venv/bin/python bench/cluster/operator_scale.py {' '.join(sys.argv[1:])}` on {platform.node()}, "
        f"{os.cpu_count()} cores, load (1/5/15 min) before {load_before}, after {load_after}; "
        f"{args.pods // args.replicas + args.unlabelled // args.replicas} StatefulSets x {args.replicas} in {args.namespaces} namespaces, "
        f"kubelet-less, no webhook (every labelled pod is missed); cluster built in {build_s:.0f} s; "
        f"--resync-seconds {args.resync_seconds:g}.",
        "",
        "| | " + " | ".join(r.name for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r.figures) for r in results) + " |")

    row("peak RSS (VmHWM) / idle RSS, MiB", lambda f: f"{fmt(f['peak_rss_mib'], 0)} / {fmt(f['idle_rss_mib'], 0)}")
    row("start-up pass: last pod's Missed Event, s", lambda f: fmt(f["pass_s"]))
    row("... last Event of the pass, s", lambda f: fmt(f["pass_all_events_s"]))
    row("operator CPU s until then (start-up included)", lambda f: fmt(f.get("pass_cpu_s")))
    row("every pod judged (the operator's log), s", lambda f: fmt(f.get("judged_s")))
    row("Events of the pass (pod + owner)", lambda f: f"{f['events']:,} ({f['events_pod']:,} + {f['events_owner']:,})")
    row("Events on a second start", lambda f: f"{f['events_second_start']:,}")
    row("label -> template during the pass, s", lambda f: ", ".join(fmt(x, 2) for x in f["label_latency_s"]) or "-")
    row("resync CPU-s per period", lambda f: fmt(f["resync_cpu_s"], 2))
    row("`audit -A` wall s / CPU s / peak RSS MiB", lambda f: f"{fmt(f['audit_s'])} / {fmt(f.get('audit_cpu_s'))} / {fmt(f['audit_rss_mib'], 0)}")
    for r in results:
        for note in r.notes:
            lines.append(f"\n{r.name}: {note}")
    return "\n".join(lines) + "\n\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000, help="labelled pods")
    parser.add_argument("--unlabelled", type=int, default=0, help="unlabelled pods besides")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--variant", action="append", metavar="NAME=REPO", help="a checkout to run (repeatable; default: after=.)")
    parser.add_argument("--resync-seconds", type=float, default=20.0)
    parser.add_argument("--probes", type=int, default=5, help="label probes during the start-up pass (at most)")
    parser.add_argument("--max-pass-seconds", type=float, default=300.0)
    parser.add_argument("--hold-seconds", type=float, default=0, help="keep the cluster this long afterwards (to look at it)")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to OPERATOR_SCALE.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the control plane on the way out
    variants = [(v.split("=", 1)[0], Path(v.split("=", 1)[1]).resolve()) for v in (args.variant or ["after=."])]
    load_before = uptime()
    log(f"load before: {load_before}")
    ensure_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="op-scale-"))
    # a /16 of Service IPs: tests/cluster's /24 holds 254 Services, fewer than the companion Services here
    apiserver_args = ["--max-requests-inflight=1000", "--max-mutating-requests-inflight=500", "--service-cluster-ip-range=10.0.0.0/16"]
    with ControlPlane(build=False, extra_apiserver_args=apiserver_args) as cp:
        api = Api(cp)
        t0 = time.monotonic()
        build_cluster(cp, api, args)
        build_s = time.monotonic() - t0
        events = EventWatch(api)
        results = []
        try:
            for name, repo in variants:
                results.append(run_variant(cp, api, events, name, repo, args, workdir))
        finally:
            events.stop()
        if args.hold_seconds:
            log(f"holding the cluster for {args.hold_seconds:.0f} s: KUBECONFIG={cp.kubeconfig}")
            time.sleep(args.hold_seconds)
    load_after = uptime()
    text = markdown(results, args, load_before, load_after, build_s)
    print(text)
    if not args.no_append:
        with open(RESULTS, "a") as out:
            out.write(text)
    log(f"operator logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
