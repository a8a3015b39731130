"""Train a state-only flow policy on a gym control task: ``python -m tasks.gym_control.train
[--config-name gym_cartpole_swingup] [key=value ...]`` (extras ``train`` and ``gym``).

Records (or reloads) the expert's demonstrations (``tasks.gym_control.demos``) and hands them to the
bundled flow recipe (``tasks.transfer_cube.train.train``): same model, loss, EMA and checkpoint
layout, with the state/action sizes of the task and no cameras. Configs: ``conf/train/gym_*.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tasks.gym_control.continuations import continuation_labels
from tasks.gym_control.demos import record_demos
from tasks.transfer_cube.demos import Demos
from tasks.transfer_cube.train import CONF_DIR, cached_or_recorded, train


def load_or_record(data: DictConfig, chunk_size: int) -> Demos:
    """The cached demonstrations when their chunk size matches, else freshly recorded (and cached)."""
    noise = data.get("action_noise_std")
    return cached_or_recorded(
        data,
        chunk_size,
        lambda: record_demos(
            str(data.task),
            int(data.episodes),
            int(data.seed_offset),
            chunk_size,
            None if noise is None else float(noise),
        ),
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="gym_pendulum")
def main(cfg: DictConfig) -> Path:
    demos = load_or_record(cfg.data, int(cfg.model.chunk_size))
    continuations = None
    if cfg.model.get("continuation_labels", False):  # training-time RTC on the expert's exact continuations
        continuations = continuation_labels(
            demos,
            str(cfg.data.task),
            int(cfg.model.train_prefix_max),
            int(cfg.data.seed_offset),
            int(cfg.model.stale_prefix_max_ticks),
            int(cfg.seed),
        )
    return train(cfg, demos, continuations)


if __name__ == "__main__":
    main()
