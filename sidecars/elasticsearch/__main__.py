"""``mcp-elasticsearch`` / ``python -m sidecars.elasticsearch`` (``--print-schema``: the JSON schema of its env)."""

from .server import SIDECAR


def main() -> None:
    SIDECAR.main()


if __name__ == "__main__":
    main()
