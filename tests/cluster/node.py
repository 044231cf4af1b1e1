"""A real Kubernetes node for the local control plane: containerd + runc + CNI, kubelet, kube-proxy, kube-scheduler.

Pods really start here: images come from OCI archives built with buildah (tests/cluster/images.py,
no registry), the kubelet runs them through containerd, kube-proxy programs Services with iptables.
Everything stays on this machine:

- pods live on their own bridge (``mcp-node0``, 10.244.0.0/16) whose only routes are the pod and the
  Service CIDR (no default route); a FORWARD guard drops anything between that bridge and any other
  interface;
- the kubelet API and NodePorts listen on the bridge address only, everything else on 127.0.0.1;
- in-cluster clients reach the API server through a relay on ``<bridge address>:6443`` that an
  EndpointSlice of the ``kubernetes`` Service points at (the control plane binds loopback only).

The node changes host state (sysctls, iptables, a bridge, mounts, cgroups); :meth:`Node.stop`
undoes each change it made, by PID and by the names it created, never by process name.
Root is required: :func:`why_not_runnable` says in one line why a node cannot run here.

    with ControlPlane() as cp, Node(cp) as node:
        node.import_images(archives)
        cp.kubectl("get", "nodes")

Facts behind every setting (each pitfall cost time): shared/notes/real-node.md in the project's
history, summarised in tests/cluster/README.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tests.cluster.controlplane import (
    BIN_DIR,
    Component,
    ControlPlane,
    ControlPlaneError,
    SERVICE_CIDR,
    http_ok,
    issue_cert,
    pid_alive,
    port_open,
    wait_for_component,
)
from tests.support.processes import free_port

NODE_NAME = "mcp-node"
BRIDGE = "mcp-node0"
POD_CIDR = "10.244.0.0/16"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
API_RELAY_PORT = 6443
GUARD_CHAIN = "MCP-NODE-GUARD"

# Debian packages the node needs (installed by scripts/setup.sh when the node stage can run).
NODE_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "socat",
                 "nftables", "buildah", "mmdebstrap", "skopeo")
CNI_BIN_DIR = Path("/usr/lib/cni")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler")

# Sysctls that the kubelet, kube-proxy or the pod network change; saved before, restored after.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

# Paths that the kubelet and containerd 1.6 use whatever their configured directories say:
# removed on stop only when they did not exist before.
HARDCODED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
)


class NodeError(ControlPlaneError):
    pass


def why_not_runnable(bin_dir: Path = BIN_DIR) -> str | None:
    """None when a node can run on this machine, otherwise the reason in one line."""
    if sys.platform != "linux":
        return "the real-node stage needs Linux"
    if os.geteuid() != 0:
        return "the real-node stage needs root (containerd, network namespaces, iptables); run `make test` as root"
    missing = [b for b in ("containerd", "runc", "ctr", "iptables", "socat", "ip", "nft") if shutil.which(b) is None]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append("CNI plugins (/usr/lib/cni/bridge)")
    if missing:
        return f"the real-node stage is missing {', '.join(missing)}: run scripts/setup.sh as root"
    absent = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if absent:
        return f"{', '.join(absent)} not built: run tests/cluster/build.sh kube"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(Path(root).resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (p.count("/"), len(p)), reverse=True)


@dataclass
class _Undo:
    """What start() changed on the host, so stop() can undo exactly that."""

    sysctls: dict[str, str] = field(default_factory=dict)
    created_paths: list[Path] = field(default_factory=list)
    bridge: bool = False
    route: bool = False
    guard: bool = False
    kube_proxy_ran: bool = False


class Node:
    """One kubelet node joined to ``cp`` (a started :class:`ControlPlane`).

    Attributes after :meth:`start`: ``name``, ``ip`` (bridge address = node InternalIP),
    ``containerd_address`` (socket), ``workdir``, ``components`` (name -> Component).
    """

    def __init__(
        self,
        cp: ControlPlane,
        *,
        name: str = NODE_NAME,
        bridge: str = BRIDGE,
        pod_cidr: str = POD_CIDR,
        workdir: Path | str | None = None,
        bin_dir: Path | None = None,
        log: Callable[[str], None] | None = None,
        ready_timeout: float = 120.0,
    ) -> None:
        self.cp = cp
        self.name = name
        self.bridge = bridge
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        self.ip = str(next(self.pod_cidr.hosts()))
        self.bin_dir = Path(bin_dir) if bin_dir else cp.bin_dir
        # Short paths: containerd's socket path must stay under 108 bytes.
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mcp-node-", dir="/tmp"))
        self._log = log or (lambda msg: print(f"[node] {msg}", file=sys.stderr, flush=True))
        self.ready_timeout = ready_timeout
        self.components: dict[str, Component] = {}
        self.containerd_address = str(self.workdir / "containerd" / "containerd.sock")
        self._undo = _Undo()
        self._stopped = True

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Node":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Node":
        reason = why_not_runnable(self.bin_dir)
        if reason:
            raise NodeError(reason)
        t0 = time.monotonic()
        # Before this node owns anything: when another live node holds the bridge, the refusal
        # must leave stop() a no-op, or the clean-up would tear down the other node's pods.
        if _run("ip", "link", "show", self.bridge, check=False).returncode == 0:
            self._clean_stale_node()
        self._stopped = False
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._remember_host_state()
        self._record_host_changes()
        self._setup_network()
        self._start_containerd()
        self._start_api_relay()
        self._start_scheduler()
        self._start_kubelet()
        self._start_kube_proxy()
        self._wait_ready()
        self._start_volume_provisioner()
        self._log(f"node {self.name} Ready in {time.monotonic() - t0:.1f}s (InternalIP {self.ip})")
        return self

    def stop(self) -> None:
        """Stop every process, then undo every host change start() made. Idempotent, best effort."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        if getattr(self, "_provisioner_stop", None):
            self._provisioner_stop.set()
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "api-relay"):
            comp = self.components.get(name)
            if comp:
                comp.stop(grace=5)
        comp = self.components.get("containerd")
        if comp and comp.running():
            with contextlib.suppress(Exception):
                self._kill_containers()
        if comp:
            comp.stop(grace=5)
        self._teardown_host()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._log(f"node {self.name} stopped and cleaned up in {time.monotonic() - t0:.1f}s")

    def _teardown_host(self) -> None:
        self._kill_shims()
        self._kill_pod_cgroups()
        self._unmount_all()
        self._cleanup_network()
        self._restore_host_state()
        with contextlib.suppress(OSError):
            self._state_file.unlink()

    # ---- a node whose process died (SIGKILL, OOM, CI timeout) leaves host state: undo it -------

    @property
    def _state_file(self) -> Path:
        return Path("/run") / f"mcp-node-{self.bridge}.json"

    def _record_host_changes(self) -> None:
        self._state_file.write_text(json.dumps({
            "pid": os.getpid(), "workdir": str(self.workdir), "containerd_address": self.containerd_address,
            "sysctls": self._undo.sysctls, "created_paths": [str(p) for p in self._undo.created_paths],
        }))

    def _clean_stale_node(self) -> None:
        """The bridge exists: if the node that made it is dead, undo what it recorded; else refuse."""
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            state = None
        if state and pid_alive(state["pid"]) and state["pid"] != os.getpid():
            raise NodeError(f"another node is running on bridge {self.bridge} (pid {state['pid']}); "
                            "only one node fits on a machine (kube-proxy owns the KUBE-* chains)")
        self._log(f"cleaning up a stale node on bridge {self.bridge}"
                  + (f" (pid {state['pid']} is gone)" if state else " (no state file)"))
        stale = Node(self.cp, name=self.name, bridge=self.bridge, pod_cidr=str(self.pod_cidr),
                     workdir=(state or {}).get("workdir", "/nonexistent"), log=self._log)
        if state:
            stale.containerd_address = state["containerd_address"]
            stale._undo.sysctls = state["sysctls"]
            stale._undo.created_paths = [Path(p) for p in state["created_paths"]]
        stale._undo.bridge = stale._undo.route = stale._undo.guard = stale._undo.kube_proxy_ran = True
        stale._teardown_host()
        if state and Path(state["workdir"]).name.startswith("mcp-node-"):
            shutil.rmtree(state["workdir"], ignore_errors=True)

    # ---- sharing one running node between test runs (development) ---------------------------

    def save_state(self, path: Path | str) -> None:
        """Control plane + node state for :meth:`attach` (``python -m tests.cluster.node --state-out F``)."""
        self.cp.save_state(path)
        state = json.loads(Path(path).read_text())
        state["node"] = {"name": self.name, "bridge": self.bridge, "pod_cidr": str(self.pod_cidr),
                         "workdir": str(self.workdir), "containerd_address": self.containerd_address}
        Path(path).write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, path: Path | str) -> "Node":
        """A handle on a node another process runs; its stop() leaves that node running."""
        state = json.loads(Path(path).read_text())
        cp = ControlPlane.attach(path)
        n = state["node"]
        node = cls(cp, name=n["name"], bridge=n["bridge"], pod_cidr=n["pod_cidr"], workdir=n["workdir"])
        node.containerd_address = n["containerd_address"]
        node._stopped = True
        return node

    # ---- host state ---------------------------------------------------------------------------

    def _remember_host_state(self) -> None:
        for name in SYSCTLS:
            path = _sysctl_path(name)
            with contextlib.suppress(OSError):
                self._undo.sysctls[name] = path.read_text().strip()
        self._undo.created_paths = [p for p in HARDCODED_PATHS if not p.exists()]

    def _restore_host_state(self) -> None:
        for name, value in self._undo.sysctls.items():
            with contextlib.suppress(OSError):
                path = _sysctl_path(name)
                if path.read_text().strip() != value:
                    path.write_text(value)
        for path in self._undo.created_paths:
            for point in _mounts_under(path) if path.exists() else []:
                _run("umount", "-l", point, check=False)
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _set_sysctl(name: str, value: str) -> None:
        _sysctl_path(name).write_text(value)

    # ---- network ------------------------------------------------------------------------------

    def _setup_network(self) -> None:
        prefix = self.pod_cidr.prefixlen
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._undo.bridge = True
        _run("ip", "addr", "add", f"{self.ip}/{prefix}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # host -> ClusterIP goes to the bridge, never to the default route.
        _run("ip", "route", "add", SERVICE_CIDR, "dev", self.bridge, "src", self.ip)
        self._undo.route = True
        # Nothing crosses between the pod bridge and any other interface.
        _run("iptables", "-w", "-N", GUARD_CHAIN)
        self._undo.guard = True
        _run("iptables", "-w", "-A", GUARD_CHAIN, "-i", self.bridge, "!", "-o", self.bridge, "-j", "DROP")
        _run("iptables", "-w", "-A", GUARD_CHAIN, "!", "-i", self.bridge, "-o", self.bridge, "-j", "DROP")
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
        # pod -> Service -> pod on the same bridge: routed and seen by iptables.
        self._set_sysctl("net.ipv4.ip_forward", "1")
        with contextlib.suppress(OSError):
            self._set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": "mcp-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni / "ipam"),
                        "ranges": [[{"subnet": str(self.pod_cidr), "gateway": self.ip}]],
                        # Only the Service CIDR: pods have no default route off this machine.
                        "routes": [{"dst": SERVICE_CIDR}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-mcp-node.conflist").write_text(json.dumps(conflist, indent=2))

    def _cleanup_network(self) -> None:
        if self._undo.kube_proxy_ran and os.access(self.bin_dir / "kube-proxy", os.X_OK):
            _run(str(self.bin_dir / "kube-proxy"), "--cleanup", check=False, timeout=60)
        if self._undo.guard:
            while _run("iptables", "-w", "-D", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode == 0:
                pass
            _run("iptables", "-w", "-F", GUARD_CHAIN, check=False)
            _run("iptables", "-w", "-X", GUARD_CHAIN, check=False)
        self._remove_leftover_chains()
        if self._undo.route:
            _run("ip", "route", "del", SERVICE_CIDR, "dev", self.bridge, check=False)
        if self._undo.bridge:
            _run("ip", "link", "del", self.bridge, check=False)
        # veths of pods whose netns died with their mounts are gone with the bridge.

    @staticmethod
    def _remove_leftover_chains() -> None:
        """kubelet's KUBE-FIREWALL/KUBE-KUBELET-CANARY, kube-proxy and CNI chains left by iptables-nft."""
        for table in ("filter", "nat", "mangle"):
            rules = _run("iptables", "-w", "-t", table, "-S", check=False).stdout.splitlines()
            ours = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(("KUBE-", "CNI-"))]
            for rule in rules:  # jumps from built-in chains into ours
                parts = rule.split()
                if rule.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] in ours:
                    _run("iptables", "-w", "-t", table, "-D", *parts[1:], check=False)
            for chain in ours:
                _run("iptables", "-w", "-t", table, "-F", chain, check=False)
            for chain in ours:
                _run("iptables", "-w", "-t", table, "-X", chain, check=False)
        # iptables-nft leaves empty tables behind (and ip6 ones created by the kubelet): drop the empty
        # ones that only our components create.
        listing = _run("nft", "list", "tables", check=False).stdout.split("\n")
        for line in listing:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table":
                family, table = parts[1], parts[2]
                body = _run("nft", "list", "table", family, table, check=False).stdout
                if "rule" not in body and family in ("ip", "ip6") and not any(
                        ln.strip().startswith(("ip ", "meta ", "counter", "jump", "ct ", "iifname", "oifname"))
                        for ln in body.splitlines()):
                    _run("nft", "delete", "table", family, table, check=False)

    # ---- containerd ---------------------------------------------------------------------------

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        base.mkdir(exist_ok=True)
        config = base / "config.toml"
        config.write_text(f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{self.containerd_address}"
[ttrpc]
  address = "{base / 'ttrpc.sock'}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE on this kind of machine, even as root: without this every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.workdir / 'cni' / 'net.d'}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
""")
        comp = self._component("containerd", [shutil.which("containerd") or "containerd", "--config", str(config)])
        self._wait("containerd socket", comp, lambda: _run(
            "ctr", "-a", self.containerd_address, "version", check=False, timeout=5).returncode == 0, 30)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """``ctr`` against this node's containerd, namespace k8s.io (the kubelet's)."""
        return _run("ctr", "-a", self.containerd_address, "-n", "k8s.io", *args, check=check, timeout=timeout)

    def import_images(self, archives: Iterable[Path | str]) -> float:
        """Import OCI archives (``buildah push IMG oci-archive:F:NAME``) into the node; returns seconds."""
        t0 = time.monotonic()
        for archive in archives:
            self.ctr("images", "import", str(archive))
        return time.monotonic() - t0

    def images(self) -> list[str]:
        return [line.split()[0] for line in self.ctr("images", "ls", "-q").stdout.splitlines() if line.strip()]

    def remove_image(self, ref: str) -> None:
        self.ctr("images", "rm", "--sync", ref, check=False)

    def _kill_containers(self) -> None:
        """SIGKILL every container task and wait (bounded) until containerd has reaped them."""
        tasks = self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", "--all", task, check=False, timeout=30)
        deadline = time.monotonic() + 10
        for task in tasks:
            while time.monotonic() < deadline:
                done = self.ctr("tasks", "delete", "-f", task, check=False, timeout=30)
                if done.returncode == 0 or "not found" in done.stderr:
                    break
                time.sleep(0.2)

    def _shim_pids(self) -> list[int]:
        """Shims detach from containerd: find ours by the exact socket address in their argv."""
        needle = self.containerd_address.encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if b"containerd-shim" in argv[0] and needle in argv:
                    pids.append(int(proc.name))
        return pids

    def _kill_shims(self) -> None:
        pids = self._shim_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)

    @staticmethod
    def _kill_pod_cgroups() -> None:
        """Kill whatever still runs in the kubelet's pod cgroups, then remove them (cgroupfs driver)."""
        roots = [p / "kubepods" for p in Path("/sys/fs/cgroup").iterdir() if (p / "kubepods").is_dir()]
        for root in roots:
            for procs in _rglob_quiet(root, "cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)
        for root in roots:
            dirs = sorted((d for d in _rglob_quiet(root, "*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
            for d in [*dirs, root]:
                for _ in range(20):
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)

    def _unmount_all(self) -> None:
        for point in _mounts_under(self.workdir):
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)

    # ---- control-plane side -------------------------------------------------------------------

    def _client_kubeconfig(self, stem: str, cn: str, orgs: Sequence[str] = ()) -> Path:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        cert, key = issue_cert(self.cp.ca, cn, orgs=orgs, client=True).write(pki, stem)
        return self.cp.write_kubeconfig(self.workdir / f"{stem}.kubeconfig", cert, key, cn)

    def _start_api_relay(self) -> None:
        """In-cluster clients dial the ``kubernetes`` Service: relay it to the loopback API server."""
        api_port = int(self.cp.server.rsplit(":", 1)[1])
        comp = self._component("api-relay", [
            shutil.which("socat") or "socat",
            f"TCP-LISTEN:{API_RELAY_PORT},bind={self.ip},fork,reuseaddr",
            f"TCP:127.0.0.1:{api_port}",
        ])
        self._wait("API relay", comp, lambda: port_open(API_RELAY_PORT, self.ip), 10)
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes-node-relay", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                    "endpointslice.kubernetes.io/managed-by": "mcp-node.test"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": API_RELAY_PORT, "protocol": "TCP"}],
        }
        self.cp.apply(slice_)

    def _start_scheduler(self) -> None:
        kcfg = self._client_kubeconfig("kube-scheduler", "system:kube-scheduler")
        port = free_port()
        certs = self.workdir / "scheduler-certs"
        certs.mkdir(exist_ok=True)
        comp = self._component("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}",
            f"--authorization-kubeconfig={kcfg}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={certs}",
            "--leader-elect=false",
        ])
        self._wait("kube-scheduler", comp, lambda: port_open(port), 60)

    def _start_kubelet(self) -> None:
        kcfg = self._client_kubeconfig("kubelet", f"system:node:{self.name}", ["system:nodes"])
        root = self.workdir / "kubelet"
        (root / "pki").mkdir(parents=True, exist_ok=True)
        self.kubelet_healthz_port = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,  # the kubelet API on the bridge only
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.cp.ca_file)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,  # this machine has cgroup v1 hierarchies
            "failSwapOn": False,
            "resolvConf": "",  # no cluster DNS and no host resolver in pods
            "imageGCHighThresholdPercent": 100,  # never GC images: they cannot be pulled again
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%", "imagefs.inodesFree": "1%"},
            "podLogsDir": str(self.workdir / "pod-logs"),
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "serializeImagePulls": False,
            "maxPods": 110,
            "registerNode": True,
            "shutdownGracePeriod": "0s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "nodeStatusUpdateFrequency": "5s",
        }
        cfg_path = self.workdir / "kubelet-config.json"
        cfg_path.write_text(json.dumps(config, indent=2))
        comp = self._component("kubelet", [
            str(self.bin_dir / "kubelet"),
            f"--config={cfg_path}",
            f"--kubeconfig={kcfg}",
            f"--node-ip={self.ip}",
            f"--hostname-override={self.name}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            "--v=1",
        ])
        self._wait("kubelet /healthz", comp,
                   lambda: http_ok(f"http://127.0.0.1:{self.kubelet_healthz_port}/healthz"), 60)

    def _start_kube_proxy(self) -> None:
        kcfg = self._client_kubeconfig("kube-proxy", "system:kube-proxy")
        self.kube_proxy_healthz_port, metrics = free_port(), free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kcfg)},
            "hostnameOverride": self.name,
            "clusterCIDR": str(self.pod_cidr),
            "bindAddress": self.ip,
            "healthzBindAddress": f"127.0.0.1:{self.kube_proxy_healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "nodePortAddresses": [f"{self.ip}/32"],
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
            # conntrack sysctls: leave the host's alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        # Written once: kube-proxy exits when its config file is rewritten, even with the same bytes.
        cfg_path = self.workdir / "kube-proxy-config.json"
        cfg_path.write_text(json.dumps(config, indent=2))
        self._undo.kube_proxy_ran = True
        comp = self._component("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={cfg_path}"])
        self._wait("kube-proxy /healthz", comp,
                   lambda: http_ok(f"http://127.0.0.1:{self.kube_proxy_healthz_port}/livez"), 60)

    # ---- storage: a minimal static provisioner for volumeClaimTemplates -----------------------

    def _start_volume_provisioner(self) -> None:
        """StatefulSets' PersistentVolumeClaims need volumes: bind each Pending claim to a new hostPath PV.

        What local-path-provisioner does, in a thread: directories under the node's work dir,
        world-writable because the kubelet applies no fsGroup to hostPath volumes.
        """
        import threading

        self._provisioner_stop = threading.Event()

        def loop() -> None:
            while not self._provisioner_stop.wait(0.5):
                with contextlib.suppress(Exception):
                    self.provision_pending_claims()

        threading.Thread(target=loop, name="node-volume-provisioner", daemon=True).start()

    def provision_pending_claims(self) -> int:
        status, body = self.cp.request("GET", "/api/v1/persistentvolumeclaims")
        if status != 200:
            return 0
        made = 0
        for pvc in body.get("items", []):
            if pvc.get("status", {}).get("phase") != "Pending" or pvc["spec"].get("volumeName"):
                continue
            meta = pvc["metadata"]
            name = f"pv-{meta['uid']}"
            path = self.workdir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            pv = {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"mcp-node.test/provisioned": "true"}},
                "spec": {
                    "capacity": {"storage": pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                    "accessModes": pvc["spec"].get("accessModes", ["ReadWriteOnce"]),
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": pvc["spec"].get("storageClassName") or "",
                    "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.name]}]}]}},
                },
            }
            if self.cp.request("POST", "/api/v1/persistentvolumes", pv)[0] == 201:
                made += 1
        return made

    def _wait_ready(self) -> None:
        def ready() -> bool:
            status, body = self.cp.request("GET", f"/api/v1/nodes/{self.name}")
            if status != 200:
                return False
            conds = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        self._wait(f"node {self.name} Ready", self.components["kubelet"], ready, self.ready_timeout)

    # ---- helpers -------------------------------------------------------------------------------

    def _component(self, name: str, argv: list[str]) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        self.components[name] = comp
        self._log(f"starting {name}")
        comp.start()
        return comp

    def _wait(self, what: str, comp: Component, ready: Callable[[], bool], timeout: float) -> None:
        wait_for_component(what, comp, ready, timeout, self._log, error=NodeError, with_tail=True)

    def logs(self, name: str, lines: int = 60) -> str:
        comp = self.components.get(name)
        return comp.tail(lines) if comp else "(no such component)"

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of the node's own processes (kubelet, containerd + its shims, kube-proxy)."""
        out: dict[str, float] = {}
        for name in ("kubelet", "containerd", "kube-proxy", "kube-scheduler"):
            comp = self.components.get(name)
            if comp and comp.pid:
                out[name] = _rss_kib(comp.pid) / 1024
        out["containerd-shims"] = sum(_rss_kib(pid) for pid in self._shim_pids()) / 1024
        return out


def _rglob_quiet(root: Path, pattern: str) -> list[Path]:
    """``root.rglob(pattern)`` that skips directories vanishing during the walk (pod cgroups do)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _exc: None):
        base = Path(dirpath)
        if pattern == "*":
            found.extend(base / d for d in dirnames)
        elif pattern in filenames:
            found.append(base / pattern)
    return found


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.cluster.node``: a control plane plus this node, images imported, until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--kubeconfig-out", help="also copy the admin kubeconfig here")
    parser.add_argument("--no-images", action="store_true", help="do not build/import the project's images")
    parser.add_argument("--state-out", help="write the cluster's state here; MCP_NODE_ATTACH=FILE makes "
                                            "the node tests use this running node instead of starting one")
    args = parser.parse_args(argv)
    reason = why_not_runnable()
    if reason:
        print(f"cannot run a node here: {reason}", file=sys.stderr)
        return 2
    from tests.cluster.controlplane import ensure_binaries

    ensure_binaries(("etcd", "kube", "tools"))
    with ControlPlane(build=False) as cp, Node(cp) as node:
        if not args.no_images:
            from tests.cluster.images import ALL_IMAGES, ensure_images

            archives = ensure_images(names=ALL_IMAGES, log=print)
            node.import_images(a.path for a in archives)
        if args.kubeconfig_out:
            shutil.copy(cp.kubeconfig, args.kubeconfig_out)
        if args.state_out:
            node.save_state(args.state_out)
            print(f"export MCP_NODE_ATTACH={args.state_out}", flush=True)
        print(f"export KUBECONFIG={args.kubeconfig_out or cp.kubeconfig}", flush=True)
        print("Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
