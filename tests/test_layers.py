"""The layering docs/extending.md states, checked on the source: nothing below ``inference/`` imports
it, and ``policies/`` and ``robots/`` never import each other.

Every ``import`` / ``from ... import`` anywhere in a module counts (one inside a function too), read
with ``ast`` so nothing is imported to check it. A module that must break a rule goes on the
allow-list below with the reason; the list is checked too, so it cannot go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BELOW_INFERENCE = ("algorithms", "policies", "robots", "services", "tasks")

# (module path, imported top-level package) pairs allowed to break a rule, each with why.
ALLOWED = {
    # A command-line tool (`python -m tasks.transfer_cube.evaluate`, documented in docs/flow-policy.md)
    # whose default `--runner app` runs the whole app in-process, inside a function: it uses the app
    # as a user does rather than being a part of it. Moving it would rename a documented command.
    ("tasks/transfer_cube/evaluate.py", "inference"),
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages ``path`` imports (absolute imports; relative ones stay in their package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def violations(layer: str, banned: str) -> set[tuple[str, str]]:
    return {(str(p.relative_to(ROOT)), banned) for p in sorted((ROOT / layer).rglob("*.py"))
            if banned in imported_packages(p)}


@pytest.mark.parametrize("layer", BELOW_INFERENCE)
def test_nothing_below_inference_imports_it(layer: str) -> None:
    assert violations(layer, "inference") - ALLOWED == set()


@pytest.mark.parametrize("layer, other", [("policies", "robots"), ("robots", "policies")])
def test_policies_and_robots_never_import_each_other(layer: str, other: str) -> None:
    assert violations(layer, other) - ALLOWED == set()


def test_the_allow_list_names_real_exceptions() -> None:
    """An entry whose module no longer breaks the rule must leave the list."""
    for path, banned in ALLOWED:
        assert banned in imported_packages(ROOT / path), (path, banned)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from inference.app import compose_run\n    import robots.base\n"
                      "from . import sibling\n")
    assert imported_packages(module) == {"os", "inference", "robots"}
