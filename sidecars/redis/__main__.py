"""``mcp-redis`` / ``python -m sidecars.redis`` (``--print-schema``: the JSON schema of its env)."""

from .server import SIDECAR


def main() -> None:
    SIDECAR.main()


if __name__ == "__main__":
    main()
