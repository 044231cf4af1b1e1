"""``mcp-sidecar`` command line: ``serve``, ``inject``, ``version``."""

from __future__ import annotations

import argparse
import logging
import sys

from webhook import __version__
from webhook.config import ConfigError


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook.server import serve

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print("error: --tls-cert-file and --tls-key-file go together", file=sys.stderr)
        return 2
    if not args.tls_cert_file and not args.plain_http:
        print("error: the API server calls webhooks over TLS: give --tls-cert-file/--tls-key-file (or --plain-http for local testing)", file=sys.stderr)
        return 2
    if not args.no_operator:
        logging.getLogger("webhook").info("operator not started: this build has no operator yet (use --no-operator to silence)")
    try:
        serve(
            host=args.host,
            port=args.port,
            cert_file=args.tls_cert_file,
            key_file=args.tls_key_file,
            config_path=args.config,
            log_level=args.log_level,
            drain_seconds=args.drain_seconds,
            watch_seconds=args.watch_seconds,
        )
    except ConfigError as exc:
        print(f"error: invalid configuration {args.config}: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_inject(args: argparse.Namespace) -> int:
    from webhook.config_store import ConfigStore
    from webhook.manifests import ManifestError, dump_documents, inject_documents, load_documents

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
    sys.stdout.write(dump_documents(output.documents))
    return 0


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
    serve.set_defaults(func=_cmd_serve)

    inject = sub.add_parser("inject", help="inject sidecars into manifests offline (like istioctl kube-inject)")
    inject.add_argument("-f", "--filename", required=True, help="manifest file, or - for stdin")
    inject.add_argument("--config", help="sidecar configuration YAML; defaults built in")
    inject.set_defaults(func=_cmd_inject)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _: print(__version__) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
