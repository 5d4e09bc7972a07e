"""Stopping a detached development server by its pid (``kstreamlet dev kafka|mysql down``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path


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


def live_state(path: Path) -> dict[str, object] | None:
    """The JSON state a detached dev server left in ``path`` (``pid``, addresses, ``workdir``), or
    None when there is none or its process is gone."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return state  # type: ignore[no-any-return]
