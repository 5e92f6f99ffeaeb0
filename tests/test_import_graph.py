"""The import graph flows one way (issue 11): every `import` in lmforge/, including those inside
functions, goes from a module's layer to a layer the table below allows; and the config package
imports without torch, so configurations can be checked anywhere.

    ground floor   errors; config, run_lock (errors); data, run_dir (config, errors; run_dir also
                   run_lock); kernels (torch only)
    layers -> models -> interop, generation -> objectives, tasks -> training -> bench, api -> cli
    evaluation and distributed stand on the ground floor alone (distributed: and kernels).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "lmforge"

_GROUND = {"errors", "config", "data", "run_dir", "run_lock"}
_MODELS = _GROUND | {"layers", "models"}
_BELOW_TRAINING = _MODELS | {
    "kernels", "interop", "generation", "objectives", "tasks", "evaluation", "distributed",
}  # fmt: skip
_LAYERS = {*_BELOW_TRAINING, "training", "bench", "api", "cli", "__main__", "lmforge"}

ALLOWED: dict[str, set[str]] = {
    "lmforge": {"api"},  # the package's __init__: the version, the API exported lazily
    "errors": set(),
    "config": {"errors"},
    "data": {"config", "errors"},
    "run_dir": {"config", "errors", "run_lock"},
    # The run directory's lock, a plain file lock that knows nothing of runs.
    "run_lock": {"errors"},
    "kernels": {"errors"},
    "evaluation": _GROUND,
    # The device choice applies the CPU process's allocator policy (kernels/allocator.py).
    "distributed": _GROUND | {"kernels"},
    "layers": _GROUND | {"kernels"},
    "models": _MODELS | {"kernels"},
    "interop": _GROUND | {"models"},
    # The KV cache the search loops fill is a layer.
    "generation": _MODELS,
    "objectives": _MODELS | {"generation", "evaluation"},
    # Tasks reuse objectives' helpers (shift_right); objectives never import tasks.
    "tasks": _MODELS | {"kernels", "generation", "evaluation", "objectives", "distributed"},
    "training": _BELOW_TRAINING,
    "bench": _BELOW_TRAINING | {"training"},
    "api": _BELOW_TRAINING | {"training", "bench"},
    "cli": _LAYERS - {"__main__"},
    "__main__": {"cli"},
}
"""Layer (the first name under lmforge) -> the layers it may import besides its own."""

TORCH_FREE = {"config", "run_dir", "run_lock", "errors"}
"""Layers that import no torch at all, not even inside a function."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module named, module or name imported) for each import in `path`: `from a import b` gives
    (a, a.b), so `from lmforge import errors` counts as an import of lmforge.errors."""
    package = _module_name(path if path.name == "__init__.py" else path.parent)
    imports = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imports += [(alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            imports += [(base, f"{base}.{alias.name}") for alias in node.names]
    return imports


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _violations() -> list[str]:
    """`module -> imported module` for every import against ALLOWED or TORCH_FREE."""
    wrong = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _layer(module)
        for named, imported in _imports(path):
            top = named.split(".")[0]
            if top == "torch" and source in TORCH_FREE:
                wrong.add(f"{module} -> {named}")
            target = _layer(imported)
            if top == "lmforge" and target != source and target not in ALLOWED[source]:
                wrong.add(f"{module} -> {named}")
    return sorted(wrong)


def test_every_module_belongs_to_a_known_layer() -> None:
    layers = {_layer(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), f"place these in ALLOWED: {sorted(layers - set(ALLOWED))}"


def test_imports_flow_one_way() -> None:
    wrong = _violations()
    if wrong:
        pytest.fail("imports against the layer order:\n" + "\n".join(wrong), pytrace=False)


def test_config_imports_without_torch() -> None:
    modules = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if _layer(_module_name(path)) in TORCH_FREE
    )
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nassert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
