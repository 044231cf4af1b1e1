"""`serve --workers 2`: a real supervisor with two real server processes on one port, over TLS.

Each review answer names the process that produced it (``X-MCP-Injector-Worker``); requests go out
with ``Connection: close`` so that each one is a new connection the kernel hands to either worker.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.webhook_process import WebhookProcess
from tests.webhook.helpers import admission_review, apply, labelled_pod

WORKER_HEADER = "x-mcp-injector-worker"


def worker_pids(process: WebhookProcess) -> set[int]:
    pid = process.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def new_connection_client(ca_file: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file)), timeout=10, headers={"connection": "close"})


def review_until_every_worker_answered(process: WebhookProcess, ca_file: Path, check, timeout: float = 30.0) -> dict[int, int]:
    """POST reviews on new connections until each current worker has answered one that passes
    ``check(response)``; returns the reviews answered per worker (all of them, passing or not)."""
    answered: dict[int, int] = {}
    passed: set[int] = set()
    deadline = time.monotonic() + timeout
    with new_connection_client(ca_file) as client:
        while True:
            try:
                response = client.post(process.url + "/mutate", json=admission_review(labelled_pod()))
            except httpx.ConnectError:  # e.g. a worker still serving the old certificate
                response = None
            if response is not None:
                assert response.status_code == 200, response.text
                pid = int(response.headers[WORKER_HEADER])
                answered[pid] = answered.get(pid, 0) + 1
                if check(response):
                    passed.add(pid)
            if passed and passed >= worker_pids(process):
                return answered
            assert time.monotonic() < deadline, f"workers {worker_pids(process)}: only {passed} passed; answers per worker {answered}\n{process.log()}"


def sidecar_image(response: httpx.Response) -> str:
    patch = json.loads(base64.b64decode(response.json()["response"]["patch"]))
    return patch[0]["value"]["image"]


def metric(text: str, sample: str, default: float | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    if default is not None:
        return default
    raise AssertionError(f"{sample} not in /metrics:\n{text}")


INJECTED = 'mcp_injector_admission_reviews_total{operation="CREATE",result="injected"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workers")
    config = workdir / "config.yaml"
    config.write_text("backends: {redis: {image: 'mcp/redis:1.0'}}\n")
    with WebhookProcess(workdir, config_path=config, extra_args=("--workers", "2")) as process:
        yield process


def test_both_workers_answer_reviews_and_metrics_count_them_all(server):
    assert len(worker_pids(server)) == 2
    with new_connection_client(server.ca_file) as client:
        before = metric(client.get(server.url + "/metrics").text, INJECTED, default=0.0)
    pod = labelled_pod()
    answered = review_until_every_worker_answered(
        server, server.ca_file,
        lambda r: apply(pod, json.loads(base64.b64decode(r.json()["response"]["patch"])))["spec"]["containers"][-1]["name"] == "mcp-sidecar",
    )
    assert set(answered) == worker_pids(server)
    # /metrics, whichever worker answers it, counts the reviews of both.
    with new_connection_client(server.ca_file) as client:
        for _ in range(4):
            text = client.get(server.url + "/metrics").text
            assert metric(text, INJECTED) - before == sum(answered.values()), text
            assert metric(text, 'mcp_injector_injections_total{backend="redis"}') >= sum(answered.values())
            assert metric(text, "mcp_injector_review_duration_seconds_count") >= sum(answered.values())


def test_config_change_reaches_every_worker(server):
    server.config_path.write_text("backends: {redis: {image: 'mcp/redis:2.0'}}\n")
    try:
        review_until_every_worker_answered(server, server.ca_file, lambda r: sidecar_image(r) == "mcp/redis:2.0")
        with new_connection_client(server.ca_file) as client:
            text = client.get(server.url + "/metrics").text
        digests = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines() if line.startswith("mcp_injector_config_info{")}
        # One digest in force (in every worker, as the reviews showed); the old one zeroed, not left at 1.
        assert list(digests.values()).count(1.0) == 1 and 0.0 in digests.values(), text
        assert metric(text, 'mcp_injector_config_reloads_total{result="ok"}') >= 2  # each worker reloads itself
    finally:
        server.config_path.write_text("backends: {redis: {image: 'mcp/redis:1.0'}}\n")
        review_until_every_worker_answered(server, server.ca_file, lambda r: sidecar_image(r) == "mcp/redis:1.0")


def test_rotated_certificate_is_served_by_every_worker(server, tmp_path):
    new_ca = trustme.CA()
    new_ca_file = tmp_path / "new-ca.crt"
    new_ca.cert_pem.write_to_path(str(new_ca_file))
    old_ca, old_ca_file = server.ca, tmp_path / "old-ca.crt"
    old_ca.cert_pem.write_to_path(str(old_ca_file))
    server.write_serving_cert(new_ca)
    try:
        review_until_every_worker_answered(server, new_ca_file, lambda r: True)
        with new_connection_client(new_ca_file) as client:
            assert metric(client.get(server.url + "/metrics").text, 'mcp_injector_tls_reloads_total{result="ok"}') >= 2
    finally:
        server.write_serving_cert(old_ca)
        review_until_every_worker_answered(server, old_ca_file, lambda r: True)


def test_a_worker_that_dies_is_replaced(server):
    review_until_every_worker_answered(server, server.ca_file, lambda r: True)
    time.sleep(5.5)  # past the supervisor's start-up grace: an early death would stop the server instead
    victim = min(worker_pids(server))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while len(worker_pids(server) - {victim}) < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    answered = review_until_every_worker_answered(server, server.ca_file, lambda r: True)
    assert victim not in answered and server.process.poll() is None
    assert f"admission worker {victim} exited with -9: starting a new one" in server.log()


def test_sigterm_drains_in_flight_reviews_in_every_worker_and_exits_0(tmp_path):
    """Reviews half sent when SIGTERM reaches the supervisor are answered in full; status 0."""
    process = WebhookProcess(tmp_path, extra_args=("--workers", "2")).start()
    review_until_every_worker_answered(process, process.ca_file, lambda r: True)
    workers = worker_pids(process)
    pod = labelled_pod()
    payload = json.dumps(admission_review(pod)).encode()
    half = len(payload) // 2
    signalled = threading.Event()
    outcomes: list[object] = []

    def slow_body():
        yield payload[:half]
        signalled.wait(10)  # the workers hold half the body when SIGTERM lands
        time.sleep(0.3)
        yield payload[half:]

    def send():
        with new_connection_client(process.ca_file) as c:
            try:
                outcomes.append(c.post(process.url + "/mutate", content=slow_body(), headers={"content-type": "application/json"}))
            except httpx.HTTPError as exc:
                outcomes.append(repr(exc))

    senders = [threading.Thread(target=send) for _ in range(8)]
    for sender in senders:
        sender.start()
    time.sleep(0.8)
    process.process.send_signal(signal.SIGTERM)  # the supervisor only, as the kubelet does
    signalled.set()
    for sender in senders:
        sender.join(30)
    code = process.process.wait(30)
    process.stop()
    assert all(isinstance(o, httpx.Response) for o in outcomes), outcomes
    for response in outcomes:
        assert response.status_code == 200
        assert apply(pod, json.loads(base64.b64decode(response.json()["response"]["patch"])))["spec"]["containers"][-1]["name"] == "mcp-sidecar"
    assert code == 0, process.log()
    log = process.log()
    for pid in workers:
        assert f"Finished server process [{pid}]" in log


def test_several_workers_refuse_to_run_the_operator_beside():
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--plain-http", "--port", "0", "--workers", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "--no-operator" in result.stderr
