"""The RTC knobs, declared once: a typed dataclass used by every RTC variant.

``algorithm=rtc`` (shared memory), ``algorithm=rtc_split`` (Ray) and ``algorithm=lockstep_eval``
inherit these fields (their YAMLs include ``conf/rtc/default.yaml``), hand an ``RTCConfig`` to the
control-side ``RTCPlanner``, and the inference process receives nothing else of them: it runs the
policy on the snapshot the planner cut. Guidance and schedule are enums; a wrong name, type or range
is a ``ValueError`` naming the key (the validation turns it into ``config error: <key>: <why>``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from policies.base import Guidance, Schedule
from services.knobs import NonNegativeInt, PositiveFloat, PositiveInt


def _enum(key: str, enum: type, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"algorithm.{key}={value!r}; expected one of {[m.value for m in enum]}") from None


@dataclass(kw_only=True)
class RTCConfig:
    """Real-time chunking knobs (DESIGN.md section 4), all in control ticks unless named otherwise.

    ``execute_horizon``: target actions executed per chunk; the next inference is triggered once
    ``t >= s_min`` (``s_min`` null: ``execute_horizon``). ``delay_window`` (b) and
    ``initial_delay_ticks`` configure ``d = max(last b observed delays)``; the first
    ``warmup_inferences_excluded`` delays are not recorded (compile/warm-up spikes).
    ``guidance``/``schedule``/``max_guidance_weight`` (beta) are handed to ``guided_inference``.
    ``max_rejected_chunks``: that many unexecutable chunks in a row end the run (a fault).
    ``max_chunk_jump`` (robot units, max over joints): a chunk whose first executed action is farther
    than this from the last command is implausible and rejected (null: no check).
    """

    execute_horizon: PositiveInt = 25
    s_min: PositiveInt | None = None
    delay_window: PositiveInt = 10
    initial_delay_ticks: NonNegativeInt | None = 4
    warmup_inferences_excluded: NonNegativeInt = 1
    guidance: Guidance = Guidance.VJP
    schedule: Schedule = Schedule.EXP
    max_guidance_weight: PositiveFloat = 5.0
    max_rejected_chunks: PositiveInt = 3
    max_chunk_jump: PositiveFloat | None = 1.0

    def __post_init__(self) -> None:
        self.guidance = _enum("guidance", Guidance, self.guidance)
        self.schedule = _enum("schedule", Schedule, self.schedule)
        if self.execute_horizon < 1:
            raise ValueError(f"algorithm.execute_horizon={self.execute_horizon} must be >= 1")
        if self.s_min is not None and self.s_min < 1:
            raise ValueError(f"algorithm.s_min={self.s_min} must be >= 1 (or null)")
        if self.delay_window < 1:
            raise ValueError(f"algorithm.delay_window={self.delay_window} must be >= 1")
        if self.initial_delay_ticks is not None and self.initial_delay_ticks < 0:
            raise ValueError(f"algorithm.initial_delay_ticks={self.initial_delay_ticks} must be >= 0")
        if self.warmup_inferences_excluded < 0:
            raise ValueError(f"algorithm.warmup_inferences_excluded={self.warmup_inferences_excluded} must be >= 0")
        if not self.max_guidance_weight > 0:
            raise ValueError(f"algorithm.max_guidance_weight={self.max_guidance_weight} must be > 0")
        if self.max_rejected_chunks < 1:
            raise ValueError(f"algorithm.max_rejected_chunks={self.max_rejected_chunks} must be >= 1")
        if self.max_chunk_jump is not None and not self.max_chunk_jump > 0:
            raise ValueError(f"algorithm.max_chunk_jump={self.max_chunk_jump} must be > 0 (or null)")

    @property
    def trigger_ticks(self) -> int:
        """``s_min``: ticks of the current chunk executed before the next inference starts."""
        return int(self.execute_horizon if self.s_min is None else self.s_min)

    def check_chunk_size(self, chunk_size: int) -> None:
        if not 1 <= self.trigger_ticks <= chunk_size:
            raise ValueError(f"algorithm.s_min/execute_horizon={self.trigger_ticks} must be in [1, chunk_size={chunk_size}]")

    def rtc_config(self) -> RTCConfig:
        """These knobs alone (an algorithm object inherits them next to its own): what the planner gets."""
        return RTCConfig(**{f.name: getattr(self, f.name) for f in fields(RTCConfig)})
