"""Import the SDK's server and uvicorn without their packages' ``__init__``: idle memory is the pod's request.

``import mcp.server`` first runs ``mcp/__init__.py``, which imports the whole client side of the SDK
(``Client``, ``ClientSession``, the stdio and session-group clients: ~70 modules, ~7 MiB of RSS) that a
server never runs. ``uvicorn/__init__.py`` imports its command line, which a server started from
Python never runs (click still comes, through sse_starlette's import of ``uvicorn.main``); ``httpx2`` (the SDK's HTTP client) only fetches URL resources and does OAuth,
neither served here; redis-py's ``__init__`` files import the sync, cluster and sentinel clients
(sidecars/redis/__init__.py). :func:`defer_package_init` registers such a package with its ``__path__`` only:
its submodules import as usual (``mcp.server``, ``uvicorn.config``), and the first access to any other
attribute of the package (``mcp.Client``, ``uvicorn.run``) runs the real ``__init__`` then, so code
that needs it still gets it, just not at start.

It changes nothing once the package is imported: call it before the first import
(sidecars/common/__init__.py does). Measured on the Redis sidecar's image payload, idle RSS after
start and 200 calls: 76.1 MiB -> 64.0 MiB with all of this module (the SDK's client 1.1, redis-py's
package inits 1.3, cryptography 8.2, httpx2 1.5; allocator settings bought nothing: bench/sidecars/results.md).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types


class _DeferredPackage(types.ModuleType):
    """A package module whose ``__init__`` has not run yet."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        submodule = f"{self.__name__}.{name}"
        if importlib.util.find_spec(submodule) is not None:  # `from mcp import types`: no need for __init__
            return importlib.import_module(submodule)
        _run_init(self)
        return getattr(self, name)


def _run_init(module: types.ModuleType) -> None:
    module.__class__ = types.ModuleType  # once: no __getattr__ from here on
    module.__spec__.loader.exec_module(module)


def defer_package_init(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` (no-op if already imported or absent)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    module = _DeferredPackage(name)
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__file__ = spec.origin
    module.__loader__ = spec.loader
    module.__package__ = name
    sys.modules[name] = module


# ------------------------------------------------------------------------------ cryptography
# mcp.server.request_state imports four names from ``cryptography`` (its Rust extension alone is
# ~6 MiB of RSS) for its built-in AES-GCM request-state codec. A tools-only sidecar never issues
# request state (no tool asks the client for input), so app.py gives the SDK a codec that refuses
# every token (NoRequestState) and the built-in codec never runs. While the SDK's server is imported,
# those four names are stand-ins that load the real ``cryptography`` the moment anything uses them:
# nothing loses a feature, it only stops loading at start.
_CRYPTOGRAPHY_NAMES = {
    "cryptography.hazmat.primitives.ciphers.aead": ("AESGCM",),
    "cryptography.hazmat.primitives.hashes": ("SHA256",),
    "cryptography.hazmat.primitives.kdf.hkdf": ("HKDF",),
}


class InvalidTag(Exception):
    """Stands for ``cryptography.exceptions.InvalidTag`` in request_state's ``except`` clause, reached
    only through the built-in codec. Were it used, a real InvalidTag would not match this class and
    the SDK's boundary would refuse the token as a codec error: still refused."""


class _Deferred:
    """A cryptography class that is imported when first called."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args, **kwargs):
        return getattr(_real(self.module), self.name)(*args, **kwargs)


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_real(self.__name__), name)  # anything else: the real module


def _real(module: str) -> types.ModuleType:
    if isinstance(sys.modules.get(module), _StandIn):
        del sys.modules[module]
    return importlib.import_module(module)


class _WithoutCryptography:
    """Loads a module with the stand-ins above in place of cryptography's modules, then removes them.
    (A loader and a finder need only their methods: importlib.abc alone costs 1.7 MiB of RSS.)"""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        stand_ins = {"cryptography.exceptions": {"InvalidTag": InvalidTag}}
        for name, attrs in _CRYPTOGRAPHY_NAMES.items():
            stand_ins[name] = {attr: _Deferred(name, attr) for attr in attrs}
        for name, attrs in stand_ins.items():
            if name not in sys.modules:
                stand_in = _StandIn(name)
                stand_in.__dict__.update(attrs)
                sys.modules[name] = stand_in
        try:
            self.loader.exec_module(module)
        finally:
            for name in stand_ins:
                if isinstance(sys.modules.get(name), _StandIn):
                    del sys.modules[name]


class _DeferCryptography:
    def __init__(self, module: str):
        self.module = module

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module or "cryptography.hazmat.bindings._rust" in sys.modules:
            return None  # already loaded: nothing to save
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutCryptography(spec.loader)
        return spec


def defer_cryptography_in(module: str) -> None:
    """When ``module`` is imported (wherever from), its cryptography names are stand-ins (see above)."""
    if module not in sys.modules and not any(isinstance(f, _DeferCryptography) for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferCryptography(module))
