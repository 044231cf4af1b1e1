"""Configuration parsing and hot reload: bad files are refused, never half-applied."""

from __future__ import annotations

import pytest

from webhook.engine.config import ConfigError, parse_config
from webhook.shared.config_store import ConfigStore


def test_empty_document_is_the_seed_defaults():
    config = parse_config("")
    assert config.native_sidecar == "auto"
    assert set(config.backends) == {"redis", "elasticsearch", "opensearch"}
    assert config.backends["elasticsearch"].backend_port == 9200


def test_overrides_merge_per_backend_and_shared_section():
    config = parse_config(
        """
nativeSidecar: true
sidecar:
  resources: {limits: {memory: 256Mi}}
backends:
  redis: {image: reg.example/mcp/redis:1.0}
  elasticsearch: null
"""
    )
    redis = config.backends["redis"]
    assert config.native_sidecar == "true" and redis.image == "reg.example/mcp/redis:1.0"
    assert redis.resources == {"requests": {"memory": "64Mi", "cpu": "50m"}, "limits": {"memory": "256Mi", "cpu": "100m"}}
    assert "elasticsearch" not in config.backends


def test_a_new_backend_can_be_declared_from_the_shared_section():
    config = parse_config(
        "backends: {valkey: {image: mcp/valkey:1, backendPort: 6379, hostEnv: REDIS_HOST, portEnv: REDIS_PORT,"
        " passwordEnv: REDIS_PASSWORD, passwordSecretKey: password}}"
    )
    assert config.backends["valkey"].port == 9000


@pytest.mark.parametrize(
    "text, message",
    [
        ("nativeSidecar: maybe", "nativeSidecar must be auto, true or false, got 'maybe'"),
        ("backends: {redis: {port: 0}}", "backends.redis.port must be a port number 1-65535, got 0"),
        ("backends: {redis: {port: '9000'}}", "backends.redis.port must be an integer, got '9000'"),
        ("backends: {redis: {image: 5}}", "backends.redis.image must be a string, got 5 (quote it)"),
        ("backends: {redis: {env: {A: 1}}}", "backends.redis.env.A must be a string, got 1 (quote it)"),
        ("backends: {redis: {imagePullPolicy: Sometimes}}",
         "backends.redis.imagePullPolicy must be Always, IfNotPresent or Never, got 'Sometimes'"),
        ("backends: {redis: {readOnly: 'yes'}}", "backends.redis.readOnly must be true or false, got 'yes'"),
        ("backends: {redis: {passwordSourceEnv: [A, '']}}", "backends.redis.passwordSourceEnv[1] must not be empty"),
        ("backends: {redis: {tls: {detect: mongo}}}", "backends.redis.tls.detect must be redis or elasticsearch, got 'mongo'"),
        ("backends: {redis: {resources: {limits: {cpu: lots}}}}",
         "backends.redis.resources.limits.cpu must be a quantity such as 100m, 64Mi or 1, got 'lots'"),
        ("backends: {valkey: {image: mcp/valkey:1, backendPort: 6379, hostEnv: H, portEnv: P, passwordEnv: W}}",
         "backends.valkey.passwordSecretKey is required"),
        ("backends: {redis: 5}", "backends.redis must be a mapping, got integer"),
        # A key of the shared section is named there, not in every backend that inherits it.
        ("sidecar: {port: 70000}", "sidecar.port must be a port number 1-65535, got 70000"),
        ("sidecar: 5", "sidecar must be a mapping, got 5"),
        ("colour: blue", "unknown top-level key colour (known keys: allowedImages, backends, nativeSidecar, sidecar)"),
        ("allowedImages: [reg.example/mcp/redis:7]", "allowedImages[0] must be an image repository without tag or digest"),
        ("[1, 2]", "the configuration must be a YAML mapping, got list"),
        ("a: [", "not valid YAML"),
    ],
)
def test_invalid_documents_name_the_key(text, message):
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("text, message", [
    ("backends: {redis: {imagePullPolcy: Always}}", "backends.redis.imagePullPolcy is not a known key (did you mean imagePullPolicy?)"),
    ("backends: {redis: {tls: {dtect: redis}}}", "backends.redis.tls.dtect is not a known key (did you mean detect?)"),
    ("backends: {redis: {resources: {limts: {cpu: 1}}}}",
     "backends.redis.resources.limts is not a known key (known keys: requests, limits)"),
    ("sidecar: {image: mcp/redis:1}", "sidecar.image is not a known key (known keys: auth, env, imagePullPolicy,"),
])
def test_unknown_keys_are_refused_not_ignored(text, message):
    """A typo'd key silently ignored would leave the default in force unnoticed; the chart's schema refuses it too."""
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert str(raised.value).startswith(message)


def test_every_problem_is_reported_and_long_values_are_clipped():
    with pytest.raises(ConfigError) as raised:
        parse_config("backends: {redis: {port: 0, hostEnv: 5, readOnly: 1, imagePullPolicy: '%s'}}" % ("x" * 5000))
    problems = str(raised.value).split("; ")
    assert problems[-1] == "and 1 more" and len(str(raised.value)) < 400
    assert set(problems[:-1]) <= {"backends.redis.port must be a port number 1-65535, got 0",
                                  "backends.redis.hostEnv must be a string, got 5 (quote it)",
                                  "backends.redis.readOnly must be true or false, got 1",
                                  "backends.redis.imagePullPolicy must be Always, IfNotPresent or Never, got '%s..." % ("x" * 60)}


def test_values_keep_their_types_and_order():
    config = parse_config("sidecar: {resources: null}\nbackends: {elasticsearch: null, opensearch: null,"
                          " redis: {resources: {limits: {cpu: 1, memory: 1.5}, requests: {cpu: 250m}}}}")
    resources = config.backends["redis"].resources
    assert list(resources) == ["limits", "requests"] and resources["limits"] == {"cpu": 1, "memory": 1.5}
    assert type(resources["limits"]["cpu"]) is int
    assert parse_config("nativeSidecar: false").native_sidecar == "false"  # YAML's boolean, as the chart writes it


def test_store_reloads_valid_changes_and_keeps_old_config_on_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("backends: {redis: {image: 'mcp/redis:1'}}")
    events = []
    store = ConfigStore(path, on_reload=lambda result, cfg: events.append(result))
    assert store.current.backends["redis"].image == "mcp/redis:1"
    assert store.reload_if_changed() is False and events == []

    path.write_text("backends: {redis: {image: 'mcp/redis:2'}}")
    assert store.reload_if_changed() is True
    assert store.current.backends["redis"].image == "mcp/redis:2" and events == ["ok"]

    path.write_text("backends: {redis: {port: 99999}}")
    assert store.reload_if_changed() is False
    assert store.current.backends["redis"].image == "mcp/redis:2"
    assert "backends.redis.port" in store.last_error and events == ["ok", "error"]

    path.unlink()
    assert store.reload_if_changed() is False and store.current.backends["redis"].image == "mcp/redis:2"


def test_store_follows_a_configmap_style_symlink_swap(tmp_path):
    for name, image in (("v1", "mcp/redis:1"), ("v2", "mcp/redis:2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"backends: {{redis: {{image: '{image}'}}}}")
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    store = ConfigStore(tmp_path / "config.yaml")
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")  # atomic swap, as the kubelet does
    assert store.reload_if_changed() and store.current.backends["redis"].image == "mcp/redis:2"


def test_store_fails_fast_on_an_invalid_file_at_start(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("nativeSidecar: sometimes")
    with pytest.raises(ConfigError):
        ConfigStore(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ConfigStore(tmp_path / "missing.yaml")
