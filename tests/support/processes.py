"""Starting and stopping the servers that tests, benchmarks and the demo run as subprocesses.

Each server runs in its own process group (``start_new_session=True``) so that stopping it also
stops anything it spawned.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A loopback port free right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(
    process: subprocess.Popen,
    port: int,
    *,
    what: str,
    log: Callable[[], str],
    timeout: float = 20.0,
    tls_ca: Path | None = None,
    interval: float = 0.05,
    connect_timeout: float = 1.0,
) -> None:
    """Return once ``port`` accepts a connection (and a TLS handshake when ``tls_ca`` is given).

    Raises RuntimeError with the process log if it exits first or does not listen within
    ``timeout``; the process is left running in the second case, for the caller to stop.
    """
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=connect_timeout) as raw:
                if context is not None:
                    context.wrap_socket(raw, server_hostname="localhost").close()
                return
        except OSError:
            time.sleep(interval)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s:\n{log()}")


def stop_group(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal the process group, wait, then SIGKILL it if it does not exit in time."""
    if process is None:
        return None
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
