"""Structured-config schemas registered with Hydra's ConfigStore before any composition.

``register()`` is called by every path that composes the app's config (``python -m inference``,
``compose_run``), so a group option can take its defaults and types from the Python class it
configures instead of restating them in YAML.
"""

from __future__ import annotations


def register() -> None:
    """Register the schemas (idempotent)."""
