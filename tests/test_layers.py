"""The engine's layers point one way, with no exceptions: checked on the source, as import-linter checks
a layers contract (a declared order; a module imports only its own package and the layers below it)
and an independence contract (packages side by side in one layer never import each other).

    tasks/        studies and task kits: scripted experts, IK, demos, training, evaluation (may run the app)
    inference/    the app: entry points, the run object, validation, launchers, policy server, tools
    algorithms/   the control loops and their transports
    policies/  robots/   side by side: neither imports the other
    services/     errors, knobs, clocks, shared memory, telemetry, recorders, the live view

An import is every ``import`` / ``from ... import`` anywhere in a module (inside a function, under
``TYPE_CHECKING``) and every string in the code that is a dotted path into one of this repository's
packages: what ``importlib.import_module`` / ``__import__`` / a ``_target_`` / a registry's autoload list
is given imports that module at run time. Docstrings and comments do not count. The source is read with
``ast``, so nothing is imported to check it. Config files (conf/) are no layer: they compose the app and
name classes of every layer. Tests, scripts and benchmarks drive the engine from above: no layer imports
them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom. Packages in one entry form one layer and are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tasks",),
    ("inference",),
    ("algorithms",),
    ("policies", "robots"),
    ("services",),
)
# Top-level folders with Python code that drive the engine from outside its layers.
DRIVERS = ("tests", "scripts", "benchmarks")
LAYERED = tuple(pkg for layer in LAYERS for pkg in layer)

DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
IMPORT_CALLS = {"import_module", "__import__"}  # importlib's and the builtin


def allowed_imports(package: str) -> set[str]:
    """The project packages a module of ``package`` may import: its own and those of the layers below."""
    index = next(i for i, layer in enumerate(LAYERS) if package in layer)
    return {package, *(pkg for layer in LAYERS[index + 1 :] for pkg in layer)}


def imported_names(source: str, filename: str = "<source>") -> list[tuple[int, str, bool]]:
    """``(line, dotted name, by_string)`` of everything ``source`` imports: by statement, by
    ``import_module`` / ``__import__``, or named by a dotted string elsewhere in the code (``by_string``:
    the caller counts those that name a module of the repository). Relative imports stay in their
    package and are left out."""
    tree = ast.parse(source, filename=filename)
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
    found: set[tuple[int, str, bool]] = set()
    called: set[int] = set()  # string arguments of the import calls, counted once as such
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module, False))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).split(".")[-1] in IMPORT_CALLS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add((node.lineno, node.args[0].value, False))  # a top-level name too: import_module("inference")
            called.add(id(node.args[0]))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in prose | called
            and DOTTED_PATH.fullmatch(node.value)
        ):
            found.add((node.lineno, node.value, True))
    return sorted(found)


def names_a_module(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` starts with a module or package of ``root`` (``inference.fleet.config``: yes;
    a file name such as ``inference.log``: no)."""
    package, module = dotted.split(".")[:2]
    return (root / package / f"{module}.py").is_file() or (root / package / module).is_dir()


def violations(root: Path) -> list[str]:
    """Every import in ``root``'s layered packages that points up a layer, across one, or into a driver:
    ``path:line imports name (package may import: ...)``."""
    project = set(LAYERED) | set(DRIVERS)
    out = []
    for package in LAYERED:
        allowed = allowed_imports(package)
        for path in sorted((root / package).rglob("*.py")):
            for line, name, by_string in imported_names(path.read_text(), str(path)):
                top = name.split(".")[0]
                if top in project and top not in allowed and not (by_string and not names_a_module(root, name)):
                    out.append(
                        f"{path.relative_to(root)}:{line} imports {name} "
                        f"({package} may import: {', '.join(sorted(allowed))})"
                    )
    return out


def test_the_engine_keeps_its_layers() -> None:
    assert violations(ROOT) == []


def test_every_python_folder_is_a_layer_or_a_driver() -> None:
    """A new top-level package cannot sit outside the contract unnoticed."""
    folders = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and next(p.rglob("*.py"), None) is not None
    }
    assert folders == set(LAYERED) | set(DRIVERS)


def test_the_layer_order_is_what_the_docs_draw() -> None:
    """docs/extending.md draws the layers top to bottom, a line each (packages side by side on one line);
    the drawing and this contract are one order."""
    text = (ROOT / "docs" / "extending.md").read_text()
    drawing = text[text.index("## The layers") :].split("```")[1]
    drawn = []
    for line in drawing.splitlines():
        names = []
        for token in line.split():
            if not re.fullmatch(r"\w+/", token):
                break
            names.append(token[:-1])
        if names:
            drawn.append(tuple(names))
    assert tuple(drawn) == LAYERS


# ------------------------------------------------------------------ the checker fails where it must


def plant(root: Path, files: dict[str, str]) -> Path:
    """A repository tree with every layered package and ``files`` (relative path -> source)."""
    for package in LAYERED:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(source)
    return root


@pytest.mark.parametrize(
    "rel, source, imported",
    [
        # an up-import: a loop imports the app
        ("algorithms/loopy.py", "from inference.fleet import config\n", "inference.fleet"),
        # inside a function, under TYPE_CHECKING
        ("services/sink.py", "def f():\n    import algorithms.loop\n", "algorithms.loop"),
        (
            "services/sink.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from robots.base import Observation\n",
            "robots.base",
        ),
        # by string: importlib, a _target_, an autoload list
        (
            "policies/reg.py",
            "import importlib\nimportlib.import_module('tasks.transfer_cube.expert')\n",
            "tasks.transfer_cube.expert",
        ),
        ("robots/make.py", "NODE = {'_target_': 'policies.flow.FlowPolicy'}\n", "policies.flow.FlowPolicy"),
        ("policies/reg.py", "AUTOLOAD = ('policies.hold', 'tasks.gym_control.policy')\n", "tasks.gym_control.policy"),
        ("services/x.py", "m = __import__('inference')\n", "inference"),
        # side by side in one layer: independent
        ("policies/p.py", "from robots.base import RobotSpec\n", "robots.base"),
        ("robots/r.py", "import policies.base\n", "policies.base"),
        # a driver: nothing in a layer imports it
        ("inference/app2.py", "from tests.rtc_fault_policies import FaultPolicy\n", "tests.rtc_fault_policies"),
    ],
)
def test_a_planted_bad_import_is_a_violation(tmp_path: Path, rel: str, source: str, imported: str) -> None:
    modules = [part for part in imported.split(".") if not part[0].isupper()]  # FlowPolicy: a class in policies.flow
    target = {"/".join(modules) + ".py": ""} if len(modules) > 1 else {}  # what the string names exists
    found = violations(plant(tmp_path, {rel: source, **target}))
    assert len(found) == 1 and found[0].startswith(f"{rel}:") and f" imports {imported} " in found[0], found


def test_imports_down_within_and_outside_the_project_are_no_violation(tmp_path: Path) -> None:
    tree = plant(
        tmp_path,
        {
            "tasks/study.py": "from inference.app import compose_run\nimport robots.sim, policies.base, services.errors\n",
            "inference/app.py": "import algorithms.loop\nTARGET = 'services.record.mcap.McapRecorder'\n",
            "algorithms/loop.py": "from policies.runner import PolicyRunner\nfrom robots.base import Robot\nimport numpy.linalg\n",
            "policies/base.py": '"""Uses no inference.app; named in prose only."""\nfrom services.guidance import Guidance\n'
            "from . import sibling\nfrom .flow import policy\n",
            "services/ring.py": "import json\nARGS = ['-m', 'services.ring']\n",
            # dotted strings that name no module of the tree: a file name, another distribution's module
            "services/logs.py": "NAME = 'inference.log'\nMODULE = 'tasks_kit.x'\n",
        },
    )
    assert violations(tree) == []


def test_docstrings_are_prose_and_strings_in_code_are_imports() -> None:
    source = (
        '"""Module doc naming inference.app."""\n'
        "def f():\n    'function doc naming tasks.demos'\n    return 'services.ring'\n"
        "MESSAGE = 'run python -m inference.fleet serve'\n"
    )
    assert imported_names(source) == [(4, "services.ring", True)]
