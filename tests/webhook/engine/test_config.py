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
    "text, fragment",
    [
        ("nativeSidecar: maybe", "nativeSidecar"),
        ("backends: {redis: {port: 0}}", "backends.redis.port"),
        ("backends: {redis: {image: 5}}", "backends.redis.image"),
        ("backends: {redis: {env: {A: 1}}}", "backends.redis.env"),
        ("backends: {redis: {imagePullPolicy: Sometimes}}", "imagePullPolicy"),
        ("colour: blue", "unknown top-level"),
        ("[1, 2]", "mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_invalid_documents_name_the_key(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        parse_config(text)


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
