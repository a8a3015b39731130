"""Where a run executes. ``launcher=local`` (default) runs it in this process tree; other
launchers (``launcher=ray``) place it elsewhere and bring its telemetry back into the run dir."""

from __future__ import annotations

from typing import Any


class LocalLauncher:
    def launch(self, run: Any) -> dict[str, Any]:
        return run.execute()
