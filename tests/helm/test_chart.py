"""The Helm chart deploy/helm/mcp-sidecar-injector, rendered offline by Helm 3.19 and Helm 4.3.

Proves: `helm lint --strict` passes with defaults and every option; every rendered object (hooks
included) validates strictly against the Kubernetes 1.29 and 1.37 OpenAPI schemas; the rendered
objects carry the contract of issue 6 (webhook selectors and policies, TLS, RBAC, probes, config).
"""

from __future__ import annotations

import base64
import datetime as dt

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from webhook.config import default_config, parse_config

from .helpers import (CHART, CRD_KINDS, FULLNAME, HELMS, NAMESPACE, RELEASE, SCENARIOS, by_kind, dumps, helm,
                      is_hook, one, render)

K8S_VERSIONS = ("1.29", "1.37")
BACKEND = "mcp-sidecar.dox/backend"


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lint_strict(which, scenario):
    done = helm(which, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *SCENARIOS[scenario])
    assert "0 chart(s) failed" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_validates_strictly(which, scenario):
    docs = render(which, *SCENARIOS[scenario])
    assert docs
    skipped = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            skipped.append(doc["kind"])  # no schema in kubernetes-validate; asserted below instead
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc.message}\n{dumps(doc)}")
    if scenario.startswith("cert-manager"):
        assert "Certificate" in skipped


@pytest.mark.parametrize("which", HELMS)
def test_helm3_and_helm4_render_the_same_objects(which):
    def shape(docs):
        # Generated certificates differ per render; compare everything else.
        return sorted(dumps({**d, "data": None} if d["kind"] == "Secret" else strip_ca(d)) for d in docs)

    assert shape(render(which)) == shape(render("helm3"))


def strip_ca(doc):
    if doc["kind"] != "MutatingWebhookConfiguration":
        return doc
    doc = yaml.safe_load(dumps(doc))
    for hook in doc["webhooks"]:
        hook["clientConfig"].pop("caBundle", None)
    return doc


# ------------------------------------------------------------------------------ webhook registration

@pytest.mark.parametrize("which", HELMS)
def test_webhook_configuration_defaults(which):
    docs = render(which)
    mwc = one(docs, "MutatingWebhookConfiguration")
    [hook] = mwc["webhooks"]
    assert hook["objectSelector"] == {"matchExpressions": [{"key": BACKEND, "operator": "Exists"}]}
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]},
        {"key": "mcp-sidecar.dox/injection", "operator": "NotIn", "values": ["disabled"]},
    ]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == 5
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["clientConfig"]["service"] == {"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    service = one(docs, "Service", FULLNAME)
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("which", HELMS)
def test_fail_policy_and_extra_exclusions(which):
    [hook] = one(render(which, *SCENARIOS["fail-closed"]), "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", NAMESPACE, "infra", "ci"]


@pytest.mark.parametrize("which", HELMS)
def test_development_url_and_ca_bundle(which):
    docs = render(which, *SCENARIOS["dev-url"])
    [hook] = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:8443/mutate"
    assert "service" not in hook["clientConfig"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]).decode().startswith("-----BEGIN CERTIFICATE-----\nMIIB")


# ------------------------------------------------------------------------------ TLS

@pytest.mark.parametrize("which", HELMS)
def test_generated_tls_secret_matches_the_ca_bundle(which):
    docs = render(which)
    secret = one(docs, "Secret", f"{FULLNAME}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    [hook] = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{FULLNAME}.{NAMESPACE}.svc" in sans
    assert cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=3000)
    assert not by_kind(docs, "Certificate")


@pytest.mark.parametrize("which", HELMS)
def test_cert_manager_mode(which):
    docs = render(which, *SCENARIOS["cert-manager"])
    assert not [d for d in by_kind(docs, "Secret") if not is_hook(d)]  # cert-manager writes the Secret
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-serving"}
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]
    serving = one(docs, "Certificate", f"{FULLNAME}-serving")
    assert serving["spec"]["secretName"] == f"{FULLNAME}-tls"
    assert f"{FULLNAME}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["issuerRef"] == {"name": f"{FULLNAME}-ca", "kind": "Issuer", "group": "cert-manager.io"}
    ca = one(docs, "Certificate", f"{FULLNAME}-ca")
    assert ca["spec"]["isCA"] is True and ca["spec"]["issuerRef"]["name"] == f"{FULLNAME}-selfsigned"
    assert one(docs, "Issuer", f"{FULLNAME}-ca")["spec"] == {"ca": {"secretName": f"{FULLNAME}-ca"}}
    # The Deployment mounts the same Secret name in both modes.
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == f"{FULLNAME}-tls"

    own = render(which, *SCENARIOS["cert-manager-issuer"])
    assert not by_kind(own, "Issuer")
    assert one(own, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


# ------------------------------------------------------------------------------ Deployment

def container(docs):
    [c] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("which", HELMS)
def test_deployment_contract(which):
    docs = render(which)
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    c = container(docs)
    assert c["args"] == [
        "--log-level=info", "serve", "--host=0.0.0.0", "--port=8443",
        "--tls-cert-file=/etc/mcp-sidecar/tls/tls.crt", "--tls-key-file=/etc/mcp-sidecar/tls/tls.key",
        "--config=/etc/mcp-sidecar/config/config.yaml", "--watch-seconds=5",
        "--companion-service", "--no-heal",
    ]
    assert c["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/mcp-sidecar/tls", "/etc/mcp-sidecar/config", "/tmp"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8443",
                           "prometheus.io/path": "/metrics", "prometheus.io/scheme": "https"}
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == FULLNAME
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": spec["selector"]["matchLabels"]}}


@pytest.mark.parametrize("which", HELMS)
def test_deployment_passes_pod_security_restricted_shape(which):
    """Every container of the chart (hook pod included) has a restricted security context."""
    for doc in render(which):
        if doc["kind"] not in ("Deployment", "Pod"):
            continue
        pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("which", HELMS)
def test_switches_change_the_deployment(which):
    hard = render(which, *SCENARIOS["no-pdb-hard-affinity"])
    assert not by_kind(hard, "PodDisruptionBudget")
    pod = one(hard, "Deployment")["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert one(hard, "Deployment")["spec"]["replicas"] == 3

    digest = render(which, *SCENARIOS["native-digest"])
    assert container(digest)["image"] == "mcp/sidecar-injector@sha256:" + "a" * 64
    assert container(render(which))["image"] == "mcp/sidecar-injector:0.1.0"

    monitor = render(which, *SCENARIOS["service-monitor"])
    assert "annotations" not in one(monitor, "Deployment")["spec"]["template"]["metadata"] or not \
        one(monitor, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    sm = one(monitor, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == one(monitor, "Deployment")["spec"]["selector"]["matchLabels"]
    assert sm["spec"]["endpoints"][0]["port"] == "https" and sm["spec"]["endpoints"][0]["scheme"] == "https"
    assert not by_kind(render(which), "ServiceMonitor")


# ------------------------------------------------------------------------------ RBAC / operator

EXPECTED_CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments", "daemonsets"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
     "verbs": ["get", "list", "watch"]},
]


@pytest.mark.parametrize("which", HELMS)
def test_operator_rbac_is_exactly_least_privilege(which):
    docs = [d for d in render(which) if not is_hook(d)]
    role = one(docs, "ClusterRole")
    assert role["rules"] == EXPECTED_CLUSTER_RULES
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    lease = one(docs, "Role")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert lease["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                               "verbs": ["get", "list", "watch", "create", "update", "patch"]}]
    assert one(docs, "RoleBinding")["roleRef"]["name"] == lease["metadata"]["name"]


@pytest.mark.parametrize("which", HELMS)
def test_operator_disabled_drops_its_rbac_and_passes_no_operator(which):
    docs = [d for d in render(which, *SCENARIOS["no-operator"]) if not is_hook(d)]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert "--no-operator" in container(docs)["args"]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "--no-operator" not in container(render(which))["args"]

    external = render(which, *SCENARIOS["no-rbac-no-sa"])
    assert not [d for d in external if d["kind"] == "ServiceAccount" and not is_hook(d)]
    assert one(external, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "injector"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_container_args_parse_with_the_real_cli(scenario):
    """Every flag the chart passes is one `mcp-sidecar serve` accepts, with the intended value."""
    from webhook.cli import build_parser

    values = {"defaults": (True, False), "operator-options": (False, True)}
    args = build_parser().parse_args(container(render("helm3", *SCENARIOS[scenario]))["args"])
    assert args.command == "serve" and args.port == 8443 and args.config == "/etc/mcp-sidecar/config/config.yaml"
    assert args.no_operator is (scenario == "no-operator")
    if scenario in values:
        assert (args.companion_service, args.heal) == values[scenario]


# ------------------------------------------------------------------------------ sidecar configuration

def config_text(docs) -> str:
    return one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]["config.yaml"]


@pytest.mark.parametrize("which", HELMS)
def test_configmap_default_equals_the_built_in_defaults(which):
    text = config_text(render(which))
    assert parse_config(text) == default_config()
    # Not merely equal after merging: the chart spells out the whole seed defaults file.
    from importlib import resources

    seed = yaml.safe_load(resources.files("webhook").joinpath("defaults.yaml").read_text())
    assert yaml.safe_load(text) == seed


@pytest.mark.parametrize("which", HELMS)
def test_configmap_follows_values(which):
    cfg = parse_config(config_text(render(which, *SCENARIOS["native-digest"])))
    assert cfg.native_sidecar == "true"
    assert cfg.backends["redis"].image == "registry.example/mcp/redis:1.2"
    assert cfg.backends["elasticsearch"].image == "mcp/elasticsearch:latest"
    custom = render(which, "--set", "sidecarConfig.sidecar.port=9100", "--set", "sidecarConfig.sidecar.readOnly=false",
                    "--set", "sidecarConfig.backends.elasticsearch.resources.limits.memory=256Mi",
                    "--set", "sidecarConfig.sidecar.securityContext.runAsUser=2000")
    cfg = parse_config(config_text(custom))
    assert cfg.backends["redis"].port == 9100 and cfg.backends["redis"].read_only is False
    assert cfg.backends["elasticsearch"].resources["limits"]["memory"] == "256Mi"
    assert cfg.backends["redis"].resources["limits"]["memory"] == "128Mi"
    assert cfg.backends["redis"].security_context["runAsUser"] == 2000


# ------------------------------------------------------------------------------ NetworkPolicy

@pytest.mark.parametrize("which", HELMS)
def test_network_policy_guards_only_the_sidecar_port(which):
    policies = by_kind(render(which, *SCENARIOS["network-policy"]), "NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == ["data", "search"]
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": BACKEND, "operator": "Exists"}]}
    allowed, others = spec["ingress"]
    assert allowed == {"from": [{"namespaceSelector": {"matchLabels": {"team": "ai"}}}],
                       "ports": [{"protocol": "TCP", "port": 9000}]}
    assert "from" not in others  # everyone, on every port but 9000
    assert others["ports"] == [{"protocol": "TCP", "port": 1, "endPort": 8999},
                               {"protocol": "TCP", "port": 9001, "endPort": 65535},
                               {"protocol": "UDP", "port": 1, "endPort": 65535}]
    assert not by_kind(render(which), "NetworkPolicy")


# ------------------------------------------------------------------------------ helm test hook

@pytest.mark.parametrize("which", HELMS)
def test_helm_test_hook(which):
    docs = render(which)
    hooks = [d for d in docs if is_hook(d)]
    assert {d["kind"] for d in hooks} == {"ServiceAccount", "Role", "RoleBinding", "Pod"}
    for d in hooks:
        assert d["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert "hook-succeeded" in d["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = one(hooks, "Pod")
    [c] = pod["spec"]["containers"]
    assert c["command"] == ["python", "-c"]
    assert c["args"] == [(CHART / "files" / "helm-test.py").read_text()]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"TEST_NAMESPACE": "default", "TEST_BACKEND": "redis"}
    role = one(hooks, "Role")
    assert role["metadata"]["namespace"] == "default"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    compile(c["args"][0], "helm-test.py", "exec")


# ------------------------------------------------------------------------------ values.schema.json

@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("bad", [
    ("--set", "webhook.failurePolicy=Sometimes"),
    ("--set", "replicaCount=0"),
    ("--set", "webhook.url=http://insecure"),
    ("--set", "sidecarConfig.sidecar.port=70000"),
    ("--set", "sidecarConfig.nativeSidecar=maybe"),
    ("--set", "sidecarConfig.unknown=1"),
    ("--set", "typo=1"),
    ("--set", "podAntiAffinity=sometimes"),
    ("--set", "tls.certManager.issuerRef.kind=Cluster"),
])
def test_schema_rejects_bad_values(which, bad):
    done = helm(which, "template", RELEASE, str(CHART), *bad, check=False)
    assert done.returncode != 0, f"accepted {bad}"
    assert "schema" in done.stderr.lower() or "at '/" in done.stderr, done.stderr


def test_notes_tell_how_to_opt_in_and_audit():
    # Helm 3.19's --dry-run=client still dials the cluster; tests/e2e/test_helm_install.py checks its NOTES.
    out = helm("helm4", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl label statefulset redis mcp-sidecar.dox/backend=redis" in notes
    assert "mcp-sidecar.dox/injection=disabled" in notes
    assert "mcp-sidecar audit -A" in notes and "mcp-sidecar.dox/status" in notes
    assert f"helm test {RELEASE}" in notes
    assert "failurePolicy is Ignore" in notes
