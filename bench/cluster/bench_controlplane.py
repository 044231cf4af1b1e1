"""Benchmark the local control plane: build time (warm, optionally cold) and start/stop time.

    .venv/bin/python bench/cluster/bench_controlplane.py            # warm build + 3 start/stop cycles
    .venv/bin/python bench/cluster/bench_controlplane.py --cold     # also a cold build (empty Go caches
                                                                    # in a temp dir: ~1 GB download,
                                                                    # ~20 min on 2 cores)

Prints one JSON object (seconds, peak RSS in MiB of the build's process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.controlplane import BUILD_SCRIPT, ControlPlane  # noqa: E402


def timed_build(env: dict[str, str] | None = None, parts: tuple[str, ...] = ()) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    subprocess.run(["bash", str(BUILD_SCRIPT), *parts], check=True, cwd=ROOT, env=env)
    elapsed = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, max over waited children
    return {"seconds": round(elapsed, 1), "peak_rss_mib": round(max(peak, before) / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also measure a cold build in empty caches")
    parser.add_argument("--cycles", type=int, default=3, help="start/stop cycles to time")
    args = parser.parse_args()

    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
        "go": subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip(),
    }
    if args.cold:
        tmp = Path(tempfile.mkdtemp(prefix="cp-cold-"))
        try:
            env = dict(os.environ, GOMODCACHE=str(tmp / "mod"), GOCACHE=str(tmp / "build"),
                       MCP_CLUSTER_CACHE=str(tmp / "cache"))
            result["cold_build"] = timed_build(env, ("etcd", "kube"))
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    result["warm_build_noop"] = timed_build()

    starts, stops = [], []
    for _ in range(args.cycles):
        cp = ControlPlane(build=False, log=lambda _msg: None)
        t0 = time.monotonic()
        cp.start()
        starts.append(round(time.monotonic() - t0, 2))
        t1 = time.monotonic()
        cp.stop()
        stops.append(round(time.monotonic() - t1, 2))
    result["start_to_ready_seconds"] = starts
    result["stop_seconds"] = stops
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
