"""Fault injection for the sinks' crash tests: exit the process at a named phase boundary.

``KSTREAMLET_TEST_CRASH_AT`` names the point (``after_prepare``: sink pre-committed and
committable buffered, before the Kafka commit; ``after_kafka_commit``: Kafka committed,
before the sink commit; ``during_rename``: file sink, after the first of several pending →
finished renames). ``KSTREAMLET_TEST_CRASH_AFTER`` (default 1) picks the N-th time the point
is reached with actual work. The process ends with ``os._exit(137)`` — no cleanup, no flush,
like ``kill -9`` — so tests can tell an injected crash from an ordinary failure.
Unset (production), :func:`maybe_crash` costs one dict lookup.
"""

from __future__ import annotations

import os
import sys

POINTS = ("after_prepare", "after_kafka_commit", "during_rename")

_counts: dict[str, int] = {}


def maybe_crash(point: str) -> None:
    """Exit with code 137 if the environment asks for a crash at ``point`` (this occurrence)."""
    wanted = os.environ.get("KSTREAMLET_TEST_CRASH_AT")
    if wanted != point:
        return
    n = _counts.get(point, 0) + 1
    _counts[point] = n
    if n >= int(os.environ.get("KSTREAMLET_TEST_CRASH_AFTER", "1")):
        sys.stderr.write(f'{{"event": "injected crash", "point": "{point}", "occurrence": {n}}}\n')
        sys.stderr.flush()
        os._exit(137)
