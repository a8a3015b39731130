"""Ranges for config knobs, declared where the knob is: ``Annotated[int, Range(ge=1)]``.

A part's constructor (or dataclass field) annotation is the single source of truth for a knob's type
*and* range: start-time validation (``inference/validation.py``) reads both and fails with
``config error: <key>: <why>`` before anything starts, so a bad value never reaches a constructor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """Bounds for a number: ``ge``/``gt`` below, ``le``/``lt`` above (None: unbounded); ``finite``
    refuses NaN/inf."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def violation(self, value: Any) -> str | None:
        """Why ``value`` is out of range, or None. Non-numbers and None are the type check's business."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.finite and not math.isfinite(value):
            return f"{value!r} must be finite"
        for bound, ok, word in (
            (self.ge, lambda b: value >= b, ">="),
            (self.gt, lambda b: value > b, ">"),
            (self.le, lambda b: value <= b, "<="),
            (self.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                return f"{value!r} must be {word} {bound:g}"
        return None


# the shapes most knobs take
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
