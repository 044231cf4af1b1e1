"""Run a command the way the injected container runs: uid 1000, read-only root, tmpfs /tmp (bubblewrap).

As root, bwrap builds the mounts and ``setpriv`` drops to a real uid 1000 without capabilities
(``runAsUser: 1000`` + ``readOnlyRootFilesystem`` + ``capabilities.drop: [ALL]``); as a normal user
an unprivileged user namespace maps the caller to uid 1000 instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

UID = 1000
REPO = Path(__file__).resolve().parents[2]


class SandboxUnavailable(RuntimeError):
    pass


def _hidden_ancestor(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that uid 1000 cannot traverse (e.g. /root holding pyenv)."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def sandboxed(argv: list[str], *, chdir: Path = REPO) -> list[str]:
    """``argv`` wrapped in bwrap: ``/`` read-only, fresh tmpfs ``/tmp``, own PID namespace, uid 1000."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap is not installed (scripts/setup.sh installs it)")
    mounts = ["--ro-bind", "/", "/"]
    python_home = Path(sys.base_prefix).resolve()
    hidden = _hidden_ancestor(python_home)
    if hidden is not None:  # expose only the interpreter's tree, read-only, not the rest of e.g. /root
        exposed = hidden / python_home.relative_to(hidden).parts[0]
        mounts += ["--tmpfs", str(hidden), "--ro-bind", str(exposed), str(exposed), "--remount-ro", str(hidden)]
    mounts += ["--perms", "1777", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]
    # A checkout (and its .venv/.cache) living under /tmp, as a CI clone may, stays visible read-only
    # on top of the fresh tmpfs.
    tmp = Path("/tmp")
    for path in sorted({REPO.resolve(), Path(sys.prefix).resolve()}):
        if tmp in path.parents:
            mounts += ["--ro-bind", str(path), str(path)]
    common = ["bwrap", *mounts, "--unshare-pid", "--die-with-parent", "--chdir", str(chdir)]
    if os.geteuid() == 0:
        return [*common, "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all", "--", *argv]
    return [*common, "--unshare-user", "--uid", str(UID), "--gid", str(UID), "--", *argv]
