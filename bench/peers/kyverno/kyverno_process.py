"""Run Kyverno's real admission controller out of cluster against a tests/cluster ControlPlane.

    with KyvernoProcess(cp, workdir, excluded_namespaces=["bench-ours", "bench-none"]) as kyverno:
        ...  # pods labelled mcp-sidecar.dox/backend=redis elsewhere get Kyverno's mcp-sidecar

Installs what the admission controller needs (its CRDs from the github.com/kyverno/kyverno module
in GOMODCACHE, the `kyverno` namespace and the default install's ConfigMaps from install.yaml),
starts .cache/bin/kyverno (bench/peers/kyverno/build.sh) with the Helm chart's default flags plus
`--serverIP=127.0.0.1:PORT` (Kyverno's out-of-cluster mode: it registers its webhooks with a URL
and puts the IP in its self-signed serving certificate), applies policy.yaml and waits until a
dry-run pod comes back mutated. No background, cleanup or reports controller runs: the admission
path is the one measured.

Kyverno's webhooks are cluster-wide; `excluded_namespaces` goes into the `webhooks` key of its
ConfigMap (the documented way to set their namespaceSelector), so the other bench cases' pods never
reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.controlplane import BIN_DIR, ControlPlane  # noqa: E402
from tests.support.processes import free_port  # noqa: E402

BINARY = BIN_DIR / "kyverno"
POLICY_FILE = HERE / "policy.yaml"
INSTALL_FILE = HERE / "install.yaml"
BUILD_SCRIPT = HERE / "build.sh"
NAMESPACE = "kyverno"
POLICY_NAME = "mcp-sidecar-redis"
MUTATING_WEBHOOK_CONFIG = "kyverno-resource-mutating-webhook-cfg"
SIDECAR = "mcp-sidecar"

# charts/kyverno (3.9.1) admission-controller container args with default values, minus what needs
# a Service or the other controllers (the two *ServiceAccountName flags) and the listen addresses,
# which are set per run below.
CHART_ARGS = (
    "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca",
    "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair",
    "--tlsKeyAlgorithm=RSA",
    "--resyncPeriod=15m",
    "--crdWatcher=false",
    "--disableMetrics=false",
    "--otelConfig=prometheus",
    "--admissionReports=true",
    "--maxAdmissionReports=1000",
    "--autoUpdateWebhooks=true",
    "--excludeBootstrapResources=false",
    "--enableConfigMapCaching=true",
    "--enableDeferredLoading=true",
    "--dumpPayload=false",
    "--forceFailurePolicyIgnore=false",
    "--generateValidatingAdmissionPolicy=true",
    "--generateMutatingAdmissionPolicy=false",
    "--dumpPatches=false",
    "--maxAPICallResponseLength=2000000",
    "--apiCallTimeout=30s",
    "--maxGlobalContextEntries=0",
    "--loggingFormat=text",
    "--v=2",
    "--omitEvents=PolicyApplied,PolicySkipped",
    "--enablePolicyException=false",
    "--protectManagedResources=false",
    "--allowInsecureRegistry=false",
    "--registryCredentialHelpers=default,google,amazon,azure,github",
    "--enableReporting=validate,mutate,mutateExisting,imageVerify,generate",
)


VERSION = re.search(r"github\.com/kyverno/kyverno (v\S+)", (HERE / "go.mod").read_text()).group(1)


def module_dir() -> Path:
    """The github.com/kyverno/kyverno module source the binary was built from (its CRDs live there)."""
    version = VERSION
    go = os.environ.get("GO", "go")
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/local/go/bin")
    modcache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, env=env,
                              check=True).stdout.strip()
    path = Path(modcache) / "github.com" / "kyverno" / f"kyverno@{version}"
    if not (path / "config" / "crds").is_dir():
        raise RuntimeError(f"{path}/config/crds missing: run {BUILD_SCRIPT}")
    return path


def ensure_built() -> Path:
    """Run build.sh (idempotent; ~0.1 s when the binary is current) and return the binary."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, cwd=ROOT)
    return BINARY


def sidecar_parts(pod: dict[str, Any]) -> dict[str, Any]:
    """What an injector adds to a pod: the mcp-sidecar container, the volumes, the status annotation."""
    spec = pod.get("spec", {})
    container = next((c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                      if c.get("name") == SIDECAR), None)
    return {
        "container": container,
        "volumes": sorted((v for v in spec.get("volumes") or [] if v.get("name", "").startswith("mcp-sidecar")),
                          key=lambda v: v["name"]),
        "status_annotation": (pod.get("metadata", {}).get("annotations") or {}).get("mcp-sidecar.dox/status"),
    }


def sidecar_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Keys where two stored pods' injected parts differ (empty: the same sidecar)."""
    a, b = sidecar_parts(ours), sidecar_parts(theirs)
    return [k for k in a if a[k] != b[k]]


class KyvernoProcess:
    def __init__(self, cp: ControlPlane, workdir: Path, *, excluded_namespaces: Iterable[str] = (),
                 policy_file: Path = POLICY_FILE, extra_args: Iterable[str] = (),
                 log: Any = None) -> None:
        self.cp = cp
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.excluded_namespaces = ["kube-system", NAMESPACE, *excluded_namespaces]
        self.policy_file = policy_file
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_file = self.workdir / "kyverno.log"
        self.process: subprocess.Popen | None = None
        self._say = log or (lambda m: print(f"[kyverno] {m}", file=sys.stderr, flush=True))

    @staticmethod
    def version() -> str:
        return VERSION

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # ---- install ------------------------------------------------------------------------------

    def install(self) -> None:
        crds = sorted((module_dir() / "config" / "crds").rglob("*.yaml"))
        t0 = time.monotonic()
        # Server-side: several CRDs exceed the 256 KiB last-applied annotation of client-side apply.
        files = [arg for crd in crds for arg in ("-f", str(crd))]
        self.cp.kubectl("apply", "--server-side", *files, timeout=180)
        names = [f"crd/{yaml.safe_load(crd.read_text())['metadata']['name']}" for crd in crds]
        self.cp.kubectl("wait", "--for=condition=Established", *names, "--timeout=90s", timeout=120)
        docs = [d for d in yaml.safe_load_all(INSTALL_FILE.read_text()) if d]
        for d in docs:
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kyverno":
                d["data"]["webhooks"] = json.dumps({"namespaceSelector": {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                     "values": self.excluded_namespaces}]}})
        self.cp.apply(docs)
        self._say(f"installed {len(crds)} CRDs, namespace and ConfigMaps in {time.monotonic() - t0:.1f}s")

    # ---- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> "KyvernoProcess":
        if not os.access(BINARY, os.X_OK):
            raise RuntimeError(f"{BINARY} missing: run {BUILD_SCRIPT}")
        self.install()
        args = [
            str(BINARY), *CHART_ARGS,
            f"--kubeconfig={self.cp.kubeconfig}",
            f"--serverIP=127.0.0.1:{self.port}",
            "--webhookServerHost=127.0.0.1",
            f"--webhookServerPort={self.port}",
            f"--metricsPort={self.metrics_port}",
            "--controllerRuntimeMetricsAddress=0",
            *self.extra_args,
        ]
        env = dict(os.environ,
                   KYVERNO_NAMESPACE=NAMESPACE, KYVERNO_POD_NAME="kyverno-admission-controller-bench",
                   KYVERNO_SERVICEACCOUNT_NAME="kyverno-admission-controller",
                   KYVERNO_ROLE_NAME="kyverno:admission-controller", KYVERNO_SVC="kyverno-svc",
                   KYVERNO_DEPLOYMENT="kyverno-admission-controller", INIT_CONFIG="kyverno",
                   METRICS_CONFIG="kyverno-metrics", TUF_ROOT=str(self.workdir / "sigstore"),
                   HOME=str(self.workdir))
        self._log = open(self.log_file, "ab")
        t0 = time.monotonic()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, cwd=self.workdir, start_new_session=True)
        try:
            self._wait(self._ready, timeout, "its /health/readiness")
            self.cp.apply(self.policy_file.read_text())
            self._wait(self._policy_ready, timeout, f"ClusterPolicy {POLICY_NAME} Ready")
            self._wait(self._webhook_registered, timeout, f"{MUTATING_WEBHOOK_CONFIG} with a Pod rule")
        except BaseException:
            self.stop()
            raise
        self._say(f"ready in {time.monotonic() - t0:.1f}s (pid {self.pid}, https://127.0.0.1:{self.port})")
        return self

    def wait_mutates(self, namespace: str, pod: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Dry-run-create ``pod`` in ``namespace`` until the answer carries Kyverno's sidecar; return it."""
        found: dict[str, Any] = {}

        def mutated() -> bool:
            status, body = self.cp.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
            if status == 201 and sidecar_parts(body)["container"] is not None:
                found.update(body)
                return True
            return False
        self._wait(mutated, timeout, f"a dry-run pod in {namespace} to be mutated")
        return found

    def _ready(self) -> bool:
        import ssl
        import urllib.request
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health/readiness", context=ctx, timeout=2) as r:
            return r.status == 200

    def _policy_ready(self) -> bool:
        status, body = self.cp.request("GET", f"/apis/kyverno.io/v1/clusterpolicies/{POLICY_NAME}")
        conds = (body.get("status") or {}).get("conditions") or [] if status == 200 else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def _webhook_registered(self) -> bool:
        status, body = self.cp.request(
            "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{MUTATING_WEBHOOK_CONFIG}")
        if status != 200:
            return False
        return any("pods" in r.get("resources", []) for w in body.get("webhooks") or [] for r in w.get("rules") or [])

    def mutating_webhooks(self) -> list[dict[str, Any]]:
        """Kyverno's registered resource webhooks (for the report: selectors, timeout, failure policy)."""
        _, body = self.cp.request(
            "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{MUTATING_WEBHOOK_CONFIG}")
        return body.get("webhooks") or [] if isinstance(body, dict) else []

    def _wait(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"kyverno exited ({self.process and self.process.returncode}) before {what}:\n"
                                   + self.tail())
            try:
                if cond():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for kyverno: {what}\n" + self.tail())
            time.sleep(0.3)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left in its process group
        self._log.close()
        self.process = None

    def __enter__(self) -> "KyvernoProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
