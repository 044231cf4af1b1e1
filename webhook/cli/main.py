"""``mcp-sidecar`` command line: ``serve``, ``operator``, ``inject``, ``audit``, ``check-inject``, ``ls``,
``connect``, ``rotate-token``, ``version``."""

from __future__ import annotations

import argparse
import logging
import sys

from webhook import __version__
from webhook.engine.config import ConfigError


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook.admission.server import serve

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print("error: --tls-cert-file and --tls-key-file go together", file=sys.stderr)
        return 2
    if not args.tls_cert_file and not args.plain_http:
        print("error: the API server calls webhooks over TLS: give --tls-cert-file/--tls-key-file (or --plain-http for local testing)", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.no_operator:
        print("error: --workers above 1 serves admission only: add --no-operator and run `mcp-sidecar operator` on its own (as the chart does)", file=sys.stderr)
        return 2
    try:
        return serve(
            host=args.host,
            port=args.port,
            cert_file=args.tls_cert_file,
            key_file=args.tls_key_file,
            config_path=args.config,
            log_level=args.log_level,
            drain_seconds=args.drain_seconds,
            watch_seconds=args.watch_seconds,
            workers=args.workers,
            beside=None if args.no_operator else _operator_beside(_operator_options(args), args.kubeconfig),
        )
    except ConfigError as exc:
        print(f"error: invalid configuration {args.config}: {exc}", file=sys.stderr)
        return 2


def _operator_beside(options, kubeconfig: str | None):
    """`serve` with the operator in the same process (threads sharing the config and the metrics).

    An operator that cannot reach the cluster is logged, never fatal: admission keeps working.
    """

    def start(store, metrics):
        from webhook.operator.controller import Operator, OperatorRunner
        from webhook.shared.kube import KubeAccessError, api_client

        try:
            api = api_client(kubeconfig)
        except KubeAccessError as exc:
            logging.getLogger("webhook.server").error("operator not started: %s", exc)
            return None
        runner = OperatorRunner(Operator(api, lambda: store.current, metrics, options))
        runner.start()
        return runner.stop

    return start


def _operator_options(args: argparse.Namespace):
    from webhook.operator.controller import OperatorOptions, default_lease_namespace

    return OperatorOptions(
        companion_service=args.companion_service,
        heal=args.heal,
        heal_stale=args.heal_stale,
        heal_interval=args.heal_interval,
        heal_grace=args.heal_grace,
        resync_seconds=args.resync_seconds,
        leader_election=args.leader_election,
        lease_namespace=args.leader_election_namespace or default_lease_namespace(),
        namespaces=tuple(dict.fromkeys(args.watch_namespaces or ())),
        excluded_namespaces=excluded_namespaces(args.exclude_namespaces),
    )


def excluded_namespaces(extra: list[str] | None) -> tuple[str, ...]:
    """kube-system and the operator's own namespace ($POD_NAMESPACE) always, plus ``extra``."""
    import os

    names = ["kube-system", os.environ.get("POD_NAMESPACE", ""), *(extra or ())]
    return tuple(dict.fromkeys(n for n in names if n))


def _cmd_operator(args: argparse.Namespace) -> int:
    """The operator alone (no admission server), with its metrics on --metrics-port."""
    import signal
    import threading

    from prometheus_client import start_http_server

    from webhook.operator.controller import Operator, OperatorRunner
    from webhook.shared.config_store import ConfigStore
    from webhook.shared.kube import KubeAccessError, api_client
    from webhook.shared.metrics import Metrics

    metrics = Metrics()
    try:
        store = ConfigStore(args.config, on_reload=lambda result, cfg: metrics.config_reloads.labels(result=result).inc())
        api = api_client(args.kubeconfig)
    except (ConfigError, KubeAccessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="0.0.0.0", registry=metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner = OperatorRunner(Operator(api, lambda: store.current, metrics, _operator_options(args)))
    runner.start()
    while not stop.wait(args.watch_seconds):
        store.reload_if_changed()
    runner.stop()
    return 0


def _load_config_or_cluster(args: argparse.Namespace, api):
    from webhook.cli.audit import cluster_config
    from webhook.shared.config_store import ConfigStore

    return ConfigStore(args.config).current if args.config else cluster_config(api)


def _cmd_audit(args: argparse.Namespace) -> int:
    from webhook.cli.audit import parse_fail_on, run_audit
    from webhook.shared.kube import KubeAccessError, api_client

    try:
        fail_on = parse_fail_on(args.fail_on)
        api = api_client(args.kubeconfig, args.context)
        config = _load_config_or_cluster(args, api)
    except (ValueError, KubeAccessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    namespace = None if args.all_namespaces else (args.namespace or _current_namespace(args))
    return run_audit(api, namespace=namespace, output=args.output, fail_on=fail_on, config=config)


def _cmd_check_inject(args: argparse.Namespace) -> int:
    from webhook.cli.check_inject import run_check
    from webhook.shared.kube import KubeAccessError, api_client

    if bool(args.pod) == bool(args.filename):
        print("error: give a POD name or -f MANIFEST (one of them)", file=sys.stderr)
        return 2
    try:
        api = api_client(args.kubeconfig, args.context)
        config = _load_config_or_cluster(args, api)
        manifest = None
        if args.filename:
            manifest = sys.stdin.read() if args.filename == "-" else open(args.filename, encoding="utf-8").read()
    except (ConfigError, KubeAccessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_check(api, config, pod_name=args.pod, manifest=manifest, namespace=args.namespace or _current_namespace(args), output=args.output)


def _user_api(args: argparse.Namespace):
    """The API client of the user's kubeconfig/context, or None after saying why on stderr (exit 2)."""
    from webhook.shared.kube import KubeAccessError, api_client

    try:
        return api_client(args.kubeconfig, args.context)
    except KubeAccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _current_namespace(args: argparse.Namespace) -> str:
    from kubernetes import config as kube_config

    try:
        _, active = kube_config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = kube_config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next((c for c in contexts if c["name"] == args.context), active)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:
        return "default"


def _cmd_inject(args: argparse.Namespace) -> int:
    from webhook.cli.manifests import ManifestError, dump_documents, inject_documents, load_documents
    from webhook.shared.config_store import ConfigStore

    try:
        config = ConfigStore(args.config).current
    except ConfigError as exc:
        print(f"error: invalid configuration {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.filename == "-" else open(args.filename, encoding="utf-8").read()
    except OSError as exc:
        print(f"error: cannot read {args.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        output = inject_documents(load_documents(text), config)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for report in output.reports:
        result = report.result
        if result is None:
            continue
        where = f"document {report.index} ({report.kind}/{report.name})"
        for warning in result.warnings:
            print(f"warning: {where}: {warning}", file=sys.stderr)
    _token_note(output)
    sys.stdout.write(dump_documents(output.documents))
    return 0


def _token_note(output) -> None:
    """Without the operator nothing creates the token Secret: say how, once, on stderr."""
    from webhook.engine.constants import AUTH_VOLUME_NAME
    from webhook.operator.token_secret import create_command

    needed = set()
    for report in output.reports:
        rendered = report.result.rendered if report.result is not None else None
        for volume in (rendered.volumes if rendered is not None else []):
            if volume["name"] == AUTH_VOLUME_NAME:
                needed.add((volume["secret"]["secretName"], volume["secret"]["items"][0]["key"]))
    for name, key in sorted(needed):
        print(f"note: the injected sidecars read their bearer token from Secret {name} (key {key}) in their namespace "
              f"and refuse MCP calls until it exists. The operator creates it; without the operator, create it once "
              f"per namespace:\n  {create_command('NAMESPACE', name, key)}", file=sys.stderr)


def _cmd_rotate_token(args: argparse.Namespace) -> int:
    """Replace the sidecars' bearer token, with the user's own credentials (the operator never does)."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.rest import ApiException

    from webhook.operator.token_secret import KUBELET_SYNC_HINT, rotate

    api = _user_api(args)
    if api is None:
        return 2
    namespace = args.namespace or _current_namespace(args)
    try:
        action, token = rotate(CoreV1Api(api), namespace, name=args.secret, key=args.key)
    except ApiException as exc:
        print(f"error: cannot rotate Secret {namespace}/{args.secret}: {exc.status} {str(exc.reason)[:200]}", file=sys.stderr)
        return 1
    print(f"{action} Secret {namespace}/{args.secret} (key {args.key}) with a new random token.")
    print(f"Running sidecars read it from their mounted Secret within {KUBELET_SYNC_HINT}, without a restart; "
          "from then on clients need the new token (the old one gets 401).")
    if args.show:
        print(f"token: {token}")
    else:
        print(f"Read it with: kubectl get secret {args.secret} -n {namespace} -o jsonpath='{{.data.{args.key}}}' | base64 -d")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from webhook.cli.endpoints import run_ls

    api = _user_api(args)
    if api is None:
        return 2
    namespace = None if args.all_namespaces else (args.namespace or _current_namespace(args))
    return run_ls(api, namespace=namespace, output=args.output)


def _cmd_connect(args: argparse.Namespace) -> int:
    """Port-forward and print client setup; SIGTERM ends it like Ctrl-C (kubectl is stopped, exit 0)."""
    import signal

    from webhook.cli.connect import ConnectOptions, run_connect

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    api = _user_api(args)
    if api is None:
        return 2
    return run_connect(api, ConnectOptions(
        ref=args.target, namespace=args.namespace or _current_namespace(args), port=args.port,
        write_mcp_json=args.write_mcp_json, name=args.name, no_token=args.no_token, kubeconfig=args.kubeconfig,
        context=args.context, kubectl=args.kubectl))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-sidecar", description="MCP sidecar injector for Kubernetes")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTPS admission webhook")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--tls-cert-file")
    serve.add_argument("--tls-key-file")
    serve.add_argument("--config", help="sidecar configuration YAML (reloaded on change); defaults built in")
    serve.add_argument("--no-operator", action="store_true", help="serve admission only, without the operator")
    serve.add_argument("--plain-http", action="store_true", help="serve without TLS (local testing only)")
    serve.add_argument("--drain-seconds", type=int, default=20, help="grace period for in-flight reviews on SIGTERM")
    serve.add_argument("--watch-seconds", type=float, default=2.0, help="how often config and certificate files are checked")
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (one core each at most; needs --no-operator above 1)")
    serve.add_argument("--kubeconfig", help="for the operator; default: in-cluster, then $KUBECONFIG")
    _operator_flags(serve)
    serve.set_defaults(func=_cmd_serve)

    operator = sub.add_parser("operator", help="run only the operator (label propagation, companion Services, missed/stale detection)")
    operator.add_argument("--config", help="sidecar configuration YAML (to judge staleness); defaults built in")
    operator.add_argument("--kubeconfig")
    operator.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0: off)")
    operator.add_argument("--watch-seconds", type=float, default=2.0)
    _operator_flags(operator)
    operator.set_defaults(func=_cmd_operator)

    audit = sub.add_parser("audit", help="list labelled pods and their injection state")
    _cluster_flags(audit)
    audit.add_argument("-A", "--all-namespaces", action="store_true")
    audit.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    audit.add_argument("--fail-on", default="", help="comma list of missed,stale,unready,skipped: exit 1 if any pod is so")
    audit.set_defaults(func=_cmd_audit)

    check = sub.add_parser("check-inject", help="would this pod be injected, and if not, why")
    _cluster_flags(check)
    check.add_argument("pod", nargs="?", help="a live pod's name")
    check.add_argument("-f", "--filename", help="a manifest (Pod or workload), or - for stdin")
    check.add_argument("-o", "--output", choices=["text", "json"], default="text")
    check.set_defaults(func=_cmd_check_inject)

    ls = sub.add_parser("ls", help="list MCP endpoints: companion Services and injected pods, backend, ready, auth")
    ls.add_argument("--kubeconfig")
    ls.add_argument("--context")
    ls.add_argument("-n", "--namespace")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(func=_cmd_ls)

    connect = sub.add_parser(
        "connect", help="port-forward to a workload's MCP Service and print ready-to-paste client setup",
        epilog="exit codes: 0 stopped with Ctrl-C; 2 usage/kubeconfig/unmergeable .mcp.json; 3 no companion Service; "
               "4 no ready endpoint; 5 forbidden (RBAC); 6 token Secret missing; 7 port-forward failed")
    connect.add_argument("target", help="WORKLOAD, SERVICE, or statefulset/NAME, deployment/NAME, daemonset/NAME, svc/NAME, pod/NAME")
    connect.add_argument("--kubeconfig")
    connect.add_argument("--context")
    connect.add_argument("-n", "--namespace")
    connect.add_argument("--port", type=int, help="local port (default: 9000 when free, else any free port; 0: any)")
    connect.add_argument("--write-mcp-json", nargs="?", const=".mcp.json", metavar="FILE",
                         help="add the server to FILE (default .mcp.json), keeping its other servers; mode 0600")
    connect.add_argument("--name", help="the MCP server's name in the client (default: the workload's name)")
    connect.add_argument("--no-token", action="store_true", help="print $MCP_TOKEN placeholders instead of reading the token")
    connect.add_argument("--kubectl", help="the kubectl binary (default: kubectl on PATH)")
    connect.set_defaults(func=_cmd_connect)

    inject = sub.add_parser("inject", help="inject sidecars into manifests offline (like istioctl kube-inject)")
    inject.add_argument("-f", "--filename", required=True, help="manifest file, or - for stdin")
    inject.add_argument("--config", help="sidecar configuration YAML; defaults built in")
    inject.set_defaults(func=_cmd_inject)

    rotate = sub.add_parser("rotate-token", help="replace the MCP sidecars' bearer token in a namespace (creates the Secret if missing)")
    rotate.add_argument("--kubeconfig")
    rotate.add_argument("--context")
    rotate.add_argument("-n", "--namespace")
    rotate.add_argument("--secret", default="mcp-sidecar-token", help="the Secret (default: mcp-sidecar-token)")
    rotate.add_argument("--key", default="token", help="its key (default: token)")
    rotate.add_argument("--show", action="store_true", help="print the new token (it is never printed otherwise)")
    rotate.set_defaults(func=_cmd_rotate_token)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _: print(__version__) or 0)
    return parser


def _operator_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator")
    group.add_argument("--companion-service", action=argparse.BooleanOptionalAction, default=True, help="create <workload>-mcp Services on port 9000")
    group.add_argument("--heal", action=argparse.BooleanOptionalAction, default=False, help="evict missed pods (rate-limited, PDB-aware) so they come back injected")
    group.add_argument("--heal-stale", action=argparse.BooleanOptionalAction, default=False, help="with --heal, also evict pods whose sidecar is stale")
    group.add_argument("--heal-interval", type=float, default=10.0, help="minimum seconds between two evictions")
    group.add_argument("--heal-grace", type=float, default=10.0, help="leave pods younger than this alone")
    group.add_argument("--resync-seconds", type=float, default=60.0, help="period of the full re-check of labelled pods")
    group.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True, help="one active operator among replicas (Lease)")
    group.add_argument("--leader-election-namespace", help="namespace of the Lease (default: $POD_NAMESPACE or default)")
    group.add_argument("--namespace", dest="watch_namespaces", action="append", metavar="NS",
                       help="watch and act only in this namespace (repeatable; default: cluster-wide)")
    group.add_argument("--exclude-namespace", dest="exclude_namespaces", action="append", metavar="NS",
                       help="never act in this namespace (repeatable; kube-system and $POD_NAMESPACE always)")


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--config", help="judge against this sidecar configuration file instead of the cluster's ConfigMap")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
