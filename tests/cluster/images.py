"""Every container image the real-node test stage needs, built with buildah and cached as OCI archives.

There is no registry here (no Docker Hub, no registry.k8s.io, no Elastic site), so each image is
built on this machine and handed to the node as an OCI archive (``ctr -n k8s.io images import F``):

====================================================  ====================================================
``registry.k8s.io/pause:3.10.1`` (+ ``:3.10``)          pause.c of the k8s.io/kubernetes module, static
``docker.io/mcp/sidecar-injector:<version>`` (+latest)  Dockerfile.webhook, unchanged
``docker.io/mcp/redis:latest``                          Dockerfile.sidecars --target redis, unchanged
``docker.io/mcp/elasticsearch:latest``                  Dockerfile.sidecars --target elasticsearch
``docker.io/library/redis:7.4``                         stand-in: Debian's redis-server (7.0)
``docker.elastic.co/elasticsearch/elasticsearch:8.15.3`` stand-in: the Maven Central node of tests/backends
``docker.io/dox/asdlc-orchestrator:latest``, ``-workers`` stand-ins: a stdlib /metrics + /healthz server
====================================================  ====================================================

The project's images are built FROM stand-ins of ``python:3.11`` / ``python:3.11-slim`` (Debian's
python3.11 on an ``mmdebstrap --variant=minbase`` root filesystem, see images/Containerfile.*), so
they prove the Dockerfiles, the user, the read-only root and the pods, not byte-identical images:
say so wherever an image size is reported. Containerfiles and support files: tests/cluster/images/.

    from tests.cluster.images import ensure_images, ALL_IMAGES
    for a in ensure_images(names=ALL_IMAGES, log=print):   # builds what is missing or stale
        a.name, a.path, a.built, a.seconds                 # + a.tags (refs in the archive), a.size

``python -m tests.cluster.images [--only NAME...] [--force] [--verify]`` does the same for humans.

Caching: everything lives under ``.cache/`` (``$MCP_TEST_CACHE``): buildah storage in
``.cache/containers`` (storage.conf there; nothing in /var/lib/containers, the CNI lock in
``.cache/containers/cni``), base root filesystems ``.cache/images/base-*.tar``, archives
``.cache/images/<name>.oci.tar`` (layers uncompressed), build logs ``.cache/images/logs``. Each image
has a stamp (sha256 of its Containerfile, the files it copies, its bases' stamps, versions); a call
whose stamps all match returns without running buildah. Builds hold ``.cache/images/.lock`` (flock):
a second caller waits for the first instead of building twice. Builds run under ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FILES = HERE / "images"
CACHE = Path(os.environ.get("MCP_TEST_CACHE", REPO / ".cache"))
OUT = CACHE / "images"
CONTAINERS = CACHE / "containers"
STORAGE_CONF = CONTAINERS / "storage.conf"
CONTAINERS_CONF = CONTAINERS / "containers.conf"
NICE = os.environ.get("MCP_IMAGES_NICE", "10")
# The mirror argument of mmdebstrap is the host's own apt sources file: no mirror is named here.
HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PAUSE_TAG = "3.10.1"
STAMP_VERSION = "2"  # bump to rebuild everything after a change to this file's build logic


def _version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


VERSION = _version()
PAUSE = f"registry.k8s.io/pause:{PAUSE_TAG}"
INJECTOR = f"docker.io/mcp/sidecar-injector:{VERSION}"
MCP_REDIS = "docker.io/mcp/redis:latest"
MCP_ELASTICSEARCH = "docker.io/mcp/elasticsearch:latest"
REDIS = "docker.io/library/redis:7.4"
ELASTICSEARCH = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
ORCHESTRATOR = "docker.io/dox/asdlc-orchestrator:latest"
WORKERS = "docker.io/dox/asdlc-workers:latest"
PYTHON_SLIM = "docker.io/library/python:3.11-slim"
PYTHON = "docker.io/library/python:3.11"
DEBIAN = "docker.io/library/debian:bookworm-slim"

# What the real-node stage imports: each name exactly as manifests and the kubelet ask for it.
ALL_IMAGES: tuple[str, ...] = (PAUSE, INJECTOR, MCP_REDIS, MCP_ELASTICSEARCH, REDIS, ELASTICSEARCH,
                               ORCHESTRATOR, WORKERS)


@dataclasses.dataclass
class ImageArchive:
    name: str            # fully normalised reference, e.g. "docker.io/mcp/redis:latest"
    path: Path           # OCI archive (``buildah push IMG oci-archive:F:NAME`` layout, uncompressed layers)
    built: bool          # False when the cached archive was up to date
    seconds: float       # time this call spent on it (building, or checking the cache)
    tags: tuple[str, ...] = ()   # every reference in the archive (e.g. pause:3.10.1 and pause:3.10)
    size: int = 0        # uncompressed size: the sum of the layers' sizes (uncompressed tars)
    content_size: int = 0  # the files in those layers, counted as `docker images` counts them


class ImageBuildError(RuntimeError):
    pass


def normalize_ref(ref: str) -> str:
    """``redis:7.4`` -> ``docker.io/library/redis:7.4``, ``mcp/redis`` -> ``docker.io/mcp/redis:latest``."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


# ------------------------------------------------------------------------------------ the images

def _files_under(*paths: Path) -> list[Path]:
    """Regular files, sorted, skipping bytecode caches (what the builds' ignore files also skip)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                out.extend(Path(root) / f for f in sorted(files) if not f.endswith(".pyc"))
        else:
            out.append(p)
    return out


def _k8s_version() -> str:
    text = (HERE / "k8s" / "go.mod").read_text()
    m = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", text, re.M)
    if not m:
        raise ImageBuildError("tests/cluster/k8s/go.mod does not require k8s.io/kubernetes")
    return m.group(1)


def _es_version() -> str:
    text = (REPO / "tests" / "backends" / "elasticsearch_node.py").read_text()
    return re.search(r'^ES_VERSION = "([^"]+)"', text, re.M).group(1)


def _pip_conf() -> str:
    """/etc/pip.conf of the python:3.11 build stand-in: the host's certificate bundle and index."""
    lines = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
    for var, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
                     ("PIP_TRUSTED_HOST", "trusted-host"), ("PIP_DEFAULT_TIMEOUT", "timeout")):
        if os.environ.get(var):
            lines.append(f"{key} = {os.environ[var]}")
    return "\n".join(lines) + "\n"


# The base root filesystem: minbase + merged /usr (without it apt pulls usrmerge and perl, ~47 MB),
# with the dpkg path excludes of Debian's slim images (they stay in /etc/dpkg/dpkg.cfg.d).
BASE_ROOTFS_ARGS = (
    "--variant=minbase",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--aptopt=Acquire::Languages \"none\"",
    *(f"--dpkgopt=path-exclude=/usr/share/{p}/*"
      for p in ("doc", "man", "groff", "info", "lintian", "linda", "locale")),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "bookworm",
)


@dataclasses.dataclass(frozen=True)
class _Spec:
    key: str
    names: tuple[str, ...]                      # every reference; the first is the primary one
    containerfile: Path
    deps: tuple[str, ...] = ()                  # keys of the images it is built FROM
    target: str | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    repo_context: bool = False                  # the repository (with <containerfile>.dockerignore)
    inputs: Callable[[], list[Path]] = list     # files whose bytes go into the stamp
    extra: Callable[[], str] = str              # strings that go into the stamp (versions, settings)
    prepare: Callable[[Path], None] | None = None   # fills the context dir (cold path only)
    rootfs: bool = False                        # needs base.tar (the mmdebstrap root filesystem)
    apt_cache: bool = False                     # RUN apt-get: bind-mount apt's lists and .deb cache
    estimate: int = 30                          # first build, seconds (2 cores, measured 2026-11-30)


def _copy_support(*names: str) -> Callable[[Path], None]:
    def prepare(ctx: Path) -> None:
        for n in names:
            shutil.copy2(FILES / n, ctx / n)
    return prepare


def _prepare_python(ctx: Path) -> None:
    shutil.copyfile(HOST_CA_BUNDLE, ctx / "ca-certificates.crt")
    (ctx / "pip.conf").write_text(_pip_conf())


def _prepare_pause(ctx: Path) -> None:
    version = _k8s_version()
    gomodcache = Path(os.environ.get("GOMODCACHE") or _run_text(["go", "env", "GOMODCACHE"])
                      or Path.home() / "go/pkg/mod")
    source = gomodcache / f"k8s.io/kubernetes@{version}" / "build/pause/linux/pause.c"
    if not source.exists():
        subprocess.run(["go", "mod", "download", "k8s.io/kubernetes"], cwd=HERE / "k8s", check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_TAG}-{version}",
                    "-o", str(ctx / "pause"), str(source)], check=True)
    subprocess.run(["strip", str(ctx / "pause")], check=True)


def _prepare_elasticsearch(ctx: Path) -> None:
    from tests.backends.elasticsearch_node import ensure_installed

    es = ensure_installed()  # the jars from Maven Central, once (~50 MB)
    for part, dest in (("server", "lib"), ("modules", "modules")):
        _link_tree(es / part, ctx / dest)
    (ctx / "launcher").mkdir()
    subprocess.run(["javac", "-d", str(ctx / "launcher"), "--module-path", str(es / "server"),
                    "--add-modules", "ALL-MODULE-PATH", str(FILES / "EsImageNode.java")], check=True)
    shutil.copy2(FILES / "es-entrypoint.sh", ctx / "es-entrypoint.sh")


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links when possible (same file system, no copy of 40 MB of jars), else copies."""
    for path in _files_under(src):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _project_inputs(dockerfile: str, *sources: str) -> Callable[[], list[Path]]:
    return lambda: _files_under(*(REPO / p for p in (dockerfile, f"{dockerfile}.dockerignore", "constraints.txt",
                                                     "pyproject.toml", "README.md", *sources)))


def _f(name: str) -> Path:
    return FILES / name


SPECS: dict[str, _Spec] = {s.key: s for s in [
    _Spec("pause", (PAUSE, f"registry.k8s.io/pause:{PAUSE_TAG.rsplit('.', 1)[0]}"), _f("Containerfile.pause"),
          extra=lambda: f"k8s {_k8s_version()} gcc -Os -Wall -Werror -static", prepare=_prepare_pause, estimate=2),
    _Spec("debian", (DEBIAN,), _f("Containerfile.debian"), rootfs=True, estimate=30),
    _Spec("python-slim", (PYTHON_SLIM,), _f("Containerfile.python-slim"), deps=("debian",), apt_cache=True,
          estimate=15),
    _Spec("python", (PYTHON,), _f("Containerfile.python"), deps=("python-slim",), apt_cache=True,
          inputs=lambda: [HOST_CA_BUNDLE], extra=_pip_conf, prepare=_prepare_python, estimate=8),
    _Spec("injector", (INJECTOR, "docker.io/mcp/sidecar-injector:latest"), REPO / "Dockerfile.webhook",
          deps=("python", "python-slim"), repo_context=True,
          inputs=_project_inputs("Dockerfile.webhook", "scripts/build-images.sh", "scripts/slim-rootfs.py", "webhook"),
          estimate=55),
    _Spec("mcp-redis", (MCP_REDIS,), REPO / "Dockerfile.sidecars", target="redis",
          deps=("python", "python-slim"), repo_context=True,
          inputs=_project_inputs("Dockerfile.sidecars", "scripts/slim-rootfs.py", "sidecars"), estimate=40),
    _Spec("mcp-elasticsearch", (MCP_ELASTICSEARCH,), REPO / "Dockerfile.sidecars", target="elasticsearch",
          deps=("python", "python-slim"), repo_context=True,
          inputs=_project_inputs("Dockerfile.sidecars", "scripts/slim-rootfs.py", "sidecars"), estimate=45),
    _Spec("redis", (REDIS,), _f("Containerfile.redis"), deps=("debian",), apt_cache=True,
          inputs=lambda: [_f("redis-entrypoint.sh")], prepare=_copy_support("redis-entrypoint.sh"), estimate=10),
    _Spec("elasticsearch", (ELASTICSEARCH,), _f("Containerfile.elasticsearch"), deps=("debian",), apt_cache=True,
          inputs=lambda: [_f("es-entrypoint.sh"), _f("EsImageNode.java"), REPO / "tests/backends/es/pom.xml"],
          extra=lambda: f"elasticsearch {_es_version()}", prepare=_prepare_elasticsearch, estimate=40),
    _Spec("orchestrator", (ORCHESTRATOR,), _f("Containerfile.asdlc"), deps=("python-slim",),
          target="orchestrator",
          inputs=lambda: [_f("asdlc_app.py")], prepare=_copy_support("asdlc_app.py"), estimate=3),
    _Spec("workers", (WORKERS,), _f("Containerfile.asdlc"), deps=("python-slim",),
          target="workers",
          inputs=lambda: [_f("asdlc_app.py")], prepare=_copy_support("asdlc_app.py"), estimate=3),
]}
_BY_NAME = {name: spec for spec in SPECS.values() for name in spec.names}


def spec_for(name: str) -> _Spec:
    spec = _BY_NAME.get(normalize_ref(name))
    if spec is None:
        known = ", ".join(s.names[0] for s in SPECS.values())
        raise KeyError(f"no image {name!r} here (known: {known})")
    return spec


# ------------------------------------------------------------------------------------ stamps

def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _host_sources() -> Path:
    for path in HOST_SOURCES:
        if path.is_file() and path.stat().st_size:
            return path
    raise ImageBuildError(f"no apt sources on this host ({' or '.join(map(str, HOST_SOURCES))}): "
                          "mmdebstrap needs the host's Debian mirror")


def _rootfs_stamp() -> str:
    return _sha("rootfs", *BASE_ROOTFS_ARGS, _host_sources().read_bytes())


def stamp(key: str, _memo: dict[str, str] | None = None) -> str:
    """sha256 of everything an image is built from, its bases' stamps included."""
    memo = _memo if _memo is not None else {}
    if key not in memo:
        spec = SPECS[key]
        parts: list[bytes | str] = [STAMP_VERSION, key, *spec.names, spec.target or "", repr(spec.build_args),
                                    spec.containerfile.read_bytes(), spec.extra()]
        for path in spec.inputs():
            parts += [str(path.relative_to(REPO) if path.is_relative_to(REPO) else path), path.read_bytes()]
        if spec.rootfs:
            parts.append(_rootfs_stamp())
        parts += [stamp(d, memo) for d in spec.deps]
        memo[key] = _sha(*parts)
    return memo[key]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def archive_path(key: str) -> Path:
    return OUT / f"{_safe(SPECS[key].names[0])}.oci.tar"


def _record_path(key: str) -> Path:
    return OUT / "stamps" / f"{key}.json"


def _read_record(key: str) -> dict:
    try:
        return json.loads(_record_path(key).read_text())
    except (OSError, ValueError):
        return {}


def _write_record(key: str, record: dict) -> None:
    path = _record_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _archive_current(key: str, current: str) -> dict | None:
    record = _read_record(key)
    if record.get("stamp") == current and record.get("archive_stamp") == current and archive_path(key).is_file():
        return record
    return None


# ------------------------------------------------------------------------------------ running things

def _run_text(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _env() -> dict[str, str]:
    tmp = CONTAINERS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF), "CONTAINERS_CONF": str(CONTAINERS_CONF),
            "TMPDIR": str(tmp)}


def _write_configs() -> None:
    """buildah's storage and its CNI lock under .cache/containers, not /var/lib/containers and /etc/cni
    (buildah creates <network_config_dir>/cni.lock on every command that makes a container)."""
    head = "# written by tests/cluster/images.py; buildah uses it when {}=this file\n"
    files = {
        STORAGE_CONF: head.format("CONTAINERS_STORAGE_CONF") + "[storage]\n" + 'driver = "overlay"\n'
        + f'graphroot = "{CONTAINERS / "storage"}"\n' + f'runroot = "{CONTAINERS / "run"}"\n',
        CONTAINERS_CONF: head.format("CONTAINERS_CONF") + "[network]\n"
        + f'network_config_dir = "{CONTAINERS / "cni"}"\n' + 'cni_plugin_dirs = ["/usr/lib/cni"]\n',
    }
    (CONTAINERS / "cni").mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def _run(cmd: Sequence[str], *, logfile: Path, what: str, log: Callable[[str], None],
         show: Callable[[str], bool] = lambda line: False, cwd: Path | None = None) -> None:
    """Run cmd niced, all output to logfile; lines for which show() is true go to log as they come,
    and a heartbeat every 30 s of quiet. On failure raise ImageBuildError with the log's tail."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t0 = last = time.monotonic()
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(["nice", "-n", NICE, *cmd], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        lines: list[str] = []
        quiet = threading.Event()

        def heartbeat() -> None:
            while not quiet.wait(10):
                if time.monotonic() - last >= 30:
                    log(f"    ... {what}: still running ({time.monotonic() - t0:.0f} s, log {logfile})")

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            assert proc.stdout
            for line in proc.stdout:
                out.write(line)
                lines.append(line.rstrip())
                del lines[:-60]
                if show(line):
                    last = time.monotonic()
                    text = line.rstrip()
                    log("    " + (text if len(text) <= 150 else text[:147] + "..."))
            rc = proc.wait()
        finally:
            quiet.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc != 0:
        tail = "\n".join(lines[-40:])
        raise ImageBuildError(f"{what} failed (exit {rc}); full log {logfile}; last lines:\n{tail}")


def _buildah(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], env=_env(), capture_output=True, text=True)


def _image_id(name: str) -> str | None:
    done = _buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", name)
    return done.stdout.strip() or None if done.returncode == 0 else None


@contextlib.contextmanager
def _host_leftovers_guard() -> Iterator[None]:
    """buildah may create paths outside its configured dirs (notes, pitfall 5): remove those it created."""
    watched = [Path("/etc/cni/net.d/cni.lock"), Path("/etc/cni/net.d"), Path("/etc/cni"),
               Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"), Path("/var/lib/containers/cache"),
               Path("/var/lib/containers")]
    before = {p: p.exists() for p in watched}
    try:
        yield
    finally:
        for p in watched:  # files first, then directories only if empty
            if before[p] or not p.exists():
                continue
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()


@contextlib.contextmanager
def _lock(log: Callable[[str], None]) -> Iterator[None]:
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            log(f"==> another image build holds {OUT / '.lock'} ({holder or 'unknown'}); waiting for it...")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ building

class _Builder:
    def __init__(self, log: Callable[[str], None], force: Iterable[str] = ()):
        self.log = log
        self.force = set(force)
        self.memo: dict[str, str] = {}
        self.ready: set[str] = set()      # in buildah storage with the current stamp (this session)
        self.built_any = False

    def stamp(self, key: str) -> str:
        return stamp(key, self.memo)

    # -- base root filesystem (mmdebstrap)
    def rootfs(self) -> Path:
        tar = OUT / "base-bookworm-minbase.tar"
        stamp_file = tar.with_suffix(".stamp")
        current = _rootfs_stamp()
        if tar.is_file() and stamp_file.is_file() and stamp_file.read_text().strip() == current \
                and "debian" not in self.force:
            return tar
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError("mmdebstrap is missing: apt-get install --no-install-recommends mmdebstrap")
        self.log(f"==> base root filesystem: mmdebstrap {' '.join(BASE_ROOTFS_ARGS)} {_host_sources()} "
                 f"(first time ~25 s)...")
        t0 = time.monotonic()
        tmp = tar.with_suffix(".tmp.tar")
        tmp.unlink(missing_ok=True)
        try:
            _run(["mmdebstrap", *BASE_ROOTFS_ARGS, str(tmp), str(_host_sources())],
                 logfile=OUT / "logs" / "base-rootfs.log", what="mmdebstrap", log=self.log,
                 show=lambda line: line.startswith("I: ") and "success" not in line)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(tar)
        stamp_file.write_text(current + "\n")
        self.log(f"    base root filesystem: {tar.stat().st_size / 1e6:.0f} MB in {time.monotonic() - t0:.0f} s")
        return tar

    # -- an image in buildah storage, current
    def image(self, key: str) -> None:
        if key in self.ready:
            return
        spec, current = SPECS[key], self.stamp(key)
        record = _read_record(key)
        if key not in self.force and record.get("stamp") == current and record.get("image_id") \
                and _image_id(spec.names[0]) == record["image_id"]:
            self.ready.add(key)
            return
        for dep in spec.deps:
            self.image(dep)
        self._build(spec, current)
        self.ready.add(key)

    def _build(self, spec: _Spec, current: str) -> None:
        first = "" if _read_record(spec.key) else f" (first time ~{spec.estimate} s)"
        self.log(f"==> building {spec.names[0]}{first}...")
        t0 = time.monotonic()
        logfile = OUT / "logs" / f"{spec.key}.log"
        logfile.unlink(missing_ok=True)
        ctx = OUT / "ctx" / spec.key
        if spec.repo_context:
            context = REPO
        else:
            shutil.rmtree(ctx, ignore_errors=True)
            ctx.mkdir(parents=True)
            if spec.rootfs:
                tar = self.rootfs()
                try:
                    os.link(tar, ctx / "base.tar")
                except OSError:
                    shutil.copy2(tar, ctx / "base.tar")
            if spec.prepare:
                spec.prepare(ctx)
            context = ctx
        iidfile = OUT / "logs" / f"{spec.key}.iid"
        cmd = ["buildah", "build", "--layers", "--force-rm", "--pull=never", "--network=host", "--isolation=oci",
               "--ulimit", f"nofile={_nofile()}:{_nofile()}",
               "--iidfile", str(iidfile), "-f", str(spec.containerfile)]
        if spec.repo_context:
            cmd += ["--ignorefile", f"{spec.containerfile}.dockerignore"]
        if spec.target:
            cmd += ["--target", spec.target]
        for k, v in spec.build_args:
            cmd += ["--build-arg", f"{k}={v}"]
        if spec.apt_cache:
            # apt's lists, its pkgcache.bin (~70 MB together) and the .debs stay on the host, shared by
            # the builds (they run one at a time, under the lock), and never land in a layer.
            lists, cache = OUT / "apt" / "lists", OUT / "apt" / "cache"
            (lists / "partial").mkdir(parents=True, exist_ok=True)
            (cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            cmd += ["-v", f"{lists}:/var/lib/apt/lists", "-v", f"{cache}:/var/cache/apt"]
        if spec.key in self.force:
            cmd.append("--no-cache")
        for name in spec.names:
            cmd += ["-t", name]
        cmd.append(str(context))
        _run(cmd, logfile=logfile, what=f"buildah build {spec.names[0]}", log=self.log, cwd=REPO,
             show=lambda line: bool(re.match(r"(\[\d+/\d+\] )?STEP \d+/\d+|==> ", line)))
        if not spec.repo_context:
            shutil.rmtree(ctx, ignore_errors=True)
        seconds = time.monotonic() - t0
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
        _write_record(spec.key, {"stamp": current, "image_id": image_id, "names": list(spec.names),
                                 "build_seconds": round(seconds, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.built_any = True
        self.log(f"    built {spec.names[0]} in {seconds:.0f} s")

    # -- the archive
    def archive(self, key: str) -> dict:
        """``buildah push -D IMG dir:D`` (uncompressed layers), then D as an OCI archive with one index
        entry per name: what ``buildah push IMG oci-archive:F:NAME`` writes, minus the gzip (the
        oci transports always compress), so that importing into a node does not gunzip ~1 GB."""
        spec, current = SPECS[key], self.stamp(key)
        self.image(key)
        path = archive_path(key)
        pushed = OUT / "push" / key
        shutil.rmtree(pushed, ignore_errors=True)
        pushed.parent.mkdir(parents=True, exist_ok=True)
        logfile = OUT / "logs" / f"{key}.push.log"
        logfile.unlink(missing_ok=True)
        image_id = _read_record(key)["image_id"]  # by ID: a name may have been re-tagged by another build
        _run(["buildah", "push", "--disable-compression", "--format", "oci", "--quiet", image_id, f"dir:{pushed}"],
             logfile=logfile, what=f"buildah push {spec.names[0]}", log=self.log)
        _write_oci_archive(pushed, spec.names, path)
        shutil.rmtree(pushed, ignore_errors=True)
        layers, content = archive_sizes(path)
        record = _read_record(key)
        record.update(archive_stamp=current, archive=str(path), size=layers, content_size=content,
                      tags=list(spec.names))
        _write_record(key, record)
        return record

    def prune(self) -> None:
        """Drop dangling images (older builds, intermediate layers) so that storage does not grow."""
        if self.built_any:
            _buildah("rmi", "--prune")


def _nofile() -> int:
    """RUN steps get the caller's hard limit: buildah's default (1048576) needs CAP_SYS_RESOURCE."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _write_oci_archive(pushed: Path, names: Sequence[str], path: Path) -> None:
    """An OCI image layout tar from a ``dir:`` copy: blobs/sha256/*, oci-layout, and index.json naming
    the image once per reference (org.opencontainers.image.ref.name, which ``ctr images import``
    uses as the image name when it is a full reference, and io.containerd.image.name)."""
    manifest_bytes = (pushed / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    config = json.loads((pushed / manifest["config"]["digest"].split(":", 1)[1]).read_bytes())
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    platform = {"architecture": config["architecture"], "os": config["os"]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": manifest["mediaType"], "digest": digest, "size": len(manifest_bytes), "platform": platform,
         "annotations": {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name}}
        for name in names]}
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(arcname: str, data: bytes) -> None:
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index).encode())
        add_bytes(f"blobs/sha256/{digest.split(':', 1)[1]}", manifest_bytes)
        for blob in [manifest["config"], *manifest["layers"]]:
            hexdigest = blob["digest"].split(":", 1)[1]
            tar.add(pushed / hexdigest, arcname=f"blobs/sha256/{hexdigest}")
    tmp.replace(path)


def archive_sizes(path: Path) -> tuple[int, int]:
    """(layers, content) of the archive's first manifest, in bytes. layers: the sum of the layer sizes
    (uncompressed tars here); content: the files in them, symlinks by their target's length and hard
    links once, which is how `docker images` measures (tar headers and padding not counted)."""
    with tarfile.open(path) as archive:
        def blob(digest: str):
            return archive.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")

        index = json.load(archive.extractfile("index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        content = 0
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer["digest"]), mode="r|*") as layer_tar:
                for member in layer_tar:
                    if member.isreg():
                        content += member.size
                    elif member.issym():
                        content += len(member.linkname)
    return sum(layer["size"] for layer in manifest["layers"]), content


def _check_tools() -> None:
    missing = [t for t in ("buildah", "nice") if shutil.which(t) is None]
    if missing:
        raise ImageBuildError(f"missing {', '.join(missing)}: apt-get install --no-install-recommends buildah "
                              "(the real-node images are built with buildah)")


def ensure_images(names: Iterable[str] = ALL_IMAGES, log: Callable[[str], None] = print, *,
                  force: bool = False) -> list[ImageArchive]:
    """Build what is missing or stale and return one archive per image (in the order asked).

    names: references as manifests spell them (normalised here; aliases such as pause:3.10 map to
    the archive that carries them). force: rebuild the named images without buildah's layer cache.
    A call whose stamps all match runs no buildah and takes well under a second.
    """
    t_start = time.monotonic()
    wanted: list[tuple[str, _Spec]] = []
    for name in names:
        spec = spec_for(name)
        if all(spec is not s for _, s in wanted):
            wanted.append((normalize_ref(name), spec))
    memo: dict[str, str] = {}
    results: dict[str, ImageArchive] = {}
    pending = []
    for name, spec in wanted:
        t0 = time.monotonic()
        record = None if force else _archive_current(spec.key, stamp(spec.key, memo))
        if record:
            results[spec.key] = _result(name, spec, record, False, time.monotonic() - t0)
            log(f"==> {name}: up to date ({_mb(record)})")
        else:
            pending.append((name, spec))
    if pending:
        _check_tools()
        with _lock(log), _host_leftovers_guard():
            _write_configs()
            builder = _Builder(log, force=[s.key for _, s in pending] if force else ())
            builder.memo = memo
            try:
                for name, spec in pending:
                    t0 = time.monotonic()
                    record = None if force else _archive_current(spec.key, builder.stamp(spec.key))
                    built = record is None  # else: another caller built it while this one waited
                    if built:
                        record = builder.archive(spec.key)
                    seconds = time.monotonic() - t0
                    results[spec.key] = _result(name, spec, record, built, seconds)
                    log(f"==> {name}: {'built' if built else 'up to date'} "
                        f"({_mb(record)}, {seconds:.0f} s) -> {archive_path(spec.key)}")
            finally:
                builder.prune()
        log(f"==> images ready in {time.monotonic() - t_start:.0f} s")
    return [results[spec.key] for _, spec in wanted]


def _result(name: str, spec: _Spec, record: dict, built: bool, seconds: float) -> ImageArchive:
    return ImageArchive(name, archive_path(spec.key), built, seconds, tuple(record.get("tags", spec.names)),
                        record.get("size", 0), record.get("content_size", 0))


def _mb(record: dict) -> str:
    return f"{record.get('content_size', 0) / 1e6:.1f} MB, layers {record.get('size', 0) / 1e6:.1f} MB uncompressed"


# ------------------------------------------------------------------------------------ verification

def inspect_config(name: str) -> dict:
    """The image's OCI config section (User, Entrypoint, Cmd, Env...) from buildah storage."""
    done = _buildah("inspect", "--type", "image", name)
    if done.returncode != 0:
        raise ImageBuildError(f"buildah inspect {name}: {done.stderr.strip()}")
    return json.loads(done.stdout)["OCIv1"]["config"]


def _resolve_in(root: Path, path: str, env_path: str) -> Path | None:
    """Where `path` (absolute, or a command looked up in PATH) lands inside root, symlinks followed."""
    candidates = [path] if path.startswith("/") else [f"{d}/{path}" for d in env_path.split(":") if d]
    for candidate in candidates:
        current, seen = candidate, 0
        while seen < 40:
            parts = [p for p in current.split("/") if p]
            resolved = root
            for i, part in enumerate(parts):
                nxt = resolved / part
                if nxt.is_symlink():
                    link = os.readlink(nxt)
                    rest = "/".join(parts[i + 1:])
                    base = "" if link.startswith("/") else "/" + str(resolved.relative_to(root))
                    current = f"{base}/{link}/{rest}".rstrip("/")
                    seen += 1
                    break
                resolved = nxt
            else:
                if resolved.is_file() and os.access(resolved, os.X_OK):
                    return resolved
                break
    return None


def verify(names: Iterable[str] = ALL_IMAGES) -> list[str]:
    """For each image: its user, and whether its entrypoint (or command) exists in it, executable.
    Returns report lines; raises ImageBuildError listing the images whose entrypoint is missing."""
    lines: list[str] = []
    bad: list[str] = []
    with _lock(lambda m: print(m, file=sys.stderr, flush=True)), _host_leftovers_guard():
        _write_configs()
        for name in names:
            _verify_one(name, lines, bad)
    if bad:
        raise ImageBuildError("entrypoint missing in " + ", ".join(bad) + "\n" + "\n".join(lines))
    return lines


def _verify_one(name: str, lines: list[str], bad: list[str]) -> None:
    spec = spec_for(name)
    config = inspect_config(spec.names[0])
    argv = config.get("Entrypoint") or config.get("Cmd") or []
    env_path = next((e.split("=", 1)[1] for e in config.get("Env") or [] if e.startswith("PATH=")), "/usr/bin:/bin")
    container = _buildah("from", "--pull=never", spec.names[0]).stdout.strip()
    try:
        root = Path(_buildah("mount", container).stdout.strip())
        found = _resolve_in(root, argv[0], env_path) if argv else None
    finally:
        _buildah("umount", container)
        _buildah("rm", container)
    where = f"-> /{found.relative_to(root)}" if found else "MISSING"
    lines.append(f"{spec.names[0]}: user {config.get('User') or 'root (none set)'}, entrypoint {argv} {where}")
    if not found:
        bad.append(spec.names[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these images (refs as manifests spell them)")
    parser.add_argument("--force", action="store_true", help="rebuild them without buildah's layer cache")
    parser.add_argument("--verify", action="store_true", help="then print each image's user and check its entrypoint")
    parser.add_argument("--list", action="store_true", help="list the images this module builds and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in SPECS.values():
            print(f"{spec.names[0]:56} {' '.join(spec.names[1:])}")
        return 0
    names = args.only or list(ALL_IMAGES)
    t0 = time.monotonic()
    try:
        archives = ensure_images(names, log=lambda m: print(m, flush=True), force=args.force)
    except (ImageBuildError, KeyError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    print(f"\n{'image':56} {'built':>6} {'seconds':>8} {'MB':>7} {'layers':>7}  archive")
    for a in archives:
        print(f"{a.name:56} {'yes' if a.built else 'cached':>6} {a.seconds:8.1f} {a.content_size / 1e6:7.1f} "
              f"{a.size / 1e6:7.1f}  {a.path}")
    print(f"total {time.monotonic() - t0:.1f} s. MB: the files in the layers, as `docker images` counts; layers: "
          "the uncompressed layer tars.\nThe python images are built on Debian stand-ins of python:3.11[-slim], "
          "not the official images: their sizes are not the official-base sizes.")
    print("import into a node: ctr -n k8s.io images import <archive>   (full names are in the archives)")
    if args.verify:
        try:
            for line in verify(a.name for a in archives):
                print(line)
        except ImageBuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
