"""`helm test`: dry-run-create (server side) a labelled pod and check the API server returned it with
the MCP sidecar, i.e. the webhook is registered, reachable over TLS and injecting.

Standard library only (runs in the injector image). Settings come from the environment:
TEST_NAMESPACE, TEST_BACKEND, KUBERNETES_SERVICE_HOST/PORT, SA_DIR (token + ca.crt).
"""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

host = os.environ["KUBERNETES_SERVICE_HOST"]
port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
if ":" in host:
    host = f"[{host}]"
sa_dir = os.environ.get("SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
namespace = os.environ["TEST_NAMESPACE"]
backend = os.environ.get("TEST_BACKEND", "redis")
with open(os.path.join(sa_dir, "token"), encoding="utf-8") as f:
    token = f.read().strip()
context = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "mcp-sidecar-helm-test-", "labels": {"mcp-sidecar.dox/backend": backend}},
    "spec": {
        "automountServiceAccountToken": False,
        "containers": [{"name": backend, "image": f"{backend}:latest"}],
    },
}
url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods?dryRun=All"
last = "no attempt"
for attempt in range(10):
    request = urllib.request.Request(
        url, data=json.dumps(pod).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            created = json.load(response)
    except urllib.error.HTTPError as err:
        last = f"HTTP {err.code}: {err.read().decode(errors='replace')[:500]}"
    except OSError as err:
        last = str(err)
    else:
        spec = created.get("spec", {})
        names = [c["name"] for c in spec.get("initContainers", []) + spec.get("containers", [])]
        status = created.get("metadata", {}).get("annotations", {}).get("mcp-sidecar.dox/status")
        if "mcp-sidecar" in names and status:
            print(f"ok: a pod labelled mcp-sidecar.dox/backend={backend} in {namespace} gets the sidecar "
                  f"(containers {names}, status {status})")
            sys.exit(0)
        last = f"no mcp-sidecar container (containers {names}, status annotation {status!r})"
    time.sleep(3)
print(f"FAIL: {last}\nIs the webhook registered, are its pods ready, is {namespace} excluded from injection?",
      file=sys.stderr)
sys.exit(1)
