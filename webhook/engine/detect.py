"""What the pod already says about its datastore: which container it is, its port, its password and TLS.

Pure functions over the pod dict (no I/O, no Kubernetes reads: a ConfigMap's redis.conf or a
Secret's keys are out of reach, so only the pod spec counts). ``render`` turns the result into the
sidecar; everything that could not be mapped becomes a warning, never a silent miss.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from webhook.engine.config import BackendConfig

#: Longest piece of pod input quoted in a warning.
_MAX_QUOTED = 64
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
#: Where the sidecar finds the datastore's CA (and client certificate) files.
TLS_MOUNT_PATH = "/var/run/secrets/mcp-sidecar-tls"
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"


def quoted(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _image_repository(image: str) -> str:
    """``docker.io/bitnami/redis:7.2@sha256:...`` -> ``docker.io/bitnami/redis`` (no tag or digest)."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return name


def _image_major(image: str) -> int | None:
    """``elasticsearch:8.15.3`` -> 8; None without a numeric tag."""
    name = image.split("@", 1)[0]
    if name.rfind(":") <= name.rfind("/"):
        return None
    match = re.match(r"v?(\d+)", name[name.rfind(":") + 1 :])
    return int(match.group(1)) if match else None


def _containers(spec: dict[str, Any], key: str = "containers") -> list[dict[str, Any]]:
    return [c for c in spec.get(key) or [] if isinstance(c, dict)]


class EnvIndex:
    """Each container's env by name (a repeated name: its last entry), built once per pod.

    The malformed-pod check and every detection look names up in the same containers, and a
    container may carry thousands of env vars: rebuilding the map per lookup made the env list the
    engine's main cost.
    """

    def __init__(self) -> None:
        # id -> (container, map, all named): holding the container keeps its id from being reused.
        self._maps: dict[int, tuple[dict[str, Any], dict[str, dict[str, Any]], bool]] = {}

    def __call__(self, container: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return self._entry(container)[1]

    def all_named(self, container: dict[str, Any]) -> bool:
        """Whether every env entry of ``container`` is a map with a string name."""
        return self._entry(container)[2]

    def _entry(self, container: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bool]:
        cached = self._maps.get(id(container))
        if cached is None or cached[0] is not container:
            cached = self._maps[id(container)] = (container, *_env_map(container.get("env") or []))
        return cached


def _env_map(entries: Any) -> tuple[dict[str, dict[str, Any]], bool]:
    """The map, and whether every entry had a string name (then no entry was left out)."""
    try:  # the common case in one cheap pass: every entry a map with a string name
        env = {e["name"]: e for e in entries}
        if all(map(isinstance, env, repeat(str))):
            return env, True
    except (TypeError, KeyError):
        pass
    return {e["name"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}, False


def _literal(env: dict[str, dict[str, Any]], name: str) -> str | None:
    value = env.get(name, {}).get("value")
    return value if isinstance(value, str) else None


def _words(container: dict[str, Any]) -> list[str]:
    """command + args split into words (a ``sh -c`` script too), quotes stripped."""
    words: list[str] = []
    for key in ("command", "args"):
        for part in container.get(key) or []:
            if isinstance(part, str):
                words += [w.strip("'\"") for w in part.split()]
    return words


def _flag(words: list[str], flag: str) -> str | None:
    """Value of ``--flag value`` or ``--flag=value`` (last one wins, as in redis-server)."""
    found = None
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            found = words[index + 1]
        elif word.startswith(flag + "="):
            found = word[len(flag) + 1 :]
    return found


def _setting(container: dict[str, Any], env: dict[str, dict[str, Any]], name: str) -> str | None:
    """An Elasticsearch setting given as an env var named like it or as ``-Ename=value``."""
    value = _literal(env, name)
    for word in _words(container):
        if word.startswith(f"-E{name}="):
            value = word[len(name) + 3 :]
    return value


def find_main_container(spec: dict[str, Any], backend: BackendConfig) -> dict[str, Any] | None:
    """The datastore container, by the strongest evidence first.

    A port named like the backend's (``redis``, ``http``...) beats a container name mentioning the
    backend, which beats an image mentioning it (``redis_exporter`` images mention redis too);
    with no evidence, the first container.
    """
    containers = _containers(spec)

    def mentions(text: str) -> bool:
        return any(hint in text.lower() for hint in backend.main_container_hints)

    tests = (
        lambda c: any(isinstance(p, dict) and p.get("name") in backend.backend_port_names for p in c.get("ports") or []),
        lambda c: mentions(str(c.get("name", ""))),
        lambda c: mentions(_image_repository(str(c.get("image", "")))),
    )
    for test in tests:
        for container in containers:
            if test(container):
                return container
    return containers[0] if containers else None


def detect_backend_port(main: dict[str, Any] | None, backend: BackendConfig) -> int:
    """Port of the datastore: a port with a well-known name, the default if declared, a lone port, else the default."""
    ports = [p for p in (main or {}).get("ports") or [] if isinstance(p, dict) and isinstance(p.get("containerPort"), int)]
    for port in ports:
        if port.get("name") in backend.backend_port_names:
            return port["containerPort"]
    if any(p["containerPort"] == backend.backend_port for p in ports):
        return backend.backend_port
    if len(ports) == 1:
        return ports[0]["containerPort"]
    return backend.backend_port


# --- files in Secret volumes -------------------------------------------------------------------


@dataclass(frozen=True)
class SecretFile:
    """One file of a Secret, as the pod mounts it: ``key`` of Secret ``name``."""

    name: str
    key: str


def _volume_sources(volume: dict[str, Any]) -> list[dict[str, Any]]:
    """The Secret sources of a ``secret`` or ``projected`` volume as ``{name, items}``."""
    secret = volume.get("secret")
    if isinstance(secret, dict) and isinstance(secret.get("secretName"), str):
        return [{"name": secret["secretName"], "items": secret.get("items")}]
    projected = volume.get("projected")
    sources = []
    if isinstance(projected, dict):
        for source in projected.get("sources") or []:
            ref = (source or {}).get("secret") if isinstance(source, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                sources.append({"name": ref["name"], "items": ref.get("items")})
    return sources


def _file_in_volume(volume: dict[str, Any], relative: str) -> SecretFile | None:
    """The Secret key behind ``relative`` (a path inside the volume), following ``items``."""
    relative = posixpath.normpath(relative)
    unmapped = []
    for source in _volume_sources(volume):
        items = source["items"]
        if isinstance(items, list) and items:
            for item in items:
                if isinstance(item, dict) and posixpath.normpath(str(item.get("path", ""))) == relative \
                        and isinstance(item.get("key"), str) and item["key"]:
                    return SecretFile(source["name"], str(item["key"]))
        else:
            unmapped.append(source)
    # A source without items projects every key under its own name.
    return SecretFile(unmapped[0]["name"], relative) if unmapped and "/" not in relative else None


def secret_file(container: dict[str, Any], path: str, volumes: list[dict[str, Any]]) -> SecretFile | None:
    """Map a file path of ``container`` back to the Secret key it is mounted from (secret or projected
    volume, with or without ``items``, whole directory or ``subPath``)."""
    path = posixpath.normpath(path)
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, dict):
            continue
        mount_path = posixpath.normpath(str(mount.get("mountPath", "")))
        sub_path = mount.get("subPath") if isinstance(mount.get("subPath"), str) else None
        if sub_path:
            relative = str(sub_path) if path == mount_path else None
        elif path.startswith(mount_path.rstrip("/") + "/"):
            relative = path[len(mount_path.rstrip("/")) + 1 :]
        else:
            relative = None
        if not relative:
            continue
        volume = next((v for v in volumes if v.get("name") == mount.get("name")), None)
        return _file_in_volume(volume, relative) if volume is not None else None
    return None


def _secret_mounts(container: dict[str, Any], volumes: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(mount, volume) for every Secret-backed volume the container mounts."""
    found = []
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, dict) or not isinstance(mount.get("name"), str):
            continue
        volume = next((v for v in volumes if v.get("name") == mount["name"]), None)
        if volume is not None and _volume_sources(volume):
            found.append((mount, volume))
    return found


# --- password ----------------------------------------------------------------------------------


@dataclass
class PasswordDetection:
    ref: dict[str, Any] | None = None
    #: secretKeyRef of the user name when the datastore reads one from a Secret (ELASTIC_USERNAME).
    username_ref: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


_ENV_REF = re.compile(r"^\$(?:\((\w+)\)|\{(\w+)\}|(\w+))$")


def _requirepass_env(container: dict[str, Any]) -> tuple[str | None, bool]:
    """(env var named by ``--requirepass $(VAR)``, whether ``--requirepass`` holds a literal)."""
    value = _flag(_words(container), "--requirepass")
    if value is None:
        return None, False
    match = _ENV_REF.match(value)
    if match:
        return next(g for g in match.groups() if g), False
    return None, True


def _ref_of(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    ref = ((entry or {}).get("valueFrom") or {}).get("secretKeyRef")
    if isinstance(ref, dict) and isinstance(ref.get("name"), str) and isinstance(ref.get("key"), str) and ref["name"] and ref["key"]:
        return {"name": ref["name"], "key": ref["key"]}
    return None


def detect_password(spec: dict[str, Any], main: dict[str, Any] | None, backend: BackendConfig,
                    tls_secrets: frozenset[str] = frozenset(), envs: EnvIndex | None = None) -> PasswordDetection:
    """Find where the datastore reads its password from, as a ``secretKeyRef`` the sidecar can reuse.

    The datastore container first, then the others (an exporter reads the same Secret). A literal is
    never copied. When nothing maps but the datastore reads Secrets we cannot interpret (an env with an
    unknown name, ``envFrom``, a Secret volume), the warning names them and the annotation that fixes it.
    """
    result = PasswordDetection()
    envs = envs or EnvIndex()
    containers = _containers(spec)
    ordered = ([main] if main is not None else []) + [c for c in containers if c is not main]
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    literal_in = None
    for container in ordered:
        env = envs(container)
        names = list(backend.password_source_env)
        var, literal = _requirepass_env(container)
        if var and var not in names:
            names.insert(0, var)
        if literal and literal_in is None:
            literal_in = f"{quoted(container.get('name'))}.args --requirepass"
        for name in names:
            entry = env.get(name)
            if entry is not None:
                ref = _ref_of(entry)
                if ref is not None:
                    result.ref = ref
                    break
                if "value" in entry and literal_in is None:
                    literal_in = f"{quoted(container.get('name'))}.env.{name}"
            file_entry = env.get(f"{name}_FILE")
            if file_entry is not None and isinstance(file_entry.get("value"), str):
                found = secret_file(container, file_entry["value"], volumes)
                if found is not None:
                    result.ref = {"name": found.name, "key": found.key}
                    break
        if result.ref is None and var and var not in env:
            result.ref = _env_from_ref(container, var)
        if result.ref is not None:
            if backend.username_env:
                result.username_ref = next((r for r in (_ref_of(env.get(n)) for n in backend.username_source_env) if r), None)
            return result
    if literal_in:
        result.warnings.append(
            f"{literal_in} is a literal value and is not copied into the sidecar; the sidecar has no "
            f"{backend.password_env}. Move the password into a Secret or set mcp-sidecar.dox/password-secret")
        return result
    unmapped = _unmapped_secrets(main, envs(main), volumes, tls_secrets) if main is not None else []
    if unmapped:
        shown = "; ".join(unmapped[:3]) + (f"; and {len(unmapped) - 3} more" if len(unmapped) > 3 else "")
        # The admission layer clips a warning at 256 characters: the fix comes before the list.
        result.warnings.append(
            f"mcp-sidecar: the sidecar has no {backend.password_env}: container {quoted(main.get('name'))} reads "
            f"Secrets not mappable to its password; set mcp-sidecar.dox/password-secret: NAME:KEY if it needs one "
            f"({shown})")
    return result


def _env_from_ref(container: dict[str, Any], var: str) -> dict[str, Any] | None:
    """``--requirepass $(VAR)`` with VAR from ``envFrom``: with a single Secret source (and no
    ConfigMap one) VAR can only be its key VAR minus the prefix. ``optional``: if the guess is wrong the
    sidecar starts without a password (and says so) instead of not starting."""
    sources = [s for s in container.get("envFrom") or [] if isinstance(s, dict)]
    secrets = [s for s in sources if isinstance(s.get("secretRef"), dict) and isinstance(s["secretRef"].get("name"), str)]
    if len(secrets) != 1 or len(sources) != 1:
        return None
    prefix = secrets[0].get("prefix") if isinstance(secrets[0].get("prefix"), str) else ""
    if not var.startswith(prefix) or var == prefix:
        return None
    return {"name": secrets[0]["secretRef"]["name"], "key": var[len(prefix):], "optional": True}


def _unmapped_secrets(main: dict[str, Any], env: dict[str, dict[str, Any]], volumes: list[dict[str, Any]],
                      tls_secrets: frozenset[str]) -> list[str]:
    found = []
    for name, entry in env.items():
        ref = _ref_of(entry)
        if ref is not None:
            found.append(f"env {quoted(name)} from Secret {quoted(ref['name'])} key {quoted(ref['key'])}")
    for source in main.get("envFrom") or []:
        ref = (source or {}).get("secretRef") if isinstance(source, dict) else None
        if isinstance(ref, dict) and ref.get("name"):
            prefix = f" (prefix {quoted(source['prefix'])})" if source.get("prefix") else ""
            found.append(f"envFrom Secret {quoted(ref['name'])}{prefix}")
    for mount, volume in _secret_mounts(main, volumes):
        names = [s["name"] for s in _volume_sources(volume) if s["name"] not in tls_secrets]
        if names:
            found.append(f"volume {quoted(volume.get('name'))} at {quoted(mount.get('mountPath'))} from Secret "
                         f"{', '.join(quoted(n) for n in names)}")
    return found


# --- TLS ---------------------------------------------------------------------------------------


@dataclass
class TlsDetection:
    #: Why TLS is on (shown in warnings and by the CLI), None: plain text.
    reason: str | None = None
    #: Port the TLS listener uses when the pod says so (else the detected backend port).
    port: int | None = None
    ca: SecretFile | None = None
    cert: SecretFile | None = None
    key: SecretFile | None = None
    #: The datastore requires client certificates (redis tls-auth-clients, default yes).
    client_certs: bool = False

    @property
    def enabled(self) -> bool:
        return self.reason is not None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and 1 <= int(value) <= 65535 else None


def _cert_secret_guess(spec: dict[str, Any], main: dict[str, Any], volumes: list[dict[str, Any]]) -> SecretFile | None:
    """No CA path is named: a Secret volume whose name or mount says tls/cert, mounted by the datastore
    or one of the pod's init containers (bitnami copies its certificates in an init container); its
    ``ca.crt`` (the cert-manager and kubernetes.io/tls convention), or the item mapped to that path."""
    for container in [main] + _containers(spec, "initContainers"):
        for mount, volume in _secret_mounts(container, volumes):
            label = f"{volume.get('name')} {mount.get('mountPath')}".lower()
            if any(hint in label for hint in ("tls", "cert", "crt", "ssl")):
                found = _file_in_volume(volume, CA_FILE)
                if found is not None:
                    return found
    return None


#: redis_exporter's TLS settings (env, flag): the client files it uses are the server's files.
_EXPORTER_TLS = {
    "ca": ("REDIS_EXPORTER_TLS_CA_CERT_FILE", "--tls-ca-cert-file"),
    "cert": ("REDIS_EXPORTER_TLS_CLIENT_CERT_FILE", "--tls-client-cert-file"),
    "key": ("REDIS_EXPORTER_TLS_CLIENT_KEY_FILE", "--tls-client-key-file"),
}


def _redis_tls(spec: dict[str, Any], main: dict[str, Any], volumes: list[dict[str, Any]], envs: EnvIndex) -> TlsDetection:
    words = _words(main)
    main_env = envs(main)

    def literal(name: str) -> str | None:
        return _literal(main_env, name)

    result = TlsDetection()
    tls_port = _int(_flag(words, "--tls-port"))
    if tls_port is not None and _flag(words, "--port") == "0":
        result.reason, result.port = "args --port 0 --tls-port", tls_port
    elif (literal("REDIS_TLS_ENABLED") or "").lower() in _TRUE:
        # bitnami: the TLS listener replaces the plain one (port 0) when both use the same number.
        result.reason = "env REDIS_TLS_ENABLED"
        result.port = _int(literal("REDIS_TLS_PORT_NUMBER")) or _int(literal("REDIS_TLS_PORT"))
    else:
        ports = {p["name"]: p.get("containerPort") for p in main.get("ports") or []
                 if isinstance(p, dict) and isinstance(p.get("name"), str)}
        tls_named = [n for n in ports if "tls" in n and isinstance(ports[n], int)]
        plain = [n for n in ports if n not in tls_named]
        if tls_named and not plain:
            # redis-ha with tlsPort and port 0: redis.conf is in a ConfigMap; the ports say it.
            result.reason, result.port = f"port {quoted(tls_named[0])} is the only port", ports[tls_named[0]]
    if not result.enabled:
        return result
    paths = {"ca": literal("REDIS_TLS_CA_FILE") or _flag(words, "--tls-ca-cert-file"),
             "cert": literal("REDIS_TLS_CERT_FILE") or _flag(words, "--tls-cert-file"),
             "key": literal("REDIS_TLS_KEY_FILE") or _flag(words, "--tls-key-file")}
    for attr, path in paths.items():
        if path:
            setattr(result, attr, secret_file(main, path, volumes))
    # redis.conf may sit in a ConfigMap (redis-ha): an exporter in the pod names the same files.
    for attr, (env_name, flag) in _EXPORTER_TLS.items():
        for container in _containers(spec):
            path = _literal(envs(container), env_name) or _flag(_words(container), flag)
            if getattr(result, attr) is None and container is not main and path:
                setattr(result, attr, secret_file(container, path, volumes))
    if result.ca is None:
        result.ca = _cert_secret_guess(spec, main, volumes)
    if result.ca is not None and result.cert is None and result.key is None:
        result.cert = SecretFile(result.ca.name, CERT_FILE)
        result.key = SecretFile(result.ca.name, KEY_FILE)
    auth_clients = str(literal("REDIS_TLS_AUTH_CLIENTS") or _flag(words, "--tls-auth-clients") or "yes").lower()
    result.client_certs = auth_clients not in _FALSE and auth_clients != "optional"
    return result


def _es_tls(spec: dict[str, Any], main: dict[str, Any], volumes: list[dict[str, Any]], envs: EnvIndex) -> TlsDetection:
    result = TlsDetection()
    main_env = envs(main)

    def setting(name: str) -> str | None:
        return _setting(main, main_env, name)

    def literal(name: str) -> str | None:
        return _literal(main_env, name)

    http_ssl = (setting("xpack.security.http.ssl.enabled") or "").lower()
    security = (setting("xpack.security.enabled") or "").lower()
    probes = str([main.get(p) for p in ("readinessProbe", "livenessProbe", "startupProbe")])
    image = str(main.get("image", ""))
    image_name, bitnami = _image_repository(image).rsplit("/", 1)[-1], "bitnami" in image
    os_http_ssl = (setting("plugins.security.ssl.http.enabled") or "").lower()
    if http_ssl in _FALSE or security in _FALSE or os_http_ssl in _FALSE:
        return result
    if http_ssl in _TRUE:
        result.reason = "xpack.security.http.ssl.enabled"
    elif (literal("ELASTICSEARCH_ENABLE_REST_TLS") or "").lower() in _TRUE:
        result.reason = "env ELASTICSEARCH_ENABLE_REST_TLS"
    elif "https://" in probes or "'scheme': 'HTTPS'" in probes:
        result.reason = "the probes speak https"
    elif image_name == "elasticsearch" and not bitnami and (_image_major(image) or 0) >= 8 \
            and not any(word.startswith("-Expack.security") for word in _words(main)):
        # Elasticsearch 8 configures security on first start: HTTPS with a CA it generates itself
        # (bitnami's image keeps security off unless ELASTICSEARCH_ENABLE_SECURITY, handled above).
        result.reason = "the Elasticsearch 8 default"
    elif image_name == "opensearch" and not bitnami and os_http_ssl not in _FALSE \
            and (literal("DISABLE_SECURITY_PLUGIN") or "").lower() not in _TRUE \
            and (setting("plugins.security.disabled") or "").lower() not in _TRUE:
        # The OpenSearch image's security plugin serves HTTPS with its demo certificates by default.
        result.reason = "plugins.security.ssl.http.enabled" if os_http_ssl in _TRUE else "the OpenSearch security default"
    if not result.enabled:
        return result
    ca_path = setting("xpack.security.http.ssl.certificate_authorities") or literal("ELASTICSEARCH_CA_CERT_LOCATION")
    if ca_path:
        ca_path = ca_path.strip("[]\"' ").split(",")[0].strip("\"' ")
        if not ca_path.startswith("/"):
            ca_path = posixpath.join("/usr/share/elasticsearch/config", ca_path)
        result.ca = secret_file(main, ca_path, volumes)
    if result.ca is None:
        result.ca = _cert_secret_guess(spec, main, volumes)
    return result


def detect_tls(spec: dict[str, Any], main: dict[str, Any] | None, backend: BackendConfig,
               envs: EnvIndex | None = None) -> TlsDetection:
    """Whether the datastore serves TLS only, on which port, and which Secret holds its CA."""
    if main is None or backend.tls is None:
        return TlsDetection()
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    detect = {"redis": _redis_tls, "elasticsearch": _es_tls}[backend.tls.detect]
    return detect(spec, main, volumes, envs or EnvIndex())


def tls_secret_names(tls: TlsDetection) -> frozenset[str]:
    return frozenset(f.name for f in (tls.ca, tls.cert, tls.key) if f is not None)
