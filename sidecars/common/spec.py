"""What a backend declares to become a sidecar, and the one builder every sidecar goes through.

A backend package is four files, each with one concern (sidecars/redis is the model to copy):

- ``config.py``: an :class:`~.config.EnvSettings` model of its env variables (types, bounds, defaults,
  the messages of cross-checks);
- ``backend.py``: the client, built without I/O from those settings: ``name``, ``ping()``,
  ``describe_error(exc)``, ``close()``, and optionally ``bounded(fn, write=...)``, a per-call policy
  (deadline, retry) wrapped around every tool (see tools.ToolRegistry);
- ``tools.py``: ``register(sidecar)``, its tool table, declared with ``read``/``write`` of
  ``sidecar.registry``;
- ``server.py``: the :class:`SidecarSpec` tying them together, which ``__main__`` runs.

Everything else (the MCP server, HTTP front, auth, metrics, audit, limits, MCP_* settings) is shared.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from .config import Env, EnvSettings, ServerSettings


@dataclass(frozen=True)
class SidecarSpec:
    #: The backend kind (``redis``): the schema's title. The MCP server is named after ``Backend.name``.
    name: str
    #: The backend's env settings.
    settings: type[EnvSettings]
    #: (backend settings, server settings) -> the backend client; builds, never connects.
    connect: Callable[[Any, ServerSettings], Any]
    #: Registers the tools on ``sidecar.registry``.
    tools: Callable[[Any], None]
    #: Told to the AI client at initialize; a function of the backend when it names the engine.
    instructions: str | Callable[[Any], str]
    #: Values used when the env does not set a variable (e.g. the opensearch entry's ES_ENGINE).
    env_defaults: Mapping[str, str] = field(default_factory=dict)

    def with_defaults(self, **env_defaults: str) -> "SidecarSpec":
        return replace(self, env_defaults={**self.env_defaults, **env_defaults})

    def build(self, environ: Mapping[str, str] | None = None):
        """The sidecar from env; ConfigError (one line naming the variable) on a bad setting."""
        from .app import Sidecar  # the MCP SDK: only once a sidecar is built (--print-schema does without)

        env = Env(_Layered(os.environ if environ is None else environ, self.env_defaults))
        server_settings = ServerSettings.from_env(env)
        settings = self.settings.from_env(env)
        backend = self.connect(settings, server_settings)
        instructions = self.instructions if isinstance(self.instructions, str) else self.instructions(backend)
        sidecar = Sidecar(f"mcp-{backend.name}", server_settings, backend, instructions)
        self.tools(sidecar)
        for setting, why in settings.warnings():
            # Printed before the audit log is configured, and whatever MCP_LOG_LEVEL says: a loosened
            # default must show in `kubectl logs`.
            print(json.dumps({"ts": round(time.time(), 3), "event": "config_warning", "setting": setting,
                              "message": why}, separators=(",", ":")), flush=True)
        return sidecar

    def schema(self) -> dict:
        """The JSON schema of every env variable this sidecar reads."""
        properties: dict = {}
        required: list = []
        for model in (ServerSettings, self.settings):
            part = model.model_json_schema(by_alias=True)
            properties.update(part["properties"])
            required += part.get("required", [])
        for name, value in self.env_defaults.items():
            if name in properties:
                properties[name]["default"] = value
        return {"title": f"mcp-{self.name} environment", "type": "object", "properties": properties,
                "required": required}

    def main(self, argv: list[str] | None = None) -> None:
        """The entry point: ``--print-schema`` prints the settings' JSON schema; else serve until SIGTERM."""
        args = sys.argv[1:] if argv is None else argv
        if args == ["--print-schema"]:
            print(json.dumps(self.schema(), indent=2))
            return
        from .app import run

        run(self.build)


class _Layered(Mapping[str, str]):
    """The env over defaults: a variable set to a blank value still reads as unset, so the default applies."""

    def __init__(self, env: Mapping[str, str], defaults: Mapping[str, str]):
        self.env, self.defaults = env, defaults

    def __getitem__(self, name: str) -> str:
        value = self.env.get(name)
        if (value is None or not value.strip()) and name in self.defaults:
            return self.defaults[name]
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self):
        return iter({*self.env, *self.defaults})

    def __len__(self) -> int:
        return len({*self.env, *self.defaults})
