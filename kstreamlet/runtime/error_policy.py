"""The error policy for records that fail: dead-letter topic, skip, or stop.

Headers on a dead-letter record (values are UTF-8)::

    kstreamlet.error.stage      deserialize | process | produce
    kstreamlet.error.type       exception class name
    kstreamlet.error.message    str(exception), truncated to 1000 characters
    kstreamlet.error.output.topic / .code   (stage produce) the topic that would reject the
                                output record and why (MSG_SIZE_TOO_LARGE, INVALID_TIMESTAMP, ...)
    kstreamlet.source.topic / .partition / .offset / .timestamp
    kstreamlet.application.id
    kstreamlet.error.schema.format / .topic / .subject / .id / .error   a Schema Registry serde's
                                SchemaError (kstreamlet/serdes_registry.py): avro | protobuf |
                                json_schema, the subject, the writer schema id, the underlying error
    kstreamlet.dlq.truncated    only when the record itself was too large for the dead-letter
                                topic: what was cut (key/value are then prefixes of the original)

Key and value are the input record's original bytes, so nothing is lost and the record
can be replayed after a fix. Stage ``produce``: an output of the record would be rejected by
the broker (:class:`~kstreamlet.errors.RecordProductionError`, checked before producing, see
``runtime/production.py``); the *input* record goes to the DLQ, as for a failing function. Under exactly-once the dead-letter write is part of the
checkpoint's transaction.

A failing timer call (``on_timer``, and the window and join functions that run in it) has no
input record: its dead-letter record has the timer's key bytes as key, no value, the wall-clock
time as timestamp (an old event time could fall out of the topic's retention at once) and::

    kstreamlet.error.stage      timer
    kstreamlet.error.type / .message
    kstreamlet.timer.operator   the operator's name
    kstreamlet.timer.key        the key bytes (as the record key)
    kstreamlet.timer.domain     event | processing
    kstreamlet.timer.timestamp  the timer's timestamp (ms)
    kstreamlet.task             the task id (sub-topology_partition)
    kstreamlet.application.id
"""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog

from kstreamlet import metrics
from kstreamlet.errors import ProcessingError, RecordProductionError
from kstreamlet.runtime.task import DeserializationError, Message

log = structlog.get_logger("kstreamlet.errors")

SendRaw = Callable[[str, "bytes | None", "bytes | None", int, "list[tuple[str, bytes]]"], None]


class ErrorHandler:
    def __init__(self, policy: str, dlq_topic: str, application_id: str, send_raw: SendRaw) -> None:
        self.policy = policy
        self.dlq_topic = dlq_topic
        self.application_id = application_id
        self.send_raw = send_raw
        #: kstreamlet_dlq_records_total{policy, error_type}, one series per error type from the start.
        self._counted = {e: metrics.DLQ_RECORDS.labels(policy, e) for e in metrics.ERROR_TYPES}

    def handle(self, m: Message, exc: BaseException) -> None:
        stage = "deserialize" if isinstance(exc, DeserializationError) else "process"
        where: dict[str, Any] = dict(topic=m.topic(), partition=m.partition(), offset=m.offset())
        extra = _production_headers(exc, self.policy)
        if extra:
            stage = "produce"
            where["output_topic"] = exc.topic  # type: ignore[attr-defined]
        self._counted[stage].inc()
        if self.policy == "fail":
            where.pop("output_topic", None)
            raise ProcessingError(f"{stage} failed: {type(exc).__name__}: {exc}", **where) from exc
        if self.policy == "skip":
            log.warning("record skipped", stage=stage, error=repr(exc), **where)
            return
        err: Any = exc.__cause__ if isinstance(exc, DeserializationError) and exc.__cause__ else exc
        headers = [
            ("kstreamlet.error.stage", stage.encode()),
            ("kstreamlet.error.type", type(err).__name__.encode()),
            ("kstreamlet.error.message", str(err)[:1000].encode()),
            ("kstreamlet.source.topic", m.topic().encode()),
            ("kstreamlet.source.partition", str(m.partition()).encode()),
            ("kstreamlet.source.offset", str(m.offset()).encode()),
            ("kstreamlet.source.timestamp", str(m.timestamp()[1]).encode()),
            ("kstreamlet.application.id", self.application_id.encode()),
        ] + extra + _error_headers(err)
        self.send_raw(self.dlq_topic, m.key(), m.value(), m.timestamp()[1], headers + list(m.headers() or []))
        log.warning("record sent to dead-letter topic", dlq=self.dlq_topic, stage=stage, error=repr(err), **where)

    def handle_timer(self, operator: str, task: str, key: bytes, domain: str, ts: int, exc: BaseException,
                     now: int | None = None) -> None:
        """A timer call of ``operator`` raised (its outputs and state writes are already undone)."""
        self._counted["timer"].inc()
        where = f"timer {domain}@{ts} key={key!r} of {operator} in task {task}"
        if self.policy == "fail":
            raise ProcessingError(f"on_timer failed: {type(exc).__name__}: {exc}", where=where) from exc
        fields = dict(operator=operator, task=task, domain=domain, timer=ts, error=repr(exc))
        extra = _production_headers(exc, self.policy)
        if self.policy == "skip":
            log.warning("timer call skipped", **fields)
            return
        headers = [
            ("kstreamlet.error.stage", b"timer"),
            ("kstreamlet.error.type", type(exc).__name__.encode()),
            ("kstreamlet.error.message", str(exc)[:1000].encode()),
            ("kstreamlet.timer.operator", operator.encode()),
            ("kstreamlet.timer.key", key),
            ("kstreamlet.timer.domain", domain.encode()),
            ("kstreamlet.timer.timestamp", str(ts).encode()),
            ("kstreamlet.task", task.encode()),
            ("kstreamlet.application.id", self.application_id.encode()),
        ] + extra
        self.send_raw(self.dlq_topic, key, None, int(time.time() * 1000) if now is None else now, headers)
        log.warning("timer call sent to dead-letter topic", dlq=self.dlq_topic, **fields)


def _error_headers(err: BaseException) -> list[tuple[str, bytes]]:
    """Headers an error describes itself with (``dlq_headers()``, e.g. a SchemaError's
    ``kstreamlet.error.schema.*``), also when it is the cause of the error handled."""
    for e in (err, err.__cause__):
        fn = getattr(e, "dlq_headers", None)
        if fn is not None:
            try:
                return list(fn())
            except Exception:
                return []
    return []


def _production_headers(exc: BaseException, policy: str) -> list[tuple[str, bytes]]:
    """Headers naming the output topic and the broker's error, for a RecordProductionError (counted)."""
    if not isinstance(exc, RecordProductionError):
        return []
    metrics.PRODUCTION_ERRORS.labels(exc.topic, exc.code, policy).inc()
    return [("kstreamlet.error.output.topic", exc.topic.encode()), ("kstreamlet.error.code", exc.code.encode())]
