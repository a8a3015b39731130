"""The configuration groups ``python -m inference --help`` lists: the run's own, with their options.

Hydra's help (``$APP_CONFIG_GROUPS``) lists every group on the config search path, and ``conf/`` also
holds the configs of other entry points (``cluster/``, ``fleet/``, ``train/``: each has a ``--help``
of its own), while the ConfigStore holds the algorithm schemas (``schema/algorithm``, an internal
step of every ``conf/algorithm`` option). Listed beside the run's groups they read as choices of the
run. The run's groups are the ones its config composes: those its defaults list chooses (Hydra's
``hydra.runtime.choices``) and those added whole with ``+group=option`` (whose options are
``# @package _global_``, like ``experiment``). The help template in ``conf/config.yaml`` calls
:func:`format_run_groups` through the resolver registered here; options come from Hydra's own config
loader, so a ``--config-dir`` adds its options as it does to the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

RESOLVER = "inference_run_groups"


def _loader() -> Any:
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader()


def _adds_to_the_run(loader: Any, group: str) -> bool:
    """Every option of ``group`` is a ``_global_`` package: one adds it to the run's config with ``+``."""
    options = loader.get_group_options(group)
    return bool(options) and all(
        (loader.repository.load_config(f"{group}/{option}").header or {}).get("package") == "_global_"
        for option in options
    )


def run_groups(choices: Mapping[str, Any], loader: Any | None = None) -> dict[str, list[str]]:
    """``{group: sorted options}`` of the run's groups, given the composed config's choices."""
    loader = loader if loader is not None else _loader()
    chosen = {key.split("@", 1)[0] for key in choices}
    out: dict[str, list[str]] = {}
    for group in loader.list_groups(""):
        if group == "hydra" or not loader.get_group_options(group):
            continue
        if group in chosen or _adds_to_the_run(loader, group):
            out[group] = sorted(loader.get_group_options(group))
    return dict(sorted(out.items()))


def format_run_groups(*, _root_: Any) -> str:
    """``group: option, option`` lines, as Hydra writes its own list (the resolver's value)."""
    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None) or {}
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in run_groups(choices).items())


def register_resolver() -> None:
    """Make ``${inference_run_groups:}`` resolvable (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, format_run_groups, use_cache=False)
