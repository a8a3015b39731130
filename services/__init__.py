"""Services the loops use: errors, clocks, telemetry and its sinks, recording, the Ray connection.

This package sits below ``algorithms/`` (the loops) and ``inference/`` (the application); it imports
neither, nor ``policies/`` or ``robots/``.
"""
