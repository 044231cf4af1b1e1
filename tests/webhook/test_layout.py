"""The package layout is a contract: one subpackage per program, and imports only point inwards.

    engine     pure (no I/O, no Kubernetes client, no web server): imports nothing else of ours
    shared     run-time helpers of more than one program: may import the engine
    admission  the admission server: engine + shared, never the operator (it holds no credentials)
    operator   the kopf operator: engine + shared, never the admission server
    cli        the `mcp-sidecar` entry point: may import everything

Checked on the source (every import statement, including those inside functions), so a lazy import
cannot slip past it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "webhook"

ALLOWED = {
    "engine": {"engine"},
    "shared": {"engine", "shared"},
    "admission": {"engine", "shared", "admission"},
    "operator": {"engine", "shared", "operator"},
    "cli": {"engine", "shared", "admission", "operator", "cli"},
}

#: Third-party or stdlib modules that do I/O or talk to a cluster: the engine must not need them.
ENGINE_FORBIDDEN = {"kubernetes", "kopf", "fastapi", "starlette", "uvicorn", "socket", "ssl", "subprocess",
                    "asyncio", "http", "urllib", "requests", "os", "pathlib", "shutil", "threading"}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "webhook":
                names += [f"webhook.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}: relative import; the layout test reads absolute ones only")
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).glob("*.py"))


def test_every_module_lives_in_a_program_package():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside the program packages: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_inwards(package):
    wrong = []
    for module in modules_of(package):
        for name in imports_of(module):
            parts = name.split(".")
            if parts[0] == "webhook" and len(parts) > 1 and parts[1] not in ALLOWED[package] | {"__version__"}:
                wrong.append(f"{module.relative_to(PACKAGE.parent)} imports {name}")
    assert wrong == [], f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_engine_does_no_io():
    wrong = [f"{module.relative_to(PACKAGE.parent)} imports {name}"
             for module in modules_of("engine") for name in imports_of(module)
             if name.split(".")[0] in ENGINE_FORBIDDEN]
    assert wrong == [], "the engine must stay pure:\n" + "\n".join(wrong)
