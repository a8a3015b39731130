"""The chunking knobs, declared once: what the ``RTCPlanner`` (and so every execution mode) runs by.

Every algorithm holds one ``RTCConfig`` as a member (``algo.rtc``) and hands it to the planner; the
inference side receives none of it (it runs the policy on the request the planner cut). Each
field's annotation is its type and range (``services.knobs``), checked by start-time validation on
the YAML and by ``check_ranges`` here; guidance and schedule are enums.
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms.chunking.chunk_logic import check_execute_horizon
from algorithms.settings import check_ranges
from policies.base import Guidance, Schedule
from services.knobs import NonNegativeInt, PositiveFloat, PositiveInt


@dataclass(kw_only=True)
class RTCConfig:
    """Real-time chunking knobs, all in control ticks unless named otherwise.

    ``execute_horizon`` (the RTC paper's s): the next inference starts once that many actions of the
    current chunk have executed; it is also what the policy leaves free at the new chunk's tail.
    ``delay_window`` (b) and ``initial_delay_ticks`` configure ``d = max(last b observed delays)``; the
    first ``warmup_inferences_excluded`` delays are not recorded (compile/warm-up spikes).
    ``guidance``/``schedule``/``max_guidance_weight`` (beta) are handed to ``guided_inference``.
    ``max_rejected_chunks``: that many unexecutable chunks in a row end the run (``chunks_rejected``).
    ``max_chunk_jump`` (robot units, max over joints): a chunk whose first executed action is farther
    than this from the last command is implausible and rejected (null: no check).
    ``guided_cap_ticks``: the soft-guided region of a guided request ends this many actions past the
    delay instead of at ``H - s`` (null: the paper's region); the committed actions stay guided and
    the rest of the overlap is free to react to a world that changed since the last chunk.
    """

    execute_horizon: PositiveInt = 25
    delay_window: PositiveInt = 10
    initial_delay_ticks: NonNegativeInt | None = 4
    warmup_inferences_excluded: NonNegativeInt = 1
    guidance: Guidance = Guidance.VJP
    schedule: Schedule = Schedule.EXP
    max_guidance_weight: PositiveFloat = 5.0
    max_rejected_chunks: PositiveInt = 3
    max_chunk_jump: PositiveFloat | None = 1.0
    guided_cap_ticks: NonNegativeInt | None = None

    def __post_init__(self) -> None:
        check_ranges(self)

    def check_chunk_size(self, chunk_size: int) -> None:
        check_execute_horizon(self.execute_horizon, chunk_size)
