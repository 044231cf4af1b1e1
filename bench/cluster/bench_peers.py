"""Pod-create latency through the real kube-apiserver: our webhook vs Kyverno vs no webhook.

    .venv/bin/python bench/cluster/bench_peers.py                  # 5 rounds x 100 pods per case
    .venv/bin/python bench/cluster/bench_peers.py --rounds 3 --per-block 50
    .venv/bin/python bench/cluster/bench_peers.py --webhook-arg=--workers --webhook-arg=2

One control plane (tests/cluster), our admission server (`mcp-sidecar serve`, TLS, as
tests/support/webhook_process.py starts it) and Kyverno's admission controller (.cache/bin/kyverno,
bench/peers/kyverno/build.sh; ClusterPolicy bench/peers/kyverno/policy.yaml), all on 127.0.0.1 and
all running for the whole measurement. The same labelled pod (mcp-sidecar.dox/backend=redis, the
body of bench_pod_create.py) is created in one of three namespaces:

  ours      peers-ours     only our webhook's namespaceSelector matches it  (injects)
  kyverno   peers-kyverno  only Kyverno's webhook namespaceSelector matches (mutates)
  none      peers-none     excluded by both namespaceSelectors: the API server calls no webhook

Both webhooks stay registered the whole time (Kyverno manages its own webhook configuration), so
"none" is a namespace neither webhook selects rather than an unregistered webhook; a namespaceSelector
that does not match costs the API server a label lookup (bench_pod_create's filtered - none case).

Same method as bench_pod_create: serial creates over one keep-alive HTTPS connection (admin client
certificate), request sent -> body read, Python GC off; 20 warm-up creates per case discarded;
every round creates --per-block pods per case interleaved pod by pod (the case order rotates every
triple, so no case always follows another), then one deletecollection per namespace. Every create
response is checked (ours/kyverno carry mcp-sidecar, none does not), and before measuring, the
stored Kyverno pod's sidecar container, volumes and status annotation must equal our webhook's.

Also reported: CPU seconds each webhook process tree used during the measured creates (/proc),
and the API server's mean admission-webhook call time per webhook.

Prints a Markdown section and appends it to bench/cluster/PEERS_RESULTS.md (--out to change).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "peers" / "kyverno"))

from bench_pod_create import (  # noqa: E402
    ApiClient, arm_watchdog, fmt, has_sidecar, load, log, machine, pod_body, quantile, summary)
from kyverno_process import KyvernoProcess, ensure_built, sidecar_difference  # noqa: E402
from proctree import cpu_seconds, descendants  # noqa: E402

from tests.cluster.controlplane import (  # noqa: E402
    INJECTION_NS_LABEL, ControlPlane, ensure_binaries, pinned_kubernetes_version)
from tests.support.webhook_process import WebhookProcess  # noqa: E402

RESULTS = HERE / "PEERS_RESULTS.md"
CASES = ("ours", "kyverno", "none")
NAMESPACES = {"ours": "peers-ours", "kyverno": "peers-kyverno", "none": "peers-none"}
TARGET_P99_MS = 5.0


def our_namespace_selector(excluded: list[str]) -> dict:
    """The chart's namespaceSelector (kube-system and opted-out namespaces excluded) plus ``excluded``."""
    return {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", *excluded]},
        {"key": INJECTION_NS_LABEL, "operator": "NotIn", "values": ["disabled"]},
    ]}


def apiserver_webhook_means(cp: ControlPlane) -> dict[str, tuple[float, float]]:
    """apiserver_admission_webhook_admission_duration_seconds per webhook name: (mean ms, calls)."""
    _, text = cp.request("GET", "/metrics", timeout=20)
    sums: dict[str, list[float]] = {}
    for line in str(text).splitlines():
        if not line.startswith("apiserver_admission_webhook_admission_duration_seconds_"):
            continue
        name = line.split('name="', 1)[1].split('"', 1)[0] if 'name="' in line else "?"
        acc = sums.setdefault(name, [0.0, 0.0])
        if line.startswith("apiserver_admission_webhook_admission_duration_seconds_sum{"):
            acc[0] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{"):
            acc[1] += float(line.rsplit(" ", 1)[1])
    return {n: (s / c * 1000 if c else float("nan"), c) for n, (s, c) in sums.items()}


class PeerBench:
    def __init__(self, api: ApiClient, pids: dict[str, int]) -> None:
        self.api = api
        self.pids = pids  # case -> webhook pid (ours, kyverno)
        self.seq = 0
        self.samples: dict[str, list[float]] = {c: [] for c in CASES}
        self.round_p50: list[dict[str, float]] = []
        self.mismatches: list[str] = []
        self.cpu_s: dict[str, float] = {c: 0.0 for c in pids}
        self.reports_deleted = 0

    def create(self, case: str, record: bool) -> None:
        self.seq += 1
        name = f"{case}-{self.seq}"
        status, raw, elapsed = self.api.call("POST", f"/api/v1/namespaces/{NAMESPACES[case]}/pods",
                                             pod_body(name, labelled=True))
        if status != 201:
            raise RuntimeError(f"create {name}: HTTP {status}: {raw[:500]!r}")
        if has_sidecar(json.loads(raw)) != (case != "none"):
            self.mismatches.append(f"{name}: sidecar={case == 'none'}")
        if record:
            self.samples[case].append(elapsed * 1000)

    def delete_all(self) -> None:
        for ns in NAMESPACES.values():
            status, raw, _ = self.api.call("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0")
            if status != 200:
                raise RuntimeError(f"deletecollection {ns}: HTTP {status}: {raw[:300]!r}")
        # Kyverno's admission reports, as its (absent) reports controller would after aggregating them;
        # otherwise it stops writing them at --maxAdmissionReports and gets cheaper mid-run.
        path = f"/apis/reports.kyverno.io/v1/namespaces/{NAMESPACES['kyverno']}/ephemeralreports"
        status, raw, _ = self.api.call("DELETE", path)
        if status == 200:
            self.reports_deleted += len(json.loads(raw).get("items") or [])

    def block(self, n: int, record: bool) -> None:
        trees = {c: descendants(p) for c, p in self.pids.items()}
        cpu0 = {c: cpu_seconds(t) for c, t in trees.items()}
        for i in range(n):
            k = i % len(CASES)
            for case in CASES[k:] + CASES[:k]:
                self.create(case, record)
        if record:
            for c, t in trees.items():
                self.cpu_s[c] += cpu_seconds(t) - cpu0[c]
        self.delete_all()

    def run(self, rounds: int, per_block: int, warmup: int) -> None:
        log(f"warm-up: {warmup} creates per case (discarded)")
        self.block(warmup, record=False)
        for r in range(rounds):
            start = {c: len(v) for c, v in self.samples.items()}
            t0 = time.monotonic()
            self.block(per_block, record=True)
            self.round_p50.append({c: quantile(sorted(v[start[c]:]), 0.5) for c, v in self.samples.items()})
            log(f"round {r + 1}/{rounds} in {time.monotonic() - t0:.1f}s: p50 "
                + ", ".join(f"{c} {self.round_p50[-1][c]:.2f} ms" for c in CASES))


def check_same_sidecar(cp: ControlPlane) -> list[str]:
    """Create the bench pod once through each webhook; the stored injected parts must be equal."""
    stored = {}
    for case in ("ours", "kyverno"):
        ns = NAMESPACES[case]
        status, body = cp.request("POST", f"/api/v1/namespaces/{ns}/pods", json.loads(pod_body("same-sidecar", True)))
        if status != 201:
            raise RuntimeError(f"create same-sidecar in {ns}: {status} {body}")
        _, stored[case] = cp.request("GET", f"/api/v1/namespaces/{ns}/pods/same-sidecar")
        cp.request("DELETE", f"/api/v1/namespaces/{ns}/pods/same-sidecar?gracePeriodSeconds=0")
    return sidecar_difference(stored["ours"], stored["kyverno"])


def report(args: argparse.Namespace, bench: PeerBench, extra: dict) -> str:
    cmd = " ".join([".venv/bin/python bench/cluster/bench_peers.py", *sys.argv[1:]])
    s = {c: summary(v) for c, v in bench.samples.items()}
    add = {c: {q: s[c][q] - s["none"][q] for q in ("p50", "p99", "mean")} for c in ("ours", "kyverno")}
    n_measured = len(bench.samples["ours"])
    lines = [
        f"## Pod-create latency: ours vs Kyverno vs no webhook — run started {extra['started']} UTC",
        "",
        f"- Command: `{cmd}`",
        f"- Machine: {machine()}; k8s {extra['k8s']} (local etcd + kube-apiserver + kube-controller-manager); "
        f"ours = `mcp-sidecar serve` (uvicorn, TLS{', args ' + ' '.join(args.webhook_arg) if args.webhook_arg else ''}); "
        f"Kyverno {extra['kyverno_version']} admission controller (out of cluster, `--serverIP`, chart-default flags"
        f"{(' + ' + ' '.join(args.kyverno_arg)) if args.kyverno_arg else ''}, "
        f"ClusterPolicy bench/peers/kyverno/policy.yaml); all on 127.0.0.1",
        f"- Load (`uptime` 1/5/15 min): before {extra['load_before']}, after {extra['load_after']} — "
        "other engineers' work shared the 2 cores",
        f"- Method: serial creates over one keep-alive HTTPS connection, {args.rounds} rounds x {args.per_block} "
        f"pods per case, the three cases interleaved pod by pod (rotating order), {args.warmup} warm-up creates "
        "per case discarded, deletecollection after every round. Both webhooks registered throughout; each "
        "case's namespace is selected by only its webhook's namespaceSelector (none: by neither).",
        "",
        "| case | n | p50 ms | p90 ms | p99 ms | mean ms | max ms | added p50 | added p99 | webhook CPU ms per create |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {"ours": "**ours** (`mcp-sidecar serve`)", "kyverno": "**Kyverno** ClusterPolicy",
              "none": "**no webhook** called"}
    for c in CASES:
        x = s[c]
        added = (f"{fmt(add[c]['p50'])} | {fmt(add[c]['p99'])}" if c in add else "— | —")
        cpu = fmt(bench.cpu_s[c] * 1000 / n_measured) if c in bench.cpu_s else "—"
        lines.append(f"| {labels[c]} | {x['n']} | {fmt(x['p50'])} | {fmt(x['p90'])} | {fmt(x['p99'])} | "
                     f"{fmt(x['mean'])} | {fmt(x['max'])} | {added} | {cpu} |")
    ours99, ky99 = add["ours"]["p99"], add["kyverno"]["p99"]
    lines += [
        "",
        f"- Added at p99 (case − none): ours **{fmt(ours99)} ms**, Kyverno **{fmt(ky99)} ms**; "
        f"at p50: ours {fmt(add['ours']['p50'])} ms, Kyverno {fmt(add['kyverno']['p50'])} ms; "
        f"mean: ours {fmt(add['ours']['mean'])} ms, Kyverno {fmt(add['kyverno']['mean'])} ms.",
        f"- Goal: added p99 ≤ {TARGET_P99_MS:.0f} ms — **{'met' if ours99 <= TARGET_P99_MS else 'NOT met'}**; "
        f"≤ Kyverno's — **{'met' if ours99 <= ky99 else 'NOT met'}**.",
        "- Per-round p50 (ms), ours / Kyverno / none: "
        + "; ".join(f"{fmt(r['ours'])} / {fmt(r['kyverno'])} / {fmt(r['none'])}" for r in bench.round_p50) + ".",
        "- API server's mean call time per webhook (`apiserver_admission_webhook_admission_duration_seconds`, "
        "all calls incl. warm-up and probes): "
        + "; ".join(f"`{n}` {fmt(m)} ms ({int(c)} calls)" for n, (m, c) in sorted(extra["apiserver"].items())) + ".",
        f"- Kyverno's registered pod webhook(s): {extra['kyverno_webhooks']}. It wrote {bench.reports_deleted} "
        "admission reports (EphemeralReports; deleted after every round, as its reports controller would).",
        f"- Verified: the stored Kyverno-mutated pod's mcp-sidecar container, volumes and status annotation equal "
        f"our webhook's ({'identical' if not extra['difference'] else 'DIFFER in ' + ', '.join(extra['difference'])}); "
        f"every create response checked — {'all' if not bench.mismatches else 'NOT all'} ours/Kyverno pods carry "
        f"`mcp-sidecar`, no none pod does"
        + (f" (mismatches: {bench.mismatches[:5]})" if bench.mismatches else "") + ".",
        "",
    ]
    return "\n".join(lines)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The flags passed through to the two webhooks (bench_peers.py and rollout_storm.py)."""
    parser.add_argument("--webhook-arg", action="append", default=[],
                        help="extra argument for `mcp-sidecar serve` (repeat; e.g. --webhook-arg=--workers --webhook-arg=2)")
    parser.add_argument("--kyverno-arg", action="append", default=[],
                        help="extra Kyverno flag, after the chart defaults (e.g. --kyverno-arg=--admissionReports=false)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=100, help="pods per case per round")
    parser.add_argument("--warmup", type=int, default=20, help="discarded creates per case")
    add_server_args(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown file the section is appended to")
    parser.add_argument("--max-seconds", type=int, default=600, help="watchdog for the whole run")
    args = parser.parse_args()

    arm_watchdog(args.max_seconds)

    extra: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_before": load(),
                   "k8s": pinned_kubernetes_version()}
    try:
        ensure_binaries(("etcd", "kube", "tools"))
        ensure_built()
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
            cp = stack.enter_context(ControlPlane(build=False, log=lambda m: log(f"control plane: {m}")))
            for ns in NAMESPACES.values():
                cp.create_namespace(ns)
            hook = stack.enter_context(WebhookProcess(workdir / "webhook", extra_args=tuple(args.webhook_arg)))
            cp.register_mutating_webhook(
                hook.url + "/mutate", hook.ca_pem, probe_namespace=NAMESPACES["ours"],
                namespace_selector=our_namespace_selector(["kyverno", NAMESPACES["kyverno"], NAMESPACES["none"]]))
            kyverno = stack.enter_context(KyvernoProcess(
                cp, workdir / "kyverno", excluded_namespaces=[NAMESPACES["ours"], NAMESPACES["none"]], extra_args=args.kyverno_arg,
                log=lambda m: log(f"kyverno: {m}")))
            kyverno.wait_mutates(NAMESPACES["kyverno"], json.loads(pod_body("probe", True)))
            extra["kyverno_version"] = kyverno.version()
            extra["kyverno_webhooks"] = "; ".join(
                f"`{w['name']}` failurePolicy {w.get('failurePolicy')}, timeout {w.get('timeoutSeconds')} s, "
                f"matchConditions {[m['name'] for m in w.get('matchConditions') or []]}, "
                f"objectSelector {json.dumps(w.get('objectSelector') or {})}"
                for w in kyverno.mutating_webhooks()
                if any("pods" in r.get("resources", []) for r in w.get("rules") or []))
            extra["difference"] = check_same_sidecar(cp)
            if extra["difference"]:
                log(f"WARNING: Kyverno's sidecar differs from ours in {extra['difference']}")
            api = ApiClient(cp)
            stack.callback(api.close)
            bench = PeerBench(api, {"ours": hook.process.pid, "kyverno": kyverno.pid})
            gc.collect()
            gc.disable()
            try:
                bench.run(args.rounds, args.per_block, args.warmup)
            finally:
                gc.enable()
            extra["apiserver"] = apiserver_webhook_means(cp)
    finally:
        signal.alarm(0)
    extra["load_after"] = load()
    text = report(args, bench, extra)
    print(text)
    new = not args.out.exists()
    with open(args.out, "a") as fh:
        fh.write(("# Against the real peer: Kyverno (bench/cluster/bench_peers.py, rollout_storm.py)\n\n" if new else "\n")
                 + text)
    log(f"appended to {args.out}")
    return 1 if bench.mismatches or extra["difference"] else 0


if __name__ == "__main__":
    sys.exit(main())
