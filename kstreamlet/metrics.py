"""Prometheus metrics of a kstreamlet process (served on ``/metrics`` by the HTTP endpoint).

Every metric is documented in docs/metrics.md (name, type, labels, meaning). Counters are
updated per batch, per checkpoint or per librdkafka statistics interval, never per record:
the per-record path only keeps a few plain counts per run of records of one partition
(runtime/tasks.py). Labelled series are created with value 0 as soon as their label values
are known (:func:`init_member`: the topology's topics, the DLQ policy's error types, the
rebalance kinds; :func:`init_task`: a task on assignment), so a dashboard or an alert sees
every series from the start instead of after its first increment.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("kstreamlet_records_in_total",
                     "Input records processed per topic (watermark records of repartition topics excluded; "
                     "replays after an aborted checkpoint count again)", ["topic"])
RECORDS_OUT = Counter("kstreamlet_records_out_total",
                      "Records handed to the producer per topic (sinks, repartition, changelog and dead-letter "
                      "topics; watermark records excluded), from librdkafka producer statistics", ["topic"])
CONSUMER_LAG = Gauge("kstreamlet_consumer_lag_records",
                     "Records of an assigned input partition not consumed yet (last stable offset - position), "
                     "from librdkafka consumer statistics", ["topic", "partition"])
CONSUMER_LAG_SECONDS = Gauge("kstreamlet_consumer_lag_seconds",
                             "While an assigned input partition has lag: wall clock - timestamp of its last consumed "
                             "record (or seconds since assignment if none consumed yet); 0 when caught up",
                             ["topic", "partition"])
PROCESSING_LATENCY = Histogram("kstreamlet_processing_latency_seconds",
                               "Wall clock when a batch's outputs were handed to the producer - the input record's "
                               "timestamp (sampled: the last record of each consumed batch)",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
E2E_LATENCY = Histogram("kstreamlet_e2e_latency_seconds",
                        "Wall clock when the checkpoint committing an input record committed - the record's "
                        "timestamp (sampled: the last record of each batch of the checkpoint)",
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
DLQ_RECORDS = Counter("kstreamlet_dlq_records_total",
                      "Failing records (and timer calls) handled by the error policy: sent to the dead-letter topic "
                      "(dlq), skipped (skip) or stopping the member (fail)", ["policy", "error_type"])
#: The ``error_type`` label values of DLQ_RECORDS (the ``kstreamlet.error.stage`` header of a dead-letter record).
ERROR_TYPES = ("deserialize", "process", "produce", "timer")
CHECKPOINTS = Counter("kstreamlet_checkpoints_total", "Committed checkpoints")
CHECKPOINT_ABORTS = Counter("kstreamlet_checkpoint_aborts_total", "Aborted checkpoints (replayed)")
CHECKPOINT_SECONDS = Histogram("kstreamlet_checkpoint_seconds", "Duration of a checkpoint commit",
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CHECKPOINT_RECORDS = Histogram("kstreamlet_checkpoint_records", "Input records a committed checkpoint covers",
                               buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
CHECKPOINT_STATE_RECORDS = Histogram("kstreamlet_checkpoint_state_records",
                                     "Changelog (state) records a committed checkpoint wrote",
                                     buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
CHECKPOINT_STATE_BYTES = Histogram("kstreamlet_checkpoint_state_bytes",
                                   "Bytes (key + value) of the changelog records a committed checkpoint wrote",
                                   buckets=(0, 1_000, 10_000, 100_000, 1e6, 1e7, 1e8, 1e9))
LAST_CHECKPOINT = Gauge("kstreamlet_last_checkpoint_timestamp_seconds",
                        "Wall clock of the last committed checkpoint (the process start until the first one)")
COMMIT_INTERVAL = Gauge("kstreamlet_commit_interval_seconds", "The commit_interval setting")
REBALANCES = Counter("kstreamlet_rebalances_total", "Partition assignment changes", ["kind"])
#: The ``kind`` label values of REBALANCES.
REBALANCE_KINDS = ("assigned", "revoked", "lost", "rebuilt")
RESTORED_RECORDS = Counter("kstreamlet_restore_records_total", "Changelog records restored", ["store"])
RESTORE_REMAINING = Gauge("kstreamlet_restore_remaining_records", "Changelog records left to restore", ["store", "partition"])
ASSIGNED_PARTITIONS = Gauge("kstreamlet_assigned_partitions", "Input partitions owned by this process")
LATE_RECORDS = Counter("kstreamlet_late_records_total", "Records dropped or side-output as late by event-time operators",
                       ["operator"])
#: The ``operator`` label values of LATE_RECORDS.
LATE_OPERATORS = ("window", "interval_join")
TASK_WATERMARK = Gauge("kstreamlet_task_watermark_ms",
                       "Event-time watermark of a task (epoch ms; tasks that track event time), set at each checkpoint; "
                       "0 until it has one", ["task"])
TASK_STREAM_TIME = Gauge("kstreamlet_task_stream_time_ms",
                         "Stream time of a task: the largest input record timestamp it has seen (epoch ms), set at "
                         "each checkpoint; 0 until it has one", ["task"])
PRODUCTION_ERRORS = Counter("kstreamlet_production_errors_total",
                            "Output records the broker would reject (too large, invalid timestamp...), handled by error_policy",
                            ["topic", "error", "policy"])


def init_member(source_topics: Iterable[str], written_topics: Iterable[str], policy: str,
                commit_interval: float, started_at: float) -> None:
    """Create the member's labelled series at 0 (known at start), and its start-time gauges."""
    for t in source_topics:
        RECORDS_IN.labels(t)
    for t in written_topics:
        RECORDS_OUT.labels(t)
    for e in ERROR_TYPES:
        DLQ_RECORDS.labels(policy, e)
    for k in REBALANCE_KINDS:
        REBALANCES.labels(k)
    for o in LATE_OPERATORS:
        LATE_RECORDS.labels(o)
    COMMIT_INTERVAL.set(commit_interval)
    global _started
    if not _started:
        _started = True
        LAST_CHECKPOINT.set(started_at)


_started = False


def init_partition(topic: str, partition: int) -> None:
    """An input partition was assigned: its lag series exist from now on (0 until statistics arrive)."""
    CONSUMER_LAG.labels(topic, str(partition))
    CONSUMER_LAG_SECONDS.labels(topic, str(partition))


def forget_partition(topic: str, partition: int) -> None:
    """An input partition was revoked or lost: its lag series go (another member reports it now)."""
    for g in (CONSUMER_LAG, CONSUMER_LAG_SECONDS):
        try:
            g.remove(topic, str(partition))
        except KeyError:
            pass


def init_task(task_id: str, event_time: bool) -> None:
    """A task was created (assignment): its stream-time (and watermark) series exist from now on."""
    TASK_STREAM_TIME.labels(task_id)
    if event_time:
        TASK_WATERMARK.labels(task_id)


def forget_task(task_id: str) -> None:
    """A task was closed: its series go."""
    for g in (TASK_WATERMARK, TASK_STREAM_TIME):
        try:
            g.remove(task_id)
        except KeyError:
            pass
