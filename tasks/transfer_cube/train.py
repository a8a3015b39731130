"""Train the bundled flow policy: ``python -m tasks.transfer_cube.train [key=value ...]``.

Config: ``conf/train/flow.yaml``. Steps: record (or reload) scripted-expert demonstrations in the
lockstep sim, compute normalization stats (``Normalizer.compute_stats``; z-score with a std floor),
train with Lightning Fabric (bf16-mixed on GPU, fp32 on CPU) keeping an EMA of the weights, and
write the EMA weights as a checkpoint dir the policy loads.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from policies.flow.checkpoint import resolve_path, save_checkpoint
from policies.flow.model import FlowModel, FlowModelConfig
from policies.normalize import Normalizer
from tasks.transfer_cube.demos import Demos, demo_summary, earlier_counts, record_demos, sample_steps, stale_prefixes

logger = logging.getLogger(__name__)

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf" / "train")


def cached_or_recorded(data: DictConfig, chunk_size: int, record: Callable[[], Demos]) -> Demos:
    """The demonstrations cached at ``data.cache`` when their chunk size matches, else ``record()``'s
    (then cached): one cache rule for every task's expert."""
    cache = resolve_path(data.cache) if data.get("cache") else None
    if cache is not None and cache.is_file():
        demos = Demos.load(cache)
        if demos.actions.shape[1] == chunk_size:
            logger.info("loaded demonstrations from %s: %s", cache, demo_summary(demos))
            return demos
        logger.info("cached demonstrations have chunk %d != %d; re-recording", demos.actions.shape[1], chunk_size)
    demos = record()
    logger.info("recorded %s", demo_summary(demos))
    if cache is not None:
        demos.save(cache)
    return demos


def load_or_record(data: DictConfig, chunk_size: int) -> Demos:
    return cached_or_recorded(
        data,
        chunk_size,
        lambda: record_demos(
            episodes=data.episodes,
            seed_offset=data.seed_offset,
            chunk_size=chunk_size,
            max_steps=data.max_steps,
            sample_every=data.sample_every,
            action_noise_std=data.action_noise_std,
            noise_corr_ticks=data.noise_corr_ticks,
            ticks_after_success=data.ticks_after_success,
            keep_failed=data.keep_failed,
            hz=data.hz,
            width=data.width,
            height=data.height,
            cameras=dict(data.cameras),
            task=str(data.get("task", "transfer_cube")),
            expert=OmegaConf.to_container(data.expert, resolve=True) if data.get("expert") else None,
            reaction_lag_max_ticks=int(data.get("reaction_lag_max_ticks", 0)),
        ),
    )


def cube_xy_targets(demos: Demos, seed_offset: int) -> np.ndarray:
    """Auxiliary targets: each sample's cube (x, y), scaled to about [-1, 1].

    Demonstrations that store the cube's position per sample (``Demos.cube_xy``) use it (a task
    whose cube moves needs the current one). Older caches do not: episode e was recorded with
    ``robot.home(seed_offset + e)``, which draws the cube pose as
    ``aloha.sample_cube_pose(default_rng(seed))``, so the start position is recomputed.
    """
    from robots.sim import aloha

    if demos.cube_xy is not None:
        return ((demos.cube_xy - np.array([0.1, 0.5], np.float32)) / 0.1).astype(np.float32)
    xy = {}
    for e in np.unique(demos.episode):
        pose = aloha.sample_cube_pose(np.random.default_rng(seed_offset + int(e)))
        xy[int(e)] = ((pose[0] - 0.1) / 0.1, (pose[1] - 0.5) / 0.1)
    return np.asarray([xy[int(e)] for e in demos.episode], np.float32)


class StalePrefixRecipe:
    """The stale-prefix-robust training-time RTC recipe (``model.stale_prefix_prob`` > 0): for that
    share of a batch the clean prefix comes from an earlier sample's chunk continued to the current
    tick (1..``stale_prefix_max_ticks`` back in the same episode: what a previous chunk holds when
    the next is planned, the pre-change plan after the shift task's jump), and the loss's labels
    re-plan after it (``FlowModel.loss``'s ``prefix_actions``). The rest keep their own labels as
    prefix, the paper's recipe. ``stale_prefix_prob: 0`` (the default) is the paper's recipe."""

    def __init__(self, steps: np.ndarray, counts: np.ndarray, prob: float, replan_ticks: int, seed: int) -> None:
        self.steps, self.counts = steps, counts
        self.prob, self.replan_ticks = float(prob), int(replan_ticks)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_cfg(cls, model_cfg: DictConfig, demos: Demos, sample_every: int, seed: int) -> StalePrefixRecipe | None:
        prob = float(model_cfg.get("stale_prefix_prob", 0.0))
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"model.stale_prefix_prob must be within [0, 1] (got {prob})")
        if prob == 0.0:
            return None
        max_ticks = int(model_cfg.get("stale_prefix_max_ticks", 12))
        if max_ticks < 1:
            raise ValueError(f"model.stale_prefix_max_ticks must be >= 1 (got {max_ticks})")
        steps = sample_steps(demos, sample_every)
        counts = earlier_counts(demos.episode, steps, max_ticks)
        logger.info(
            "stale-prefix recipe: p=%.2f, chunks 1..%d ticks back (%d of %d samples have one), "
            "labels re-plan within %d ticks",
            prob,
            max_ticks,
            int((counts > 0).sum()),
            len(counts),
            int(model_cfg.get("stale_prefix_replan_ticks", 10)),
        )
        return cls(steps, counts, prob, int(model_cfg.get("stale_prefix_replan_ticks", 10)), seed)

    def draw(self, actions: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Prefix sources for a batch (B, H, A), model space: stale for a ``prob`` share, else own."""
        out = np.asarray(actions[idx]).copy()
        pick = self.rng.uniform(size=len(idx)) < self.prob
        if pick.any():
            out[pick] = stale_prefixes(actions, self.steps, self.counts, np.asarray(idx)[pick], self.rng)
        return out


def make_normalizer(demos: Demos, min_std: float) -> Normalizer:
    stats = Normalizer.compute_stats(
        {"state": demos.states, "action": demos.actions.reshape(-1, demos.actions.shape[-1])}
    )
    for key in stats:
        stats[key]["std"] = np.maximum(stats[key]["std"], min_std)
    return Normalizer(stats, {"state": "zscore", "action": "zscore"})


def random_shift(images: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: each sample's images (all cameras alike) shifted by up to ``pad`` px."""
    if pad <= 0:
        return images
    b, c, ch, h, w = images.shape
    padded = torch.nn.functional.pad(images.flatten(1, 2), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    out = torch.empty_like(images.flatten(1, 2))
    for i in range(b):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out.view(b, c, ch, h, w)


def train(cfg: DictConfig, demos: Demos | None = None, continuations: np.ndarray | None = None) -> Path:
    """Train and write the checkpoint. ``demos`` (optional): demonstrations recorded elsewhere (e.g. a
    Gymnasium task's expert, ``tasks.gym_control``); the model's state/action dims and cameras follow
    them (no cameras: a state-only model). Without it the ALOHA demonstrations are recorded/loaded.
    ``continuations`` (optional, (N, D + 1, H, action_dim), robot units): per sample, the exact chunk
    after a committed prefix of each length (``FlowModel.loss``'s ``continuation_labels``); used
    with ``model.train_prefix_max`` > 0 in place of the stale-prefix recipe."""
    from lightning_fabric import Fabric

    t_start = time.monotonic()
    torch.set_num_threads(int(cfg.num_threads))
    accelerator = cfg.fabric.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = cfg.fabric.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" else "32-true"
    fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)
    fabric.seed_everything(int(cfg.seed))

    if demos is None:
        demos = load_or_record(cfg.data, int(cfg.model.chunk_size))
    t_data = time.monotonic() - t_start
    mcfg = FlowModelConfig(
        chunk_size=int(cfg.model.chunk_size),
        action_dim=int(demos.actions.shape[-1]),
        state_dim=int(demos.states.shape[-1]),
        camera_names=tuple(demos.camera_names),
        image_size=(int(cfg.data.get("height", 0)), int(cfg.data.get("width", 0))),
        image_downsample=int(cfg.model.image_downsample),
        dim=int(cfg.model.dim),
        heads=int(cfg.model.heads),
        expert_layers=int(cfg.model.expert_layers),
        prefix_layers=int(cfg.model.prefix_layers),
        cnn_channels=tuple(cfg.model.cnn_channels),
        mlp_ratio=int(cfg.model.mlp_ratio),
        aux_dim=2 if cfg.model.get("aux_cube", False) else 0,
        train_prefix_max=int(cfg.model.get("train_prefix_max", 0)),
    )
    normalizer = make_normalizer(demos, float(cfg.data.min_std))
    states = torch.from_numpy(normalizer.state_to_model(demos.states))
    actions = torch.from_numpy(normalizer.action_to_model(demos.actions))
    images = torch.from_numpy(demos.images)  # uint8, kept so until the batch is drawn
    aux = torch.from_numpy(cube_xy_targets(demos, int(cfg.data.seed_offset))) if mcfg.aux_dim else None
    n = len(states)
    stale = StalePrefixRecipe.from_cfg(cfg.model, demos, int(cfg.data.sample_every), int(cfg.seed))
    if continuations is not None:
        if int(cfg.model.get("train_prefix_max", 0)) <= 0 or stale is not None:
            raise ValueError("continuation labels need model.train_prefix_max > 0 and model.stale_prefix_prob = 0")
        if continuations.shape[0] != n or continuations.shape[2:] != demos.actions.shape[1:]:
            raise ValueError(
                f"continuation labels {continuations.shape} do not match the demos' actions {demos.actions.shape}"
            )
        continuations = torch.from_numpy(normalizer.action_to_model(continuations).astype(np.float32))

    model = FlowModel(mcfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay))
    model, opt = fabric.setup(model, opt)
    ema = ema.to(fabric.device)
    logger.info(
        "training %.2f M params on %d samples (%s, %s)",
        sum(p.numel() for p in model.parameters()) / 1e6,
        n,
        accelerator,
        precision,
    )
    gen = torch.Generator().manual_seed(int(cfg.seed))
    o = cfg.optim
    max_s = float(o.max_minutes) * 60.0
    t0 = time.monotonic()
    step, running = 0, 0.0
    early_step = int(o.get("early_checkpoint_step", 0) or 0)  # >0: also keep the EMA weights at this step
    while step < int(o.max_steps):
        progress = max(step / int(o.max_steps), (time.monotonic() - t0) / max_s)
        if progress >= 1.0:
            break
        lr_scale = min(1.0, (step + 1) / max(1, int(o.warmup_steps))) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = float(o.lr) * lr_scale
        idx = torch.randint(0, n, (int(o.batch_size),), generator=gen)
        img = random_shift(images[idx].float().div_(255.0), int(o.image_shift_px), gen)
        parts = (states[idx], img, actions[idx]) + ((aux[idx],) if aux is not None else (None,))
        batch = [t if t is None else t.to(fabric.device) for t in parts]
        if continuations is not None:
            loss = model(*batch, continuation_labels=continuations[idx].to(fabric.device))
        elif stale is not None and mcfg.train_prefix_max > 0:
            prefix = torch.from_numpy(stale.draw(actions.numpy(), idx.numpy())).to(fabric.device)
            loss = model(*batch, prefix_actions=prefix, replan_ticks=stale.replan_ticks)
        else:
            loss = model(*batch)
        opt.zero_grad(set_to_none=True)
        fabric.backward(loss)
        fabric.clip_gradients(model, opt, max_norm=float(o.grad_clip))
        opt.step()
        decay = min(float(o.ema_decay), (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm.detach().to(pe.device, pe.dtype), 1.0 - decay)
        step += 1
        if step == early_step and cfg.get("early_output_dir"):  # a weak early checkpoint (e.g. BID's contrast)
            save_checkpoint(
                cfg.early_output_dir,
                copy.deepcopy(ema).cpu(),
                normalizer,
                _meta(cfg, demos, step, running, t_data, time.monotonic() - t0, precision),
            )
        running = 0.98 * running + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
        if step % int(cfg.log_every) == 0:
            logger.info(
                "step %d loss %.4f (avg %.4f) lr %.2e %.0f s",
                step,
                float(loss.detach()),
                running,
                float(o.lr) * lr_scale,
                time.monotonic() - t0,
            )
    t_train = time.monotonic() - t0
    out = save_checkpoint(
        cfg.output_dir, ema.cpu(), normalizer, _meta(cfg, demos, step, running, t_data, t_train, precision)
    )
    logger.info("done: %d steps in %.0f s (data %.0f s); checkpoint %s", step, t_train, t_data, out)
    print(f"checkpoint written: {out} ({step} steps, loss {running:.4f}, {time.monotonic() - t_start:.0f} s total)")
    return out


def _meta(
    cfg: DictConfig, demos: Demos, step: int, running: float, t_data: float, t_train: float, precision: str
) -> dict[str, Any]:
    """config.json's ``meta``: what was trained on, how long, with which settings. ``control_hz`` is
    the rate the demonstrations were recorded at (the rate the policy's chunk steps mean)."""
    return {
        "task": str(cfg.data.get("task_label") or f"sim {cfg.data.get('task', 'transfer_cube')} (ALOHA, 20 Hz)"),
        "control_hz": float(cfg.data.hz),
        "train_steps": step,
        "final_loss_avg": running,
        "samples": int(len(demos.states)),
        "episodes": int(len(np.unique(demos.episode))),
        "expert_success": f"{demos.successes}/{demos.attempts}",
        "data_s": round(t_data, 1),
        "train_s": round(t_train, 1),
        "precision": precision,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="flow")
def main(cfg: DictConfig) -> None:
    from robots import gl

    gl.select_backend()  # MUJOCO_GL before mujoco is imported

    train(cfg)


if __name__ == "__main__":
    main()
