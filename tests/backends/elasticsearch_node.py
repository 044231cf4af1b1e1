"""Start and stop a real single-node Elasticsearch 8 built from Maven Central artifacts.

There is no Docker engine and no Elastic download site here, so the node is assembled the way the
distribution is: ``org.elasticsearch:elasticsearch`` and its dependencies on the JVM module path,
the ``transport-netty4`` module (REST over HTTP) in ``$HOME/modules``, and a 60-line launcher
(``es/EsTestNode.java``) that constructs ``org.elasticsearch.node.Node`` directly. The jars (~50 MB)
are fetched once with Maven into ``.cache/es/<version>/``; later runs only compile-check the launcher.

Modules that live only in the distribution zip (rest-root for ``GET /``, analysis-common,
x-pack with ES|QL) are absent: index, mapping, search, count, get, cluster and cat APIs all work.

No pytest here: tests and benchmarks share it.

    with ElasticsearchNode() as es:
        print(es.url)     # http://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

from tests.support.processes import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ES_VERSION = "8.19.20"
CACHE = Path(os.environ.get("MCP_TEST_CACHE", REPO / ".cache")) / "es" / ES_VERSION
MODULE_JARS = ("transport-netty4-", "netty-")
#: A small, quick-starting JVM for a test node (shared with opensearch_node.py).
JVM_FLAGS = ("-XX:+UseSerialGC", "-Xss1m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
             "-Dfile.encoding=UTF-8", "-Dlog4j2.disable.jmx=true", "-Dio.netty.noUnsafe=true")


def _log(message: str) -> None:
    print(f"[elasticsearch-node] {message}", file=sys.stderr, flush=True)


def ensure_installed() -> Path:
    """Download the jars (once, with visible Maven progress) and compile the launcher. Returns the cache dir."""
    server, module = CACHE / "server", CACHE / "modules" / "transport-netty4"
    if not (CACHE / ".complete").exists():
        if shutil.which("mvn") is None or shutil.which("javac") is None:
            raise RuntimeError("Elasticsearch test node needs Java 17+ (javac) and Maven (mvn) on PATH")
        lib = CACHE / "lib"
        _log(f"downloading Elasticsearch {ES_VERSION} jars from Maven Central into {lib} (one time, ~50 MB)")
        subprocess.run(
            ["mvn", "-B", "-ntp", "-f", str(HERE / "es" / "pom.xml"), f"-Des.version={ES_VERSION}",
             "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
            check=True, stdout=sys.stderr,
        )
        for d in (server, module):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        for jar in lib.glob("*.jar"):
            target = module if jar.name.startswith(MODULE_JARS) else server
            shutil.copy2(jar, target / jar.name)
        with zipfile.ZipFile(module / f"transport-netty4-{ES_VERSION}.jar") as z:
            descriptor = z.read("META-INF/es-plugins/transport-netty4/plugin-descriptor.properties")
        (module / "plugin-descriptor.properties").write_bytes(descriptor)
        shutil.rmtree(lib)
        (CACHE / ".complete").touch()
    source, classes = HERE / "es" / "EsTestNode.java", CACHE / "classes"
    compiled = classes / "EsTestNode.class"
    if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
        classes.mkdir(exist_ok=True)
        subprocess.run(["javac", "-d", str(classes), "--module-path", str(server), "--add-modules", "ALL-MODULE-PATH",
                        str(source)], check=True)
    return CACHE


class ElasticsearchNode:
    engine = f"Elasticsearch {ES_VERSION}"

    def __init__(self, *, port: int | None = None, heap: str = "384m"):
        self.port = port or free_port()
        self.heap = heap
        self.host = "127.0.0.1"
        self._home = Path(tempfile.mkdtemp(prefix="es-test-"))
        self._proc: subprocess.Popen | None = None
        self._output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The JVM command line (jars installed first); the node prints ``READY`` once it serves HTTP."""
        cache = ensure_installed()
        (self._home / "modules").mkdir(exist_ok=True)
        link = self._home / "modules" / "transport-netty4"
        if not link.exists():
            link.symlink_to(cache / "modules" / "transport-netty4", target_is_directory=True)
        return ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_FLAGS, "-Des.networkaddress.cache.ttl=60",
                "--module-path", str(cache / "server"), "--add-modules", "ALL-MODULE-PATH",
                "-cp", str(cache / "classes"), "EsTestNode", str(self._home), str(self.port)]

    def start(self, timeout: float = 180.0) -> "ElasticsearchNode":
        cmd = self.command()
        t0 = time.monotonic()
        # stdin stays a pipe: when this Python process dies, the JVM sees EOF and exits.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)
        ready = threading.Event()

        def pump() -> None:
            assert self._proc and self._proc.stdout
            for line in self._proc.stdout:
                self._output.append(line.rstrip())
                del self._output[:-200]
                if line.startswith("READY"):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = t0 + timeout
        while not ready.wait(0.2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                out = "\n".join(self._output[-30:])
                self.stop()
                raise RuntimeError(f"{self.engine} node did not start:\n{out}")
        self.request("GET", "/_cluster/health?wait_for_status=green&timeout=30s")
        print(f"[test-node] {self.engine} ready on {self.url} in {time.monotonic() - t0:.1f}s", file=sys.stderr,
              flush=True)
        return self

    def request(self, method: str, path: str, body: object | None = None) -> dict:
        """A plain HTTP call for test set-up (no client library involved)."""
        data = None if body is None else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        headers = {"Content-Type": "application/x-ndjson" if isinstance(body, str) else "application/json"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def output(self) -> str:
        return "\n".join(self._output)

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin:
            proc.stdin.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> "ElasticsearchNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":  # manual use: python -m tests.backends.elasticsearch_node
    with ElasticsearchNode() as node:
        print(f"{node.engine} on {node.url}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
