"""The LeRobot policy host: ``<lerobot env python> -m policies.lerobot.host``, driven over its stdin/stdout.

Our interpreter cannot import LeRobot (0.6 needs Python >= 3.12, torch < 2.12), so the in-process uses of a
policy (the sequential loop, lockstep evaluation, the policy server) talk to this process through a pair of
pipes (``policies/lerobot/proxy.py``; no socket). It owns one :class:`LeRobotRuntime`. Requests are
``{"op": ..., ...}`` frames (``wire.py``); each gets ``{"ok": result}`` or ``{"error": text}``. stdout
carries frames only: anything LeRobot prints goes to stderr. The host exits when its stdin closes (the
engine ended, or died).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any


def _private_stdout() -> Any:
    """The frame channel: a duplicate of fd 1, then fd 1 itself pointed at stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=0)


def serve(inp: Any, out: Any) -> None:
    from policies.lerobot import wire

    runtime = None
    while True:
        try:
            msg = wire.recv(inp)
        except EOFError:
            return
        op = msg.get("op")
        try:
            if op == "init":
                import torch

                from policies.lerobot.runtime import LeRobotRuntime

                if msg.get("threads"):
                    torch.set_num_threads(int(msg["threads"]))
                runtime = LeRobotRuntime(**msg["kwargs"])
                result: Any = {"pid": os.getpid(), "type": runtime.spec.type}
            elif op == "close":
                wire.send(out, {"ok": None})
                return
            elif runtime is None:
                raise RuntimeError(f"op {op!r} before init")
            elif op == "predict":
                result = runtime.predict(msg["state"], msg["images"])
            elif op == "guided":
                result = runtime.guided(msg["state"], msg["images"], msg["prev"], **msg["kwargs"])
            elif op == "reset_noise":
                result = runtime.reset_noise(int(msg["seed"]))
            elif op == "freeze":
                result = runtime.freeze()
            else:
                raise ValueError(f"unknown op {op!r}")
            wire.send(out, {"ok": result})
        except Exception as exc:  # noqa: BLE001 - reported to the engine, which raises it there
            wire.send(out, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LEROBOT_HOST_LOG", "WARNING"),
        stream=sys.stderr,
        format="lerobot-host %(levelname)s %(name)s: %(message)s",
    )
    out = _private_stdout()
    try:
        serve(sys.stdin.buffer, out)
    except BrokenPipeError:  # the engine went away mid-request: nothing to answer
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
