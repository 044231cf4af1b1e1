"""Leader election on a coordination.k8s.io Lease, so that one operator replica acts at a time.

The same protocol as client-go's leaderelection: the holder renews ``renewTime`` every few seconds;
a candidate takes over once ``renewTime + leaseDurationSeconds`` has passed. Updates carry the
resourceVersion, so two candidates cannot both win.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("webhook.leader")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class LeaseElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, *, lease_seconds: int = 15, renew_seconds: float = 5.0):
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.is_leader = False

    def _lease_body(self, resource_version: str | None, transitions: int) -> client.V1Lease:
        now = _now()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace, resource_version=resource_version),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity, lease_duration_seconds=self.lease_seconds,
                acquire_time=now, renew_time=now, lease_transitions=transitions,
            ),
        )

    def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the lease afterwards."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(self.namespace, self._lease_body(None, 0))
                return True
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
        spec = lease.spec
        holder = spec.holder_identity
        renew = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_seconds
        expired = not holder or renew is None or renew + dt.timedelta(seconds=duration) < _now()
        if holder != self.identity and not expired:
            return False
        if holder == self.identity:
            spec.renew_time = _now()
            body = lease
        else:
            body = self._lease_body(lease.metadata.resource_version, (spec.lease_transitions or 0) + 1)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:  # someone else updated it first
                return False
            raise

    def run(self, on_started_leading: Callable[[], None], on_stopped_leading: Callable[[], None], stop: threading.Event) -> None:
        last_renewed = 0.0
        while not stop.is_set():
            try:
                held = self.try_acquire_or_renew()
            except Exception as exc:  # API unreachable: keep leading only until the lease would expire
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                held = self.is_leader and (_now().timestamp() - last_renewed) < self.lease_seconds
            if held:
                last_renewed = _now().timestamp()
            if held and not self.is_leader:
                self.is_leader = True
                log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
                on_started_leading()
            elif not held and self.is_leader:
                self.is_leader = False
                log.warning("lost leadership of lease %s/%s", self.namespace, self.name)
                on_stopped_leading()
            stop.wait(self.renew_seconds)
        if self.is_leader:
            self.is_leader = False
            on_stopped_leading()
            self._release()

    def _release(self) -> None:
        """Hand over at once on shutdown instead of making the next leader wait for expiry."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as exc:  # best effort
            log.debug("lease release failed: %s", exc)
