"""One policy serving a cell's episodes side by side: their requests answered by one batched call.

The lockstep evaluator's episode workers (``algorithms/lockstep_parallel.py``) each run the one
``ControlLoop`` with a port of this batcher as its transport (``BatchedDelayTransport``). A port's
request parks in the rendezvous (``algorithms/rendezvous.py``); once every live episode is parked,
the thread that completed it answers them all with ONE ``policies.batched.infer_batch`` call (the
fleet's batched guided sampler), then wakes the others. Nothing else of a loop is shared: planner,
safety filter, robot, history and faults stay per episode.

Common random numbers survive batching: each episode draws its policy noise from a stream of its own,
seeded by the episode seed exactly as ``reset_noise(seed)`` seeds the policy for one episode at a time
(a ``torch.Generator`` on the policy's noise device). A row of the batched sampler gets the one
``(1, H, action_dim)`` normal a single call would draw, taken from its stream; a ``bid`` row, where the
policy batches them (``bid_inference_batch``), gets the ``2N`` draws its single call makes, in the
same order. A request that samples candidates of its own otherwise (``select``; ``bid`` on a policy
without that method: ``SAMPLES_OWN_BATCH``) runs alone through the runner with the policy's generator
set to its stream, and the stream takes the state the call left. So an episode
gets the chunks it gets when the episodes run one at a time, to float tolerance (only the order of
sums inside batched matrix products differs).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from algorithms.rendezvous import Batch, Rendezvous
from policies.base import Guidance, PolicyInput, missing_capability, policy_info
from policies.batched import SAMPLES_OWN_BATCH, BatchRequest, guide_kind, infer_batch
from policies.runner import ChunkResult, Guide, PolicyRunner


class BatcherAborted(RuntimeError):
    """The cell was abandoned (interrupt, or a failure that ends the run) while this request waited."""


@dataclass(frozen=True)
class Row:
    """One episode's request: the observation in model space, what it continues (None: a plain
    chunk) and the episode's noise stream (None for a policy without noise)."""

    inp: PolicyInput
    guide: Guide | None
    noise: torch.Generator | None


@dataclass(frozen=True)
class Answer:
    """A row's chunk and what the policy reported with it, or the exception its single call raised."""

    result: ChunkResult | None
    fields: dict[str, Any]
    error: BaseException | None = None


def noise_generator(policy: Any) -> torch.Generator | None:
    """The ``torch.Generator`` a policy's noise comes from (the flow policy's ``_generator``), or None."""
    generator = getattr(policy, "_generator", None)
    return generator if isinstance(generator, torch.Generator) else None


class EpisodeBatcher:
    """The rendezvous of a cell's episodes around one runner (``join`` before the cell, ``leave``
    when a member has no episode left); ``infer`` blocks its member until its row is answered."""

    def __init__(self, runner: PolicyRunner) -> None:
        self.runner = runner
        policy = runner.policy
        self._generator = noise_generator(policy)
        if self._generator is None and callable(getattr(policy, "reset_noise", None)):
            raise ValueError(
                f"algorithm.parallel_episodes: policy {type(policy).__name__} re-seeds its noise but keeps "
                "it where episodes side by side cannot each have their own stream (no torch.Generator "
                "_generator); run it with parallel_episodes=1"
            )
        self._batched = callable(getattr(policy, "guided_inference_batch", None))
        self._cond = threading.Condition()
        self._rendezvous = Rendezvous()
        self._answers: dict[Hashable, Answer] = {}
        self._aborted: str | None = None
        self.batches = 0  # batched calls made, and the rows they answered (mean batch size = rows / batches)
        self.rows = 0

    # ------------------------------------------------------------------ members
    def noise_stream(self, seed: int) -> torch.Generator | None:
        """A fresh noise stream for an episode: what ``reset_noise(seed)`` makes of the policy's generator."""
        if self._generator is None:
            return None
        stream = torch.Generator(device=self._generator.device)
        stream.manual_seed(int(seed))
        return stream

    def join(self, member: Hashable) -> None:
        with self._cond:
            self._aborted = None
            self._rendezvous.join(member)

    def leave(self, member: Hashable) -> None:
        with self._cond:
            batch = self._rendezvous.leave(member)
            if batch is not None:
                self._answer(batch)

    def abort(self, why: str) -> None:
        """Wake every waiting member with ``BatcherAborted`` (until the next ``join``)."""
        with self._cond:
            self._aborted = why
            self._cond.notify_all()

    def infer(self, member: Hashable, row: Row, key: Any) -> tuple[ChunkResult, dict[str, Any]]:
        """Park ``row`` (ordered by ``key`` in its batch) and return its answer; re-raises the
        exception its call raised, as the call made alone would."""
        with self._cond:
            if self._aborted is not None:
                raise BatcherAborted(self._aborted)
            batch = self._rendezvous.park(member, row, key)
            if batch is not None:
                self._answer(batch)
            while member not in self._answers:
                if self._aborted is not None:
                    raise BatcherAborted(self._aborted)
                self._cond.wait()
            answer = self._answers.pop(member)
        if answer.error is not None:
            raise answer.error
        return answer.result, answer.fields

    # ------------------------------------------------------------------ one batch
    def _answer(self, batch: Batch) -> None:
        """Answer every row of ``batch`` (lock held: every live member is parked meanwhile)."""
        try:
            answers = answer_rows(self.runner, batch.requests, self._generator, self._batched)
        except BaseException as exc:  # noqa: BLE001 - each waiting member re-raises it
            answers = [Answer(None, {}, exc)] * len(batch.rows)
        self.batches += 1
        self.rows += len(batch.rows)
        self._answers.update(zip(batch.members, answers))
        self._cond.notify_all()


def answer_rows(
    runner: PolicyRunner, rows: Sequence[Row], generator: torch.Generator | None, batched: bool
) -> list[Answer]:
    """The rows' chunks: those the batched sampler serves in one ``infer_batch`` call (noise drawn
    from each row's stream), the others one by one through ``runner.infer`` on their own stream."""
    policy = runner.policy
    bid_samples = int(policy.bid_samples) if hasattr(policy, "bid_inference_batch") else 0
    together = [
        i
        for i, row in enumerate(rows)
        if batched
        and (guide_kind(row.guide) not in SAMPLES_OWN_BATCH or (guide_kind(row.guide) == Guidance.BID and bid_samples))
        and missing_capability(policy, guide_kind(row.guide)) is None
    ]
    answers: list[Answer | None] = [None] * len(rows)
    if together:
        meta = runner.metadata
        requests = [_batch_request(rows[i], meta.chunk_size, meta.action_dim, bid_samples) for i in together]
        saved = generator.get_state() if generator is not None else None
        try:
            outs = infer_batch(runner, requests)
        finally:  # every row brought its noise: the policy's own draw for the batch is put back
            if saved is not None:
                generator.set_state(saved)
        for i, out in zip(together, outs):
            if out.error is not None:
                answers[i] = Answer(None, {}, ValueError(out.error))
            else:
                answers[i] = Answer(
                    ChunkResult(out.model, out.robot, out.policy_ms, guide_kind(rows[i].guide) != Guidance.NONE),
                    out.info,
                )
    for i, row in enumerate(rows):
        if answers[i] is None:
            answers[i] = _single(runner, row, generator)
    return answers  # type: ignore[return-value]


def _batch_request(row: Row, chunk_size: int, action_dim: int, bid_samples: int) -> BatchRequest:
    """The row as a batch request, with what a single call would draw from the episode's stream: one
    normal, or for ``bid`` the first strong chunk's, the N - 1 others' and the N weak ones', in that
    order (``FlowPolicy._bid_noise``)."""
    if row.noise is None:
        return BatchRequest(row.inp, row.guide)
    counts = (1, bid_samples - 1, bid_samples) if guide_kind(row.guide) == Guidance.BID else (1,)
    draws = [torch.randn((k, chunk_size, action_dim), generator=row.noise, device=row.noise.device) for k in counts]
    noise = torch.cat(draws).cpu().numpy()
    return BatchRequest(row.inp, row.guide, noise if len(counts) > 1 else noise[0])


def _single(runner: PolicyRunner, row: Row, generator: torch.Generator | None) -> Answer:
    """One row alone, the policy's generator set to the row's stream for the call."""
    saved = None
    if generator is not None and row.noise is not None:
        saved = generator.get_state()
        generator.set_state(row.noise.get_state())
    try:
        return Answer(runner.infer(row.inp, row.guide), policy_info(runner.policy))
    except Exception as exc:  # noqa: BLE001 - re-raised in the member's thread, as the call alone would raise
        return Answer(None, {}, exc)
    finally:
        if saved is not None:
            row.noise.set_state(generator.get_state())
            generator.set_state(saved)
