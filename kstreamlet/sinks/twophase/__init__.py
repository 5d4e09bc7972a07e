"""Two-phase-commit sinks: the protocol a sink implements (:mod:`.protocol`) and the operator
that drives one task's copy of it through the checkpoints (:mod:`.operator`)."""

from kstreamlet.sinks.twophase.protocol import (
    RecordMetadata,
    SinkContext,
    SinkError,
    SinkUnavailableError,
    SinkWriteError,
    TwoPhaseCommitSink,
    backoff_delay,
    sleep_backoff,
)
from kstreamlet.sinks.twophase.operator import (
    PendingCommit,
    SinkOperator,
    SinkState,
    StoredCommittable,
    TwoPhaseCommitSinkNode,
)

__all__ = [
    "TwoPhaseCommitSink", "SinkContext", "RecordMetadata", "SinkError", "SinkUnavailableError", "SinkWriteError",
    "backoff_delay", "sleep_backoff", "TwoPhaseCommitSinkNode", "SinkOperator", "SinkState", "PendingCommit",
    "StoredCommittable",
]
