"""``mcp-redis`` / ``python -m sidecars.redis``."""

from sidecars.common.app import run

from .server import build


def main() -> None:
    run(build)


if __name__ == "__main__":
    main()
