"""Run the real admission server (`mcp-sidecar serve`) as a subprocess over TLS for tests and the demo.

A throwaway CA (trustme) signs a serving certificate for localhost/127.0.0.1; ``ca_pem`` is what a
MutatingWebhookConfiguration's caBundle or an HTTP client needs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trustme

from tests.support.processes import free_port, stop_group, wait_listening


class WebhookProcess:
    def __init__(self, workdir: Path, *, config_path: Path | None = None, port: int | None = None, extra_args: tuple[str, ...] = (), watch_seconds: float = 0.2, kubeconfig: Path | None = None):
        """``kubeconfig`` given: the operator runs too (``extra_args`` may carry its flags)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = config_path
        self.port = port or free_port()
        self.extra_args = extra_args
        self.kubeconfig = kubeconfig
        self.watch_seconds = watch_seconds
        self.ca = trustme.CA()
        self.cert_file = self.workdir / "tls.crt"
        self.key_file = self.workdir / "tls.key"
        self.ca_file = self.workdir / "ca.crt"
        self.log_file = self.workdir / "webhook.log"
        self.write_serving_cert(self.ca)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def write_serving_cert(self, ca: trustme.CA) -> None:
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(self.key_file))
        cert.cert_chain_pems[0].write_to_path(str(self.cert_file))

    def start(self, timeout: float = 20.0) -> "WebhookProcess":
        cmd = [
            sys.executable, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
            "--watch-seconds", str(self.watch_seconds), *self.extra_args,
        ]
        cmd += ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else ["--no-operator"]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        self._log = open(self.log_file, "ab")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(self.process, self.port, what="webhook", log=self.log, timeout=timeout, tls_ca=self.ca_file)
        except RuntimeError:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        code = stop_group(self.process, sig, timeout)
        self._log.close()
        return code

    def __enter__(self) -> "WebhookProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
