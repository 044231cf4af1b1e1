"""CPU time and resident memory of a process and its descendants, read from /proc (Linux only).

The benchmarks compare webhooks that are one process (Kyverno) or a parent with worker processes
(uvicorn with --workers), so every figure covers the whole tree under the pid they started.

    sampler = TreeSampler(pid).start()   # samples RSS every 50 ms in a thread
    ...                                  # the storm
    usage = sampler.stop()               # {"cpu_s": ..., "peak_rss_mb": ..., "samples": ...}
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat's ppid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of these processes (threads included; exited children are not)."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


class TreeSampler:
    """Peak summed RSS (sampled) and CPU seconds used between start() and stop()."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_rss = 0
        self.samples = 0

    def start(self) -> "TreeSampler":
        self.pids = descendants(self.pid)
        self.cpu0 = cpu_seconds(self.pids)
        self.rss0 = rss_bytes(self.pids)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pids))
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        pids = descendants(self.pid)
        return {
            "cpu_s": cpu_seconds(pids) - self.cpu0,
            "rss_before_mb": self.rss0 / 2**20,
            "peak_rss_mb": max(self.peak_rss, rss_bytes(pids)) / 2**20,
            "rss_after_mb": rss_bytes(pids) / 2**20,
            "samples": self.samples,
        }
