"""Fixtures for end-to-end tests against a real local control plane.

- ``control_plane`` (session): a started :class:`tests.cluster.controlplane.ControlPlane`. The first
  use builds etcd / kube-apiserver / kube-controller-manager / kubectl / helm into ``.cache/bin``
  (tests/cluster/build.sh; progress is printed to the terminal even under pytest's capture).
- ``namespace`` (function): a fresh namespace with its ``default`` ServiceAccount, deleted afterwards.
- ``webhook_tls`` (session): a throwaway CA (trustme) and a serving cert for 127.0.0.1/localhost,
  written to files, for a webhook server the API server calls through ``clientConfig.url``.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane, ensure_binaries


@contextlib.contextmanager
def _uncaptured(config: pytest.Config) -> Iterator[None]:
    """Let output reach the terminal (CI log) although pytest captures fds 1 and 2."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    with _uncaptured(request.config):
        ensure_binaries()
    with ControlPlane(build=False) as cp:
        yield cp


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found=true", check=False)


@dataclass
class WebhookTLS:
    ca_pem: bytes  # goes into the webhook's caBundle
    cert_file: Path  # serving certificate chain for 127.0.0.1 / localhost
    key_file: Path


@pytest.fixture(scope="session")
def webhook_tls(tmp_path_factory: pytest.TempPathFactory) -> WebhookTLS:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("webhook-tls")
    cert_file, key_file = d / "tls.crt", d / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return WebhookTLS(ca_pem=ca.cert_pem.bytes(), cert_file=cert_file, key_file=key_file)
