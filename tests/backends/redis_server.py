"""Start and stop a real ``redis-server`` (Debian package) on a free loopback port.

No pytest here: the sidecar tests, the benchmark and the demo all use it.

    with RedisServer(password="s3cret") as redis:
        print(redis.port)
        redis.stop(); redis.start()   # same port, same password: a restart as a pod would see it

    RedisServer(tls=TlsFiles(cert="srv.pem", key="srv.key", ca="ca.pem"))  # TLS-only listener
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass

from tests.support.processes import free_port


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only Redis (the Debian build supports TLS)."""

    cert: str
    key: str
    ca: str
    #: ``--tls-auth-clients yes``: the server requires a client certificate signed by ``ca``.
    auth_clients: bool = False
    #: What this module's own PING/command present when ``auth_clients`` is on.
    client_cert: str | None = None
    client_key: str | None = None
    #: The name the server certificate carries (checked by this module's own PING); None: the host.
    server_name: str | None = None


class RedisServer:
    def __init__(self, *, port: int | None = None, password: str | None = None, binary: str = "redis-server",
                 extra_args: list[str] | None = None, tls: TlsFiles | None = None):
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(f"{binary} not found: install the Debian package redis-server (scripts/setup.sh)")
        self.binary = path
        self.port = port or free_port()
        self.password = password
        self.extra_args = extra_args or []
        self.tls = tls
        self.host = "127.0.0.1"
        self._dir = tempfile.mkdtemp(prefix="redis-test-")
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                "--dir", self._dir, "--daemonize", "no", "--loglevel", "warning", *self.extra_args]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls.cert,
                         "--tls-key-file", self.tls.key, "--tls-ca-cert-file", self.tls.ca,
                         "--tls-auth-clients", "yes" if self.tls.auth_clients else "no"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {err.strip()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s")

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.tls:
            context = ssl.create_default_context(cafile=self.tls.ca)
            if self.tls.client_cert:
                context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
            sock = context.wrap_socket(sock, server_hostname=self.tls.server_name or self.host)
        return sock

    def ping(self) -> bool:
        """True when the server answers PING (authenticating first when a password is set)."""
        try:
            with self._connect(0.5) as s:
                if self.password:
                    s.sendall(_command("AUTH", self.password))
                    s.recv(64)
                s.sendall(_command("PING"))
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command, return the raw RESP reply (for tests that need no client library)."""
        with self._connect(2) as s:
            if self.password:
                s.sendall(_command("AUTH", self.password))
                s.recv(64)
            s.sendall(_command(*args))
            return s.recv(65536)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


if __name__ == "__main__":  # manual use: python -m tests.backends.redis_server
    with RedisServer(password=os.environ.get("REDIS_PASSWORD")) as srv:
        print(f"redis-server on 127.0.0.1:{srv.port}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
