"""Errors shared across layers, so that no lower layer needs to import the application for them."""

from __future__ import annotations


class ConfigError(ValueError):
    """The composed config cannot run; the message names the offending key (``<key>: <why>``).

    Raised before anything starts (validation, start-time checks of files and promises); the app prints
    it as one line ``config error: <message>`` and exits 2.
    """
