"""The per-namespace bearer-token Secret of the sidecars: built here, created by the operator and
replaced by ``mcp-sidecar rotate-token``.

The operator may only *create* Secrets (and get/update this one by name): it never lists or reads
other Secrets, so it learns that the Secret already exists from the 409 of its create, and never
overwrites it (a user may have set their own token). Namespaces already ensured are remembered, so
10,000 pod events cost one API call per namespace (again after ``recheck_seconds``, which recreates
a Secret a user deleted).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from webhook.engine.constants import (
    LABEL_MANAGED_BY,
    LABEL_TOKEN_SECRET,
    MANAGED_BY_VALUE,
    TOKEN_SECRET_KEY,
    TOKEN_SECRET_NAME,
)

log = logging.getLogger("webhook.token_secret")

#: Never provisioned there: the webhook never injects in kube-system either.
NEVER_IN = frozenset({"kube-system"})
#: How long the kubelet may take to update a mounted Secret (sync period plus its cache TTL).
KUBELET_SYNC_HINT = "about a minute (the kubelet's sync period plus its Secret cache)"


def new_token() -> str:
    """256 random bits, hex: safe in a header, a shell and a YAML file."""
    return secrets.token_hex(32)


def token_secret(namespace: str, token: str | None = None) -> dict[str, Any]:
    """The Secret object (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": TOKEN_SECRET_NAME,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_TOKEN_SECRET: "true"},
            "annotations": {"mcp-sidecar.dox/description": "bearer token of the MCP sidecars in this namespace; "
                            "rotate with: mcp-sidecar rotate-token -n " + namespace},
        },
        "stringData": {TOKEN_SECRET_KEY: token or new_token()},
    }


class TokenSecrets:
    """Ensures the token Secret exists in a namespace: create-only, remembered, never overwriting.

    ``ensure`` answers ``created`` once per Secret we created (the operator posts an Event then).
    """

    def __init__(self, *, recheck_seconds: float = 600.0, retry_seconds: float = 60.0):
        self.recheck_seconds = recheck_seconds
        self.retry_seconds = retry_seconds
        self._next_check: dict[str, float] = {}  # namespace -> monotonic time of the next create attempt
        self._lock = threading.Lock()

    def ensure(self, core: Any, namespace: str) -> str:
        """Create the Secret unless done recently (``core``: a CoreV1Api).

        Returns ``created``, ``exists``, ``cached`` (ensured recently), ``skipped`` or ``error``.
        """
        if not namespace or namespace in NEVER_IN:
            return "skipped"
        now = time.monotonic()
        with self._lock:
            if self._next_check.get(namespace, 0.0) > now:
                return "cached"
            # Claimed before the call: concurrent events for the same namespace make one request.
            self._next_check[namespace] = now + self.retry_seconds
        from kubernetes.client.rest import ApiException

        try:
            core.create_namespaced_secret(namespace, token_secret(namespace))
        except ApiException as exc:
            if exc.status == 409:
                self._remember(namespace)
                return "exists"
            if exc.status == 403 and "NamespaceTerminating" in str(exc.body):
                return "skipped"
            # RBAC denial, API error: retried after retry_seconds, not on every pod event.
            log.warning("cannot create Secret %s in %s (sidecars there refuse MCP calls until it exists): %s %s",
                        TOKEN_SECRET_NAME, namespace[:253], exc.status, str(exc.reason)[:200])
            return "error"
        self._remember(namespace)
        log.info("created Secret %s/%s (the MCP sidecars' bearer token)", namespace, TOKEN_SECRET_NAME)
        return "created"

    def _remember(self, namespace: str) -> None:
        with self._lock:
            self._next_check[namespace] = time.monotonic() + self.recheck_seconds


def rotate(core: Any, namespace: str, *, name: str = TOKEN_SECRET_NAME, key: str = TOKEN_SECRET_KEY,
           token: str | None = None) -> tuple[str, str]:
    """Replace the token in the Secret (create it, labelled as ours, if it is missing).

    Runs with the caller's own credentials (``mcp-sidecar rotate-token``): the operator never
    updates a token. Returns (``created`` or ``rotated``, the new token).
    """
    from kubernetes.client.rest import ApiException

    token = token or new_token()
    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = token_secret(namespace, token)
        body["metadata"]["name"] = name
        body["stringData"] = {key: token}
        core.create_namespaced_secret(namespace, body)
        return "created", token
    # Only the key changes: labels and other keys a user set stay as they are.
    core.patch_namespaced_secret(name, namespace, {"stringData": {key: token}})
    return "rotated", token


def create_command(namespace: str = "NAMESPACE", name: str = TOKEN_SECRET_NAME, key: str = TOKEN_SECRET_KEY) -> str:
    """What an ``inject -f`` user (no operator) runs once per namespace."""
    return f"kubectl create secret generic {name} -n {namespace} --from-literal={key}=$(openssl rand -hex 32)"
