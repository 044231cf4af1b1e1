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

from webhook.engine.config import default_config, parse_config

from .helpers import (CHART, CRD_KINDS, FULLNAME, HELMS, NAMESPACE, OPERATOR, RELEASE, SCENARIOS, by_kind, dumps,
                      helm, is_hook, one, render)

K8S_VERSIONS = ("1.29", "1.37")
BACKEND = "mcp-sidecar.dox/backend"


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lint_strict(which, scenario):
    done = helm(which, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *SCENARIOS[scenario])
    assert "0 chart(s) failed" in done.stdout, done.stdout + done.stderr


def validate_strictly(docs: list[dict]) -> list[str]:
    """Every rendered object against every K8S_VERSIONS schema (strict); returns the CRD kinds skipped
    (kubernetes-validate has no schema for them: callers assert them otherwise)."""
    skipped = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            skipped.append(doc["kind"])
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc.message}\n{dumps(doc)}")
    return skipped


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_validates_strictly(which, scenario):
    docs = render(which, *SCENARIOS[scenario])
    assert docs
    skipped = validate_strictly(docs)
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
    assert service["spec"]["selector"] == one(docs, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]


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
    volumes = {v["name"]: v for v in one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == f"{FULLNAME}-tls"

    own = render(which, *SCENARIOS["cert-manager-issuer"])
    assert not by_kind(own, "Issuer")
    assert one(own, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


# ------------------------------------------------------------------------------ Deployment

def container(docs, name=FULLNAME):
    [c] = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("which", HELMS)
def test_deployment_contract(which):
    docs = render(which)
    deploy = one(docs, "Deployment", FULLNAME)
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    c = container(docs)
    assert c["args"] == [
        "--log-level=info", "serve", "--host=0.0.0.0", "--port=8443",
        "--tls-cert-file=/etc/mcp-sidecar/tls/tls.crt", "--tls-key-file=/etc/mcp-sidecar/tls/tls.key",
        "--config=/etc/mcp-sidecar/config/config.yaml", "--watch-seconds=5", "--no-operator",
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
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == FULLNAME
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
    pod = one(hard, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert one(hard, "Deployment", FULLNAME)["spec"]["replicas"] == 3

    digest = render(which, *SCENARIOS["native-digest"])
    assert container(digest)["image"] == "mcp/sidecar-injector@sha256:" + "a" * 64
    assert container(render(which))["image"] == "mcp/sidecar-injector:0.1.0"

    monitor = render(which, *SCENARIOS["service-monitor"])
    assert "annotations" not in one(monitor, "Deployment", FULLNAME)["spec"]["template"]["metadata"] or not \
        one(monitor, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]
    sm = one(monitor, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == one(monitor, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    assert sm["spec"]["endpoints"][0]["port"] == "https" and sm["spec"]["endpoints"][0]["scheme"] == "https"
    assert not by_kind(render(which), "ServiceMonitor")


# ------------------------------------------------------------------------------ workers and autoscaling

SCALING = ("--set", "workers=2", "--set", "autoscaling.enabled=true", "--set", "autoscaling.maxReplicas=4",
           "--set", "resources.requests.cpu=2", "--set", "resources.limits.cpu=2")


@pytest.mark.parametrize("which", HELMS)
def test_workers_and_autoscaling_lint_and_validate(which):
    done = helm(which, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *SCALING)
    assert "0 chart(s) failed" in done.stdout, done.stdout + done.stderr
    docs = render(which, *SCALING)
    validate_strictly(docs)


@pytest.mark.parametrize("which", HELMS)
def test_autoscaling_scales_the_admission_deployment_on_cpu(which):
    assert not by_kind(render(which), "HorizontalPodAutoscaler")
    docs = render(which, *SCALING)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    # The HPA owns the replica count: a rendered one would undo its scaling at every upgrade.
    assert "replicas" not in one(docs, "Deployment", FULLNAME)["spec"]
    assert one(docs, "Deployment", OPERATOR)["spec"]["replicas"] == 1


@pytest.mark.parametrize("which", HELMS)
def test_autoscaling_without_a_cpu_request_is_refused(which):
    done = helm(which, "template", RELEASE, str(CHART), "--set", "autoscaling.enabled=true",
                "--set", "resources.requests.cpu=null", check=False)
    assert done.returncode != 0 and "resources.requests.cpu" in done.stderr, done.stderr
    done = helm(which, "template", RELEASE, str(CHART), "--set", "autoscaling.enabled=true",
                "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=3", check=False)
    assert done.returncode != 0 and "minReplicas" in done.stderr, done.stderr


def test_workers_reach_the_real_cli():
    from webhook.cli.main import build_parser

    assert build_parser().parse_args(container(render("helm3"))["args"]).workers == 1
    args = build_parser().parse_args(container(render("helm3", *SCALING))["args"])
    assert args.workers == 2 and args.no_operator  # several workers need the operator elsewhere


# ------------------------------------------------------------------------------ RBAC / operator

POD_WATCH = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]}
WORKLOADS = {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments", "daemonsets"],
             "verbs": ["get", "list", "watch", "patch"]}
SERVICES = {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch", "delete"]}
NAMESPACES = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}
SECRETS = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]  # the token Secret; never read
EXPECTED_CLUSTER_RULES = [POD_WATCH, EVENTS, WORKLOADS, SERVICES, NAMESPACES, *SECRETS]
HEALING_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    EVENTS, WORKLOADS, NAMESPACES, *SECRETS,  # operator-options: no companion Service, no services rights
]
LEASE_RULES = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def bound_subjects(docs) -> set[str]:
    return {s["name"] for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and not is_hook(d)
            for s in d["subjects"]}


@pytest.mark.parametrize("which", HELMS)
def test_operator_rbac_is_exactly_least_privilege(which):
    docs = [d for d in render(which) if not is_hook(d)]
    role = one(docs, "ClusterRole")
    assert role["rules"] == EXPECTED_CLUSTER_RULES
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])
    # No Secret is listed, watched or read (the operator must not read credentials); it only creates the token Secret.
    assert [r["verbs"] for r in role["rules"] if "secrets" in r["resources"]] == [["create"]]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]
    lease = one(docs, "Role")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert lease["rules"] == LEASE_RULES
    assert one(docs, "RoleBinding")["roleRef"]["name"] == lease["metadata"]["name"]
    assert one(docs, "RoleBinding")["subjects"] == binding["subjects"]
    assert one(render(which, *SCENARIOS["operator-options"]), "ClusterRole")["rules"] == HEALING_RULES


@pytest.mark.parametrize("which", HELMS)
def test_admission_pod_has_no_token_and_no_rbac(which):
    """The pod serving the unauthenticated admission endpoint mounts no token and its ServiceAccount
    is bound to nothing; only the operator's ServiceAccount is (issue 11, part 2)."""
    for scenario in ("defaults", "operator-options", "operator-namespaced", "no-operator"):
        docs = render(which, *SCENARIOS[scenario])
        pod = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == FULLNAME
        assert one(docs, "ServiceAccount", FULLNAME)["automountServiceAccountToken"] is False
        assert FULLNAME not in bound_subjects(docs)
        assert "--no-operator" in container(docs)["args"]
        assert not [v for v in pod["volumes"] if "projected" in v]


@pytest.mark.parametrize("which", HELMS)
def test_operator_deployment(which):
    docs = render(which)
    deploy = one(docs, "Deployment", OPERATOR)
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == OPERATOR and pod["automountServiceAccountToken"] is True
    assert one(docs, "ServiceAccount", OPERATOR)
    c = container(docs, OPERATOR)
    assert c["args"] == ["--log-level=info", "operator", "--config=/etc/mcp-sidecar/config/config.yaml",
                         "--metrics-port=9090", "--watch-seconds=5", "--companion-service", "--no-heal",
                         f"--exclude-namespace={NAMESPACE}"]
    assert {e["name"] for e in c["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert deploy["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics", "prometheus.io/scheme": "http"}
    assert c["securityContext"] == container(docs)["securityContext"]
    assert pod["securityContext"] == one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["securityContext"]
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
    # The admission Service, PDB and anti-affinity select the admission pods only.
    operator_labels = deploy["spec"]["template"]["metadata"]["labels"]
    for selector in (one(docs, "Service", FULLNAME)["spec"]["selector"], one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert not selector.items() <= operator_labels.items()
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/mcp-sidecar/config", "/tmp"}


@pytest.mark.parametrize("which", HELMS)
def test_operator_confined_to_namespaces_gets_roles(which):
    docs = [d for d in render(which, *SCENARIOS["operator-namespaced"]) if not is_hook(d)]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {("data", OPERATOR), ("search", OPERATOR), (NAMESPACE, f"{FULLNAME}-leader-election")}
    assert roles[("data", OPERATOR)]["rules"] == EXPECTED_CLUSTER_RULES
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"]) for b in by_kind(docs, "RoleBinding")}
    assert bindings == {("data", "Role", OPERATOR), ("search", "Role", OPERATOR), (NAMESPACE, "Role", f"{FULLNAME}-leader-election")}
    assert bound_subjects(docs) == {OPERATOR}
    assert one(docs, "Deployment", OPERATOR)["spec"]["replicas"] == 2
    args = container(docs, OPERATOR)["args"]
    assert args[-4:] == [f"--exclude-namespace={NAMESPACE}", "--exclude-namespace=infra", "--namespace=data", "--namespace=search"]


@pytest.mark.parametrize("which", HELMS)
@pytest.mark.parametrize("namespace", ["kube-system", NAMESPACE])
def test_operator_never_confined_to_kube_system_or_its_own_namespace(which, namespace):
    done = helm(which, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set",
                f"operator.namespaces={{data,{namespace}}}", check=False)
    assert done.returncode != 0 and f"must not list {namespace}" in done.stderr, done.stderr


@pytest.mark.parametrize("which", HELMS)
def test_operator_disabled_drops_its_deployment_and_rbac(which):
    docs = [d for d in render(which, *SCENARIOS["no-operator"]) if not is_hook(d)]
    assert not [d for d in docs if d["kind"] in RBAC_KINDS]
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == [FULLNAME]
    assert [d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")] == [FULLNAME]

    external = render(which, *SCENARIOS["no-rbac-no-sa"])
    assert [d["metadata"]["name"] for d in external if d["kind"] == "ServiceAccount" and not is_hook(d)] == [OPERATOR]
    assert one(external, "Deployment", FULLNAME)["spec"]["template"]["spec"]["serviceAccountName"] == "injector"
    assert not [d for d in external if d["kind"] in RBAC_KINDS and not is_hook(d)]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_container_args_parse_with_the_real_cli(scenario):
    """Every flag the chart passes is one `mcp-sidecar serve` / `mcp-sidecar operator` accepts, with the intended value."""
    from webhook.cli.main import _operator_options, build_parser

    docs = render("helm3", *SCENARIOS[scenario])
    args = build_parser().parse_args(container(docs)["args"])
    assert args.command == "serve" and args.port == 8443 and args.config == "/etc/mcp-sidecar/config/config.yaml"
    assert args.no_operator is True
    if scenario == "no-operator":
        assert not [d for d in docs if d["metadata"]["name"] == OPERATOR]
        return
    args = build_parser().parse_args(container(docs, OPERATOR)["args"])
    assert args.command == "operator" and args.metrics_port == 9090 and args.config == "/etc/mcp-sidecar/config/config.yaml"
    options = _operator_options(args)
    expected = {"defaults": (True, False, ()), "operator-options": (False, True, ()),
                "operator-namespaced": (True, False, ("data", "search"))}
    if scenario in expected:
        assert (options.companion_service, options.heal, options.namespaces) == expected[scenario]
    assert {"kube-system", NAMESPACE} <= set(options.excluded_namespaces)
    assert options.leader_election


# ------------------------------------------------------------------------------ sidecar configuration

def config_text(docs) -> str:
    return one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]["config.yaml"]


@pytest.mark.parametrize("which", HELMS)
def test_configmap_default_equals_the_built_in_defaults(which):
    text = config_text(render(which))
    assert parse_config(text) == default_config()
    # Not merely equal after merging: the chart spells out the whole seed defaults file.
    from importlib import resources

    seed = yaml.safe_load(resources.files("webhook.engine").joinpath("defaults.yaml").read_text())
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


def test_sidecar_config_schema_is_generated_from_the_engine_types():
    """values.schema.json's sidecarConfig is the server's own schema, so Helm refuses what the server would."""
    import json

    from webhook.engine.config import sidecar_config_schema

    committed = json.loads((CHART / "values.schema.json").read_text())["properties"]["sidecarConfig"]
    assert committed == sidecar_config_schema(), "out of date: run scripts/gen-config-schema.py"


@pytest.mark.parametrize("which", HELMS)
def test_sidecar_config_overrides_stay_partial_and_typos_are_refused_by_both(which):
    from webhook.engine.config import ConfigError

    # A new backend may leave out what the `sidecar` section gives it; the server completes it.
    valkey = {"image": "mcp/valkey:1", "backendPort": 6379, "hostEnv": "REDIS_HOST", "portEnv": "REDIS_PORT",
              "passwordEnv": "REDIS_PASSWORD", "passwordSecretKey": "password"}
    cfg = parse_config(config_text(render(which, "--set-json", f"sidecarConfig.backends.valkey={json_text(valkey)}")))
    assert cfg.backends["valkey"].port == 9000 and cfg.backends["valkey"].readiness_probe["httpGet"]["path"] == "/livez"
    # Probes nulled key by key and replaced (what bench/node/bench_pod_ready.py sets).
    probes = render(which, *[f for key in ("httpGet", "periodSeconds", "failureThreshold")
                             for f in ("--set", f"sidecarConfig.sidecar.startupProbe.{key}=null")],
                    "--set", "sidecarConfig.sidecar.readinessProbe.httpGet=null",
                    "--set-json", 'sidecarConfig.sidecar.readinessProbe={"tcpSocket":{"port":"mcp"},"periodSeconds":10}')
    cfg = parse_config(config_text(probes))
    assert cfg.backends["redis"].startup_probe is None and "tcpSocket" in cfg.backends["redis"].readiness_probe
    done = helm(which, "template", RELEASE, str(CHART), "--set", "sidecarConfig.backends.redis.imagePullPolcy=Always", check=False)
    assert done.returncode != 0 and "imagePullPolcy" in done.stderr, done.stderr
    with pytest.raises(ConfigError, match=r"backends\.redis\.imagePullPolcy is not a known key \(did you mean imagePullPolicy\?\)"):
        parse_config("backends: {redis: {imagePullPolcy: Always}}")


def json_text(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


# ------------------------------------------------------------------------------ NetworkPolicy

@pytest.mark.parametrize("which", HELMS)
def test_network_policy_guards_the_named_sidecar_port(which):
    policies = by_kind(render(which, *SCENARIOS["network-policy"]), "NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == ["data", "search"]
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": BACKEND, "operator": "Exists"}]}
    allowed, others = spec["ingress"]
    # The named port follows a mcp-sidecar.dox/port override (a number would not).
    assert allowed == {"from": [{"namespaceSelector": {"matchLabels": {"team": "ai"}}}],
                       "ports": [{"protocol": "TCP", "port": "mcp"}]}
    assert "from" not in others  # everyone, on every port outside the sidecar port range
    assert others["ports"] == [{"protocol": "TCP", "port": 1, "endPort": 8999},
                               {"protocol": "TCP", "port": 9200, "endPort": 65535},
                               {"protocol": "UDP", "port": 1, "endPort": 65535}]
    assert not by_kind(render(which), "NetworkPolicy")


def open_tcp_ports(policy) -> list[tuple[int, int]]:
    return [(p["port"], p.get("endPort", p["port"])) for rule in policy["spec"]["ingress"] if "from" not in rule
            for p in rule["ports"] if p["protocol"] == "TCP"]


@pytest.mark.parametrize("port", ["9000", "9001", "9100", "9199", "9200", "8999", "65535", "1"])
def test_no_accepted_port_override_lands_on_an_open_port(port):
    """The engine injects a sidecar only on a port the policy's open ranges exclude; any other
    override leaves the pod uninjected with a warning (it never bypasses the policy)."""
    from webhook.engine.injection import evaluate

    [policy, _] = by_kind(render("helm3", *SCENARIOS["network-policy"]), "NetworkPolicy")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "data", "labels": {BACKEND: "redis"}, "annotations": {"mcp-sidecar.dox/port": port}},
           "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}}
    result = evaluate(pod, {}, default_config(), native_supported=False)
    if not result.injected:
        assert "sidecar port range 9000-9199" in result.message and result.warnings
        assert not 9000 <= int(port) <= 9199
        return
    [mcp] = [p for p in result.rendered.container["ports"] if p["name"] == "mcp"]
    assert mcp["containerPort"] == int(port)
    assert not [r for r in open_tcp_ports(policy) if r[0] <= int(port) <= r[1]]


@pytest.mark.parametrize("which", HELMS)
def test_network_policy_refuses_a_sidecar_port_outside_the_range(which):
    done = helm(which, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *SCENARIOS["network-policy"],
                "--set", "sidecarConfig.sidecar.port=8080", check=False)
    assert done.returncode != 0 and "sidecar port range 9000-9199" in done.stderr, done.stderr
    from webhook.engine.overrides import SIDECAR_PORT_RANGE

    assert SIDECAR_PORT_RANGE == (9000, 9199)  # templates/networkpolicy.yaml repeats these numbers


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
    ("--set", "operator.namespaces={Bad_Name}"),
    ("--set", "operator.metricsPort=80"),
    ("--set", "operator.replicaCount=0"),
    ("--set", "operator.serviceAccount.typo=1"),
    ("--set", "workers=0"),
    ("--set", "autoscaling.typo=1"),
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
