"""Finish a pip install of openpi (``pip install --no-deps <openpi>`` beside its pins): the two steps
openpi's own ``uv sync`` set-up does differently, checked and idempotent.

1. openpi's PyTorch models need its patched transformers files: copy
   ``<openpi>/src/openpi/models_pytorch/transformers_replace/*`` over the installed ``transformers``
   (openpi pins transformers==4.53.2; ``PI0Pytorch`` refuses to build without the patch).
2. openpi's import chain ``policy_config -> training.checkpoints -> training.data_loader`` imports
   ``lerobot.common.datasets.lerobot_dataset`` at import time; openpi pins lerobot to a git revision that
   no registry release provides, and inference never uses it. Where no ``lerobot`` is importable, a
   one-module placeholder is written into site-packages (namespace directories
   ``lerobot/common/datasets/`` + ``lerobot_dataset.py``); touching anything in it raises ImportError
   naming the reason, so a training data loader fails loudly instead of silently.

``python -m policies.openpi.install --openpi-src PATH`` (run with the interpreter of the env that has openpi).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import sysconfig
from pathlib import Path

TRANSFORMERS_VERSION = "4.53.2"
SHIM = '''"""Placeholder written by policies.openpi.install: openpi imports this module at import time, inference never uses it."""


def __getattr__(name):
    raise ImportError(
        f"lerobot.common.datasets.lerobot_dataset.{name}: this env has a placeholder, not lerobot (openpi pins "
        "lerobot to a git revision no registry release provides; openpi inference does not need it, training "
        "data loading does: install that lerobot revision to train)")
'''


def patch_transformers(openpi_src: Path) -> Path:
    import transformers

    if transformers.__version__ != TRANSFORMERS_VERSION:
        raise SystemExit(
            f"openpi's transformers patch is for transformers=={TRANSFORMERS_VERSION}; "
            f"this env has {transformers.__version__}"
        )
    src = openpi_src / "src" / "openpi" / "models_pytorch" / "transformers_replace"
    if not src.is_dir():
        raise SystemExit(f"{src} not found: --openpi-src must be an openpi checkout")
    dest = Path(transformers.__file__).parent
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest


def lerobot_shim() -> Path | None:
    """Write the placeholder where no lerobot is importable; None when lerobot (or the placeholder) is there."""
    try:
        if importlib.util.find_spec("lerobot.common.datasets.lerobot_dataset") is not None:
            return None
    except ModuleNotFoundError:
        pass
    if importlib.util.find_spec("lerobot") is not None:
        raise SystemExit(
            "a lerobot without lerobot.common.datasets is installed (a registry release); openpi imports "
            "that module: uninstall it, or install the lerobot revision openpi's pyproject.toml names"
        )
    module = Path(sysconfig.get_paths()["purelib"]) / "lerobot" / "common" / "datasets" / "lerobot_dataset.py"
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(SHIM)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openpi-src", type=Path, required=True, help="the openpi checkout that was pip-installed")
    args = parser.parse_args(argv)
    print(f"openpi transformers patch -> {patch_transformers(args.openpi_src)}")
    shim = lerobot_shim()
    print(f"lerobot placeholder -> {shim}" if shim else "lerobot importable: no placeholder written")
    from openpi.policies import policy_config  # noqa: F401 - the import chain that needed both

    print("openpi imports: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
