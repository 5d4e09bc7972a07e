"""Stopping a detached development server by its pid (``kstreamlet dev kafka|mysql down``)."""

from __future__ import annotations

import os
import signal
import time


def stop_pid(pid: int, timeout: float, poll: float = 0.1) -> None:
    """SIGTERM ``pid`` (a clean shutdown), then SIGKILL if it is still there after ``timeout`` seconds."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(poll)
    os.kill(pid, signal.SIGKILL)
