"""TLS to the datastore next door: one client context for both sidecars, its startup line, its errors.

The sidecar connects to ``localhost`` while the datastore's certificate names its Service
(``redis-master.ns.svc.cluster.local``), so a stock hostname check would always fail. The policy:

* the chain is always verified against the CA (``CERT_REQUIRED``);
* with ``*_TLS_SERVER_NAME`` the certificate must name it, and it is sent as SNI;
* without it only the hostname check is skipped, and only when the sidecar dials loopback: that
  connection stays inside the pod's own network namespace, where nobody else can sit. A startup
  line says so. Any other host is checked as usual (the name dialled must be in the certificate);
* ``REDIS_TLS_VERIFY=false`` / ``ES_VERIFY_CERTS=false`` turn verification off, and a warning line
  says so at every start.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    verify: bool = True
    #: The host the sidecar dials (REDIS_HOST / ES_HOST).
    host: str = "localhost"

    @property
    def checks_hostname(self) -> bool:
        return bool(self.server_name) or not is_loopback(self.host)


class ServerNameContext(ssl.SSLContext):
    """An SSLContext that presents ``server_name`` (SNI, and the name the certificate must carry)
    whatever host the connection goes to. asyncio hands every TLS connection to ``wrap_bio`` with
    the host it dialled; both redis-py and aiohttp go through it."""

    server_name: str | None = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if not server_side and self.server_name:
            server_hostname = self.server_name
        return super().wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                session=session)


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The client context for ``tls`` (TLS 1.2 at least; the system CAs when no CA file is given)."""
    context = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = tls.checks_hostname
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs()
            try:  # what elastic_transport trusted before (the slim images may have no system bundle)
                import certifi
            except ImportError:
                pass
            else:
                context.load_verify_locations(cafile=certifi.where())
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.server_name = tls.server_name
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def announce(backend: str, tls: TlsSettings, *, verify_setting: str, server_name_setting: str,
             ca_setting: str) -> None:
    """One startup line on stdout describing the TLS policy in force (a warning when verification is
    off). Printed directly, before the audit log is configured and whatever MCP_LOG_LEVEL says: a
    loosened default must show in ``kubectl logs``."""
    if not tls.verify:
        _line({"event": "config_warning", "setting": f"{verify_setting}=false",
               "message": f"TLS to {backend} is not verified: any certificate is accepted, so anyone who can "
                          f"answer on that address sees the credentials; set {ca_setting} instead"})
        return
    record = {"event": "tls", "backend": backend, "verify": "chain",
              "ca": (tls.ca_file or "system")[:300], "client_certificate": bool(tls.cert_file)}
    if tls.server_name:
        record.update(hostname_check=True, server_name=tls.server_name[:253])
    elif tls.checks_hostname:
        record.update(hostname_check=True, server_name=tls.host[:253])
    else:
        record.update(hostname_check=False,
                      message=f"certificate chain verified against the CA; hostname not checked "
                              f"({server_name_setting} unset): the connection is to loopback inside the "
                              f"pod's own network namespace")
    _line(record)


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _line(record: dict) -> None:
    print(json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":")), flush=True)


def ssl_error_in(exc: BaseException) -> ssl.SSLError | ssl.CertificateError | None:
    """The ``ssl`` error behind a client library's connection error, if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (ssl.SSLError, ssl.CertificateError)):
            return current
        stack += [current.__cause__, current.__context__, *getattr(current, "errors", ())]
        stack += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
    return None


def describe_tls_failure(exc: BaseException, where: str, *, ca_setting: str, server_name_setting: str,
                         client_cert_setting: str | None = None) -> str | None:
    """A one-line reason for a failed TLS connection that names the setting to look at, or None when
    ``exc`` is not a TLS failure."""
    err = ssl_error_in(exc)
    text = str(err) if err is not None else str(exc)
    if err is None and "[SSL" not in text and "certificate verify failed" not in text.lower():
        return None
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        detail = (getattr(err, "verify_message", None) or text).rstrip(".")
        if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
            hint = f"the certificate does not name the expected server (check {server_name_setting})"
        else:
            hint = f"the certificate is not signed by the CA in use (check {ca_setting})"
        return (f"TLS to {where} failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                f"{detail[:200]}; {hint}")
    if "certificate required" in lowered or "alert certificate" in lowered or "alert bad certificate" in lowered:
        fix = f" (set {client_cert_setting})" if client_cert_setting else ""
        return f"TLS to {where} failed: the server requires a client certificate it accepts{fix}: {text[:200]}"
    if "wrong version number" in lowered or "record layer failure" in lowered or "packet length too long" in lowered:
        return f"TLS to {where} failed: the server does not speak TLS on this port ({text[:200]})"
    return f"TLS to {where} failed: {text[:300]}"
