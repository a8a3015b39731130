"""The engine's end of the LeRobot policy host: starts ``policies.lerobot.host`` under ``policy.python``
and forwards each call over its stdin/stdout pipes (``wire.py`` frames; no socket, nothing to bind).

The host is a child of this process: it exits when its stdin closes, so a crash of the engine does not
leave it behind. An error in the host comes back as ``HostError`` with the host's traceback in the log.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policies.lerobot import wire
from services.devproc import exit_cause

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


class HostError(RuntimeError):
    """The policy host failed a request (its message; the traceback is logged) or died."""


class HostProxy:
    def __init__(
        self, python: str, kwargs: Mapping[str, Any], threads: int | None = None, start_timeout_s: float = 600.0
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(
            [python, "-m", "policies.lerobot.host"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(REPO),
            env=env,
        )
        self._lock = threading.Lock()
        self.camera_keys = dict(kwargs.get("camera_keys") or {})
        atexit.register(self.close)
        info = self._call({"op": "init", "kwargs": dict(kwargs), "threads": threads})
        self.pid = int(info["pid"])

    def _call(self, msg: dict[str, Any]) -> Any:
        with self._lock:
            if self._proc.poll() is not None:
                raise HostError(f"LeRobot policy host {exit_cause(self._proc.returncode)}")
            try:
                wire.send(self._proc.stdin, msg)
                reply = wire.recv(self._proc.stdout)
            except (EOFError, BrokenPipeError) as exc:
                code = self._proc.wait(timeout=5)
                raise HostError(
                    f"LeRobot policy host died during {msg.get('op')} ({exit_cause(code)}; its stderr above says why)"
                ) from exc
        if "error" in reply:
            log.error("LeRobot policy host: %s", reply.get("traceback", reply["error"]))
            raise HostError(f"LeRobot policy host: {reply['error']}")
        return reply["ok"]

    def predict(self, state: np.ndarray, images: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._call({"op": "predict", "state": state, "images": dict(images)})

    def guided(
        self, state: np.ndarray, images: Mapping[str, np.ndarray], prev: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        return self._call({"op": "guided", "state": state, "images": dict(images), "prev": prev, "kwargs": kwargs})

    def reset_noise(self, seed: int) -> None:
        self._call({"op": "reset_noise", "seed": int(seed)})

    def freeze(self) -> None:
        self._call({"op": "freeze"})

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            with self._lock:
                wire.send(proc.stdin, {"op": "close"})
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=10)
