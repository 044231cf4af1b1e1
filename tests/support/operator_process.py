"""``mcp-sidecar operator`` as a subprocess of a test, with its log in a file (tests/e2e)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import stop_group

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """The operator with ``kubeconfig``'s credentials and the extra ``args``, logging at info."""

    def __init__(self, workdir: Path, kubeconfig: Path, *args: str):
        self.log_file = workdir / "operator.log"
        self._log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webhook.cli", "--log-level", "info", "operator", "--kubeconfig", str(kubeconfig),
             *args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.process, timeout=10)
        self._log.close()
