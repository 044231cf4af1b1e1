"""``mcp-sidecar ls`` and ``mcp-sidecar connect`` against the real kube-apiserver (issue 10).

There is no kubelet here, so the objects a running cluster would have are created directly: injected
pods (with the status annotation and the sidecar, their status patched Running/Ready), companion
Services and their EndpointSlices. ``connect``'s port-forward needs a kubelet: here ``--kubectl``
points to a stand-in that prints kubectl's "Forwarding from" line and records its arguments; the real
``kubectl port-forward`` and an MCP client through it are tests/node/test_connect.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cluster.controlplane import issue_cert

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BACKEND = "mcp-sidecar.dox/backend"
STATUS = "mcp-sidecar.dox/status"
TOKEN = "0123456789abcdef" * 4


def cli(cp, *args: str, kubeconfig: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webhook.cli", *args, "--kubeconfig", str(kubeconfig or cp.kubeconfig)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def injected_pod(name: str, app: str, *, backend: str = "redis", auth: str | None = "mcp-sidecar-token",
                 key: str = "token") -> dict:
    """A pod as the webhook leaves it: status annotation, sidecar with its port, the token volume."""
    sidecar = {"name": "mcp-sidecar", "image": "mcp/redis-sidecar:1", "ports": [{"name": "mcp", "containerPort": 9000}],
               "env": [{"name": "MCP_AUTH", "value": "none"}] if auth is None else
               [{"name": "MCP_AUTH_TOKEN_FILE", "value": "/var/run/secrets/mcp-sidecar/token"}]}
    volumes = [] if auth is None else [{"name": "mcp-sidecar-auth", "secret": {
        "secretName": auth, "optional": True, "items": [{"key": key, "path": "token"}]}}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {BACKEND: backend, "app": app},
                         "annotations": {STATUS: json.dumps({"backend": backend, "hash": "x"})}},
            "spec": {"containers": [{"name": backend, "image": f"{backend}:7"}, sidecar], "volumes": volumes}}


def mark_running(cp, namespace: str, name: str, ip: str, sidecar_ready: bool = True) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    statuses = [{"name": c, "ready": ready, "restartCount": 0, "image": "x", "imageID": "",
                 "state": {"running": {"startedAt": now}}} for c, ready in (("main", True), ("mcp-sidecar", sidecar_ready))]
    pod = cp.kubectl_json("get", "pod", name, "-n", namespace)
    statuses[0]["name"] = pod["spec"]["containers"][0]["name"]
    cp.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "containerStatuses": statuses}}))


def companion(name: str, workload: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mcp-sidecar-injector",
                                                  "mcp-sidecar.dox/companion-of": workload}},
            "spec": {"selector": selector, "ports": [{"name": "mcp", "port": 9000, "targetPort": "mcp"}]}}


def endpoint_slice(service: str, namespace: str, pods: list[tuple[str, str]], ready: bool = True) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-e2e", "labels": {"kubernetes.io/service-name": service,
                                                              "endpointslice.kubernetes.io/managed-by": "e2e-test"}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": name, "namespace": namespace}} for name, ip in pods],
            "ports": [{"name": "mcp", "port": 9000, "protocol": "TCP"}]}


def token_secret(name: str = "mcp-sidecar-token", key: str = "token", token: str = TOKEN) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "data": {key: base64.b64encode(token.encode()).decode()}}


def ready_redis(cp, namespace: str, *, workload: str = "redis", ip: str = "10.1.0.5", secret: bool = True) -> None:
    """A labelled StatefulSet's injected pod, Ready, behind its companion Service with an endpoint."""
    cp.apply(injected_pod(f"{workload}-0", workload), "-n", namespace)
    mark_running(cp, namespace, f"{workload}-0", ip)
    cp.apply([companion(f"{workload}-mcp", workload, {"app": workload}),
              endpoint_slice(f"{workload}-mcp", namespace, [(f"{workload}-0", ip)])], "-n", namespace)
    if secret:
        cp.apply(token_secret(), "-n", namespace)


def user_kubeconfig(cp, tmp_path: Path, user: str, namespace: str, rules: list[dict]) -> Path:
    """A client-certificate kubeconfig for ``user``, bound in ``namespace`` to a Role with ``rules``."""
    crt, key = issue_cert(cp.ca, user, client=True).write(tmp_path, user)
    if rules:
        cp.apply([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": user}, "rules": rules},
                  {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": user},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                   "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}], "-n", namespace)
    return cp.write_kubeconfig(tmp_path / f"{user}.kubeconfig", crt, key, user)


READ_MCP = [{"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}]


# ---- ls -------------------------------------------------------------------------------------------


def test_ls_lists_companion_services_and_injected_pods_with_ready_and_auth(control_plane, namespace):
    cp = control_plane
    ready_redis(cp, namespace)
    # an Elasticsearch workload whose pod is not Ready yet: its Service has no ready endpoint
    cp.apply(injected_pod("search-0", "search", backend="elasticsearch", auth="es-token", key="bearer"), "-n", namespace)
    mark_running(cp, namespace, "search-0", "10.1.0.6", sidecar_ready=False)
    cp.apply([companion("search-mcp", "search", {"app": "search"}),
              endpoint_slice("search-mcp", namespace, [("search-0", "10.1.0.6")], ready=False)], "-n", namespace)
    # a bare injected pod with auth off, a labelled pod the webhook missed, and a Service that is not ours
    cp.apply(injected_pod("scratch", "scratch", auth=None), "-n", namespace)
    missed = injected_pod("missed", "missed")
    del missed["metadata"]["annotations"]
    missed["spec"]["containers"].pop()
    missed["spec"]["volumes"] = []
    cp.apply([missed, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis"},
                       "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379}]}}], "-n", namespace)
    other = namespace + "-b"
    cp.create_namespace(other)
    try:
        ready_redis(cp, other, workload="cache", ip="10.1.1.5")

        done = cli(cp, "ls", "-n", namespace, "-o", "json")
        assert done.returncode == 0, done.stderr
        rows = {(r["kind"], r["name"]): r for r in json.loads(done.stdout)["endpoints"]}
        assert set(rows) == {("Service", "redis-mcp"), ("Service", "search-mcp"), ("Pod", "redis-0"), ("Pod", "search-0"),
                             ("Pod", "scratch")}
        assert rows["Service", "redis-mcp"] == {
            "namespace": namespace, "kind": "Service", "name": "redis-mcp", "workload": "redis", "backend": "redis",
            "ready": "1/1", "auth": "mcp-sidecar-token", "url": f"http://redis-mcp.{namespace}.svc:9000/mcp"}
        assert (rows["Service", "search-mcp"]["ready"], rows["Service", "search-mcp"]["auth"],
                rows["Service", "search-mcp"]["backend"]) == ("0/1", "es-token:bearer", "elasticsearch")
        assert (rows["Pod", "redis-0"]["ready"], rows["Pod", "redis-0"]["url"]) == ("yes", "http://10.1.0.5:9000/mcp")
        assert rows["Pod", "search-0"]["ready"] == "no"
        assert (rows["Pod", "scratch"]["auth"], rows["Pod", "scratch"]["url"]) == ("none", "-")

        table = cli(cp, "ls", "-A")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["NAMESPACE", "KIND", "NAME", "WORKLOAD", "BACKEND", "READY", "AUTH", "URL"]
        assert [namespace, "Service", "redis-mcp", "redis", "redis", "1/1", "mcp-sidecar-token",
                f"http://redis-mcp.{namespace}.svc:9000/mcp"] in [line.split() for line in lines]
        assert any(line.split()[:3] == [other, "Service", "cache-mcp"] for line in lines)
        assert "missed" not in table.stdout
    finally:
        cp.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_ls_without_rights_to_list_pods_says_which(control_plane, namespace, tmp_path):
    kubeconfig = user_kubeconfig(control_plane, tmp_path, "ls-nopods", namespace,
                                 [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}])
    done = cli(control_plane, "ls", "-n", namespace, kubeconfig=kubeconfig)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: permission denied to list pods in namespace " + namespace), done.stderr


# ---- connect: errors ------------------------------------------------------------------------------


def test_connect_without_companion_service_suggests_the_label(control_plane, namespace):
    cp = control_plane
    cp.apply({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
              "spec": {"replicas": 0, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                       "template": {"metadata": {"labels": {"app": "db"}},
                                    "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}}}, "-n", namespace)
    done = cli(cp, "connect", "db", "-n", namespace)
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.splitlines()
    assert f"kubectl label statefulset db -n {namespace} mcp-sidecar.dox/backend=redis" in line
    assert "companion Service db-mcp" in line

    done = cli(cp, "connect", "nothing", "-n", namespace)
    assert done.returncode == 3 and "mcp-sidecar ls" in done.stderr, done.stderr


def test_connect_not_ready_names_the_pods(control_plane, namespace):
    cp = control_plane
    cp.apply(injected_pod("redis-0", "redis"), "-n", namespace)
    mark_running(cp, namespace, "redis-0", "10.1.0.7", sidecar_ready=False)
    cp.apply(injected_pod("redis-1", "redis"), "-n", namespace)  # never scheduled: Pending
    cp.apply([companion("redis-mcp", "redis", {"app": "redis"}),
              endpoint_slice("redis-mcp", namespace, [("redis-0", "10.1.0.7")], ready=False), token_secret()], "-n", namespace)
    done = cli(cp, "connect", "statefulset/redis", "-n", namespace)
    assert done.returncode == 4, done.stderr
    [line] = done.stderr.splitlines()
    assert f"Service {namespace}/redis-mcp has no ready endpoint" in line
    assert "redis-0 (mcp-sidecar not ready)" in line and "redis-1 (Pending)" in line

    cp.apply(companion("empty-mcp", "empty", {"app": "empty"}), "-n", namespace)
    done = cli(cp, "connect", "empty", "-n", namespace)
    assert done.returncode == 4 and "no pod matches its selector app=empty" in done.stderr, done.stderr


def test_connect_missing_token_secret(control_plane, namespace):
    ready_redis(control_plane, namespace, secret=False)
    done = cli(control_plane, "connect", "redis", "-n", namespace)
    assert done.returncode == 6, done.stderr
    assert f"the token Secret {namespace}/mcp-sidecar-token does not exist" in done.stderr
    assert f"mcp-sidecar rotate-token -n {namespace}" in done.stderr


def test_connect_forbidden_says_which_verb_on_which_resource(control_plane, namespace, tmp_path):
    cp = control_plane
    ready_redis(cp, namespace)
    nothing = user_kubeconfig(cp, tmp_path, "nobody", namespace, [])
    done = cli(cp, "connect", "redis", "-n", namespace, kubeconfig=nothing)
    assert done.returncode == 5, done.stderr
    assert "verb 'get' on resource 'services'" in done.stderr

    reader = user_kubeconfig(cp, tmp_path, "reader", namespace, READ_MCP)
    done = cli(cp, "connect", "redis", "-n", namespace, kubeconfig=reader)
    assert done.returncode == 5, done.stderr
    assert "cannot get secrets/mcp-sidecar-token" in done.stderr and "verb 'get' on resource 'secrets'" in done.stderr
    assert "--no-token" in done.stderr


# ---- connect: the setup it prints, .mcp.json ------------------------------------------------------


FAKE_KUBECTL = textwrap.dedent("""\
    #!{python}
    # Stands in for `kubectl port-forward` (no kubelet here): records argv, says what kubectl says, waits.
    import json, sys, time
    open({record!r}, "w").write(json.dumps(sys.argv[1:]))
    print("Forwarding from 127.0.0.1:{port} -> 9000", flush=True)
    time.sleep(600)
""")


def fake_kubectl(tmp_path: Path, port: int = 19000) -> tuple[Path, Path]:
    record = tmp_path / "kubectl-argv.json"
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable, record=str(record), port=port))
    script.chmod(0o755)
    return script, record


def connect_until_ready(cp, *args: str, kubeconfig: Path | None = None, cwd: Path) -> tuple[str, subprocess.Popen]:
    """Start connect, read stdout until the setup is printed; returns (stdout so far, process)."""
    proc = subprocess.Popen([sys.executable, "-m", "webhook.cli", "connect", *args, "--kubeconfig",
                             str(kubeconfig or cp.kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    out = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if line.startswith("  npx @modelcontextprotocol/inspector") and "--write-mcp-json" not in args \
                or line.startswith("Wrote server"):
            return "".join(out), proc
    proc.kill()
    raise AssertionError(f"connect did not print its setup: {''.join(out)}{proc.stderr.read()}")


def stop_with_ctrl_c(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    code = proc.wait(20)
    return code, proc.stderr.read()


def test_connect_prints_client_setup_with_the_token_and_exits_0_on_ctrl_c(control_plane, namespace, tmp_path):
    cp = control_plane
    ready_redis(cp, namespace)
    kubectl, record = fake_kubectl(tmp_path)
    out, proc = connect_until_ready(cp, "redis", "-n", namespace, "--port", "0", "--kubectl", str(kubectl), cwd=tmp_path)
    code, err = stop_with_ctrl_c(proc)
    assert code == 0, err
    assert json.loads(record.read_text()) == ["--kubeconfig", str(cp.kubeconfig), "port-forward", "-n", namespace,
                                              "--address", "127.0.0.1", "svc/redis-mcp", ":9000"]
    url = "http://127.0.0.1:19000/mcp"
    assert f"  claude mcp add --transport http redis {url} --header 'Authorization: Bearer {TOKEN}'" in out.splitlines()
    assert (f"  npx @modelcontextprotocol/inspector --cli {url} --transport http --header 'Authorization: Bearer {TOKEN}' "
            "--method tools/list") in out.splitlines()
    assert TOKEN not in err
    # the stand-in kubectl was stopped with connect
    assert subprocess.run(["pgrep", "-f", str(kubectl)], capture_output=True).stdout == b""

    # --no-token: placeholders, and the Secret is not read (a user without get on secrets can connect)
    reader = user_kubeconfig(cp, tmp_path, "pf-reader", namespace, READ_MCP)
    out, proc = connect_until_ready(cp, "svc/redis-mcp", "-n", namespace, "--no-token", "--name", "cache",
                                    "--kubectl", str(kubectl), kubeconfig=reader, cwd=tmp_path)
    code, err = stop_with_ctrl_c(proc)
    assert code == 0, err
    assert TOKEN not in out
    assert f'  claude mcp add --transport http cache {url} --header "Authorization: Bearer $MCP_TOKEN"' in out.splitlines()
    assert "export MCP_TOKEN=$(kubectl get secret mcp-sidecar-token" in out


def test_connect_reads_the_secret_the_sidecar_mounts_and_none_when_auth_is_off(control_plane, namespace, tmp_path):
    """The token comes from the Secret/key in the ready pod's injected spec (auth-token-secret annotation),
    not from the default name; with auth off there is no header and no Secret to read."""
    cp = control_plane
    cp.apply(injected_pod("search-0", "search", backend="elasticsearch", auth="es-token", key="bearer"), "-n", namespace)
    mark_running(cp, namespace, "search-0", "10.1.0.8")
    cp.apply([companion("search-mcp", "search", {"app": "search"}),
              endpoint_slice("search-mcp", namespace, [("search-0", "10.1.0.8")]),
              token_secret(),  # the default Secret holds another token: it must not be the one printed
              token_secret("es-token", "bearer", "f" * 64)], "-n", namespace)
    kubectl, _ = fake_kubectl(tmp_path, port=19002)
    out, proc = connect_until_ready(cp, "search", "-n", namespace, "--kubectl", str(kubectl), cwd=tmp_path)
    assert stop_with_ctrl_c(proc)[0] == 0
    assert f"--header 'Authorization: Bearer {'f' * 64}'" in out and TOKEN not in out

    cp.apply(injected_pod("open-0", "open", auth=None), "-n", namespace)
    mark_running(cp, namespace, "open-0", "10.1.0.9")
    cp.apply([companion("open-mcp", "open", {"app": "open"}), endpoint_slice("open-mcp", namespace, [("open-0", "10.1.0.9")])],
             "-n", namespace)
    nosecrets = user_kubeconfig(cp, tmp_path, "open-reader", namespace, READ_MCP)
    out, proc = connect_until_ready(cp, "open", "-n", namespace, "--kubectl", str(kubectl), kubeconfig=nosecrets, cwd=tmp_path)
    assert stop_with_ctrl_c(proc)[0] == 0
    assert "(auth: none)" in out and "--header" not in out and "Authorization" not in out
    assert "  claude mcp add --transport http open http://127.0.0.1:19002/mcp\n" in out


def test_connect_merges_into_mcp_json_with_mode_0600(control_plane, namespace, tmp_path):
    cp = control_plane
    ready_redis(cp, namespace)
    kubectl, _ = fake_kubectl(tmp_path, port=19001)
    mcp_json = tmp_path / ".mcp.json"
    mine = {"type": "stdio", "command": "my-server"}
    mcp_json.write_text(json.dumps({"mcpServers": {"mine": mine, "redis": {"type": "http", "url": "old"}}, "other": 1}))
    mcp_json.chmod(0o644)
    out, proc = connect_until_ready(cp, "redis", "-n", namespace, "--write-mcp-json", "--kubectl", str(kubectl), cwd=tmp_path)
    code, err = stop_with_ctrl_c(proc)
    assert code == 0, err
    assert stat.S_IMODE(mcp_json.stat().st_mode) == 0o600
    assert json.loads(mcp_json.read_text()) == {
        "mcpServers": {"mine": mine, "redis": {"type": "http", "url": "http://127.0.0.1:19001/mcp",
                                               "headers": {"Authorization": f"Bearer {TOKEN}"}}},
        "other": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mcp.json.")] == []  # no temp file left

    # an explicit file and --no-token: the client expands ${MCP_TOKEN}
    other = tmp_path / "sub" / "clients.json"
    other.parent.mkdir()
    out, proc = connect_until_ready(cp, "redis", "-n", namespace, "--write-mcp-json", str(other), "--no-token",
                                    "--kubectl", str(kubectl), cwd=tmp_path)
    assert stop_with_ctrl_c(proc)[0] == 0
    assert json.loads(other.read_text())["mcpServers"]["redis"]["headers"] == {"Authorization": "Bearer ${MCP_TOKEN}"}
    assert stat.S_IMODE(other.stat().st_mode) == 0o600

    # a file that is not JSON is never clobbered, and nothing is forwarded
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = cli(cp, "connect", "redis", "-n", namespace, "--write-mcp-json", str(broken), "--kubectl", str(kubectl))
    assert done.returncode == 2 and "left unchanged" in done.stderr, done.stderr
    assert broken.read_text() == "{not json"


def test_connect_to_a_bare_injected_pod(control_plane, namespace, tmp_path):
    """``pod/NAME``: an injected pod without a Service (what ``ls`` lists as a Pod row) is reachable too."""
    cp = control_plane
    cp.apply([injected_pod("scratch", "scratch"), token_secret()], "-n", namespace)
    done = cli(cp, "connect", "pod/scratch", "-n", namespace)
    assert done.returncode == 4 and f"pod {namespace}/scratch (Pending) is not ready" in done.stderr, done.stderr
    mark_running(cp, namespace, "scratch", "10.1.0.10")
    kubectl, record = fake_kubectl(tmp_path, port=19003)
    out, proc = connect_until_ready(cp, "pod/scratch", "-n", namespace, "--port", "0", "--kubectl", str(kubectl), cwd=tmp_path)
    assert stop_with_ctrl_c(proc)[0] == 0
    assert json.loads(record.read_text())[-2:] == ["pod/scratch", ":9000"]
    assert f"--header 'Authorization: Bearer {TOKEN}'" in out

    plain = injected_pod("plain", "plain")
    plain["spec"]["containers"].pop()
    cp.apply(plain, "-n", namespace)
    done = cli(cp, "connect", "pod/plain", "-n", namespace)
    assert done.returncode == 3 and "has no mcp-sidecar container" in done.stderr, done.stderr
    done = cli(cp, "connect", "pod/absent", "-n", namespace)
    assert done.returncode == 3 and "no pod absent" in done.stderr, done.stderr


def test_connect_port_forward_failures_are_one_line_exit_7(control_plane, namespace, tmp_path):
    """The real kubectl, refused by the API server (the pod is on no node here), and a missing binary."""
    from tests.cluster.controlplane import BIN_DIR

    cp = control_plane
    ready_redis(cp, namespace)
    done = cli(cp, "connect", "redis", "-n", namespace, "--port", "0", "--kubectl", str(BIN_DIR / "kubectl"))
    assert done.returncode == 7, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: kubectl port-forward svc/redis-mcp failed: ") and "redis-0" in line, line
    assert TOKEN not in done.stdout + done.stderr  # nothing printed before the forward is up

    done = cli(cp, "connect", "redis", "-n", namespace, "--kubectl", str(tmp_path / "no-kubectl"))
    assert done.returncode == 7 and "cannot run" in done.stderr, done.stderr
