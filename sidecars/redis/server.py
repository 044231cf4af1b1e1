"""Assembles the Redis sidecar from env."""

from sidecars.common.app import Sidecar
from sidecars.common.config import Env, ServerSettings

from .backend import RedisBackend
from .config import RedisSettings
from .tools import register

INSTRUCTIONS = (
    "Tools for the Redis running next to this server. Reads are bounded: results marked "
    "truncated=true were cut; continue with next_start, cursor or next_start_id when given, or narrow "
    "the pattern, range or count. Keys and values that are not UTF-8 text appear as "
    "{\"base64\": \"...\"}; pass that object back as a key or value to name the same bytes. Write tools "
    "exist only when the operator disabled read-only mode."
)


def build(environ=None) -> Sidecar:
    env = Env(environ)
    settings = ServerSettings.from_env(env)
    backend = RedisBackend(RedisSettings.from_env(env), timeout=settings.backend_timeout, limits=settings.limits)
    sidecar = Sidecar("mcp-redis", settings, backend, INSTRUCTIONS)
    register(sidecar)
    return sidecar
