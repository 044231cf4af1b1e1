"""TLS test material and a TLS + basic-auth front, for the sidecars against real TLS datastores.

* :class:`TestPKI` writes a test CA, a server certificate that names a Service (not localhost, as
  in a pod: the sidecar dials loopback, the certificate names ``redis-master.<ns>.svc...``), a
  client certificate, and a second CA that signed nothing here (the "wrong CA").
* :class:`TlsFront` is Debian's nginx terminating TLS with ``auth_basic`` (user ``elastic``) in
  front of a plain-HTTP Elasticsearch node: it stands in for ES 8 security, which our
  Maven-assembled node (no x-pack) lacks. Same outside behaviour for the sidecar: HTTPS only, a
  certificate from the cluster's CA, 401 + ``WWW-Authenticate: Basic`` without the password.

No pytest here: tests and manual runs share it.

    pki = TestPKI(tmp_dir, "elasticsearch-master.demo.svc")
    with TlsFront(upstream_port=es.port, pki=pki, password="pw") as front:
        print(front.url)   # https://127.0.0.1:<port>
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.processes import free_port, stop_group, wait_listening


class TestPKI:
    """PEM files under ``directory``: ``ca.pem``, ``server.pem``/``server.key`` (naming ``server_names``),
    ``client.pem``/``client.key``, and ``other-ca.pem`` (a CA that signed none of them)."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: str | Path, *server_names: str):
        import trustme

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server_names = server_names or ("redis-master.demo.svc.cluster.local",)
        ca, other = trustme.CA(organization_name="mcp-sidecar test CA"), trustme.CA()
        server = ca.issue_cert(*self.server_names)
        client = ca.issue_cert("mcp-sidecar", common_name="mcp-sidecar")
        ca.cert_pem.write_to_path(str(self.ca))
        other.cert_pem.write_to_path(str(self.other_ca))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    @property
    def server_name(self) -> str:
        return self.server_names[0]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def other_ca(self) -> Path:
        return self.dir / "other-ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def client_context(self) -> ssl.SSLContext:
        """What a well-configured client uses: this CA, the Service name checked, the client cert."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def nginx_binary() -> str | None:
    """Debian installs nginx in /usr/sbin, which a non-root PATH lacks."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class TlsFront:
    """nginx: HTTPS on a free loopback port, basic auth for ``user``/``password``, proxying to
    ``http://127.0.0.1:<upstream_port>``. One process (``master_process off``), all files in a temp
    dir, so it runs as any user and leaves nothing behind."""

    def __init__(self, *, upstream_port: int, pki: TestPKI, user: str = "elastic", password: str,
                 port: int | None = None):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx not found: install the Debian package nginx (scripts/setup.sh)")
        self.binary = binary
        self.upstream_port = upstream_port
        self.pki = pki
        self.user, self.password = user, password
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="tls-front-"))
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _config(self) -> str:
        d = self._dir
        salt = os.urandom(8)
        digest = base64.b64encode(hashlib.sha1(self.password.encode() + salt).digest() + salt).decode()
        (d / "htpasswd").write_text(f"{self.user}:{{SSHA}}{digest}\n")
        temps = "\n".join(f"  {name}_temp_path {d / name};"
                          for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {d / 'nginx.pid'};
error_log {d / 'error.log'} warn;
events {{ worker_connections 128; }}
http {{
  access_log off;
{temps}
  server {{
    listen {self.host}:{self.port} ssl;
    ssl_certificate {self.pki.server_cert};
    ssl_certificate_key {self.pki.server_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 2m;
    auth_basic "security";
    auth_basic_user_file {d / 'htpasswd'};
    location / {{
      proxy_pass http://127.0.0.1:{self.upstream_port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

    def log(self) -> str:
        path = self._dir / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self, timeout: float = 10.0) -> "TlsFront":
        conf = self._dir / "nginx.conf"
        conf.write_text(self._config())
        self._proc = subprocess.Popen([self.binary, "-p", str(self._dir), "-e", str(self._dir / "error.log"),
                                       "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            wait_listening(self._proc, self.port, what="nginx TLS front", log=self.log, timeout=timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def request(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        """A plain HTTPS call (this CA, the Service name via SNI-less IP + explicit name check off)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.check_hostname = False
        headers = {}
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_group(proc, timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "TlsFront":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def redis_tls_files(pki: TestPKI, *, auth_clients: bool) -> "TlsFiles":
    """The redis-server TLS options for ``pki`` (``--tls-auth-clients yes`` when ``auth_clients``)."""
    from tests.backends.redis_server import TlsFiles

    return TlsFiles(cert=str(pki.server_cert), key=str(pki.server_key), ca=str(pki.ca), auth_clients=auth_clients,
                    client_cert=str(pki.client_cert), client_key=str(pki.client_key), server_name=pki.server_name)


def redis_cli(server, pki: TestPKI, *args: str) -> str:
    """Run Debian's ``redis-cli --tls`` against ``server`` (CA, client certificate, SNI): data written
    by a client we did not write."""
    cmd = ["redis-cli", "--tls", "--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key),
           "--sni", pki.server_name, "-h", server.host, "-p", str(server.port)]
    env = {**os.environ, "REDISCLI_AUTH": server.password} if server.password else None
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=10, env=env)
    if out.returncode != 0 or out.stdout.startswith(("ERR", "(error)")):
        raise RuntimeError(f"redis-cli {args[:1]} failed: {out.stdout.strip()} {out.stderr.strip()}")
    return out.stdout.strip()
