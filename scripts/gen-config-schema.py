#!/usr/bin/env python3
"""Write the JSON schema of the sidecar configuration into the chart's values.schema.json.

The schema comes from the typed configuration (``webhook.engine.config.sidecar_config_schema``), so
`helm install` refuses the same keys and types as the server. Only ``properties.sidecarConfig``
is replaced; the rest of the file is kept as it is.

    .venv/bin/python scripts/gen-config-schema.py           # rewrite values.schema.json
    .venv/bin/python scripts/gen-config-schema.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from webhook.engine.config import sidecar_config_schema  # noqa: E402

SCHEMA = ROOT / "deploy" / "helm" / "mcp-sidecar-injector" / "values.schema.json"


def render(current: str) -> str:
    """``current`` (the file's text) with the generated sidecarConfig schema, formatted as the file is."""
    document = json.loads(current)
    document["properties"]["sidecarConfig"] = sidecar_config_schema()
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the file is up to date")
    args = parser.parse_args(argv)
    current = SCHEMA.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{SCHEMA.relative_to(ROOT)}: sidecarConfig is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        SCHEMA.write_text(wanted, encoding="utf-8")
        print(f"updated {SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
