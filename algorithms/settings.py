"""Knob groups: each declared once, as a dataclass next to the class it configures; an algorithm is
built from several groups that are members of it, not base classes.

A group's field annotation (``services.knobs`` ``Annotated`` ranges) is the knob's one declaration of
type, range and default. ``check_ranges`` applies those ranges when a group is built from Python (the
start-time validation applies the same annotations to the YAML before that). An algorithm lists its
groups (``knob_groups``); ``algorithm_signature`` gives it a flat keyword signature made of the groups'
fields, so users keep writing ``algorithm.execute_horizon=10``, validation checks each key against it,
and ``inference/schemas.py`` registers the same fields, with their defaults, as the algorithm's
structured-config schema (what ``--cfg job`` shows).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Mapping
from typing import Any

from services.knobs import Range


def _ranges(annotation: Any) -> list[Range]:
    out: list[Range] = []
    if typing.get_origin(annotation) is typing.Annotated:
        out += [m for m in annotation.__metadata__ if isinstance(m, Range)]
        annotation = typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):  # X | None
        out += _ranges(arg)
    return out


def check_ranges(obj: Any, prefix: str = "algorithm") -> None:
    """``ValueError("<prefix>.<key>=<value> ...")`` for the first field of dataclass ``obj`` whose value
    is outside its annotated range, or not one of its enum's names (an enum field is converted)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        base = hints[f.name]
        if typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        if isinstance(base, type) and issubclass(base, enum.Enum) and value is not None:
            try:
                setattr(obj, f.name, base(value))
            except ValueError:
                raise ValueError(f"{prefix}.{f.name}={value!r}; expected one of {[m.value for m in base]}") from None
            continue
        for r in _ranges(hints[f.name]):
            why = r.violation(value)
            if why is not None:
                raise ValueError(f"{prefix}.{f.name}={why}")


def group_fields(groups: Mapping[str, type]) -> dict[str, tuple[str, dataclasses.Field]]:
    """Every knob of ``groups`` (name -> (group, field)); a knob in two groups is a programming error."""
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for group, cls in groups.items():
        for f in dataclasses.fields(cls):
            if f.name in out:
                raise TypeError(f"knob {f.name} declared by both {out[f.name][0]} and {group}")
            out[f.name] = (group, f)
    return out


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def build_groups(groups: Mapping[str, type], knobs: Mapping[str, Any]) -> dict[str, Any]:
    """One instance per group from flat ``knobs``; an unknown key is a ``TypeError`` naming it."""
    known = group_fields(groups)
    unknown = [k for k in knobs if k not in known]
    if unknown:
        raise TypeError(f"algorithm.{unknown[0]}: unknown key (accepted: {', '.join(known)})")
    split: dict[str, dict[str, Any]] = {g: {} for g in groups}
    for key, value in knobs.items():
        split[known[key][0]][key] = value
    return {g: cls(**split[g]) for g, cls in groups.items()}


def algorithm_signature(groups: Mapping[str, type]) -> inspect.Signature:
    """``(run, *, <every group's knobs>)`` with the groups' annotations and defaults."""
    params = [inspect.Parameter("run", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for group, cls in groups.items():
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            default = default_of(f)
            params.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=hints[f.name],
                    default=inspect.Parameter.empty if default is dataclasses.MISSING else default,
                )
            )
    return inspect.Signature(params)


def knob_groups(**groups: type) -> Any:
    """Class decorator: the algorithm is built from these groups (``cls.knob_groups``) and its
    signature is theirs (``algorithm_signature``), for validation and the config schema."""

    def wrap(cls: type) -> type:
        cls.knob_groups = dict(groups)
        cls.__signature__ = algorithm_signature(groups)
        return cls

    return wrap
