"""Opting a running workload in and out with one `kubectl label`, on real pods.

A plain Redis StatefulSet (deploy/examples/redis-statefulset.yaml without its pod-template label, as
scripts/demo.py applies it) runs 1/1 -> `kubectl label statefulset redis mcp-sidecar.dox/backend=redis`
-> the operator copies the label into the pod template and creates the companion Service redis-mcp
-> the rolling update replaces the pod with an injected one, 2/2 Ready -> MCP through svc/redis-mcp
answers with data written into Redis -> `kubectl label statefulset redis mcp-sidecar.dox/backend-`
-> the operator removes the template label it added and deletes its companion Service -> the
rolling update brings back a 1/1 pod without the sidecar.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.cluster.controlplane import ControlPlaneError
from tests.node import kube
from tests.node.kube import BACKEND_LABEL, REPO, container_names

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "deploy" / "examples" / "redis-statefulset.yaml"
SELECTOR = "app.kubernetes.io/name=redis"
PROPAGATED = "mcp-sidecar.dox/propagated-backend"
COMPANION_OF = "mcp-sidecar.dox/companion-of"
TIMEOUT = 120


def plain_statefulset() -> str:
    """The example without the pod-template label: what an application chart ships."""
    text = EXAMPLE.read_text()
    line = f"        {BACKEND_LABEL}: redis\n"
    assert text.count(line) == 1, "the example's pod-template label moved: update this test"
    return text.replace(line, "")


def statefulset(cp, namespace: str) -> dict:
    return cp.kubectl_json("get", "statefulset", "redis", "-n", namespace)


def service_names(cp, namespace: str) -> list[str]:
    names = cp.kubectl("get", "services", "-n", namespace, "-o", "name").stdout.split()
    return sorted(name.split("/", 1)[1] for name in names)


def events(cp, namespace: str, reason: str) -> list[dict]:
    return cp.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                           f"involvedObject.kind=StatefulSet,involvedObject.name=redis,reason={reason}")["items"]


def test_label_statefulset_rolls_in_and_out_the_sidecar(cp, injector, namespace):
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=plain_statefulset())
    [before] = kube.wait_pods_ready(cp, namespace, SELECTOR, 1, containers=1, timeout=TIMEOUT)
    assert container_names(before) == ["redis"]
    assert service_names(cp, namespace) == []

    # ---- opt in: label the workload, not its template
    started = time.monotonic()
    cp.kubectl("label", "statefulset", "redis", "-n", namespace, f"{BACKEND_LABEL}=redis")

    def propagated() -> dict | None:
        sts = statefulset(cp, namespace)
        return sts if sts["spec"]["template"]["metadata"]["labels"].get(BACKEND_LABEL) == "redis" else None

    sts = cp.wait_for(propagated, 60, "the operator to copy the label into the pod template")
    assert sts["metadata"]["annotations"][PROPAGATED] == "redis"

    def rolled(containers: int, old_uid: str) -> dict:
        """The pod that replaced ``old_uid``, once all ``containers`` of it are Ready."""
        def check() -> dict | None:
            live = [p for p in kube.pods(cp, namespace, SELECTOR) if not p["metadata"].get("deletionTimestamp")]
            if len(live) == 1 and live[0]["metadata"]["uid"] != old_uid \
                    and kube.ready_count(live[0]) == (containers, containers):
                return live[0]
            return None
        try:
            return cp.wait_for(check, TIMEOUT, f"the rolled pod {containers}/{containers} Ready", interval=0.5)
        except ControlPlaneError as exc:
            raise AssertionError(f"{exc}\n{kube.describe(cp, namespace, SELECTOR)}") from None

    injected = rolled(2, before["metadata"]["uid"])
    print(f"\n[label] injected pod 2/2 Ready {time.monotonic() - started:.1f}s after `kubectl label`")
    assert container_names(injected) == ["redis", "mcp-sidecar"]
    assert injected["metadata"]["labels"][BACKEND_LABEL] == "redis"
    assert "mcp-sidecar.dox/status" in injected["metadata"]["annotations"]
    assert events(cp, namespace, "MCPLabelPropagated"), "no MCPLabelPropagated Event on the StatefulSet"

    # ---- the companion Service, owned by the StatefulSet, selecting its pods on the MCP port
    svc = cp.wait_for(lambda: cp.kubectl_json("get", "service", "redis-mcp", "-n", namespace), 30,
                      "companion Service redis-mcp")
    assert svc["metadata"]["labels"][COMPANION_OF] == "redis"
    [owner] = svc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("StatefulSet", "redis", sts["metadata"]["uid"])
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "redis"}
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(9000, "mcp")]

    def endpoints() -> list[tuple[str, int]] | None:
        slices = cp.kubectl_json("get", "endpointslices", "-n", namespace,
                                 "-l", "kubernetes.io/service-name=redis-mcp")["items"]
        found = [(address, port["port"]) for s in slices for e in s.get("endpoints") or []
                 if (e.get("conditions") or {}).get("ready") for address in e["addresses"] for port in s["ports"]]
        return found or None

    # The Service resolves to the injected pod's sidecar port (what in-cluster clients use)
    assert cp.wait_for(endpoints, 30, "redis-mcp endpoints") == [(injected["status"]["podIP"], 9000)]

    # ---- data written into Redis is read over MCP through the companion Service
    key, value = f"label:{uuid.uuid4().hex[:6]}", "set with redis-cli, read over MCP"
    done = kube.exec_in(cp, namespace, injected["metadata"]["name"], "redis", "sh", "-c",
                        f'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" SET {key} "{value}"')
    assert done.stdout.strip() == "OK", done.stdout + done.stderr
    with kube.port_forward(cp, namespace, "svc/redis-mcp", 9000) as port:
        health = kube.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        assert health["status"] == "ok" and health["reachable"] is True, health
        out = kube.mcp_calls(f"http://127.0.0.1:{port}/mcp", ("get", {"key": key}), headers=kube.auth_headers(cp, namespace))
        assert not out["get"]["is_error"], out["get"]
        assert out["get"]["structured"]["value"] == value

    # ---- opt out: remove the workload label
    started = time.monotonic()
    cp.kubectl("label", "statefulset", "redis", "-n", namespace, f"{BACKEND_LABEL}-")

    def unpropagated() -> dict | None:
        sts = statefulset(cp, namespace)
        return sts if BACKEND_LABEL not in sts["spec"]["template"]["metadata"]["labels"] else None

    sts = cp.wait_for(unpropagated, 60, "the operator to remove the label from the pod template")
    assert PROPAGATED not in (sts["metadata"].get("annotations") or {})
    assert sts["spec"]["template"]["metadata"]["labels"] == {"app.kubernetes.io/name": "redis"}

    plain = rolled(1, injected["metadata"]["uid"])
    print(f"[label] plain pod 1/1 Ready {time.monotonic() - started:.1f}s after `kubectl label ...-`")
    assert container_names(plain) == ["redis"]
    assert BACKEND_LABEL not in plain["metadata"]["labels"]
    # The operator deletes the companion Service it made once the workload no longer asks for MCP.
    cp.wait_for(lambda: service_names(cp, namespace) == [], 30, "companion Service redis-mcp to be deleted")
