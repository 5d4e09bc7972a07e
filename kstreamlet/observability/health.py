"""Health signals for the HTTP endpoint: a loop heartbeat and the per-worker port.

Liveness must mean "the processing loop still turns", not "the process exists": the HTTP
server runs in its own thread, so it would keep answering 200 while the member's loop is
stuck. :class:`Heartbeat` is beaten once per loop iteration (never per record) and reports
unhealthy when it has been silent for too long, so Kubernetes restarts a wedged pod.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping

from kstreamlet.config import WORKER_INDEX_ENV


class Heartbeat:
    """A liveness check: healthy while :meth:`beat` was called within ``max_silence`` seconds.

    Usable directly as the ``health`` callable of
    :func:`~kstreamlet.observability.http.start_http_server`. ``beat()`` is one monotonic
    clock read and an attribute store, cheap enough for every loop iteration.
    """

    __slots__ = ("max_silence", "_last", "_clock")

    def __init__(self, max_silence: float, clock: Callable[[], float] | None = None) -> None:
        if max_silence <= 0:
            raise ValueError(f"max_silence must be > 0 seconds, got {max_silence!r}")
        self.max_silence = float(max_silence)
        self._clock = clock or time.monotonic
        # Healthy from creation: the loop has not had a chance to beat yet, and a probe that
        # arrives during start-up (topic checks, client creation) must not kill the pod.
        self._last = self._clock()

    def beat(self) -> None:
        """Record that the loop made progress now."""
        self._last = self._clock()

    @property
    def silence(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self._last

    def __call__(self) -> bool:
        return self.silence <= self.max_silence


def worker_http_port(base_port: int, env: Mapping[str, str] | None = None) -> int:
    """The port this process serves on: ``base_port + worker index`` under ``--workers N``.

    Forked workers cannot all bind the same port, so worker ``i`` serves on
    ``base_port + i``; worker 0 (and a single-process run) keeps ``base_port``, which is the
    port Kubernetes probes and Prometheus scrapes. Port 0 (ephemeral, tests) stays 0.
    """
    env = os.environ if env is None else env
    if base_port == 0:
        return 0
    index = int(env.get(WORKER_INDEX_ENV, "0") or 0)
    port = base_port + index
    if port > 65535:
        raise ValueError(f"http port {base_port} + worker index {index} exceeds 65535")
    return port
