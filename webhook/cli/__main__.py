"""`python -m webhook.cli`: the same as the `mcp-sidecar` command."""

from webhook.cli.main import main

raise SystemExit(main())
