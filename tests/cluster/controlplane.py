"""A real, local Kubernetes control plane for tests and the demo (what envtest does, in Python).

Starts etcd, kube-apiserver (RBAC, service-account keys, client-certificate admin, PodSecurity and the
admission webhooks on) and kube-controller-manager on free loopback ports, with certificates generated
here, writes a kubeconfig and waits until the cluster is usable (``/readyz`` plus the ``default``
ServiceAccount, which proves the controller manager runs). There is no scheduler and no kubelet, so
pods stay Pending: enough for admission webhooks, controllers and operators.

    from tests.cluster.controlplane import ControlPlane

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")
        cp.register_mutating_webhook("https://127.0.0.1:8443/mutate", ca_pem)

Binaries come from ``.cache/bin`` (built by ``tests/cluster/build.sh``, see :func:`ensure_binaries`).
Every process runs in its own session/process group and is killed (SIGTERM, then SIGKILL) on
:meth:`ControlPlane.stop`, on exceptions inside ``with``, at interpreter exit, and — through
PR_SET_PDEATHSIG — when the Python process itself dies.

Only the standard library and ``cryptography`` are used.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime as _dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import free_port

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
BIN_DIR = Path(os.environ.get("MCP_CLUSTER_BIN", REPO_ROOT / ".cache" / "bin"))
BUILD_SCRIPT = HERE / "build.sh"

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

BACKEND_LABEL = "mcp-sidecar.dox/backend"
INJECTION_NS_LABEL = "mcp-sidecar.dox/injection"

# Admission plugins switched on explicitly (all are also in 1.34's default set; listed so the contract
# is visible and survives a change of defaults).
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "PodSecurity",
    "DefaultStorageClass",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "ResourceQuota",
)


class ControlPlaneError(RuntimeError):
    pass


def pinned_kubernetes_version() -> str:
    """The k8s.io/kubernetes version pinned in tests/cluster/k8s/go.mod (e.g. ``v1.34.4``)."""
    for line in (HERE / "k8s" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("require", "k8s.io/kubernetes") and "k8s.io/kubernetes" in parts:
            return parts[parts.index("k8s.io/kubernetes") + 1]
    raise ControlPlaneError("k8s.io/kubernetes not found in tests/cluster/k8s/go.mod")


def ensure_binaries(parts: Sequence[str] = ("all",), stream: Any = None) -> Path:
    """Run tests/cluster/build.sh (idempotent, ~1 s when everything is cached) and return the bin dir.

    Progress goes to ``stream`` (default: this process's stderr file descriptor, inherited), so a
    cold build prints what it is doing instead of staying silent for minutes.
    """
    kwargs: dict[str, Any] = {}
    if stream is not None:
        kwargs = {"stdout": stream, "stderr": subprocess.STDOUT}
    subprocess.run(["bash", str(BUILD_SCRIPT), *parts], check=True, cwd=REPO_ROOT, **kwargs)
    return BIN_DIR


# --------------------------------------------------------------------------------------------------
# Certificates


@dataclass
class KeyPair:
    cert: x509.Certificate
    key: Any

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return crt, key


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(cn: str = "mcp-sidecar-test-ca") -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_cert(
    ca: KeyPair,
    cn: str,
    *,
    orgs: Iterable[str] = (),
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


# --------------------------------------------------------------------------------------------------
# Processes


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
        return resp.status == 200


def wait_for_component(what: str, comp: "Component", ready: Callable[[], bool], timeout: float,
                       log: Callable[[str], None], *, error: type[Exception] | None = None,
                       with_tail: bool = False) -> None:
    """Poll ``ready`` every 0.2 s until it is true; fail at once if ``comp`` exits, or after ``timeout``."""
    error = error or ControlPlaneError
    tail = (lambda: f":\n{comp.tail()}") if with_tail else (lambda: "")
    t0 = time.monotonic()
    while True:
        if not comp.running():
            raise error(f"{comp.name} exited (code {comp.proc.returncode}) before {what}{tail()}")
        with contextlib.suppress(Exception):
            if ready():
                log(f"{what}: ok after {time.monotonic() - t0:.1f}s")
                return
        if time.monotonic() - t0 > timeout:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}{tail()}")
        time.sleep(0.2)


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    ports: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        log = open(self.log_path, "ab", buffering=0)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
                env=dict(env) if env is not None else None,
            )
        finally:
            log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the child leads its own process group
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap anything else left in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


_LIVE: "set[ControlPlane]" = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for cp in planes:
        with contextlib.suppress(Exception):
            cp.stop()


# --------------------------------------------------------------------------------------------------
# The control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, in a temporary directory.

    Attributes available after :meth:`start`: ``kubeconfig`` (Path), ``server`` (https URL),
    ``ca_pem`` (bytes, the cluster CA), ``workdir`` (Path), ``token`` (admin bearer token),
    ``components`` (name -> Component with ``pid`` and ``log_path``).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | str | None = None,
        workdir: Path | str | None = None,
        keep_workdir: bool | None = None,
        build: bool = True,
        log: Callable[[str], None] | None = None,
        start_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir else BIN_DIR
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mcp-cp-"))
        if keep_workdir is None:
            keep_workdir = os.environ.get("MCP_CP_KEEP") == "1"
        self.keep_workdir = keep_workdir
        self.build = build
        self._log = log or (lambda msg: print(f"[control-plane] {msg}", file=sys.stderr, flush=True))
        self.start_timeout = start_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self.components: dict[str, Component] = {}
        self.token = uuid.uuid4().hex
        self.kubeconfig: Path = self.workdir / "admin.kubeconfig"
        self.server = ""
        self.ca_pem = b""
        self._ssl: ssl.SSLContext | None = None
        self._stopped = False

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        t0 = time.monotonic()
        if self.build:
            ensure_binaries()
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not os.access(self.bin_dir / b, os.X_OK):
                raise ControlPlaneError(f"{self.bin_dir / b} missing: run tests/cluster/build.sh")
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._stopped = False
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        self._write_pki(pki)
        for attempt in range(1, 4):
            try:
                self._start_etcd()
                self._start_apiserver(pki)
                self._start_controller_manager(pki)
                self._wait_for_default_service_account()
                break
            except ControlPlaneError as exc:
                # free_port() can race with another process grabbing the port before we bind it.
                if attempt < 3 and self._port_conflict():
                    self._log(f"port conflict ({exc}); retrying with new ports")
                    self._stop_components()
                    for sub in ("etcd", "logs"):
                        shutil.rmtree(self.workdir / sub, ignore_errors=True)
                    (self.workdir / "logs").mkdir()
                    continue
                self._dump_logs(exc)
                self.stop()
                raise
            except BaseException as exc:
                self._dump_logs(exc)
                self.stop()
                raise
        self._log(
            f"ready in {time.monotonic() - t0:.1f}s: {self.server} (kubeconfig {self.kubeconfig})"
        )
        return self

    # ---- sharing one running cluster between test runs (development) ------------------------

    _STATE_FIELDS = ("server", "kubeconfig", "token", "ca_file", "ca_key_file", "admin_cert", "admin_key")

    def save_state(self, path: Path | str) -> None:
        """Write what :meth:`attach` needs to use this running cluster from another process."""
        state = {k: str(getattr(self, k)) for k in self._STATE_FIELDS}
        state["workdir"] = str(self.workdir)
        Path(path).write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, path: Path | str, *, bin_dir: Path | str | None = None) -> "ControlPlane":
        """A handle on a cluster another process runs (see :meth:`save_state`); stop() leaves it running."""
        state = json.loads(Path(path).read_text())
        cp = cls(bin_dir=bin_dir, workdir=state["workdir"], keep_workdir=True, build=False)
        for k in cls._STATE_FIELDS:
            value = state[k]
            setattr(cp, k, value if k in ("server", "token") else Path(value))
        cp.ca_pem = cp.ca_file.read_bytes()
        cp.ca = KeyPair(x509.load_pem_x509_certificate(cp.ca_pem),
                        serialization.load_pem_private_key(cp.ca_key_file.read_bytes(), None))
        cp._ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        cp._ssl.load_cert_chain(str(cp.admin_cert), str(cp.admin_key))
        cp._stopped = True
        return cp

    def _stop_components(self) -> None:
        for comp in reversed(list(self.components.values())):
            comp.stop()
        self.components.clear()

    def _port_conflict(self) -> bool:
        return any(
            not c.running() and "address already in use" in c.tail(200)
            for c in self.components.values()
        )

    def stop(self) -> None:
        """Stop every component (reverse start order) and remove the work dir. Idempotent."""
        for comp in reversed(list(self.components.values())):
            comp.stop()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if not self._stopped and self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped = True

    @property
    def pids(self) -> dict[str, int]:
        return {n: c.pid for n, c in self.components.items() if c.pid is not None}

    @property
    def ports(self) -> list[int]:
        return [p for c in self.components.values() for p in c.ports]

    # ---- pki / kubeconfig -------------------------------------------------------------------

    def _write_pki(self, pki: Path) -> None:
        ca = make_ca()
        self.ca = ca
        self.ca_pem = ca.cert_pem
        self.ca_file, self.ca_key_file = ca.write(pki, "ca")
        serving = issue_cert(
            ca, "kube-apiserver", server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"],
            ips=["127.0.0.1", SERVICE_IP],
        )
        self.serving_cert, self.serving_key = serving.write(pki, "apiserver")
        self.admin = issue_cert(ca, "admin", orgs=["system:masters"], client=True)
        self.admin_cert, self.admin_key = self.admin.write(pki, "admin")
        kcm = issue_cert(ca, "system:kube-controller-manager", client=True)
        self.kcm_cert, self.kcm_key = kcm.write(pki, "kube-controller-manager")
        # The API server's identity towards kubelets (exec, logs, port-forward): a real node
        # (tests/cluster/node.py) trusts the cluster CA for it. Harmless when no node joins.
        kubelet_client = issue_cert(ca, "kube-apiserver-kubelet-client", orgs=["system:masters"], client=True)
        self.kubelet_client_cert, self.kubelet_client_key = kubelet_client.write(pki, "apiserver-kubelet-client")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key_file = pki / "sa.key"
        self.sa_key_file.write_bytes(
            sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
        )
        self.sa_key_file.chmod(0o600)
        self.sa_pub_file = pki / "sa.pub"
        self.sa_pub_file.write_bytes(
            sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        # Front proxy (aggregation / request-header authentication): without it the controller
        # manager's delegated authentication keeps logging a missing requestheader CA.
        fp_ca = make_ca("mcp-sidecar-test-front-proxy-ca")
        self.front_proxy_ca_file, _ = fp_ca.write(pki, "front-proxy-ca")
        fp_client = issue_cert(fp_ca, "front-proxy-client", client=True)
        self.front_proxy_cert, self.front_proxy_key = fp_client.write(pki, "front-proxy-client")
        self.token_file = pki / "tokens.csv"
        self.token_file.write_text(f'{self.token},admin-token,admin-token,"system:masters"\n')
        self.token_file.chmod(0o600)

    def write_kubeconfig(self, path: Path, cert: Path, key: Path, user: str) -> Path:
        """A kubeconfig for this cluster that authenticates with a client certificate."""
        return self._write_kubeconfig(path, cert, key, user)

    def _write_kubeconfig(self, path: Path, cert: Path, key: Path, user: str) -> Path:
        b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server, "certificate-authority-data": b64(self.ca_file)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        path.chmod(0o600)
        return path

    # ---- components ---------------------------------------------------------------------------

    def _component(self, name: str, argv: list[str], ports: list[int]) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log", ports=ports)
        self.components[name] = comp
        self._log(f"starting {name} (ports {', '.join(map(str, ports))})")
        comp.start()
        return comp

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        data = self.workdir / "etcd"
        data.mkdir(mode=0o700, exist_ok=True)
        comp = self._component("etcd", [
            str(self.bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={data}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # test data only: skip fsync, much faster on slow disks
            "--log-level=warn",
        ], [client, peer])
        self._wait("etcd /health", comp, lambda: http_ok(f"{self.etcd_url}/health"), 30)

    def _start_apiserver(self, pki: Path) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        args = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={self.serving_cert}",
            f"--tls-private-key-file={self.serving_key}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={self.sa_pub_file}",
            f"--service-account-signing-key-file={self.sa_key_file}",
            f"--requestheader-client-ca-file={self.front_proxy_ca_file}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.front_proxy_cert}",
            f"--proxy-client-key-file={self.front_proxy_key}",
            # The `kubernetes` Service's Endpoints cannot hold a loopback address; nothing runs in
            # pods here anyway, so do not reconcile them (otherwise an error every 10 s).
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--storage-media-type=application/vnd.kubernetes.protobuf",
            f"--kubelet-client-certificate={self.kubelet_client_cert}",
            f"--kubelet-client-key={self.kubelet_client_key}",
            # A node's only usable address is its InternalIP on the pod bridge (never loopback).
            "--kubelet-preferred-address-types=InternalIP",
            *self.extra_apiserver_args,
        ]
        comp = self._component("kube-apiserver", args, [port])
        self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        self._ssl.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        self._write_kubeconfig(self.kubeconfig, self.admin_cert, self.admin_key, "admin")
        self._wait("kube-apiserver /readyz", comp, lambda: self.request("GET", "/readyz")[0] == 200,
                   self.start_timeout)

    def _start_controller_manager(self, pki: Path) -> None:
        port = free_port()
        kcfg = self._write_kubeconfig(self.workdir / "kube-controller-manager.kubeconfig",
                                      self.kcm_cert, self.kcm_key, "system:kube-controller-manager")
        kcm_certs = self.workdir / "kcm-certs"
        kcm_certs.mkdir(exist_ok=True)
        args = [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}",
            f"--authorization-kubeconfig={kcfg}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={kcm_certs}",
            f"--service-account-private-key-file={self.sa_key_file}",
            f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={self.ca_key_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*",
            # The default client rate limit (20 qps) serialises the per-controller ServiceAccount and
            # token set-up of --use-service-account-credentials: ~5 s until the first `default`
            # ServiceAccount instead of <1 s. Nothing else talks to this apiserver, so lift it.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            *self.extra_controller_manager_args,
        ]
        comp = self._component("kube-controller-manager", args, [port])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait("kube-controller-manager /healthz", comp,
                   lambda: http_ok(f"https://127.0.0.1:{port}/healthz", insecure), 60)

    def _wait_for_default_service_account(self) -> None:
        comp = self.components["kube-controller-manager"]
        self._wait("ServiceAccount default/default", comp,
                   lambda: self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                   60)

    # ---- waiting / diagnostics ---------------------------------------------------------------

    def _wait(self, what: str, comp: Component, ready: Callable[[], bool], timeout: float) -> None:
        # No log tail in the message: _dump_logs prints every component's tail after a failed start.
        wait_for_component(what, comp, ready, timeout, self._log)

    def _dump_logs(self, exc: BaseException) -> None:
        self._log(f"start-up failed: {exc}")
        for comp in self.components.values():
            print(f"----- {comp.name} log tail ({comp.log_path}) -----\n{comp.tail()}",
                  file=sys.stderr, flush=True)

    # ---- API access ---------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10,
                content_type: str = "application/json") -> tuple[int, Any]:
        """A raw API call as cluster admin: returns (status, decoded JSON or text)."""
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def kubectl(self, *args: str, input: str | bytes | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Run .cache/bin/kubectl against this cluster; returns the CompletedProcess (text mode).

        With ``check`` (default) a non-zero exit raises ControlPlaneError including stderr.
        """
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(argv, input=input.decode() if isinstance(input, bytes) else input,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def kubectl_json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", **kwargs).stdout)

    def apply(self, manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
              *args: str) -> subprocess.CompletedProcess:
        """``kubectl apply -f -`` with YAML text, a dict, or a list of dicts (server-side validation)."""
        if not isinstance(manifest, str):
            items = [manifest] if isinstance(manifest, Mapping) else list(manifest)
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        return self.kubectl("apply", "-f", "-", *args, input=manifest)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None,
                         wait_for_service_account: bool = True, timeout: float = 30) -> None:
        """Create a namespace and (by default) wait for its ``default`` ServiceAccount.

        The ServiceAccount admission plugin rejects every pod whose ServiceAccount (``default`` when
        unset) does not exist yet, even with ``automountServiceAccountToken: false``; the controller
        manager creates ``default`` shortly after the namespace, so tests should create namespaces
        through this.
        """
        self.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": dict(labels or {})}})
        if wait_for_service_account:
            self.wait_for(lambda: self.request(
                "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
                timeout, f"ServiceAccount {name}/default")

    @staticmethod
    def wait_for(cond: Callable[[], Any], timeout: float = 30, what: str = "condition",
                 interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = None
            with contextlib.suppress(Exception):
                result = cond()
            if result:
                return result
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    # ---- webhooks ----------------------------------------------------------------------------

    def register_mutating_webhook(
        self,
        url: str,
        ca_bundle_pem: bytes | str,
        *,
        name: str = "mcp-sidecar-injector",
        webhook_name: str = "inject.mcp-sidecar.dox",
        excluded_namespaces: Iterable[str] = (),
        failure_policy: str = "Ignore",
        timeout_seconds: int = 5,
        reinvocation_policy: str = "IfNeeded",
        side_effects: str = "None",
        object_selector: Mapping[str, Any] | None = None,
        namespace_selector: Mapping[str, Any] | None = None,
        rules: Sequence[Mapping[str, Any]] | None = None,
        wait: bool = True,
        wait_timeout: float = 30,
        probe_namespace: str = "default",
        probe_labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create (or replace) a MutatingWebhookConfiguration pointing at ``url`` with ``caBundle``.

        Defaults follow DESIGN.md: objectSelector ``mcp-sidecar.dox/backend`` Exists; namespaceSelector
        excludes kube-system, ``excluded_namespaces`` (e.g. the injector's own) and namespaces labelled
        ``mcp-sidecar.dox/injection: disabled``; CREATE pods; sideEffects None; v1 reviews;
        timeoutSeconds 5; reinvocationPolicy IfNeeded; failurePolicy Ignore.

        With ``wait`` (default) it returns only once the API server really calls the webhook: it
        dry-run-creates a probe pod (labels ``probe_labels``, default backend=redis) until the
        apiserver's admission metrics show a call to ``webhook_name`` (the webhook configuration is
        picked up asynchronously by an informer; without this a pod created right away may be missed).
        """
        if isinstance(ca_bundle_pem, str):
            ca_bundle_pem = ca_bundle_pem.encode()
        ns_excluded = ["kube-system", *excluded_namespaces]
        hook = {
            "name": webhook_name,
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle_pem).decode()},
            "rules": list(rules) if rules is not None else [{
                "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"], "scope": "*"}],
            "objectSelector": dict(object_selector) if object_selector is not None else {
                "matchExpressions": [{"key": BACKEND_LABEL, "operator": "Exists"}]},
            "namespaceSelector": dict(namespace_selector) if namespace_selector is not None else {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ns_excluded},
                    {"key": INJECTION_NS_LABEL, "operator": "NotIn", "values": ["disabled"]},
                ]},
            "sideEffects": side_effects,
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds,
            "reinvocationPolicy": reinvocation_policy,
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
        }
        mwc = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [hook],
        }
        self.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found=true")
        status, body = self.request("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", mwc)
        if status != 201:
            raise ControlPlaneError(f"creating MutatingWebhookConfiguration {name}: {status} {body}")
        if wait:
            self.wait_for_webhook(webhook_name, namespace=probe_namespace, labels=probe_labels,
                                  timeout=wait_timeout)
        return body

    def unregister_mutating_webhook(self, name: str = "mcp-sidecar-injector") -> None:
        self.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found=true")

    def webhook_calls(self, webhook_name: str) -> int:
        """How many admission calls the API server made to ``webhook_name`` (from /metrics)."""
        _, text = self.request("GET", "/metrics", timeout=20)
        total = 0
        needle = f'name="{webhook_name}"'
        for line in str(text).splitlines():
            if line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{") and needle in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def wait_for_webhook(self, webhook_name: str, *, namespace: str = "default",
                         labels: Mapping[str, str] | None = None, timeout: float = 30,
                         expect_container: str | None = None) -> None:
        """Dry-run-create a probe pod until the API server has called ``webhook_name`` at least once
        (and, with ``expect_container``, until the answer carries that container: a call that
        failed under failurePolicy Ignore is counted too, e.g. while kube-proxy has no rules yet)."""
        before = self.webhook_calls(webhook_name)
        probe = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "webhook-probe-", "namespace": namespace,
                         "labels": dict(labels or {BACKEND_LABEL: "redis"})},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]},
        }

        def called() -> bool:
            _, answer = self.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", probe)
            if expect_container is not None:
                spec = answer.get("spec", {}) if isinstance(answer, dict) else {}
                names = [c.get("name") for c in spec.get("containers", []) + spec.get("initContainers", [])]
                if expect_container not in names:
                    return False
            return self.webhook_calls(webhook_name) > before

        self.wait_for(called, timeout, f"the API server to call webhook {webhook_name}", interval=0.3)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.cluster.controlplane``: start a cluster, print how to use it, wait for Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--kubeconfig-out", help="also copy the admin kubeconfig here")
    args = parser.parse_args(argv)
    with ControlPlane() as cp:
        if args.kubeconfig_out:
            shutil.copy(cp.kubeconfig, args.kubeconfig_out)
        print(f"export KUBECONFIG={args.kubeconfig_out or cp.kubeconfig}", flush=True)
        print("Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
