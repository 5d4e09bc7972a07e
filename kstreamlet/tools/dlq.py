"""``kstreamlet dlq show | replay module:app``: dead-letter records with their headers, and their
replay into the topics they came from, exactly once.

A dead-letter record (``runtime/error_policy.py``) is the failed input record's original key,
value and headers, with kstreamlet's headers put *before* the original ones
(``kstreamlet.error.stage/.type/.message``, ``kstreamlet.source.topic/.partition/.offset/.timestamp``,
``kstreamlet.application.id``, for stage ``produce`` also ``kstreamlet.error.output.topic/.code``;
for a failed timer ``kstreamlet.timer.*`` and ``kstreamlet.task``) and, when it was cut to fit
the DLQ, ``kstreamlet.dlq.truncated`` after them. :func:`split_headers` undoes exactly that.

Replay, exactly once: one transactional producer (``transactional.id`` = the replay group,
default ``<application_id>-dlq-replay``) writes each replayed record to its source topic and
partition (original key, value, timestamp and headers, the DLQ's own headers removed) and, in the
same transaction, commits the replay group's DLQ offsets (``send_offsets_to_transaction``). The
group's committed offset is where the next run starts; ``init_transactions`` of a new run
fences an earlier one and aborts its open transaction. So a replay killed at any point and run
again writes every record once: what the first run committed is skipped, what it had not
committed was aborted (a ``read_committed`` reader — the app — never sees it). Records that are
not replayed (filtered out, timer failures without a source record, truncated records) are
passed over: the group's position moves past them, and they stay in the DLQ (``show`` lists
them); replay them later with another ``--group``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kstreamlet.config import Settings
from kstreamlet.runtime.topics import end_offset
from kstreamlet.tools.common import (
    EXIT_OK,
    ToolError,
    add_connection_args,
    add_json_arg,
    admin_client,
    bytes_fields,
    client_config,
    command,
    dumps,
    format_ms,
    kafka_error_text,
    load_tool_app,
    subparser,
    text_or_base64,
)

#: Headers the error policy puts on a dead-letter record (before the record's own headers).
DLQ_HEADERS = frozenset({
    "kstreamlet.error.stage", "kstreamlet.error.type", "kstreamlet.error.message",
    "kstreamlet.error.output.topic", "kstreamlet.error.code",
    "kstreamlet.source.topic", "kstreamlet.source.partition", "kstreamlet.source.offset",
    "kstreamlet.source.timestamp", "kstreamlet.application.id",
    "kstreamlet.timer.operator", "kstreamlet.timer.key", "kstreamlet.timer.domain", "kstreamlet.timer.timestamp",
    "kstreamlet.task",
})
TRUNCATED_HEADER = "kstreamlet.dlq.truncated"

Headers = list[tuple[str, bytes]]


def split_headers(headers: Headers | None) -> tuple[dict[str, bytes], Headers]:
    """``(kstreamlet's DLQ headers, the original record's headers)``: the leading run of DLQ header
    names (each at most once) and a trailing ``kstreamlet.dlq.truncated``; everything else, in
    order, is the original record's (also an original header that happens to share a name)."""
    hs = list(headers or [])
    dlq: dict[str, bytes] = {}
    i = 0
    while i < len(hs) and hs[i][0] in DLQ_HEADERS and hs[i][0] not in dlq:
        dlq[hs[i][0]] = hs[i][1] if hs[i][1] is not None else b""
        i += 1
    rest = hs[i:]
    if rest and rest[-1][0] == TRUNCATED_HEADER:
        dlq[TRUNCATED_HEADER] = rest[-1][1] or b""
        rest = rest[:-1]
    return dlq, rest


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass
class DeadLetter:
    """One dead-letter record: where it is in the DLQ, kstreamlet's headers, the original record."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    dlq_headers: dict[str, bytes]
    headers: Headers

    @classmethod
    def from_message(cls, m: Any) -> "DeadLetter":
        dlq, original = split_headers(m.headers())
        return cls(m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), dlq, original)

    def h(self, name: str) -> str | None:
        return _text(self.dlq_headers.get(f"kstreamlet.{name}"))

    @property
    def stage(self) -> str | None:
        return self.h("error.stage")

    @property
    def error_type(self) -> str | None:
        return self.h("error.type")

    @property
    def source_topic(self) -> str | None:
        return self.h("source.topic")

    @property
    def source_partition(self) -> int | None:
        return _int(self.dlq_headers.get("kstreamlet.source.partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.dlq_headers.get("kstreamlet.source.offset"))

    @property
    def source_timestamp(self) -> int | None:
        return _int(self.dlq_headers.get("kstreamlet.source.timestamp"))

    @property
    def truncated(self) -> bool:
        return TRUNCATED_HEADER in self.dlq_headers

    def not_replayable(self) -> str | None:
        """Why the record cannot be replayed (None when it can)."""
        if self.truncated:
            return "truncated"  # key/value are prefixes of the original
        if not self.source_topic:
            return "no source record" if self.stage == "timer" else "no source topic header"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dlq_partition": self.partition, "dlq_offset": self.offset, "timestamp": self.timestamp,
            "stage": self.stage, "error_type": self.error_type, "error_message": self.h("error.message"),
            "source_topic": self.source_topic, "source_partition": self.source_partition,
            "source_offset": self.source_offset, "source_timestamp": self.source_timestamp,
            "application_id": self.h("application.id"), "truncated": self.truncated,
        }
        out.update(bytes_fields("key", self.key))
        out.update(bytes_fields("value", self.value))
        out["dlq_headers"] = {k: text_or_base64(v)[0] for k, v in self.dlq_headers.items()}
        out["headers"] = [[k, text_or_base64(v)[0]] for k, v in self.headers]
        return out

    def to_text(self) -> str:
        err = f"{self.error_type}: {self.h('error.message')}"
        where = (f"{self.source_topic}[{self.source_partition}]@{self.source_offset}" if self.source_topic
                 else f"timer {self.h('timer.domain')}@{self.h('timer.timestamp')} of {self.h('timer.operator')}")
        extra = ""
        if self.h("error.output.topic"):
            extra = f" (output {self.h('error.output.topic')}: {self.h('error.code')})"
        lines = [f"#{self.partition}:{self.offset}  {format_ms(self.timestamp)}  stage={self.stage}  {err}{extra}",
                 f"  source: {where}"]
        k, kb = text_or_base64(self.key)
        v, vb = text_or_base64(self.value)
        lines.append(f"  key{'(base64)' if kb else ''}: {k!r}  value{'(base64)' if vb else ''}: {v!r}")
        if self.truncated:
            lines.append(f"  truncated: {self.h('dlq.truncated')}")
        if self.headers:
            lines.append("  headers: " + ", ".join(f"{hk}={text_or_base64(hv)[0]}" for hk, hv in self.headers))
        return "\n".join(lines)


@dataclass
class Filter:
    """Which dead-letter records a command takes (None = any). Offsets are the DLQ's, inclusive."""

    error_type: str | None = None
    source_topic: str | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, d: DeadLetter) -> bool:
        if self.error_type is not None and d.error_type != self.error_type:
            return False
        if self.source_topic is not None and d.source_topic != self.source_topic:
            return False
        return True


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    md = consumer.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise ToolError(f"dead-letter topic {topic} does not exist", 1)
    return sorted(t.partitions)


def _stops(consumer: Consumer, topic: str, parts: list[int], to_offset: int | None) -> dict[int, int]:
    """Per partition, the offset to stop before: the end as of now (read_committed: the last stable
    offset), or ``to_offset + 1``."""
    stops = {}
    for p in parts:
        high = end_offset(consumer, topic, p)
        stops[p] = high if to_offset is None else min(high, to_offset + 1)
    return stops


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({**client_config(settings), "group.id": group, "enable.auto.commit": False,
                     "isolation.level": "read_committed", "enable.partition.eof": True,
                     "auto.offset.reset": "earliest"})


def _read(consumer: Consumer, topic: str, starts: dict[int, int], stops: dict[int, int], timeout: float,
          batch: int = 500) -> Iterator[list[DeadLetter]]:
    """Batches of dead letters from ``starts`` up to ``stops`` (exclusive) of each partition."""
    todo = {p for p in starts if starts[p] < stops[p]}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, starts[p] if starts[p] >= 0 else OFFSET_BEGINNING) for p in todo])
    quiet_deadline = time.monotonic() + timeout
    while todo:
        msgs = consumer.consume(batch, 0.5)
        out = []
        for m in msgs:
            err = m.error()
            p = m.partition()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    todo.discard(p)
                    continue
                raise ToolError(f"reading {topic}: {err.str()}", 1)
            if p not in todo:
                continue
            offset = int(m.offset() or 0)
            if offset >= stops[p]:
                todo.discard(p)
                continue
            out.append(DeadLetter.from_message(m))
            if offset + 1 >= stops[p]:
                todo.discard(p)
        if out:
            quiet_deadline = time.monotonic() + timeout
            yield out
        elif time.monotonic() > quiet_deadline:
            raise ToolError(f"no records from {topic} partitions {sorted(todo)} for {timeout:g}s", 1)
        if todo and not out:
            for pos in consumer.position([TopicPartition(topic, p) for p in todo]):
                if pos.offset >= 0 and pos.offset >= stops[pos.partition]:
                    todo.discard(pos.partition)


def show(settings: Settings, dlq_topic: str, flt: Filter | None = None, limit: int | None = None,
         timeout: float = 30.0) -> Iterator[DeadLetter]:
    """Dead-letter records of ``dlq_topic`` matching ``flt`` (oldest first, at most ``limit``), read
    with ``read_committed`` and no consumer group (nothing is committed)."""
    flt = flt or Filter()
    c = _consumer(settings, f"kstreamlet-tools-{uuid.uuid4().hex}")
    try:
        parts = _partitions(c, dlq_topic)
        starts = {p: flt.from_offset if flt.from_offset is not None else OFFSET_BEGINNING for p in parts}
        stops = _stops(c, dlq_topic, parts, flt.to_offset)
        starts = {p: s if s >= 0 else _low(c, dlq_topic, p) for p, s in starts.items()}
        n = 0
        for batch in _read(c, dlq_topic, starts, stops, timeout):
            for d in batch:
                if flt.matches(d):
                    yield d
                    n += 1
                    if limit is not None and n >= limit:
                        return
    finally:
        c.close()


def _low(c: Consumer, topic: str, p: int) -> int:
    return int(c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[0])


def replay_group(application_id: str) -> str:
    """The default replay consumer group (and ``transactional.id``) of an app."""
    return f"{application_id}-dlq-replay"


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    #: ``{source topic: records written}``.
    by_topic: dict[str, int] = field(default_factory=dict)
    #: The replay group's committed DLQ offsets after the run (``{partition: next offset}``).
    committed: dict[int, int] = field(default_factory=dict)
    dry_run: bool = False
    records: list[DeadLetter] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dry_run": self.dry_run, "replayed" if not self.dry_run else "would_replay": self.replayed,
                               "skipped": self.skipped, "by_topic": self.by_topic,
                               "committed_offsets": {str(p): o for p, o in sorted(self.committed.items())}}
        if self.dry_run:
            out["records"] = [d.to_json() for d in self.records]
        return out


def replay(settings: Settings, dlq_topic: str, group: str, flt: Filter | None = None, limit: int | None = None,
           batch_size: int = 100, dry_run: bool = False, timeout: float = 30.0,
           on_record: Callable[[DeadLetter, str | None], None] | None = None) -> ReplayResult:
    """Replay dead-letter records into their source topics, exactly once per ``group`` (see the
    module docstring). ``on_record(record, skip_reason)`` is told about each record considered."""
    flt = flt or Filter()
    result = ReplayResult(dry_run=dry_run)
    consumer = _consumer(settings, group)
    producer: Producer | None = None
    try:
        if not dry_run:
            producer = Producer({**client_config(settings), "transactional.id": group, "enable.idempotence": True,
                                 "transaction.timeout.ms": 60_000, "linger.ms": 5,
                                 "partitioner": "murmur2_random"})  # as the app's producers (runtime/clients.py)
            producer.init_transactions(60)  # fences an earlier replay of this group, aborts its open transaction
        parts = _partitions(consumer, dlq_topic)
        committed = consumer.committed([TopicPartition(dlq_topic, p) for p in parts], timeout=30)
        starts = {}
        for tp in committed:
            if tp.error is not None:
                raise ToolError(f"cannot read the offsets of group {group}: {tp.error.str()}", 1)
            start = tp.offset if tp.offset >= 0 else _low(consumer, dlq_topic, tp.partition)
            if flt.from_offset is not None:
                start = max(start, flt.from_offset)
            starts[tp.partition] = start
        stops = _stops(consumer, dlq_topic, parts, flt.to_offset)
        partitions_of: dict[str, int | None] = {}
        done = False
        for batch in _read(consumer, dlq_topic, starts, stops, timeout, batch=batch_size):
            taken: list[tuple[DeadLetter, str | None]] = []
            for d in batch:
                if limit is not None and result.replayed >= limit:
                    done = True
                    break
                reason = d.not_replayable() or (None if flt.matches(d) else "filtered out")
                if reason is None:
                    topic = d.source_topic or ""
                    if topic not in partitions_of:
                        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
                        partitions_of[topic] = len(md.partitions) if md is not None and md.error is None else None
                    if partitions_of[topic] is None:
                        if not dry_run and taken:
                            _commit(producer, consumer, dlq_topic, taken, result, partitions_of)
                        raise ToolError(f"source topic {topic} of DLQ record {d.partition}:{d.offset} does not exist; "
                                        f"create it and run the replay again (records before it are replayed)")
                    result.replayed += 1
                    result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
                    if dry_run:
                        result.records.append(d)
                else:
                    result.skipped[reason] = result.skipped.get(reason, 0) + 1
                taken.append((d, reason))
                if on_record is not None:
                    on_record(d, reason)
            if not dry_run and taken:
                _commit(producer, consumer, dlq_topic, taken, result, partitions_of)
            if done:
                break
        if dry_run:
            result.committed = {p: o for p, o in starts.items()}
        return result
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(10)


def _commit(producer: Producer | None, consumer: Consumer, dlq_topic: str, taken: list[tuple[DeadLetter, str | None]],
            result: ReplayResult, partitions_of: dict[str, int | None] | None = None) -> None:
    """One transaction: the replayed records of ``taken`` and the DLQ offsets past all of ``taken``."""
    assert producer is not None
    offsets: dict[int, int] = {}
    try:
        producer.begin_transaction()
        for d, reason in taken:
            offsets[d.partition] = max(offsets.get(d.partition, 0), d.offset + 1)
            if reason is not None:
                continue
            topic = d.source_topic or ""
            n = (partitions_of or {}).get(topic)
            part = d.source_partition
            kwargs: dict[str, Any] = {"key": d.key, "value": d.value, "headers": d.headers or None}
            if part is not None and n is not None and 0 <= part < n:
                kwargs["partition"] = part  # the partition it was read from (co-partitioning holds)
            ts = d.source_timestamp if d.source_timestamp is not None else d.timestamp
            if ts is not None and ts >= 0:
                kwargs["timestamp"] = ts
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.send_offsets_to_transaction([TopicPartition(dlq_topic, p, o) for p, o in sorted(offsets.items())],
                                             consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
    except KafkaException as e:
        try:
            producer.abort_transaction(30)
        except KafkaException:
            pass
        raise ToolError(f"replay transaction failed (nothing of it was written; run the replay again): "
                        f"{kafka_error_text(e)}", 1) from None
    result.committed.update(offsets)


# --- commands ---------------------------------------------------------------------------------------

def _filter(args: argparse.Namespace) -> Filter:
    return Filter(args.error_type, args.source_topic, args.from_offset, args.to_offset)


@command
def _cmd_show(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    s = app.settings
    topic = args.topic or s.effective_dlq_topic
    admin_client(s)
    n = 0
    for d in show(s, topic, _filter(args), args.limit):
        n += 1
        print(dumps(d.to_json()) if args.json else d.to_text())
    if not args.json:
        print(f"{n} dead-letter record(s) in {topic}", file=sys.stderr)
    return EXIT_OK


@command
def _cmd_replay(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    s = app.settings
    topic = args.topic or s.effective_dlq_topic
    group = args.group or replay_group(s.application_id)
    if args.batch_size < 1:
        raise ToolError("--batch-size must be >= 1")
    admin_client(s)

    def tell(d: DeadLetter, reason: str | None) -> None:
        if args.json:
            return
        verb = ("would replay" if args.dry_run else "replayed") if reason is None else f"skipped ({reason})"
        print(f"{verb} #{d.partition}:{d.offset} -> {d.source_topic}[{d.source_partition}] "
              f"{d.error_type}: {d.h('error.message')}")

    result = replay(s, topic, group, _filter(args), args.limit, args.batch_size, args.dry_run, on_record=tell)
    if args.json:
        print(dumps(result.to_json()))
    else:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(result.skipped.items())) or "none"
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {result.replayed} record(s) from {topic} (group {group}); skipped: {skipped}", file=sys.stderr)
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", help="module:attribute of the App (its settings name the DLQ)")
    p.add_argument("--topic", help="dead-letter topic (default: the app's dlq_topic, <application_id>-dlq)")
    p.add_argument("--error-type", help="only records whose kstreamlet.error.type is this (e.g. ValueError)")
    p.add_argument("--source-topic", help="only records read from this topic")
    p.add_argument("--from-offset", type=int, help="first DLQ offset (inclusive)")
    p.add_argument("--to-offset", type=int, help="last DLQ offset (inclusive)")
    p.add_argument("--limit", type=int, help="at most this many records")
    add_connection_args(p)


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet dlq ...``."""
    top = subparsers.add_parser("dlq", help="show and replay dead-letter records",
                                description="Dead-letter records of an app: show them, replay them exactly once.")
    sub = top.add_subparsers(dest="dlq_cmd", required=True)
    s = subparser(sub, "show", "list dead-letter records with their error and source headers", """
  kstreamlet dlq show services.wordcount:app
  kstreamlet dlq show myapp:app --error-type ValueError --source-topic orders --limit 10
  kstreamlet dlq show myapp:app --from-offset 100 --to-offset 199 --json | jq .error_message
""")
    _common(s)
    add_json_arg(s, "one JSON object per record (JSON lines)")
    s.set_defaults(fn=_cmd_show)
    r = subparser(sub, "replay", "re-inject dead-letter records into their source topics, exactly once", """
  kstreamlet dlq replay myapp:app --dry-run
  kstreamlet dlq replay myapp:app --error-type ValueError
  kstreamlet dlq replay myapp:app --source-topic orders --to-offset 500 --json
""", description="Write each dead-letter record's original key, value, timestamp and headers (without the DLQ's "
                 "headers) to the topic and partition it was read from. Exactly once: the writes and the replay "
                 "group's DLQ offsets are one transaction per batch, so a killed replay run again neither "
                 "duplicates nor loses a record; records already replayed by the group are not replayed again. "
                 "Records passed over (filters, timer failures, truncated records) stay in the DLQ.")
    _common(r)
    r.add_argument("--group", help="replay consumer group and transactional.id (default <application_id>-dlq-replay)")
    r.add_argument("--batch-size", type=int, default=100, help="records per transaction (default 100)")
    r.add_argument("--dry-run", action="store_true", help="print what would be replayed; write and commit nothing")
    add_json_arg(r, "a summary")
    r.set_defaults(fn=_cmd_replay)


__all__ = ["add_parser", "DLQ_HEADERS", "TRUNCATED_HEADER", "split_headers", "DeadLetter", "Filter", "show",
           "replay", "replay_group", "ReplayResult"]
