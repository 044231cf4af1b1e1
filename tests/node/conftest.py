"""Fixtures of the real-node stage: a control plane plus a kubelet node on which pods really run.

- ``node`` (session): etcd + kube-apiserver + kube-controller-manager + kube-scheduler, and one node
  (containerd + runc + CNI, kubelet, kube-proxy; tests/cluster/node.py) with every image the stage
  needs imported (built with buildah from the project's Dockerfiles, tests/cluster/images.py).
  ``node.cp`` is the :class:`ControlPlane`. Not root, or packages missing: every test here is skipped
  with one line saying why. ``MCP_NODE_ATTACH=FILE`` uses a node that
  ``python -m tests.cluster.node --state-out FILE`` keeps running (development).
- ``injector`` (session): the Helm chart installed with the image built from Dockerfile.webhook
  (release ``node-injector`` in ``node-injector-system``), both replicas Ready, the API server calling
  it. With ``MCP_NODE_ATTACH`` an already deployed release is used as it is.
- ``namespace`` (function): a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane, ensure_binaries
from tests.cluster.node import Node, why_not_runnable
from tests.e2e.conftest import _uncaptured
from tests.node.kube import Injector, install_injector

pytestmark = pytest.mark.slow


def _host_reason() -> str | None:
    """Why the stage cannot run on this host, before anything is built (binaries are checked later)."""
    reason = why_not_runnable()
    if reason and "not built" in reason:
        return None
    return reason


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    attach = os.environ.get("MCP_NODE_ATTACH")
    if attach:
        yield Node.attach(attach)
        return
    reason = _host_reason()
    if reason:
        pytest.skip(f"real-node stage skipped: {reason}")
    from tests.cluster.images import ALL_IMAGES, ensure_images

    with _uncaptured(request.config):
        ensure_binaries()
        archives = ensure_images(names=ALL_IMAGES, log=lambda m: print(m, flush=True))
    with ControlPlane(build=False) as cp, Node(cp) as n:
        seconds = n.import_images(a.path for a in archives)
        print(f"[node] imported {len(archives)} images in {seconds:.1f}s", flush=True)
        yield n


@pytest.fixture(scope="session")
def cp(node: Node) -> ControlPlane:
    return node.cp


@pytest.fixture
def namespace(cp: ControlPlane) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    cp.create_namespace(name)
    yield name
    cp.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found=true", check=False)


@pytest.fixture(scope="session")
def injector(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    inj = install_injector(node.cp, tmp_path_factory.mktemp("helm-home"), reuse=bool(os.environ.get("MCP_NODE_ATTACH")))
    yield inj
    if not os.environ.get("MCP_NODE_ATTACH"):
        inj.uninstall()
