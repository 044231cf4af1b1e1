"""Engine decisions and patches on plain dicts: every edge case of the issue, one test each."""

from __future__ import annotations

import json

import pytest

from tests.webhook.helpers import apply, labelled_pod, validate_strict
from webhook.engine.config import ConfigError, parse_config
from webhook.engine.constants import ANNOTATION_STATUS, LABEL_BACKEND, SIDECAR_CONTAINER_NAME
from webhook.engine.injection import SkipReason, evaluate

CONFIG = parse_config(None)


def injected(pod, config=CONFIG, **kw):
    result = evaluate(pod, kw.pop("namespace_labels", None), config, **kw)
    assert result.injected, result.message
    return result, apply(pod, result.patch)


def sidecar_of(pod):
    everything = (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]
    matches = [c for c in everything if c["name"] == SIDECAR_CONTAINER_NAME]
    assert len(matches) == 1
    return matches[0]


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_minimal_pod_gets_the_seed_defaults():
    result, pod = injected(labelled_pod())
    sidecar = sidecar_of(pod)
    assert pod["spec"]["containers"][-1] is not pod["spec"]["containers"][0]
    assert sidecar["image"] == "mcp/redis:latest" and sidecar["imagePullPolicy"] == "IfNotPresent"
    assert sidecar["ports"] == [{"name": "mcp", "containerPort": 9000, "protocol": "TCP"}]
    assert env_of(sidecar)["REDIS_HOST"] == "localhost" and env_of(sidecar)["REDIS_PORT"] == "6379"
    assert sidecar["resources"] == {"requests": {"memory": "64Mi", "cpu": "50m"}, "limits": {"memory": "128Mi", "cpu": "100m"}}
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsGroup"] == 1000  # else gid 0: the image has no passwd entry for uid 1000
    # Probes on /livez (never the datastore); a startup probe instead of initial delays.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/livez", "port": "mcp"}
        assert "initialDelaySeconds" not in sidecar[probe]
    assert sidecar["startupProbe"]["periodSeconds"] * sidecar["startupProbe"]["failureThreshold"] >= 60
    assert sidecar["livenessProbe"]["periodSeconds"] == 20  # the seed's liveness period
    assert {"name": "mcp-sidecar-tmp", "mountPath": "/tmp"} in sidecar["volumeMounts"]
    assert any(v["name"] == "mcp-sidecar-tmp" and "emptyDir" in v for v in pod["spec"]["volumes"])
    status = json.loads(pod["metadata"]["annotations"][ANNOTATION_STATUS])
    assert status["backend"] == "redis" and status["image"] == "mcp/redis:latest" and len(status["hash"]) == 16
    assert "restartPolicy" not in sidecar
    validate_strict(pod)


def test_probes_are_configurable_and_the_startup_probe_can_be_dropped():
    """The seed's tcpSocket probes with initial delays remain one config away (startupProbe: null)."""
    _, default = injected(labelled_pod())
    # A probe in the config replaces the default probe whole (never two handlers in one probe).
    seed = parse_config("sidecar: {startupProbe: null,"
                        " readinessProbe: {tcpSocket: {port: mcp}, initialDelaySeconds: 5, periodSeconds: 10},"
                        " livenessProbe: {tcpSocket: {port: mcp}, initialDelaySeconds: 15, periodSeconds: 20}}")
    _, seeded = injected(labelled_pod(), seed)
    sidecar = sidecar_of(seeded)
    assert "startupProbe" not in sidecar
    assert sidecar["readinessProbe"] == {"tcpSocket": {"port": "mcp"}, "initialDelaySeconds": 5, "periodSeconds": 10}
    assert sidecar["livenessProbe"] == {"tcpSocket": {"port": "mcp"}, "initialDelaySeconds": 15, "periodSeconds": 20}
    status = lambda p: json.loads(p["metadata"]["annotations"][ANNOTATION_STATUS])["hash"]  # noqa: E731
    assert status(default) != status(seeded)
    validate_strict(seeded)
    # What Helm leaves of a nulled-out map (`--set sidecarConfig.sidecar.startupProbe.httpGet=null ...`).
    _, emptied = injected(labelled_pod(), parse_config("sidecar: {startupProbe: {}}"))
    assert "startupProbe" not in sidecar_of(emptied)
    with pytest.raises(ConfigError, match="startupProbe must be a mapping"):
        parse_config("sidecar: {startupProbe: 5}")
    with pytest.raises(ConfigError, match="readinessProbe needs exactly one of httpGet, tcpSocket, exec, grpc, got httpGet, tcpSocket"):
        parse_config("backends: {redis: {readinessProbe: {httpGet: {path: /, port: mcp}, tcpSocket: {port: mcp}}}}")


def test_missing_maps_and_lists_are_created_first():
    pod = labelled_pod()
    assert "annotations" not in pod["metadata"] and "volumes" not in pod["spec"]
    result, _ = injected(pod)
    paths = {op["path"]: op for op in result.patch}
    assert paths["/metadata/annotations"]["value"] == {ANNOTATION_STATUS: paths["/metadata/annotations"]["value"][ANNOTATION_STATUS]}
    assert paths["/spec/volumes"]["value"][0]["name"] == "mcp-sidecar-tmp"


def test_existing_maps_get_escaped_keys_and_appended_entries():
    pod = labelled_pod(volumes=[{"name": "data", "emptyDir": {}}])
    pod["metadata"]["annotations"] = {"a/b~c": "x"}
    result, patched = injected(pod)
    assert {"op": "add", "path": "/metadata/annotations/mcp-sidecar.dox~1status"} .items() <= next(
        op for op in result.patch if "annotations" in op["path"]).items()
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "mcp-sidecar-tmp", "mcp-sidecar-auth"]
    assert patched["metadata"]["annotations"]["a/b~c"] == "x"


def test_null_maps_from_clients_are_treated_as_absent():
    pod = labelled_pod(volumes=None, initContainers=None)
    pod["metadata"]["annotations"] = None
    _, patched = injected(pod)
    assert ANNOTATION_STATUS in patched["metadata"]["annotations"]


def test_second_pass_is_a_no_op():
    _, once = injected(labelled_pod())
    again = evaluate(once, None, CONFIG)
    assert again.skip_reason is SkipReason.ALREADY_INJECTED and again.patch == [] and again.warnings == []


@pytest.mark.parametrize(
    "mutate, reason, warns",
    [
        (lambda p: p["metadata"]["labels"].pop(LABEL_BACKEND), SkipReason.NOT_LABELLED, False),
        (lambda p: p["metadata"].update(annotations={"mcp-sidecar.dox/inject": "false"}), SkipReason.OPTED_OUT, False),
        (lambda p: p["metadata"].update(annotations={"mcp-sidecar.dox/inject": "nope"}), SkipReason.INVALID_OVERRIDE, True),
        (lambda p: p["spec"]["containers"].append({"name": "mcp-sidecar", "image": "x"}), SkipReason.SIDECAR_PRESENT, False),
        (lambda p: p["metadata"]["labels"].update({LABEL_BACKEND: "mongodb"}), SkipReason.UNKNOWN_BACKEND, True),
        (lambda p: p["spec"].update(hostNetwork=True), SkipReason.HOST_NETWORK, True),
        (lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 9000}]), SkipReason.PORT_CONFLICT, True),
        (lambda p: p["metadata"].update(annotations={"mcp-sidecar.dox/port": "0"}), SkipReason.INVALID_OVERRIDE, True),
        (lambda p: p["spec"].update(containers=[]), SkipReason.MALFORMED_POD, True),
    ],
    ids=lambda v: v.value if isinstance(v, SkipReason) else None,
)
def test_skips_leave_the_pod_unchanged(mutate, reason, warns):
    pod = labelled_pod()
    mutate(pod)
    result = evaluate(pod, None, CONFIG)
    assert result.skip_reason is reason
    assert result.patch == []
    assert bool(result.warnings) is warns


def test_namespace_opt_out():
    result = evaluate(labelled_pod(), {"mcp-sidecar.dox/injection": "disabled"}, CONFIG)
    assert result.skip_reason is SkipReason.NAMESPACE_DISABLED and result.patch == []


def test_port_conflict_is_solved_by_the_port_annotation():
    pod = labelled_pod()
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 9000}]
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/port": "9100"}
    _, patched = injected(pod)
    sidecar = sidecar_of(patched)
    assert sidecar["ports"][0]["containerPort"] == 9100 and env_of(sidecar)["MCP_PORT"] == "9100"


def test_port_conflict_with_an_init_container_counts_too():
    pod = labelled_pod(initContainers=[{"name": "init", "image": "busybox", "ports": [{"containerPort": 9000}]}])
    assert evaluate(pod, None, CONFIG).skip_reason is SkipReason.PORT_CONFLICT


def test_invalid_override_warning_names_annotation_and_form():
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/image": "UPPER CASE"}
    result = evaluate(pod, None, CONFIG)
    assert result.skip_reason is SkipReason.INVALID_OVERRIDE
    assert "mcp-sidecar.dox/image" in result.warnings[0] and "image reference" in result.warnings[0]


def test_native_mode_puts_the_sidecar_first_in_init_containers():
    pod = labelled_pod(initContainers=[{"name": "init", "image": "busybox"}])
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/native": "true"}
    _, patched = injected(pod)
    first = patched["spec"]["initContainers"][0]
    assert first["name"] == SIDECAR_CONTAINER_NAME and first["restartPolicy"] == "Always"
    assert [c["name"] for c in patched["spec"]["containers"]] == ["redis"]
    validate_strict(patched)


def test_native_mode_creates_init_containers_when_absent():
    result, patched = injected(labelled_pod(), parse_config("nativeSidecar: true"))
    assert result.patch[0]["path"] == "/spec/initContainers"
    assert patched["spec"]["initContainers"][0]["restartPolicy"] == "Always"


@pytest.mark.parametrize(
    "mode, restart_policy, supported, annotation, expected",
    [
        ("auto", None, None, None, False),
        ("auto", None, True, None, True),
        ("auto", "Never", None, None, True),
        ("auto", "OnFailure", False, None, True),
        ("false", "Never", True, None, False),
        ("true", None, None, None, True),
        ("true", None, None, "false", False),
        ("false", None, None, "true", True),
    ],
)
def test_native_mode_selection(mode, restart_policy, supported, annotation, expected):
    pod = labelled_pod(**({"restartPolicy": restart_policy} if restart_policy else {}))
    if annotation:
        pod["metadata"]["annotations"] = {"mcp-sidecar.dox/native": annotation}
    _, patched = injected(pod, parse_config(f"nativeSidecar: {mode}"), native_supported=supported)
    assert (sidecar_of(patched).get("restartPolicy") == "Always") is expected


def test_password_secret_is_reused_never_copied():
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "redis-password"}}}
    ]
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis", "key": "redis-password"}}


def test_literal_password_is_not_copied_and_warns():
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "REDIS_PASSWORD", "value": "hunter2"}]
    result, patched = injected(pod)
    assert "REDIS_PASSWORD" not in env_of(sidecar_of(patched))
    assert "hunter2" not in json.dumps(result.patch)
    assert result.warnings and "literal" in result.warnings[0]


def test_configurable_password_source_names():
    config = parse_config("backends: {redis: {passwordSourceEnv: [REDIS_AUTH]}}")
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "REDIS_AUTH", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    _, patched = injected(pod, config)
    assert env_of(sidecar_of(patched))["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "s", "key": "k"}}


def test_password_secret_annotation_wins_and_defaults_the_key():
    pod = labelled_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}]
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/password-secret": "redis-auth"}
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "redis-password"}}


@pytest.mark.parametrize(
    "ports, annotation, expected",
    [
        ([], None, "6379"),
        ([{"name": "redis", "containerPort": 6380}], None, "6380"),
        ([{"containerPort": 7000}], None, "7000"),
        ([{"containerPort": 7000}, {"containerPort": 7001}], None, "6379"),
        ([{"name": "redis", "containerPort": 6380}], "6390", "6390"),
    ],
)
def test_backend_port_annotation_then_detection_then_default(ports, annotation, expected):
    pod = labelled_pod()
    pod["spec"]["containers"][0]["ports"] = ports
    if annotation:
        pod["metadata"]["annotations"] = {"mcp-sidecar.dox/backend-port": annotation}
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["REDIS_PORT"] == expected


def test_main_container_is_found_by_name_or_image_not_position():
    pod = labelled_pod()
    pod["spec"]["containers"] = [
        {"name": "exporter", "image": "oliver006/redis_exporter", "ports": [{"containerPort": 9121}]},
        {"name": "db", "image": "bitnami/redis:7", "ports": [{"name": "redis", "containerPort": 6390}]},
    ]
    # the exporter image mentions redis too, but only the db container has the redis port name
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["REDIS_PORT"] == "6390"


def test_main_container_by_name_beats_an_exporter_listed_first():
    pod = labelled_pod()
    pod["spec"]["containers"] = [
        {"name": "exporter", "image": "oliver006/redis_exporter", "ports": [{"containerPort": 9121}]},
        {"name": "redis", "image": "example/kv:1", "ports": [{"containerPort": 7777}]},
    ]
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["REDIS_PORT"] == "7777"


def test_elasticsearch_backend_env_and_credentials():
    pod = labelled_pod("elasticsearch")
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 9201}, {"name": "transport", "containerPort": 9300}]
    pod["spec"]["containers"][0]["env"] = [{"name": "ELASTIC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "es", "key": "pw"}}}]
    _, patched = injected(pod)
    env = env_of(sidecar_of(patched))
    assert sidecar_of(patched)["image"] == "mcp/elasticsearch:latest"
    assert env["ES_HOST"] == "localhost" and env["ES_PORT"] == "9201"
    assert env["ES_USERNAME"] == "elastic" and env["ES_PASSWORD"] == {"secretKeyRef": {"name": "es", "key": "pw"}}


def test_resource_overrides_merge_with_defaults():
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/memory-limit": "256Mi", "mcp-sidecar.dox/cpu-request": "10m"}
    _, patched = injected(pod)
    assert sidecar_of(patched)["resources"] == {"requests": {"memory": "64Mi", "cpu": "10m"}, "limits": {"memory": "256Mi", "cpu": "100m"}}


def test_config_changes_the_status_hash_and_image():
    _, a = injected(labelled_pod())
    _, b = injected(labelled_pod(), parse_config("backends: {redis: {image: 'mcp/redis:2.0'}}"))
    sa, sb = (json.loads(p["metadata"]["annotations"][ANNOTATION_STATUS]) for p in (a, b))
    assert sa["hash"] != sb["hash"] and sb["image"] == "mcp/redis:2.0"


def test_other_containers_are_never_touched():
    pod = labelled_pod()
    pod["spec"]["containers"][0].update(env=[{"name": "X", "value": "1"}], unknownFutureField={"keep": True})
    _, patched = injected(pod)
    assert patched["spec"]["containers"][0] == pod["spec"]["containers"][0]


@pytest.mark.parametrize("pod", [None, [], "pod", {"metadata": "x", "spec": {}}, {"metadata": {}}, {"metadata": {"labels": []}, "spec": {}}])
def test_garbage_never_raises(pod):
    result = evaluate(pod, None, CONFIG)
    assert not result.injected and result.patch == []


def test_a_request_above_the_default_limit_raises_the_limit_instead_of_blocking_the_pod():
    """`cpu-request: "2"` with the default 100m limit once made the API server reject the whole pod."""
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/cpu-request": "2", "mcp-sidecar.dox/memory-request": "1Gi"}
    result, patched = injected(pod)
    resources = sidecar_of(patched)["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "1Gi"}
    assert resources["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert any("cpu request 2 is above its limit 100m" in w and "cpu-limit" in w for w in result.warnings)
    validate_strict(patched)
    # within the limit: nothing changes, no warning
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/cpu-request": "0.1", "mcp-sidecar.dox/cpu-limit": "1"}
    result, patched = injected(pod)
    assert sidecar_of(patched)["resources"]["limits"]["cpu"] == "1" and not result.warnings


def test_quantity_overrides_are_bounded_and_compared_as_numbers():
    from webhook.engine.overrides import quantity_value

    assert quantity_value("100m") == quantity_value("0.1") and quantity_value("64Mi") == 64 * 2**20
    assert quantity_value("1e3") == 1000 and quantity_value("2k") == 2000 and quantity_value("x") is None
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/cpu-request": "1" * 40}
    result = evaluate(pod, None, CONFIG)
    assert result.skip_reason is SkipReason.INVALID_OVERRIDE and not result.patch


# ----------------------------------------------------------------------------- auth (issue 11, part 1)
AUTH_VOLUME = {"name": "mcp-sidecar-auth", "secret": {"secretName": "mcp-sidecar-token", "optional": True,
                                                      "items": [{"key": "token", "path": "token"}]}}


def test_auth_is_on_by_default_with_the_token_secret_mounted_read_only():
    result, pod = injected(labelled_pod())
    sidecar = sidecar_of(pod)
    assert env_of(sidecar)["MCP_AUTH_TOKEN_FILE"] == "/var/run/secrets/mcp-sidecar/token"
    assert "MCP_AUTH" not in env_of(sidecar) and "MCP_AUTH_TOKEN" not in env_of(sidecar)
    assert {"name": "mcp-sidecar-auth", "mountPath": "/var/run/secrets/mcp-sidecar", "readOnly": True} in sidecar["volumeMounts"]
    assert AUTH_VOLUME in pod["spec"]["volumes"]
    # The datastore container never sees the token.
    assert all("volumeMounts" not in c for c in pod["spec"]["containers"] if c["name"] != SIDECAR_CONTAINER_NAME)
    assert not any("authentication is off" in w for w in result.warnings)
    validate_strict(pod)


def test_auth_volume_is_added_next_to_existing_volumes_and_in_native_mode():
    pod = labelled_pod(volumes=[{"name": "data", "emptyDir": {}}])
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/native": "true"}
    _, patched = injected(pod)
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "mcp-sidecar-tmp", "mcp-sidecar-auth"]
    assert any(m["name"] == "mcp-sidecar-auth" for m in patched["spec"]["initContainers"][0]["volumeMounts"])
    validate_strict(patched)


def test_auth_token_secret_annotation_selects_the_mounted_secret():
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/auth-token-secret": "team-token:mcp"}
    _, patched = injected(pod)
    volume = next(v for v in patched["spec"]["volumes"] if v["name"] == "mcp-sidecar-auth")
    assert volume["secret"] == {"secretName": "team-token", "optional": True, "items": [{"key": "mcp", "path": "token"}]}
    assert env_of(sidecar_of(patched))["MCP_AUTH_TOKEN_FILE"] == "/var/run/secrets/mcp-sidecar/token"
    assert "MCP_AUTH_TOKEN" not in env_of(sidecar_of(patched))  # a file (rotation reaches it), not an env var


@pytest.mark.parametrize("config_text, annotation, source", [
    (None, "none", 'annotation mcp-sidecar.dox/auth: "none"'),
    ("sidecar: {auth: none}", None, "configuration sidecar.auth: none"),
    ("backends: {redis: {auth: none}}", None, "configuration sidecar.auth: none"),
])
def test_auth_opt_out_is_explicit_and_warned_on_every_admission(config_text, annotation, source):
    pod = labelled_pod()
    if annotation:
        pod["metadata"]["annotations"] = {"mcp-sidecar.dox/auth": annotation}
    result, patched = injected(pod, parse_config(config_text))
    sidecar = sidecar_of(patched)
    assert env_of(sidecar)["MCP_AUTH"] == "none" and "MCP_AUTH_TOKEN_FILE" not in env_of(sidecar)
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["mcp-sidecar-tmp"]
    assert [m["name"] for m in sidecar["volumeMounts"]] == ["mcp-sidecar-tmp"]
    warning = next(w for w in result.warnings if "authentication is off" in w)
    assert source in warning and "accepts calls without a credential" in warning
    validate_strict(patched)


def test_annotation_turns_auth_back_on_when_the_config_opted_out():
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/auth": "token"}
    result, patched = injected(pod, parse_config("sidecar: {auth: none}"))
    assert "MCP_AUTH_TOKEN_FILE" in env_of(sidecar_of(patched)) and not result.warnings


@pytest.mark.parametrize("value", ["off", "false", "", "no", "token,none", "x" * 5000])
def test_invalid_auth_annotation_never_opens_the_endpoint(value):
    pod = labelled_pod()
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/auth": value}
    result = evaluate(pod, None, CONFIG)
    assert result.skip_reason is SkipReason.INVALID_OVERRIDE and result.patch == []
    assert "mcp-sidecar.dox/auth" in result.warnings[0] and '"none"' in result.warnings[0]
    assert len(result.warnings[0]) < 400  # a huge value is not echoed whole


@pytest.mark.parametrize("text", ["sidecar: {auth: off}", "sidecar: {auth: false}", "backends: {redis: {auth: open}}"])
def test_invalid_auth_config_is_refused(text):
    with pytest.raises(ConfigError, match="auth must be token or none"):
        parse_config(text)


def test_static_env_cannot_turn_auth_off_behind_the_warning():
    _, patched = injected(labelled_pod(), parse_config("sidecar: {env: {MCP_AUTH: none, MCP_AUTH_TOKEN: x}}"))
    env = env_of(sidecar_of(patched))
    assert "MCP_AUTH" not in env and "MCP_AUTH_TOKEN" not in env and "MCP_AUTH_TOKEN_FILE" in env


def test_api_key_secret_replaces_user_and_password_for_elasticsearch():
    pod = labelled_pod("elasticsearch")
    pod["spec"]["containers"][0]["env"] = [
        {"name": "ELASTIC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "es", "key": "elasticsearch-password"}}}]
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/api-key-secret": "es-mcp-key"}
    _, patched = injected(pod)
    env = env_of(sidecar_of(patched))
    assert env["ES_API_KEY"] == {"secretKeyRef": {"name": "es-mcp-key", "key": "api-key"}}
    assert "ES_USERNAME" not in env and "ES_PASSWORD" not in env  # no process holds a credential it does not use
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/api-key-secret": "es-mcp-key:readonly"}
    _, patched = injected(pod)
    assert env_of(sidecar_of(patched))["ES_API_KEY"] == {"secretKeyRef": {"name": "es-mcp-key", "key": "readonly"}}
    validate_strict(patched)


@pytest.mark.parametrize("backend, value", [("redis", "some-key"), ("elasticsearch", "Not_A_Name"), ("elasticsearch", "a:b c")])
def test_api_key_secret_is_an_invalid_override_outside_its_form_or_backend(backend, value):
    pod = labelled_pod(backend)
    pod["metadata"]["annotations"] = {"mcp-sidecar.dox/api-key-secret": value}
    result = evaluate(pod, None, CONFIG)
    assert result.skip_reason is SkipReason.INVALID_OVERRIDE and result.patch == []
    assert "mcp-sidecar.dox/api-key-secret" in result.warnings[0]


def test_audit_sees_an_auth_injected_pod_as_current_not_stale():
    from webhook.engine.pod_audit import INJECTED, audit_pod

    _, patched = injected(labelled_pod())
    patched["status"] = {"containerStatuses": [{"name": SIDECAR_CONTAINER_NAME, "ready": True}]}
    row = audit_pod(patched, None, CONFIG)
    assert row.state == INJECTED and not row.stale, row.reason
