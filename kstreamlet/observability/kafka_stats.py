"""librdkafka statistics → consumer lag gauges and records-out counters.

librdkafka emits a JSON document every ``statistics.interval.ms`` through ``stats_cb``, served
on the thread that polls the client (the member's loop: ``consume`` / ``poll``), so nothing here
adds a request to the brokers or a cost to the per-record path. The member sets
:data:`STATISTICS_INTERVAL_MS` on its consumer and producer unless ``kafka_config`` sets
``statistics.interval.ms`` itself (``0`` turns statistics, and with them these metrics, off).

Consumer (per assigned input partition, ``topics.<t>.partitions.<p>``):

- ``kstreamlet_consumer_lag_records`` = end - position, where end is ``ls_offset`` (the last
  stable offset: the consumer reads ``read_committed``; ``hi_offset`` if unknown) and position
  is ``app_offset`` (the offset after the last record handed to kstreamlet), else the
  ``committed_offset``, else ``lo_offset``. librdkafka's own ``consumer_lag`` is measured from
  the committed offset it knows of, which offsets committed through the transaction
  (``send_offsets_to_transaction``) never update.
- ``kstreamlet_consumer_lag_seconds`` = while the lag is > 0, wall clock - the timestamp of
  the last record consumed from the partition (noted per run of records by the task
  manager), or seconds since the partition was assigned when none was consumed yet; 0 when
  caught up. It is the age of where the member reads, a lower bound of how old the oldest
  unread record is.

Producer (``topics.<t>.partitions.<p>.msgs``, messages produced to each partition, per
producer instance): ``kstreamlet_records_out_total{topic}`` grows by the increase of that
sum less the watermark records the collector sent to the topic. A rebuilt producer starts a
new count; records produced after the last statistics before a process exits are not counted.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import structlog

from kstreamlet import metrics

log = structlog.get_logger("kstreamlet.stats")

#: librdkafka ``statistics.interval.ms`` of the member's consumer and producer (unless kafka_config sets it).
STATISTICS_INTERVAL_MS = 5000

TP = tuple[str, int]


def _positions(p: dict[str, Any]) -> tuple[int, int]:
    end = p.get("ls_offset", -1)
    if end is None or end < 0:
        end = p.get("hi_offset", -1)
    pos = p.get("app_offset", -1)
    if pos is None or pos < 0:
        pos = p.get("committed_offset", -1)
    if pos is None or pos < 0:
        pos = p.get("lo_offset", -1)
    return int(end if end is not None else -1), int(pos if pos is not None else -1)


class ConsumerStats:
    """The member consumer's ``stats_cb``: lag per assigned partition."""

    def __init__(self, assigned_at: dict[TP, float], consumed_ts: dict[TP, int],
                 clock: Callable[[], float] = time.time, chain: Callable[[str], None] | None = None,
                 active: Callable[[], bool] | None = None) -> None:
        #: Assigned input partitions -> wall clock of their assignment (kept by the member).
        self.assigned_at = assigned_at
        #: Input partition -> timestamp (ms) of the last record consumed (kept by the task manager).
        self.consumed_ts = consumed_ts
        self.clock = clock
        self.chain = chain
        #: False once the consumer was abandoned (a rebuild): its statistics no longer describe the assignment.
        self.active = active

    def __call__(self, raw: str) -> None:
        try:
            if self.active is None or self.active():
                self.update(json.loads(raw))
        except Exception as e:  # statistics must never break the loop that serves them
            log.warning("consumer statistics not understood", error=repr(e))
        if self.chain is not None:
            self.chain(raw)

    def update(self, stats: dict[str, Any]) -> None:
        now = self.clock()
        assigned = self.assigned_at
        for topic, t in (stats.get("topics") or {}).items():
            for ps, p in (t.get("partitions") or {}).items():
                part = int(ps)
                tp = (topic, part)
                if part < 0 or tp not in assigned:
                    continue
                end, pos = _positions(p)
                if end < 0 or pos < 0:
                    continue
                lag = max(0, end - pos)
                seconds = 0.0
                if lag:
                    ts = self.consumed_ts.get(tp)
                    seconds = max(0.0, now - ts / 1000.0) if ts is not None else max(0.0, now - assigned[tp])
                metrics.CONSUMER_LAG.labels(topic, ps).set(lag)
                metrics.CONSUMER_LAG_SECONDS.labels(topic, ps).set(seconds)


class ProducerStats:
    """A producer's ``stats_cb``: records out per topic (one instance per producer)."""

    def __init__(self, watermarks_sent: dict[str, int], chain: Callable[[str], None] | None = None) -> None:
        #: Topic -> watermark records the collector sent to it (not counted as records out).
        self.watermarks_sent = watermarks_sent
        #: Topic -> records out already added to the counter from this producer.
        self.reported: dict[str, int] = {}
        self.chain = chain

    def __call__(self, raw: str) -> None:
        try:
            self.update(json.loads(raw))
        except Exception as e:
            log.warning("producer statistics not understood", error=repr(e))
        if self.chain is not None:
            self.chain(raw)

    def update(self, stats: dict[str, Any]) -> None:
        for topic, t in (stats.get("topics") or {}).items():
            # Partition -1 is librdkafka's "unassigned" queue: a record produced without a partition
            # passes through it before its partition is known; it is counted on the real one.
            produced = sum(int(p.get("msgs", 0)) for ps, p in (t.get("partitions") or {}).items() if int(ps) >= 0)
            out = produced - self.watermarks_sent.get(topic, 0)
            delta = out - self.reported.get(topic, 0)
            if delta > 0:
                metrics.RECORDS_OUT.labels(topic).inc(delta)
                self.reported[topic] = out
