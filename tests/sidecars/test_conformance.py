"""Clients we did not write, against real Redis and Elasticsearch sidecars: the official MCP
conformance suite (npm ``@modelcontextprotocol/conformance``, server scenarios) and the official
TypeScript SDK client (``@modelcontextprotocol/sdk``, StreamableHTTPClientTransport). Both run on
Node 22 from npm (tests/support/node_js.py), installed into .cache/npm on first use.

Every server scenario the suite knows is listed below, as one that applies to a tools-only,
stateless, JSON-response server (it must pass) or one that does not (skipped by name, with why).
A suite upgrade that brings a scenario not listed here fails ``test_every_scenario_is_classified``.

The suite sends no Authorization header (it has no option for one), so its sidecars run with
``MCP_AUTH=none``: the scenarios are about the protocol, and its DNS-rebinding scenario is defined
for servers without authentication. The TypeScript SDK client runs with the bearer token, as a
user's client would.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from sidecars.common import __version__
from tests.support.node_js import NodeUnavailable, conformance_command, ts_sdk_env

from .conftest import es_env, redis_env
from .helpers import SidecarProcess

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent

#: Scenarios that apply, with what they check here.
APPLIES = {
    "server-initialize": "initialize handshake and the initialized notification",
    "ping": "ping answers {}",
    "tools-list": "every tool has a name, a description and an inputSchema",
    "tools-call-error": "a failing tools/call is a result with isError and a text (the scenario's tool "
                        "test_error_handling does not exist here, and calling an unknown tool is such a failure)",
    "dns-rebinding-protection": "a foreign Host/Origin gets 4xx, a loopback one is served",
}

_FIXTURE_TOOL = ("needs the suite's fixture tool {} (the reference 'everything' server has it; "
                 "a datastore sidecar does not)")
_NO_SERVER_REQUESTS = ("the server would send a request to the client during the call: a stateless server "
                       "answering with one JSON response has no channel for it")
_NO_NOTIFICATIONS = ("the server would stream notifications during the call: with stateless JSON responses "
                     "a call's answer is one JSON object, and the tool is a fixture ({})")
NOT_APPLICABLE = {
    "logging-set-level": "tools only: no logging capability is advertised, and logging/setLevel answers -32601 "
                         "(tests/sidecars/test_wire.py)",
    "completion-complete": "tools only: no completions capability (prompts/resources have no arguments to complete)",
    "tools-call-simple-text": _FIXTURE_TOOL.format("test_simple_text") + "; real text results are checked "
                              "through the TypeScript SDK client below",
    "tools-call-image": _FIXTURE_TOOL.format("test_image_content"),
    "tools-call-audio": _FIXTURE_TOOL.format("test_audio_content"),
    "tools-call-embedded-resource": _FIXTURE_TOOL.format("test_embedded_resource"),
    "tools-call-mixed-content": _FIXTURE_TOOL.format("test_multiple_content_types"),
    "tools-call-with-logging": _NO_NOTIFICATIONS.format("test_tool_with_logging"),
    "tools-call-with-progress": _NO_NOTIFICATIONS.format("test_tool_with_progress"),
    "tools-call-sampling": _NO_SERVER_REQUESTS,
    "tools-call-elicitation": _NO_SERVER_REQUESTS,
    "elicitation-sep1034-defaults": _NO_SERVER_REQUESTS,
    "elicitation-sep1330-enums": _NO_SERVER_REQUESTS,
    "json-schema-2020-12": _FIXTURE_TOOL.format("json_schema_2020_12_tool"),
    "server-sse-polling": "stateless with JSON responses: no session id, no SSE stream to poll",
    "server-sse-multiple-streams": "stateless with JSON responses: no session id, no SSE streams",
    **{name: "tools only: no resources capability; resources/* answer -32601 (tests/sidecars/test_wire.py)"
       for name in ("resources-list", "resources-read-text", "resources-read-binary", "resources-templates-read",
                    "resources-subscribe", "resources-unsubscribe")},
    **{name: "tools only: no prompts capability; prompts/* answer -32601 (tests/sidecars/test_wire.py)"
       for name in ("prompts-list", "prompts-get-simple", "prompts-get-with-args", "prompts-get-embedded-resource",
                    "prompts-get-with-image")},
}
BACKENDS = ["redis", "elasticsearch", "opensearch"]


@pytest.fixture(scope="module")
def conformance() -> list[str]:
    try:
        return conformance_command()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))


def _sidecar_env(backend: str, request, **extra: str) -> dict[str, str]:
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.command("SET", "conformance", "checked by clients we did not write")
        return redis_env(server, **extra)
    node = "os_node" if backend == "opensearch" else "es_node"
    return es_env(request.getfixturevalue(node), **extra)


@pytest.fixture(scope="module", params=BACKENDS)
def suite_results(request, conformance, tmp_path_factory) -> dict[str, list[dict]]:
    """One run of every server scenario (``--suite all``) against a fresh sidecar: scenario → checks."""
    out = tmp_path_factory.mktemp(f"conformance-{request.param}")
    with SidecarProcess(request.param, _sidecar_env(request.param, request, MCP_AUTH="none")) as sidecar:
        t0 = time.monotonic()
        done = subprocess.run([*conformance, "server", "--url", sidecar.url, "--suite", "all", "-o", str(out)],
                              capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - t0
        assert sidecar.alive(), sidecar.output()[-2000:]
        log = sidecar.output()
    assert done.stdout.count("=== Running scenario") >= len(APPLIES), done.stdout[-3000:] + done.stderr[-2000:]
    results = {}
    for checks in out.glob("server-*/checks.json"):
        name = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks.parent.name)
        results[name] = json.loads(checks.read_text())
    print(f"conformance suite against the {request.param} sidecar: {len(results)} scenarios in {elapsed:.1f} s")
    # Nothing the suite sends may crash a handler (the sidecar logs no traceback for any scenario).
    assert "Traceback" not in log, log[-3000:]
    return results


@pytest.mark.parametrize("scenario", sorted(APPLIES) + sorted(NOT_APPLICABLE))
def test_conformance_scenario(suite_results, scenario):
    if scenario in NOT_APPLICABLE:
        pytest.skip(f"{scenario}: does not apply: {NOT_APPLICABLE[scenario]}")
    checks = suite_results.get(scenario)
    assert checks, f"the suite did not run {scenario}"
    failed = [c for c in checks if c["status"] not in ("SUCCESS", "INFO")]
    assert not failed, json.dumps(failed, indent=1)[:3000]
    assert any(c["status"] == "SUCCESS" for c in checks)


def test_every_scenario_is_classified(conformance):
    listed = subprocess.run([*conformance, "list", "--server"], capture_output=True, text=True, timeout=60)
    names = set(re.findall(r"^\s+- (\S+)", listed.stdout, re.M))
    assert names, listed.stdout + listed.stderr
    assert not APPLIES.keys() & NOT_APPLICABLE.keys()
    assert names == APPLIES.keys() | NOT_APPLICABLE.keys(), (
        f"new: {sorted(names - APPLIES.keys() - NOT_APPLICABLE.keys())}, "
        f"gone: {sorted((APPLIES.keys() | NOT_APPLICABLE.keys()) - names)}")


# ------------------------------------------------------------------ the official TypeScript SDK client
@pytest.fixture(scope="module")
def ts_client() -> tuple[str, dict[str, str]]:
    try:
        return ts_sdk_env()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))


def run_ts_client(ts_client, url: str, tool: str, args: dict, token: str | None) -> subprocess.CompletedProcess:
    node, env = ts_client
    env = {k: v for k, v in env.items() if k != "MCP_TOKEN"}
    if token:
        env["MCP_TOKEN"] = token
    return subprocess.run([node, str(HERE / "ts_sdk_client.mjs"), url, tool, json.dumps(args)],
                          capture_output=True, text=True, timeout=60, env=env)


CALLS = {
    "redis": ("get", {"key": "conformance"}, {"key": "conformance", "value": "checked by clients we did not write"}),
    "elasticsearch": ("count", {"index": "books"}, {"index": "books", "count": 30}),
    "opensearch": ("count", {"index": "books"}, {"index": "books", "count": 30}),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_typescript_sdk_client_lists_and_calls_tools_with_the_token(ts_client, backend, request):
    with SidecarProcess(backend, _sidecar_env(backend, request)) as sidecar:
        tool, args, expected = CALLS[backend]
        done = run_ts_client(ts_client, sidecar.url, tool, args, sidecar.token)
        assert done.returncode == 0, done.stderr[-2000:]
        answer = json.loads(done.stdout)
        assert answer["serverInfo"] == {"name": f"mcp-{backend}", "version": __version__}
        assert set(answer["capabilities"]) == {"tools"}
        assert answer["protocolVersion"] == "2025-11-25"
        assert tool in answer["tools"]
        assert answer["result"].get("isError") is not True, answer["result"]
        structured = answer["result"]["structuredContent"]
        assert {k: structured.get(k) for k in expected} == expected
        # A wrong token: the sidecar answers 401, and the client reports it and exits non-zero.
        refused = run_ts_client(ts_client, sidecar.url, tool, args, "not-the-token")
        assert refused.returncode == 1 and "Bearer token required" in refused.stderr, refused.stderr[-2000:]
