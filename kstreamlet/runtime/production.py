"""Which records the broker would reject, checked before they are produced.

An output record the broker rejects is a problem of that one record (too large, invalid
timestamp, a partition the topic does not have), not of the producer. Kafka Streams hands such
errors to its production exception handler (KIP-1065); kstreamlet follows ``error_policy``
for them (:class:`~kstreamlet.errors.RecordProductionError` → DLQ with the *input* record /
skip / fail), but it must learn about them *before* ``produce``:

- librdkafka sends records in batches and never splits a batch the broker rejects: every
  record of the batch fails, not only the large one;
- under exactly-once a rejected batch makes the whole transaction abortable, and replaying
  it would fail again, forever.

So :class:`OutputLimits` knows, per topic written, the largest record it accepts — the
minimum of the producer's ``message.max.bytes`` and the topic's ``max.message.bytes`` (read
with ``describe_configs`` at start) less the framing overhead — and the timestamp bounds
(``message.timestamp.before/after.max.ms`` under ``CreateTime``). Sizes are checked
uncompressed (as librdkafka's own ``message.max.bytes`` check does). The producer's
``batch.size`` is capped by the smallest topic limit so that a batch of small records is
never larger than a topic accepts. If the broker rejects a record anyway (a topic's config
was lowered while running), the checkpoint aborts, the limits are read again (and, where a
delivery report names the record, learned from it) and the replay catches the record.

The record collector's fast path costs a few comparisons (about 80 ns a record):
:attr:`OutputLimits.fast` holds bounds under which every topic accepts the record (pushed into
the collector's closure through :attr:`OutputLimits.on_change`); only a record outside them gets
the per-topic :meth:`OutputLimits.check`.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from kstreamlet.errors import RecordProductionError

log = structlog.get_logger("kstreamlet.production")

#: Record batch header (61 bytes) plus one record's framing (length, attributes, timestamp and
#: offset deltas, key/value lengths, header count), with room to spare.
OVERHEAD = 128
#: Per header: name and value lengths (varints) on top of their bytes.
HEADER_OVERHEAD = 10
#: librdkafka's defaults.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
DEFAULT_BATCH_SIZE = 1_000_000
_NO_LIMIT = 2**63 - 1
_NEVER = 2**63 - 1

#: Errors that concern one record (broker and librdkafka codes), never the producer as a whole.
PER_RECORD_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_TIMESTAMP,
    KafkaError.INVALID_RECORD, KafkaError._UNKNOWN_PARTITION,
})


_PER_RECORD_NAMES = tuple(f"code={KafkaError(c).name()}," for c in PER_RECORD_CODES)


def per_record_error(e: BaseException) -> KafkaError | None:
    """The KafkaError of ``e`` (a synchronous ``produce`` error) if it concerns that one record
    (see :data:`PER_RECORD_CODES`); None for errors of the producer or its transaction."""
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        err: KafkaError = e.args[0]
        if err.code() in PER_RECORD_CODES and not err.fatal() and not err.txn_requires_abort():
            return err
    return None


def rejected_output(e: BaseException) -> bool:
    """A checkpoint failed because the broker rejected some output record (asynchronously: in
    a delivery report or as the transaction's abort reason), judged by the error chain."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 5:
        if isinstance(cur, KafkaException) and cur.args and isinstance(cur.args[0], KafkaError):
            if cur.args[0].code() in PER_RECORD_CODES:
                return True
        if any(n in str(cur) for n in _PER_RECORD_NAMES):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False


@dataclass
class TopicLimit:
    max_message_bytes: int
    create_time: bool = True
    before_ms: int | None = None
    after_ms: int | None = None
    partitions: int | None = None


def _ms(value: str | None) -> int | None:
    if value is None:
        return None
    n = int(value)
    return None if n >= _NO_LIMIT else n


class OutputLimits:
    """Per-topic limits of what the broker accepts; see the module docstring."""

    def __init__(self, producer_config: dict[str, Any] | None = None) -> None:
        cfg = producer_config or {}
        self.producer_max = int(cfg.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        self.user_batch_size = int(cfg["batch.size"]) if "batch.size" in cfg else None
        self.topics: dict[str, TopicLimit] = {}
        #: Limits learned from the broker's rejections (lower than the configs said).
        self.learned: dict[str, int] = {}
        #: Config requests in flight (see request/apply_pending).
        self.pending: tuple[dict[Any, Any], dict[str, int]] | None = None
        self._waited = False
        #: ``[max key+value bytes, max timestamp, min partition count, min timestamp]``: a record
        #: within these needs no per-topic check (read by the record collector's closure).
        self.fast: list[int] = [0, 0, 0, 0]
        #: Called with the four fast bounds whenever they change (the record collector keeps them
        #: in closure cells: cheaper per record than reading this list).
        self.on_change: Callable[[int, int, int, int], None] | None = None
        self._recompute()

    # --- limits --------------------------------------------------------------------------------

    def set_topic(self, topic: str, limit: TopicLimit) -> None:
        self.topics[topic] = limit
        self._recompute()

    def max_bytes(self, topic: str) -> int:
        """The largest record (key + value + headers, uncompressed, with framing) ``topic`` takes."""
        t = self.topics.get(topic)
        n = min(self.producer_max, t.max_message_bytes) if t is not None else self.producer_max
        learned = self.learned.get(topic)
        return n if learned is None else min(n, learned)

    def budget(self, topic: str) -> int:
        """Key + value bytes a record without headers may have to be accepted by ``topic``."""
        return self.max_bytes(topic) - OVERHEAD

    def batch_size(self) -> int | None:
        """``batch.size`` for the producer when a topic accepts less than librdkafka batches, else None."""
        smallest = min([t.max_message_bytes for t in self.topics.values()], default=_NO_LIMIT)
        current = self.user_batch_size or DEFAULT_BATCH_SIZE
        return smallest if smallest < current else None

    def _recompute(self, now_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        ts = list(self.topics.values())
        after = [t.after_ms for t in ts if t.create_time and t.after_ms is not None]
        any_before = any(t.create_time and t.before_ms is not None for t in ts)
        parts = [t.partitions for t in ts if t.partitions]
        self.fast[0] = min([self.budget(name) for name in set(self.topics) | set(self.learned)], default=self.budget(""))
        self.fast[1] = now + min(after) if after else _NEVER
        self.fast[2] = min(parts) if parts else 0
        # Records older than a topic's before-bound: the bound moves with the clock, so every record
        # takes the per-topic check when some topic has one (a rare setting).
        self.fast[3] = _NEVER if any_before else -1
        if self.on_change is not None:
            self.on_change(*self.fast)

    def refresh(self, admin: AdminClient, topics: Iterable[str], partition_counts: dict[str, int] | None = None,
                timeout: float = 10.0) -> None:
        """Read ``max.message.bytes`` and the timestamp settings of ``topics`` from the broker (blocking).

        A topic whose config cannot be read (ACLs without DescribeConfigs) keeps what is known
        (the producer's own limit otherwise); that is logged, never fatal."""
        self.request(admin, topics, partition_counts, timeout)
        self.apply_pending(wait=timeout + 1)

    def request(self, admin: AdminClient, topics: Iterable[str], partition_counts: dict[str, int] | None = None,
                timeout: float = 10.0) -> None:
        """Ask for the topics' configs without waiting; :meth:`apply_pending` applies the answers."""
        names = sorted(set(topics))
        if not names:
            return
        try:
            futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in names],
                                             request_timeout=timeout)
        except KafkaException as e:
            log.warning("cannot read topic configs; output size checks use what is known", error=str(e))
            return
        self.pending = (futures, dict(partition_counts or {}))
        self._waited = False

    def apply_pending(self, wait: float = 0.0) -> None:
        """Apply the answers of the last :meth:`request` once all arrived (waiting up to ``wait`` s,
        once per request: while the brokers do not answer, later calls do not wait again)."""
        if self.pending is None:
            return
        futures, counts = self.pending
        if not self._waited:
            self._waited = True
            concurrent.futures.wait(list(futures.values()), timeout=wait)
        if not all(f.done() for f in futures.values()):
            return
        self.pending = None
        for res, fut in futures.items():
            try:
                cfg = fut.result(0)
            except Exception as e:
                log.warning("cannot read topic config; its size check uses what is known", topic=res.name, error=str(e))
                continue

            def value(key: str) -> str | None:
                entry = cfg.get(key)
                return None if entry is None or entry.value is None else str(entry.value)

            diff = _ms(value("message.timestamp.difference.max.ms"))
            before, after = _ms(value("message.timestamp.before.max.ms")), _ms(value("message.timestamp.after.max.ms"))
            old = self.topics.get(res.name)
            self.topics[res.name] = TopicLimit(
                max_message_bytes=int(value("max.message.bytes") or _NO_LIMIT),
                create_time=(value("message.timestamp.type") or "CreateTime") != "LogAppendTime",
                before_ms=before if before is not None or "message.timestamp.before.max.ms" in cfg else diff,
                after_ms=after if after is not None or "message.timestamp.after.max.ms" in cfg else diff,
                partitions=counts.get(res.name) or (old.partitions if old is not None else None),
            )
        self._recompute()

    def learn(self, topic: str, record_bytes: int) -> bool:
        """The broker rejected a ``record_bytes`` record of ``topic`` as too large although it was
        within the known limit: keep a limit below it (so the replay catches it), whatever the
        topic's config says later. Only a record near the limit teaches anything; a small one
        was rejected with its batch."""
        limit = self.max_bytes(topic)
        if record_bytes + OVERHEAD <= limit and 2 * (record_bytes + OVERHEAD) > limit:
            self.learned[topic] = record_bytes + OVERHEAD - 1
            self._recompute()
            log.warning("the broker rejected a record within the known limit; records of its size now count as "
                        "too large", topic=topic, record_bytes=record_bytes, limit=self.learned[topic])
            return True
        return False

    # --- the per-record check ---------------------------------------------------------------------

    def check(self, topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int = -1,
              headers: list[tuple[str, bytes]] | None = None) -> None:
        """Raise :class:`RecordProductionError` if ``topic`` would reject this record."""
        size = record_size(key, value, headers)
        limit = self.max_bytes(topic)
        if size + OVERHEAD > limit:
            t = self.topics.get(topic)
            if topic in self.learned and self.learned[topic] == limit:
                which = f"the {limit} bytes topic {topic} was seen to accept (a larger record was rejected)"
            elif t is not None and t.max_message_bytes < self.producer_max:
                which = f"max.message.bytes={t.max_message_bytes} of topic {topic}"
            else:
                which = f"the producer's message.max.bytes={self.producer_max} (topic {topic})"
            raise RecordProductionError(
                topic, "MSG_SIZE_TOO_LARGE",
                f"record of {size} bytes (key+value+headers, plus up to {OVERHEAD} bytes framing) exceeds {which}")
        t = self.topics.get(topic)
        if t is None:
            return
        if t.create_time:
            if ts < -1:
                raise RecordProductionError(topic, "INVALID_TIMESTAMP", f"timestamp {ts} is negative")
            now = int(time.time() * 1000)
            if ts > 0 and t.after_ms is not None and ts > now + t.after_ms:
                raise RecordProductionError(
                    topic, "INVALID_TIMESTAMP",
                    f"timestamp {ts} is more than message.timestamp.after.max.ms={t.after_ms} ahead of now ({now}) "
                    f"for topic {topic}")
            if ts > 0 and t.before_ms is not None and ts < now - t.before_ms:
                raise RecordProductionError(
                    topic, "INVALID_TIMESTAMP",
                    f"timestamp {ts} is more than message.timestamp.before.max.ms={t.before_ms} behind now ({now}) "
                    f"for topic {topic}")
            if ts > self.fast[1]:
                self._recompute(now)  # the fast bound was set an after.max.ms ago: move it with the clock
        if partition >= 0 and t.partitions and partition >= t.partitions:
            raise RecordProductionError(topic, "_UNKNOWN_PARTITION",
                                        f"partition {partition} does not exist: {topic} has {t.partitions}")

    def fit(self, topic: str, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """Cut a dead-letter record to what ``topic`` accepts, saying so in a header (never lost silently)."""
        limit = self.max_bytes(topic) - OVERHEAD
        size = record_size(key, value, headers)
        if size <= limit:
            return key, value, headers
        note = ("kstreamlet.dlq.truncated",
                f"record of {size} bytes cut to fit {limit} bytes (key {len(key or b'')}, value {len(value or b'')})".encode())
        headers = list(headers) + [note]
        room = limit - record_size(None, None, headers)
        if room < 0:  # the headers alone do not fit: keep the error headers and the note only
            headers = [h for h in headers if h[0].startswith("kstreamlet.error.") or h is note]
            headers = [(k, v[:200]) for k, v in headers]
            room = max(0, limit - record_size(None, None, headers))
        # The key keeps what it needs if the value still gets half the room; otherwise they share it.
        nk, nv = len(key or b""), len(value or b"")
        key_room = min(nk, max(room // 2, room - nv))
        k = key[:key_room] if key is not None else None
        v = value[:max(0, room - len(k or b""))] if value is not None else None
        return k, v, headers


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> int:
    n = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
    if headers:
        for hk, hv in headers:
            n += len(hk) + (len(hv) if hv is not None else 0) + HEADER_OVERHEAD
    return n
