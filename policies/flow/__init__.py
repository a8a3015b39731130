"""The bundled flow-matching chunk policy (pi0-style, plain torch, runs on a CPU).

``FlowPolicy`` is registered as ``"flow"`` and usable as ``_target_: policies.flow.FlowPolicy``.
Train with ``python -m tasks.transfer_cube.train``, evaluate with ``python -m tasks.transfer_cube.evaluate``.
"""

from policies.flow.model import FlowModel, FlowModelConfig
from policies.flow.policy import FlowPolicy

__all__ = ["FlowModel", "FlowModelConfig", "FlowPolicy"]
