"""The Redis sidecar: its settings, client and tools (see sidecars/common/spec.py for the pattern)."""

from sidecars.common.spec import SidecarSpec

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

SIDECAR = SidecarSpec(
    name="redis",
    settings=RedisSettings,
    connect=lambda redis, server: RedisBackend(redis, timeout=server.backend_timeout, limits=server.limits),
    tools=register,
    instructions=INSTRUCTIONS,
)
build = SIDECAR.build
