"""The inference process of RTC: owns the policy, never touches the robot.

Started with ``spawn`` (CUDA-safe); it receives the picklable run object, the shared-memory layout
and the algorithm's knobs once, builds the policy *here* (``run.make_policy()``), warms it up, then
loops: wait until the control side has consumed ``s_min`` actions of the current chunk, snapshot
(observation, ``prev = chunk[s:]`` in model space, ``s``), estimate the delay, run guided
inference, publish the new chunk. Log records (tracebacks included) go to the parent through a
queue so they land in the run's log. SIGINT is ignored: the parent decides when to stop (stop
flag), and the process exits by itself if the parent disappears.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.rtc.chunk_logic import DelayEstimator, clip_delay, prev_remainder
from algorithms.rtc.layout import RF, C, H, Layout, R, SharedState
from algorithms.rtc.shm import SharedArrays

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """The algorithm knobs the inference process needs (all from conf/algorithm/rtc.yaml)."""

    s_min: int
    delay_window: int
    initial_delay_ticks: int
    warmup_inferences_excluded: int
    guidance: str
    schedule: str
    max_guidance_weight: float
    poll_interval_s: float
    inference_threads: int | None = None
    log_level: int = logging.INFO


def inference_main(run: Any, layout: Layout, cfg: WorkerConfig, log_queue: Any, parent_pid: int) -> None:
    """Process entry point (must stay importable at module level for ``spawn``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(cfg.log_level)
    arrays = None
    try:
        arrays = SharedArrays.attach(layout.block, list(layout.specs))
        _Worker(run, SharedState(arrays, layout), cfg, parent_pid, log_queue).loop()
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent's log
        log.error("inference process failed: %s\n%s", exc, traceback.format_exc())
        log_queue.put(("fault", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1)
    finally:
        if arrays is not None:
            arrays.close()  # never unlinks: not the owner


class _Worker:
    def __init__(self, run: Any, shared: SharedState, cfg: WorkerConfig, parent_pid: int, events: Any) -> None:
        self.run = run
        self.shared = shared
        self.cfg = cfg
        self.parent_pid = parent_pid
        self.events = events
        self.H = shared.layout.chunk_size
        self.estimator = DelayEstimator(cfg.delay_window, cfg.initial_delay_ticks, cfg.warmup_inferences_excluded)

    def beat(self) -> None:
        self.shared.hb_f64[H.BEAT] = time.monotonic()

    def alive(self) -> bool:
        return os.getppid() == self.parent_pid and self.shared.ctrl_i64[C.STOP] == 0

    def loop(self) -> None:
        shared = self.shared
        shared.hb_i64[H.PID] = os.getpid()
        self.beat()
        t0 = time.monotonic()
        if self.cfg.inference_threads:
            # a CPU policy must not take every core from the control loop
            import torch

            torch.set_num_threads(int(self.cfg.inference_threads))
        self.policy = self.run.make_policy()
        self.normalizer = self.run.make_normalizer()
        self.policy.freeze()
        self.policy.warmup()
        meta = getattr(self.policy, "metadata", None)
        if self.cfg.guidance == "vjp" and meta is not None and not meta.supports_vjp:
            log.warning("rtc: guidance=vjp but policy %s declares supports_vjp=False; its guided_inference "
                        "decides what to do (use guidance=blend for non-differentiable samplers)",
                        type(self.policy).__name__)
        self.beat()
        shared.hb_i64[H.READY] = 1
        log.info("inference process %d ready (policy built and warmed up in %.2f s)", os.getpid(), time.monotonic() - t0)
        episode, seen_chunk = -1, 0
        while self.alive():
            self.beat()
            counters = shared.read_counters()
            if counters[C.EPISODE] != episode:
                episode, seen_chunk = int(counters[C.EPISODE]), 0
            pending = int(shared.res_i64[R.SEQ]) != int(counters[C.RESULT_ACK])
            chunk_id = int(counters[C.CHUNK_ID])
            if chunk_id != seen_chunk:
                d_actual = int(counters[C.CHUNK_D_ACTUAL])
                if chunk_id > 0 and d_actual >= 0:
                    self.estimator.observe(d_actual)
                seen_chunk = chunk_id
            first = chunk_id == 0 and counters[C.OBS_VALID] == 1
            if pending or not (first or (chunk_id > 0 and counters[C.T] >= self.cfg.s_min)):
                time.sleep(self.cfg.poll_interval_s)
                continue
            self.infer_once()

    def infer_once(self) -> None:
        shared = self.shared
        t_start = time.monotonic()
        snap = shared.read_snapshot()
        i64 = snap["i64"]
        chunk_id, s = int(i64[C.CHUNK_ID]), int(i64[C.T])
        inp = self.normalizer.policy_input(snap["state"], snap["images"], snap["info"])
        t_policy = time.monotonic()
        guided = chunk_id > 0 and s < self.H and self.cfg.guidance != "none"
        d_est = clip_delay(self.estimator.estimate(), s, self.H) if chunk_id > 0 else 0
        if chunk_id > 0 and s < self.H:
            prev = prev_remainder(snap["chunk_model"], s)
            model = self.policy.guided_inference(
                inp, prev, d_est, s, guidance=self.cfg.guidance, schedule=self.cfg.schedule,
                max_guidance_weight=self.cfg.max_guidance_weight,
            )
        else:
            model = self.policy.predict(inp)
        policy_ms = (time.monotonic() - t_policy) * 1e3
        model = np.asarray(model, dtype=np.float32)
        robot = self.normalizer.action_to_robot(model) if model.ndim == 2 else model
        seq = shared.publish_result(
            model, robot,
            {R.EPISODE: int(i64[C.EPISODE]), R.BASE_CHUNK_ID: chunk_id, R.S: s,
             R.SNAPSHOT_TICK: int(i64[C.TICK]), R.D_ESTIMATE: d_est, R.GUIDED: int(guided)},
            {RF.T_START: t_start, RF.T_END: time.monotonic(), RF.POLICY_MS: policy_ms},
        )
        shared.hb_i64[H.INFERENCES] += 1
        log.debug("inference %d: chunk %d s=%d d_est=%d policy %.1f ms", seq, chunk_id, s, d_est, policy_ms)
