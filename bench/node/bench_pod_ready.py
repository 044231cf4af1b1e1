"""Pod create -> Ready on a real node: what the injected MCP sidecar adds, and what the node costs.

    .venv/bin/python bench/node/bench_pod_ready.py                  # 20 pods per case (root)
    .venv/bin/python bench/node/bench_pod_ready.py --pods 30
    MCP_NODE_ATTACH=/tmp/node-state.json .venv/bin/python bench/node/bench_pod_ready.py   # a running node

Starts the control plane and one node (tests/cluster/node.py), imports the images built from the
project's Dockerfiles (tests/cluster/images.py) and installs the Helm chart (two injector pods).
Then, in one fresh namespace, pod by pod and alternating between the cases:

  labelled     a Redis pod (password from a Secret) labelled mcp-sidecar.dox/backend=redis: the
               injector adds the sidecar with the default probes (GET /livez: startup every 1 s,
               readiness every 5 s, liveness every 20 s; no initial delays)
  unlabelled   the same pod without the label: no sidecar
  labelled-1cpu  labelled, with the per-pod override `mcp-sidecar.dox/cpu-limit: "1"`: how much of
               the start is the default 100m CPU limit throttling the sidecar's Python imports
  seed-probes  labelled, with the seed design's probes (tcpSocket 9000, readiness initialDelay 5 s,
               period 10 s; liveness initialDelay 15 s) set through the chart's sidecarConfig
               -- see --no-seed-probes

Timed span: POST of the pod -> every container Ready (the pod's Ready condition), polled every
50 ms through the API. Pods are deleted (grace 0) after each measurement, so the node runs one test
pod at a time. Also reported: RSS of kubelet, containerd (+ shims), kube-proxy, kube-scheduler with
the injector pods and one test pod running, and how long the node took to start.

Prints a Markdown section for BENCHMARKS.md. Not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.controlplane import ControlPlane, ensure_binaries  # noqa: E402
from tests.cluster.node import Node, why_not_runnable  # noqa: E402
from tests.node.kube import install_injector  # noqa: E402

BACKEND = "mcp-sidecar.dox/backend"
# The seed design's probes (tcpSocket, initial delays 5 s / 15 s), for comparison with the defaults.
# Helm merges maps, so the default httpGet handlers and the startup probe's keys are nulled out.
SEED_PROBES = (
    "--set", "sidecarConfig.sidecar.startupProbe.httpGet=null",
    "--set", "sidecarConfig.sidecar.startupProbe.periodSeconds=null",
    "--set", "sidecarConfig.sidecar.startupProbe.failureThreshold=null",
    "--set", "sidecarConfig.sidecar.readinessProbe.httpGet=null",
    "--set", "sidecarConfig.sidecar.readinessProbe.timeoutSeconds=null",
    "--set", "sidecarConfig.sidecar.livenessProbe.httpGet=null",
    "--set", "sidecarConfig.sidecar.livenessProbe.timeoutSeconds=null",
    "--set", "sidecarConfig.sidecar.livenessProbe.failureThreshold=null",
    "--set-json", 'sidecarConfig.sidecar.readinessProbe={"tcpSocket":{"port":"mcp"},"initialDelaySeconds":5,"periodSeconds":10}',
    "--set-json", 'sidecarConfig.sidecar.livenessProbe={"tcpSocket":{"port":"mcp"},"initialDelaySeconds":15,"periodSeconds":20}',
)


def redis_pod(name: str, labelled: bool, annotations: dict[str, str] | None = None) -> dict:
    labels = {"app": "bench"} | ({BACKEND: "redis"} if labelled else {})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "redis", "image": "redis:7.4",
                "args": ["--requirepass", "$(REDIS_PASSWORD)"],
                "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}}],
                "ports": [{"name": "redis", "containerPort": 6379}],
                "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def pod_for(case: str, name: str) -> dict:
    annotations = {"mcp-sidecar.dox/cpu-limit": "1"} if case == "labelled-1cpu" else {}
    return redis_pod(name, case != "unlabelled", annotations)


def time_to_ready(cp: ControlPlane, ns: str, pod: dict, timeout: float = 120) -> float:
    name = pod["metadata"]["name"]
    t0 = time.monotonic()
    status, body = cp.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    if status != 201:
        raise RuntimeError(f"create {name}: {status} {body}")
    injected = any(c["name"] == "mcp-sidecar" for c in body["spec"]["containers"] + body["spec"].get("initContainers", []))
    if (BACKEND in pod["metadata"]["labels"]) != injected:
        raise RuntimeError(f"{name}: injected={injected} but labelled={BACKEND in pod['metadata']['labels']}")
    while True:
        _, got = cp.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
        conds = {c["type"]: c["status"] for c in got.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            elapsed = time.monotonic() - t0
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{name} not Ready after {timeout}s: {json.dumps(got.get('status'))[:1500]}")
        time.sleep(0.05)
    cp.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0")
    cp.wait_for(lambda: cp.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")[0] == 404, 60, f"{name} gone")
    return elapsed


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"{statistics.median(values):.2f} s | {q[8]:.2f} s | {min(values):.2f} s | {max(values):.2f} s"


def run(args: argparse.Namespace) -> str:
    attach = os.environ.get("MCP_NODE_ATTACH")
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        if attach:
            node = Node.attach(attach)
            node_start = None
        else:
            from tests.cluster.images import ALL_IMAGES, ensure_images

            ensure_binaries(("etcd", "kube", "tools"))
            archives = ensure_images(names=ALL_IMAGES, log=lambda m: print(m, file=sys.stderr, flush=True))
            t0 = time.monotonic()
            cp = stack.enter_context(ControlPlane(build=False))
            node = stack.enter_context(Node(cp))
            node_start = time.monotonic() - t0
            node.import_images(a.path for a in archives)
        cp = node.cp
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-helm-")))
        cases = ["labelled", "unlabelled", "labelled-1cpu"] + ([] if args.no_seed_probes else ["seed-probes"])
        results: dict[str, list[float]] = {c: [] for c in cases}
        ns = f"bench-ready-{uuid.uuid4().hex[:6]}"
        cp.create_namespace(ns)
        cp.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "namespace": ns},
                  "stringData": {"password": "bench"}})
        try:
            for phase in (["labelled", "unlabelled", "labelled-1cpu"], ["seed-probes"] if "seed-probes" in cases else []):
                if not phase:
                    continue
                install_injector(cp, home, *(SEED_PROBES if phase == ["seed-probes"] else ()))
                for case in phase:  # one warm-up pod per case (image layers, page cache)
                    time_to_ready(cp, ns, pod_for(case, f"warm-{case}"))
                for i in range(args.pods):
                    for case in phase if i % 2 == 0 else reversed(phase):
                        results[case].append(time_to_ready(cp, ns, pod_for(case, f"{case}-{i}")))
                    print(f"  {i + 1}/{args.pods}: " + ", ".join(f"{c} {results[c][-1]:.2f}s" for c in phase),
                          file=sys.stderr, flush=True)
                if "unlabelled" in phase:
                    cp.apply(redis_pod("rss-probe", True), "-n", ns)
                    cp.kubectl("wait", "-n", ns, "pod/rss-probe", "--for=condition=Ready", "--timeout=120s", timeout=130)
                    rss = node.rss_mib() if not attach else {}
                    running = len(cp.kubectl_json("get", "pods", "-A", "--field-selector=status.phase=Running")["items"])
                    cp.kubectl("delete", "pod", "-n", ns, "rss-probe", "--grace-period=0", check=False)
            if "seed-probes" in cases:
                install_injector(cp, home)  # back to the defaults
        finally:
            cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    lines = [
        f"### Pod create -> Ready on a real node ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `.venv/bin/python bench/node/bench_pod_ready.py --pods {args.pods}"
        + (" --no-seed-probes" if args.no_seed_probes else "") + "`"
        + (" (attached to a running node)" if attach else ""),
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}. "
        "Node: kubelet/kube-proxy/kube-scheduler v1.34.4 built from Go modules, containerd 1.6.20 + runc (Debian), "
        "images from the project's Dockerfiles built with buildah on Debian stand-in bases. "
        f"Load: one test pod at a time, {args.pods} pods per case, alternating.",
        "",
        "| case | p50 | p90 | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, values in results.items():
        lines.append(f"| {case} | {summary(values)} |")
    lab, unl = statistics.median(results["labelled"]), statistics.median(results["unlabelled"])
    lines += ["", f"What the sidecar adds (p50, default probes): {lab - unl:+.2f} s."]
    lines.append(f"With a 1-CPU limit instead of 100m: {statistics.median(results['labelled-1cpu']) - unl:+.2f} s.")
    if "seed-probes" in results:
        lines.append(f"With the seed's probes: {statistics.median(results['seed-probes']) - unl:+.2f} s.")
    if node_start is not None:
        lines.append(f"Control plane + node start -> node Ready: {node_start:.1f} s.")
    if rss:
        lines.append(f"Node RSS with {running} pods running (2 injector pods + 1 injected Redis pod): "
                     + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items())
                     + f"; total {sum(rss.values()):.0f} MiB.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--no-seed-probes", action="store_true", help="skip the seed-probes case")
    args = parser.parse_args()
    reason = why_not_runnable()
    if reason and "not built" not in reason and not os.environ.get("MCP_NODE_ATTACH"):
        print(f"cannot run a node here: {reason}", file=sys.stderr)
        return 2
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
