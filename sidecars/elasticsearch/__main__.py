"""``mcp-elasticsearch`` / ``python -m sidecars.elasticsearch``."""

from sidecars.common.app import run

from .server import build


def main() -> None:
    run(build)


if __name__ == "__main__":
    main()
