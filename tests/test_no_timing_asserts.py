"""docs/testing.md promises that no test passes or fails on how fast the machine is. This keeps the
common ways of breaking that promise out of the suite, read from the test sources with ``ast``:

* an ``assert`` comparing a duration measured in the assert itself (``time.monotonic() - t0 < 2``;
  the same with ``perf_counter``, ``time.time``, ``thread_time``, ``process_time``);
* an ``assert`` comparing something named like a measured duration or share: ``elapsed``,
  ``cpu_share``, ``took``, ``wall``, ``duration`` (a variable, attribute or ``["key"]``).

Waiting for a condition until a generous deadline (``assert time.monotonic() < deadline``) is fine
and not caught. Tests that own their clock (a fake ``time``, the lockstep sim) have no need to
match these patterns. It is a guard for the usual shapes, not a proof: review still matters.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOCKS = {"monotonic", "perf_counter", "time", "thread_time", "process_time", "monotonic_ns", "perf_counter_ns"}
DURATION_NAME = re.compile(r"elapsed|cpu_share|took|wall|duration", re.IGNORECASE)

# (test file, line's source text stripped) allowed to match, each with why.
ALLOWED = {
    # A lower bound: homing is slew-limited, so it takes at least this many 20 Hz ticks. A slow or
    # loaded machine only makes it take longer; it cannot fail this.
    (
        "tests/robots/test_ros2_robot.py",
        "assert time.monotonic() - t0 >= (ramp_ticks - 2) / 20  # slew-limited, not a jump",
    )
}


def _is_clock_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in CLOCKS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "time"
    )


def _measures_a_duration(side: ast.AST) -> bool:
    for node in ast.walk(side):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Sub)
            and (_is_clock_call(node.left) or _is_clock_call(node.right))
        ):
            return True
        if isinstance(node, ast.Name) and DURATION_NAME.search(node.id):
            return True
        if isinstance(node, ast.Attribute) and DURATION_NAME.search(node.attr):
            return True
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
            and DURATION_NAME.search(node.slice.value)
        ):
            return True
    return False


def timing_asserts(source: str) -> list[tuple[int, str]]:
    """(line, source) of each ``assert`` that orders a measured duration (``<``, ``<=``, ``>``, ``>=``)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assert):
            continue
        for cmp in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
            if not any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in cmp.ops):
                continue
            if any(_measures_a_duration(side) for side in (cmp.left, *cmp.comparators)):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
                break
    return found


def test_no_test_asserts_a_timing() -> None:
    found = set()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        found |= {(rel, text) for _line, text in timing_asserts(path.read_text())}
    assert found - ALLOWED == set(), "timing asserts (docs/testing.md, 'No test asserts a timing')"
    assert ALLOWED <= found, f"stale allow-list entries: {ALLOWED - found}"


def test_the_checker_catches_the_usual_shapes_and_lets_deadlines_be() -> None:
    caught = timing_asserts(
        "assert time.monotonic() - t0 < 6\n"
        "assert elapsed < 2.0, elapsed\n"
        "assert out['cpu_share'] > 0.1\n"
        "assert 0.3 * wall / period < ticks\n"
        "assert res.duration_s <= 5\n"
        "assert time.perf_counter() - start < 1.0\n"
    )
    assert [line for line, _ in caught] == [1, 2, 3, 4, 5, 6]
    assert (
        timing_asserts(
            "assert time.monotonic() < deadline, 'no frame'\n"
            "assert summary['ticks'] >= 20\n"
            "assert elapsed_ticks == 3\n"  # equality: not an ordering of a duration
            "x = time.monotonic() - t0\n"
        )
        == []
    )


def test_property_tests_have_no_wall_clock_deadline() -> None:
    """Hypothesis's per-example deadline (200 ms by default) is a timing assertion in every @given
    test; tests/conftest.py turns it off for the whole suite, and no test's own @settings may set
    one again."""
    from hypothesis import HealthCheck, settings

    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check
    decorator = re.compile(r"@(?:hypothesis\.)?settings\([^)]*deadline\s*=\s*(?!None\b)")
    offenders = [
        str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("*.py")) if decorator.search(p.read_text())
    ]
    assert not offenders, f"a test sets a hypothesis deadline: {offenders}"
