"""Benchmark the injection engine and the full AdmissionReview path, in process (no HTTP).

    .venv/bin/python bench/webhook/engine_bench.py              # Markdown table on stdout
    .venv/bin/python bench/webhook/engine_bench.py --json out.json --seconds 1.5

Cases: the labelled Bitnami Redis StatefulSet pod template of ``tests/golden/inputs/`` (a typical
pod), then the same pod with 250/500/1,000/2,000/4,000 extra env vars on the Redis container (the
1,000 one is about 64 KB of JSON, the size of pod that once took Istio's injector seconds).

Per case:

- ``evaluate``: ``webhook.engine.injection.evaluate(pod, None, config)`` alone;
- ``review``: what one POST /mutate costs minus HTTP: ``webhook.admission.review.review(raw_bytes)``
  (JSON decode + engine + base64 patch) plus the ``json.dumps`` of the response the server does.

Then the configuration: ``parse_config`` of the full seed file (webhook/engine/defaults.yaml, what
the chart's ConfigMap holds), as the server does at start and on every reload.

Each is timed call by call with ``time.perf_counter_ns`` (median, p99, mean over many runs, after a
warm-up, sampled in interleaved rounds over all cases; the GC stays on as in the server). Growth: ``(median(N) - median(typical)) / N`` is the
cost of one env var; it must stay flat as N doubles (linear growth), and a least-squares slope
over all sizes is printed with it.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.webhook.helpers import admission_review  # noqa: E402
from webhook.admission.review import review  # noqa: E402
from webhook.engine.config import default_config, parse_config  # noqa: E402
from webhook.engine.injection import evaluate  # noqa: E402
from webhook.cli.manifests import load_documents  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "inputs" / "bitnami-redis-statefulset.yaml"
ENV_SIZES = (250, 500, 1000, 2000, 4000)
#: Engine targets from issue 2 (milliseconds).
TARGET_TYPICAL_MS = 1.0
TARGET_64K_MS = 10.0


def typical_pod() -> dict[str, Any]:
    """The labelled Redis StatefulSet's pod template, as the Pod the API server would admit."""
    docs = [d for d in load_documents(GOLDEN.read_text()) if isinstance(d, dict) and d.get("kind") == "StatefulSet"]
    template = copy.deepcopy(docs[0]["spec"]["template"])
    metadata = template["metadata"]
    metadata.update({"name": "redis-master-0", "namespace": "default", "generateName": "redis-master-"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def env_pod(count: int) -> dict[str, Any]:
    """The typical pod with ``count`` extra env vars on its Redis container (1,000 ~ 64 KB JSON).

    Mostly literal values, every 10th a ``secretKeyRef`` and every 10th a ``configMapKeyRef``, so
    the engine's env scans (password detection) see realistic entries; the real REDIS_PASSWORD
    entry stays last, the worst case for a scan.
    """
    pod = typical_pod()
    redis = next(c for c in pod["spec"]["containers"] if c["name"] == "redis")
    extra: list[dict[str, Any]] = []
    for i in range(count):
        name = f"APP_SETTING_{i:05d}"
        if i % 10 == 3:
            extra.append({"name": name, "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": f"k{i:05d}"}}})
        elif i % 10 == 7:
            extra.append({"name": name, "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": f"k{i:05d}"}}})
        else:
            extra.append({"name": name, "value": f"value-{i:05d}-" + "x" * 4})
    redis["env"] = extra + redis.get("env", [])
    return pod


def json_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def calibrate(fn: Callable[[], Any], seconds: float, min_runs: int = 100, max_runs: int = 100_000) -> int:
    """Warm ``fn`` up and return how many calls fill about ``seconds``."""
    for _ in range(20):
        fn()
    t0 = time.perf_counter_ns()
    for _ in range(20):
        fn()
    estimate = max((time.perf_counter_ns() - t0) / 20, 1.0)
    return int(max(min_runs, min(max_runs, seconds * 1e9 / estimate)))


def sample(fn: Callable[[], Any], runs: int, into: list[int], cpu: list[int]) -> None:
    """Time ``runs`` calls of ``fn`` one by one (wall nanoseconds) into ``into``; add the thread CPU
    time of the whole batch to ``cpu`` (preemption by other processes inflates wall time, not this)."""
    clock = time.perf_counter_ns
    cpu0 = time.thread_time_ns()
    for _ in range(runs):
        start = clock()
        fn()
        into.append(clock() - start)
    cpu[0] += time.thread_time_ns() - cpu0


def summary(samples: list[int], cpu_ns: int) -> dict[str, float]:
    """Median, p99, mean and max wall time and mean thread CPU time per call, in milliseconds."""
    samples = sorted(samples)
    runs = len(samples)
    return {
        "cpu_mean_ms": cpu_ns / runs / 1e6,
        "runs": runs,
        "median_ms": statistics.median(samples) / 1e6,
        "p99_ms": samples[min(runs - 1, int(runs * 0.99))] / 1e6,
        "mean_ms": sum(samples) / runs / 1e6,
        "max_ms": samples[-1] / 1e6,
    }


def run(seconds: float, rounds: int) -> dict[str, Any]:
    """Sample every case in ``rounds`` interleaved rounds so that a burst of load elsewhere on the
    machine spreads over all cases instead of skewing one."""
    config = default_config()
    cases: list[tuple[str, int, dict[str, Any]]] = [("typical Redis pod", 0, typical_pod())]
    cases += [(f"+{n:,} env vars", n, env_pod(n)) for n in ENV_SIZES]
    plans = []
    for label, count, pod in cases:
        result = evaluate(pod, None, config)
        assert result.injected, f"{label}: not injected: {result.message}"
        raw = json.dumps(admission_review(pod), separators=(",", ":")).encode()

        def engine(pod: dict[str, Any] = pod) -> Any:
            return evaluate(pod, None, config)

        def full(raw: bytes = raw) -> bytes:
            return json.dumps(review(raw, config).body, separators=(",", ":")).encode()

        assert json.loads(full())["response"]["patchType"] == "JSONPatch"
        per_round = seconds / rounds
        plans.append({
            "case": label, "env_vars": count, "pod_json_bytes": json_size(pod), "review_bytes": len(raw),
            "fns": {"evaluate": (engine, calibrate(engine, per_round)), "review": (full, calibrate(full, per_round))},
            "samples": {"evaluate": [], "review": []},
            "cpu": {"evaluate": [0], "review": [0]},
        })
    for _ in range(rounds):
        for plan in plans:
            for key, (fn, runs) in plan["fns"].items():
                gc.collect()
                sample(fn, runs, plan["samples"][key], plan["cpu"][key])
    rows = []
    for plan in plans:
        row = {k: plan[k] for k in ("case", "env_vars", "pod_json_bytes", "review_bytes")}
        row.update({key: summary(samples, plan["cpu"][key][0]) for key, samples in plan["samples"].items()})
        rows.append(row)
    base = rows[0]
    for row in rows[1:]:
        n = row["env_vars"]
        row["evaluate_us_per_env_var"] = (row["evaluate"]["median_ms"] - base["evaluate"]["median_ms"]) * 1000 / n
        row["review_us_per_env_var"] = (row["review"]["median_ms"] - base["review"]["median_ms"]) * 1000 / n
    seed = (ROOT / "webhook" / "engine" / "defaults.yaml").read_text()

    def parse() -> Any:
        return parse_config(seed)

    parse_samples, parse_cpu = [], [0]
    sample(parse, calibrate(parse, seconds), parse_samples, parse_cpu)
    return {
        "python": platform.python_version(),
        "machine": {"nproc": os.cpu_count(), "load": os.getloadavg()},
        "config_parse": summary(parse_samples, parse_cpu[0]),
        "rows": rows,
        "slope_us_per_env_var": {k: _slope(rows, k) for k in ("evaluate", "review")},
    }


def _slope(rows: list[dict[str, Any]], key: str) -> float:
    xs = [r["env_vars"] for r in rows]
    ys = [r[key]["median_ms"] * 1000 for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def markdown(report: dict[str, Any]) -> str:
    out = [
        "| pod | pod JSON | review JSON | `evaluate` median | `evaluate` p99 | `evaluate` CPU/call | µs / env var "
        "| `review()` median | `review()` p99 | `review()` CPU/call | µs / env var |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        ev, rv = r["evaluate"], r["review"]
        per_e = f"{r['evaluate_us_per_env_var']:.3f}" if r["env_vars"] else "—"
        per_r = f"{r['review_us_per_env_var']:.3f}" if r["env_vars"] else "—"
        out.append(
            f"| {r['case']} | {r['pod_json_bytes'] / 1024:.1f} KiB | {r['review_bytes'] / 1024:.1f} KiB "
            f"| {ev['median_ms']:.3f} ms | {ev['p99_ms']:.3f} ms | {ev['cpu_mean_ms']:.3f} ms | {per_e} "
            f"| {rv['median_ms']:.3f} ms | {rv['p99_ms']:.3f} ms | {rv['cpu_mean_ms']:.3f} ms | {per_r} |"
        )
    slope = report["slope_us_per_env_var"]
    out.append("")
    out.append(
        f"Least-squares slope over all sizes: `evaluate` {slope['evaluate']:.3f} µs per env var, "
        f"`review()` {slope['review']:.3f} µs per env var (Python {report['python']}). Wall-time p99s include preemption "
        f"by other processes (load average at the end: {', '.join('%.2f' % x for x in report['machine']['load'])}); "
        f"\"CPU/call\" is the mean thread CPU time (`time.thread_time_ns`), which preemption does not inflate."
    )
    parse = report["config_parse"]
    out.append(f"Configuration: `parse_config` of the seed file {parse['median_ms']:.3f} ms median, "
               f"{parse['cpu_mean_ms']:.3f} ms CPU/call ({parse['runs']} calls).")
    typical = report["rows"][0]["evaluate"]["median_ms"]
    k64 = next(r for r in report["rows"] if r["env_vars"] == 1000)
    out.append(
        f"Targets: typical pod `evaluate` {typical:.3f} ms (≤ {TARGET_TYPICAL_MS:g} ms: "
        f"{'met' if typical <= TARGET_TYPICAL_MS else 'MISSED'}); "
        f"{k64['pod_json_bytes'] / 1024:.0f} KiB pod `evaluate` {k64['evaluate']['median_ms']:.3f} ms, p99 "
        f"{k64['evaluate']['p99_ms']:.3f} ms (≤ {TARGET_64K_MS:g} ms: "
        f"{'met' if k64['evaluate']['p99_ms'] <= TARGET_64K_MS else 'MISSED'})."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per case and function, over all rounds (default 1.0)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all cases (default 5)")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON here")
    args = parser.parse_args(argv)
    report = run(args.seconds, args.rounds)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
