"""Several admission server processes on one port (``serve --workers N``).

Why processes: one Python process answers reviews on one core at most (the GIL), and with 64 reviews
in flight Little's law makes the latency 64 / throughput; a second core only helps through a second
process. Each worker is a complete single-process server (its own ConfigStore, certificate reloader,
event loop and graceful drain); this module only starts, watches and stops them.

* **Port**: every worker listens on its own socket with ``SO_REUSEPORT``, so the kernel spreads new
  connections over the workers by hash. With one shared listening socket, the first worker to wake
  accepts the whole burst (uvloop accepts until the backlog is empty) and the API server's few
  kept-alive connections can all land in one process. The supervisor keeps a bound, non-listening
  socket to resolve port 0 and to hold the port while a worker is replaced.
* **Fork, not spawn**: the workers inherit the validated arguments without pickling (the connection
  guard is a class built at run time). The supervisor starts no thread and no event loop, so forking
  is safe; Linux only, as the image is.
* **Signals**: SIGTERM/SIGINT to the supervisor go to every worker as SIGTERM; each drains its
  in-flight reviews (``--drain-seconds``) and exits 0; the supervisor exits 0 when all did. A worker
  that dies on its own is replaced, unless it died during its first seconds (a start-up failure would
  only loop): then the whole server stops with status 1 and the kubelet's backoff takes over.
* **Metrics**: prometheus_client's multiprocess mode. Each worker writes its counters to memory-mapped
  files in a private directory under ``$TMPDIR`` (the chart mounts an emptyDir on /tmp; the root file
  system is read-only) and ``/metrics``, whichever worker answers it, sums the files of all workers.
  The directory is created fresh at start (no counters of an earlier run) and removed at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Callable

log = logging.getLogger("webhook.server")

#: A worker that exits within this many seconds of its start failed to start: stop instead of looping.
START_GRACE_SECONDS = 5.0
#: How long after the drain period the supervisor waits before killing a worker that has not exited.
KILL_AFTER_DRAIN_SECONDS = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket that other sockets of this user may bind too."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def enable_multiprocess_metrics(directory: str) -> None:
    """Make every metric created from now on in this process write to ``directory``.

    prometheus_client picks its value class once, at import, from ``PROMETHEUS_MULTIPROC_DIR``; the
    supervisor imported it before the directory existed, so the worker switches it explicitly before
    it builds its Metrics.
    """
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()


def serve_workers(count: int, run_worker: Callable[[socket.socket, str], int | None], *, host: str, port: int, drain_seconds: float) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; returns the exit status (0: all drained cleanly).

    ``run_worker(sock, metrics_dir)`` runs in the forked child with a bound reuseport socket and
    returns (or raises SystemExit with) the worker's exit status.
    """
    reserved = reuseport_socket(host, port)
    port = reserved.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="mcp-injector-metrics-")
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*_STOP_SIGNALS, signal.SIGCHLD})
    workers: dict[int, float] = {}  # pid -> start time

    def start_one() -> None:
        sys.stdout.flush()  # else the child would write the parent's buffered output again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                # Until uvicorn installs its handlers, a stop request is a clean exit.
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, lambda *_: sys.exit(0))
                signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
                reserved.close()
                enable_multiprocess_metrics(metrics_dir)
                code = run_worker(reuseport_socket(host, port), metrics_dir) or 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                log.exception("admission worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        workers[pid] = time.monotonic()

    status = 0
    try:
        for _ in range(count):
            start_one()
        log.info("admission server: %d workers on port %d (pids %s)", count, port, ", ".join(map(str, workers)))
        while True:
            received = signal.sigtimedwait({*_STOP_SIGNALS, signal.SIGCHLD}, 1.0)
            if received is not None and received.si_signo in _STOP_SIGNALS:
                log.info("admission server: %s, draining %d workers", signal.Signals(received.si_signo).name, len(workers))
                break
            failed = False
            for pid, code, lived in _reap(workers, metrics_dir):
                if lived < START_GRACE_SECONDS:
                    log.error("admission worker %d exited with %s %.1f s after its start: stopping", pid, code, lived)
                    failed = True
                else:
                    log.error("admission worker %d exited with %s: starting a new one", pid, code)
                    start_one()
            if failed:
                status = 1
                break
        reserved.close()  # the port closes once the last worker stops listening
        status = max(status, _stop_all(workers, metrics_dir, drain_seconds))
    finally:
        for pid in list(workers):  # only reached with workers left on an unexpected error
            _kill(pid, signal.SIGKILL)
        # A second stop signal during the drain is pending: consume it rather than let it kill the
        # supervisor (SIGTERM) or raise KeyboardInterrupt (SIGINT) once unblocked.
        while signal.sigtimedwait({*_STOP_SIGNALS, signal.SIGCHLD}, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def _reap(workers: dict[int, float], metrics_dir: str) -> list[tuple[int, int, float]]:
    """Collect exited workers: (pid, exit status, seconds it ran); forget them and their live gauges."""
    from prometheus_client import multiprocess

    gone = []
    while workers:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        started = workers.pop(pid, None)
        if started is None:
            continue
        multiprocess.mark_process_dead(pid, metrics_dir)
        gone.append((pid, os.waitstatus_to_exitcode(raw), time.monotonic() - started))
    return gone


def _stop_all(workers: dict[int, float], metrics_dir: str, drain_seconds: float) -> int:
    """SIGTERM every worker and wait for all; 0 when each exited 0."""
    for pid in workers:
        _kill(pid, signal.SIGTERM)
    status = 0
    deadline = time.monotonic() + drain_seconds + KILL_AFTER_DRAIN_SECONDS
    while workers:
        for pid, code, _ in _reap(workers, metrics_dir):
            if code != 0:
                log.error("admission worker %d exited with %s while stopping", pid, code)
                status = 1
        if not workers:
            break
        if time.monotonic() > deadline:
            log.error("admission workers %s still running %.0f s after SIGTERM: killing them",
                      ", ".join(map(str, workers)), drain_seconds + KILL_AFTER_DRAIN_SECONDS)
            for pid in workers:
                _kill(pid, signal.SIGKILL)
            status = 1
            deadline = float("inf")
        signal.sigtimedwait({signal.SIGCHLD}, 0.2)
    return status


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
