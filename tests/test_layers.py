"""Layers only point down: stages never import the shells, and earlier stages never later ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mlprod"
# What each part of the package may import from mlprod (besides itself).
ALLOWED = {
    "errors": set(),
    "formatting": set(),
    "sqlparts": set(),
    "progress": set(),
    "interrupts": set(),
    "project": {"errors"},
    "data": {"errors", "sqlparts", "project"},
    "features": {"errors", "sqlparts", "project", "data", "progress"},
    "evaluate": {"errors", "formatting", "project"},
    "artefact": {"errors", "project"},
    "train": {
        "errors",
        "sqlparts",
        "progress",
        "project",
        "data",
        "features",
        "evaluate",
        "artefact",
    },
    "registry": {"errors", "artefact"},
    "serve": {
        "errors",
        "sqlparts",
        "progress",
        "project",
        "data",
        "features",
        "artefact",
        "registry",
    },
    "api": {
        "errors",
        "sqlparts",
        "progress",
        "project",
        "data",
        "features",
        "train",
        "evaluate",
        "artefact",
        "registry",
        "serve",
    },
    "cli": {
        "errors",
        "formatting",
        "interrupts",
        "progress",
        "project",
        "api",
        "artefact",
        "registry",
        "serve",
        "cli_deploy",
        "cli_init",
        "cli_experiment",
        "cli_export",
        "cli_loop",
        "cli_monitor",
        "cli_rollout",
        "cli_simulate",
    },
    "scaffold": {"errors", "sqlparts", "project", "data", "features", "api"},
    "cli_init": {"cli", "scaffold"},
    "cli_deploy": {
        "errors",
        "formatting",
        "progress",
        "project",
        "api",
        "serve",
        "monitor",
        "cli",
    },
    "cli_experiment": {"errors", "project", "api", "evaluate", "serve", "cli"},
    "cli_rollout": {"errors", "api", "serve", "cli"},
    # Monitoring reads the prediction log (serve) and the registered versions (api).
    "monitor": {
        "errors",
        "data",
        "formatting",
        "progress",
        "project",
        "artefact",
        "registry",
        "evaluate",
        "serve",
        "api",
    },
    # The loop: retraining, watching and simulating use everything below.
    "loop": {
        "errors",
        "sqlparts",
        "formatting",
        "progress",
        "project",
        "data",
        "features",
        "train",
        "evaluate",
        "artefact",
        "registry",
        "serve",
        "api",
        "monitor",
    },
    "cli_monitor": {"errors", "api", "monitor", "cli"},
    "cli_export": {"errors", "project", "api", "monitor", "cli"},
    "cli_loop": {"errors", "progress", "project", "api", "monitor", "loop", "cli"},
    "cli_simulate": {"errors", "progress", "project", "api", "loop", "cli"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlprod"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mlprod."))
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE),
)
def test_module_imports_only_lower_layers(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    layer = relative.parts[0].removesuffix(".py")
    assert layer in ALLOWED, f"{relative}: new top-level part '{layer}' needs a place in ALLOWED"
    illegal = _imports(path) - ALLOWED[layer] - {layer}
    assert not illegal, f"{relative} imports {sorted(illegal)}, which sit above '{layer}'"
