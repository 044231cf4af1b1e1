"""The admission server as the API server meets it: a real process, real TLS, real HTTP."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import threading
import time

import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.webhook_process import WebhookProcess
from tests.webhook.helpers import admission_review, apply, labelled_pod


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("webhook")
    config = workdir / "config.yaml"
    config.write_text("backends: {redis: {image: 'mcp/redis:1.0'}}\n")
    with WebhookProcess(workdir, config_path=config) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(server.ca_file)), timeout=10) as c:
        yield c


def decoded_patch(response_json):
    return json.loads(base64.b64decode(response_json["response"]["patch"]))


def test_labelled_pod_gets_a_patch_and_uid_is_echoed(client):
    pod = labelled_pod()
    r = client.post("/mutate", json=admission_review(pod, uid="abc-123"))
    assert r.status_code == 200
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "abc-123" and body["response"]["allowed"] is True
    assert body["response"]["patchType"] == "JSONPatch"
    patched = apply(pod, decoded_patch(body))
    assert [c["name"] for c in patched["spec"]["containers"]] == ["redis", "mcp-sidecar"]
    assert patched["spec"]["containers"][1]["image"] == "mcp/redis:1.0"


def test_dry_run_gets_the_same_patch(client):
    pod = labelled_pod()
    normal = client.post("/mutate", json=admission_review(pod)).json()
    dry = client.post("/mutate", json=admission_review(pod, dry_run=True)).json()
    assert decoded_patch(dry) == decoded_patch(normal)


def test_unknown_backend_is_allowed_with_a_warning(client):
    body = client.post("/mutate", json=admission_review(labelled_pod("mongodb"))).json()["response"]
    assert body["allowed"] is True and "patch" not in body
    assert any("unknown backend 'mongodb'" in w for w in body["warnings"])


@pytest.mark.parametrize(
    "review",
    [
        admission_review(labelled_pod(), operation="UPDATE"),
        admission_review(labelled_pod(), operation="DELETE", object=None),
        admission_review({"metadata": {"name": "d"}, "spec": {}}, kind="Deployment"),
        admission_review(labelled_pod(), subResource="ephemeralcontainers"),
    ],
    ids=["update", "delete", "deployment", "subresource"],
)
def test_not_a_pod_create_is_allowed_without_patch(client, review):
    r = client.post("/mutate", json=review)
    assert r.status_code == 200
    assert r.json()["response"] == {"uid": review["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "no request"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {"kind": "Pod"}}}).encode(), "no uid"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}).encode(), "apiVersion"),
        (json.dumps({"kind": "Pod"}).encode(), "kind must be AdmissionReview"),
        (json.dumps(admission_review(None)).encode(), "no object"),
    ],
)
def test_malformed_reviews_get_400_with_a_message(client, content, fragment):
    r = client.post("/mutate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_oversized_body_gets_413(client):
    r = client.post("/mutate", content=b"{" + b" " * (7 * 1024 * 1024) + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_oversized_chunked_body_gets_413(client):
    def chunks():
        for _ in range(8):
            yield b" " * (1024 * 1024)
    r = client.post("/mutate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_large_but_legal_pod_is_injected(client):
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": f"VAR_{i}", "value": "x" * 50} for i in range(1000)]
    body = client.post("/mutate", json=admission_review(pod)).json()
    assert apply(pod, decoded_patch(body))["spec"]["containers"][-1]["name"] == "mcp-sidecar"


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/mutate", json=admission_review(labelled_pod()))
    client.post("/mutate", json=admission_review(labelled_pod("mongodb")))
    client.post("/mutate", content=b"nope")
    text = client.get("/metrics").text
    assert 'mcp_injector_injections_total{backend="redis"}' in text
    assert 'mcp_injector_skips_total{reason="unknown-backend"}' in text
    assert 'mcp_injector_errors_total{type="bad-request"}' in text
    assert "mcp_injector_review_duration_seconds_bucket" in text
    assert 'mcp_injector_admission_reviews_total{operation="CREATE",result="injected"}' in text


def test_request_fields_never_become_metric_labels(client):
    """60 reviews with 1 MiB operations once made one /metrics scrape peak at 487 MiB."""
    for i in range(3):
        client.post("/mutate", json=admission_review(labelled_pod(), operation=f"X{i}" * 1000))
    text = client.get("/metrics").text
    assert 'mcp_injector_admission_reviews_total{operation="other",result="ignored"}' in text
    assert "X0X0" not in text and len(text) < 64 * 1024


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    request=st.fixed_dictionaries(
        {},
        optional={
            "uid": st.one_of(st.text(max_size=5), json_values),
            "kind": st.one_of(st.just({"kind": "Pod"}), json_values),
            "resource": st.one_of(st.just({"resource": "pods"}), json_values),
            "operation": st.one_of(st.just("CREATE"), json_values),
            "object": st.one_of(st.just(labelled_pod()), json_values, st.fixed_dictionaries({"metadata": json_values, "spec": json_values})),
            "subResource": json_values,
        },
    )
)
def test_fuzzed_reviews_never_produce_a_5xx(client, request):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    r = client.post("/mutate", json=review)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert r.json()["response"]["allowed"] is True


@given(body=st.binary(max_size=200))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_never_produce_a_5xx(client, body):
    assert client.post("/mutate", content=body).status_code == 400


def test_config_change_is_picked_up_without_restart(server, client):
    server.config_path.write_text("backends: {redis: {image: 'mcp/redis:2.0'}}\n")
    try:
        deadline = time.monotonic() + 10
        image = None
        while time.monotonic() < deadline:
            body = client.post("/mutate", json=admission_review(labelled_pod())).json()
            image = decoded_patch(body)[0]["value"]["image"]
            if image == "mcp/redis:2.0":
                break
            time.sleep(0.1)
        assert image == "mcp/redis:2.0"
        server.config_path.write_text("backends: {redis: {port: -1}}\n")  # invalid: kept out
        time.sleep(1.0)
        body = client.post("/mutate", json=admission_review(labelled_pod())).json()
        assert decoded_patch(body)[0]["value"]["image"] == "mcp/redis:2.0"
        assert "backends.redis.port" in client.get("/readyz").json()["configError"]
        assert 'mcp_injector_config_reloads_total{result="error"}' in client.get("/metrics").text
        assert "keeping the previous one" in server.log()
    finally:
        server.config_path.write_text("backends: {redis: {image: 'mcp/redis:1.0'}}\n")


def test_rotated_certificate_is_served_without_restart(tmp_path):
    with WebhookProcess(tmp_path) as process:
        new_ca = trustme.CA()
        new_ca_file = tmp_path / "new-ca.crt"
        new_ca.cert_pem.write_to_path(str(new_ca_file))
        with httpx.Client(verify=ssl.create_default_context(cafile=str(process.ca_file))) as old_client:
            assert old_client.get(process.url + "/healthz").status_code == 200
        process.write_serving_cert(new_ca)
        deadline = time.monotonic() + 10
        while True:
            try:
                with httpx.Client(verify=ssl.create_default_context(cafile=str(new_ca_file))) as new_client:
                    assert new_client.get(process.url + "/healthz").status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "rotated certificate never served"
                time.sleep(0.1)
        assert process.process.poll() is None


def test_sigterm_drains_in_flight_reviews(tmp_path):
    """A review whose request has started when SIGTERM arrives is still answered in full."""
    process = WebhookProcess(tmp_path).start()
    pod = labelled_pod()
    payload = json.dumps(admission_review(pod)).encode()
    half = len(payload) // 2
    signalled = threading.Event()
    outcome: dict[str, object] = {}

    def slow_body():
        yield payload[:half]
        signalled.wait(10)  # the server has the headers and half the body when SIGTERM lands
        time.sleep(0.3)
        yield payload[half:]

    def send():
        with httpx.Client(verify=ssl.create_default_context(cafile=str(process.ca_file)), timeout=20) as c:
            try:
                outcome["response"] = c.post(process.url + "/mutate", content=slow_body(), headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                outcome["error"] = repr(exc)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    process.process.send_signal(signal.SIGTERM)
    signalled.set()
    sender.join(30)
    code = process.process.wait(30)
    process.stop()
    assert "error" not in outcome, outcome.get("error")
    response = outcome["response"]
    assert response.status_code == 200
    assert apply(pod, decoded_patch(response.json()))["spec"]["containers"][-1]["name"] == "mcp-sidecar"
    assert code == 0, process.log()
