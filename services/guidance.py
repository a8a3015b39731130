"""The guidance vocabulary (``algorithm.guidance``): how an inference continues the previous chunk.

Three layers speak it: the policies that serve a guidance, the loops that ask for one and carry it
across processes, and the recorders that write which one sampled each chunk. It lives here, below
all three, so none of them imports another for it (``policies.base`` re-exports it). Members'
positions are codes on the wire and in recorded datasets: new members are appended.
"""

from __future__ import annotations

from enum import StrEnum


class Guidance(StrEnum):
    """How an inference continues the previous chunk (``algorithm.guidance``).

    ``vjp``: real RTC guidance (Black et al. 2025, VJP through the denoiser); ``trained``:
    training-time RTC (Black, Ren, Equi, Levine 2025): the part of the previous chunk that will
    still execute is given to a model trained with clean action prefixes, no VJP (only policies
    with ``metadata.supports_trained``); ``blend``: ``W * prev + (1 - W) * new`` after sampling;
    ``none``: naive asynchronous chunking; ``identity``: RTC guidance with the correction taken
    without the Jacobian (the weighted error itself, as LeRobot computes it: no reverse pass; only
    policies with ``metadata.supports_identity``); ``select``: no guidance inside the sampler: K chunks
    are sampled from the observation and the one closest to the previous chunk's unexecuted rest (the
    soft mask's weights) is kept (the backward-coherence criterion of bidirectional decoding, Liu et
    al. 2024), so every candidate is a plan for the world as it is now (only policies with
    ``metadata.supports_select``); ``bid``: bidirectional decoding (Liu et al. 2024) as the RTC paper
    runs it for a baseline: N chunks sampled from the policy and N from a weak policy (an earlier
    checkpoint), the kept one scoring lowest on backward coherence with the previous chunk's rest plus
    forward contrast (close to the other strong samples, far from the weak ones;
    ``policies.guidance.bid_select``; only policies with ``metadata.supports_bid``). A ``StrEnum``:
    members compare equal to their config strings (``Guidance.VJP == "vjp"``).
    """

    VJP = "vjp"
    BLEND = "blend"
    NONE = "none"
    TRAINED = "trained"
    IDENTITY = "identity"  # appended: members' positions are wire codes (algorithms/rtc/layout.py)
    SELECT = "select"  # appended likewise
    BID = "bid"  # appended likewise
