"""Scripted (privileged) experts; importing registers them in POLICY_REGISTRY."""

from policies.scripted.transfer_cube import ScriptedTransferCube

__all__ = ["ScriptedTransferCube"]
