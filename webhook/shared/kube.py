"""Cluster access for the operator and the CLI: kubeconfig or in-cluster, with clear errors."""

from __future__ import annotations

import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException


class KubeAccessError(RuntimeError):
    """No usable cluster (no kubeconfig, unreachable) or no permission; the message says which."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, FileNotFoundError, TypeError) as exc:
        raise KubeAccessError(f"no cluster configured: {exc} (set KUBECONFIG or --kubeconfig, or run in a pod)") from None
    return client.ApiClient(configuration)


def explain(exc: Exception, what: str) -> KubeAccessError:
    """Turn an API/transport error into one line a cluster operator can act on."""
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return KubeAccessError(f"permission denied to {what} ({exc.status} {exc.reason}); check your RBAC")
        return KubeAccessError(f"cannot {what}: {exc.status} {exc.reason}")
    return KubeAccessError(f"cannot {what}: cluster unreachable ({type(exc).__name__}: {exc})")
