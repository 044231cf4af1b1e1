"""Bench-only: our admission app served by hypercorn over TLS with ALPN h2 (HTTP/2), for the rollout storm.

    .cache/bench-h2-venv/bin/python bench/cluster/h2_server.py --port 8443 \\
        --tls-cert-file tls.crt --tls-key-file tls.key [--config FILE] [--alpn h2,http/1.1]

Why: `mcp-sidecar serve` runs uvicorn, which speaks HTTP/1.1 only. The API server's webhook client
(Go net/http) keeps at most a few idle connections per host, so a burst of admission calls opens
hundreds of fresh TLS connections to an HTTP/1.1 webhook; to a webhook offering h2 it multiplexes
every call over one connection (as it does with Kyverno). This server answers the same reviews with
the same app (``webhook.admission.server.create_app`` with a ConfigStore and Metrics, as ``serve()``
builds it) so the storm can tell whether the protocol closes the gap. It is not a product server:
no certificate reload, none of httpguard's slow-client bounds (hypercorn has its own timeouts), no
workers. Its uvicorn-free dependencies (hypercorn, h2) live in a separate venv, .cache/bench-h2-venv,
that sees .venv's packages through a .pth file (``ensure_venv``), so .venv stays as constraints.txt pins it.

``H2WebhookProcess`` starts it like tests/support/webhook_process.WebhookProcess starts `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = ROOT / ".cache" / "bench-h2-venv"
VENV_PYTHON = VENV / "bin" / "python"
#: Pinned so reruns measure the same server (h2 4.x, priority, wsproto come with it).
HYPERCORN = "hypercorn==0.18.0"

sys.path.insert(0, str(ROOT))


def ensure_venv() -> Path:
    """Create .cache/bench-h2-venv (if missing): a venv on .venv's interpreter base that also sees
    .venv's site-packages (a .pth line), with hypercorn installed into it alone."""
    if VENV_PYTHON.exists() and subprocess.run([str(VENV_PYTHON), "-c", "import hypercorn, h2"],
                                               capture_output=True).returncode == 0:
        return VENV_PYTHON
    base = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import sys; print(sys._base_executable)"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    site = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    own_site = subprocess.run([str(VENV_PYTHON), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    # "zz_" sorts last: the venv's own packages (hypercorn's deps) come before .venv's on sys.path.
    (Path(own_site) / "zz_main_venv.pth").write_text(site + "\n")
    subprocess.run(["nice", "-n", "10", str(VENV_PYTHON), "-m", "pip", "install", "-q", HYPERCORN], check=True)
    return VENV_PYTHON


def build_app(config_path: str | None, watch_seconds: float):
    """The admission app exactly as ``serve()`` builds it for one process (minus the cert reloader)."""
    from webhook.admission.server import _record_reload, create_app
    from webhook.shared.config_store import ConfigStore
    from webhook.shared.metrics import Metrics

    metrics = Metrics()
    store = ConfigStore(config_path, on_reload=lambda result, cfg: _record_reload(metrics, result, cfg))
    return create_app(store, metrics, config_poll_seconds=watch_seconds, cert_poll_seconds=watch_seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert-file", required=True)
    parser.add_argument("--tls-key-file", required=True)
    parser.add_argument("--config")
    parser.add_argument("--watch-seconds", type=float, default=2.0)
    parser.add_argument("--drain-seconds", type=float, default=20.0)
    parser.add_argument("--alpn", default="h2,http/1.1",
                        help="ALPN protocols offered, in preference order (http/1.1 alone: hypercorn without HTTP/2)")
    # hypercorn's defaults are 100 streams and a listen backlog of 100. Go's HTTP/2 client opens another
    # connection when every stream of its connections is taken, and the storm opens ~250 at once.
    parser.add_argument("--max-concurrent-streams", type=int, default=250, help="per HTTP/2 connection (Go's server default)")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog (uvicorn's default)")
    parser.add_argument("--keep-alive-seconds", type=float, default=5.0, help="idle connection timeout (uvicorn's default)")
    args = parser.parse_args()

    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.certfile, config.keyfile = args.tls_cert_file, args.tls_key_file
    config.alpn_protocols = args.alpn.split(",")
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = args.drain_seconds
    config.ssl_handshake_timeout = 5.0  # as httpguard.TLS_HANDSHAKE_TIMEOUT_SECONDS
    config.h2_max_concurrent_streams = args.max_concurrent_streams
    config.backlog = args.backlog
    config.keep_alive_timeout = args.keep_alive_seconds
    app = build_app(args.config, args.watch_seconds)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)

    # uvloop, as `serve` uses it (httpguard.handshake_bounded_loop).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


def _webhook_process_class():
    from tests.support.processes import wait_listening
    from tests.support.webhook_process import WebhookProcess

    class H2WebhookProcess(WebhookProcess):
        """WebhookProcess (same throwaway CA and serving certificate) running this server instead of `serve`.
        ``extra_args`` go to h2_server.py (e.g. ``("--alpn", "http/1.1")``)."""

        def start(self, timeout: float = 30.0) -> "H2WebhookProcess":
            cmd = [str(ensure_venv()), str(Path(__file__).resolve()), "--host", "127.0.0.1", "--port", str(self.port),
                   "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
                   "--watch-seconds", str(self.watch_seconds), *self.extra_args]
            if self.config_path:
                cmd += ["--config", str(self.config_path)]
            self._log = open(self.log_file, "ab")
            self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                            cwd=str(ROOT))
            try:
                wait_listening(self.process, self.port, what="h2 webhook", log=self.log, timeout=timeout,
                               tls_ca=self.ca_file)
            except RuntimeError:
                self.stop()
                raise
            return self

    return H2WebhookProcess


def __getattr__(name: str):
    # Lazy, so running this file as the server does not import the test support (trustme) first.
    if name == "H2WebhookProcess":
        return _webhook_process_class()
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
