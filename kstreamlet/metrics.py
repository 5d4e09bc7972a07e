"""Prometheus metrics of a kstreamlet process (served on ``/metrics`` by the HTTP endpoint).

Counters are updated per batch or per checkpoint, never per record, so they cost nothing
measurable on the hot path.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("kstreamlet_records_in_total", "Input records processed", ["topic"])
DLQ_RECORDS = Counter("kstreamlet_dlq_records_total", "Records sent to the dead-letter topic or skipped", ["policy"])
CHECKPOINTS = Counter("kstreamlet_checkpoints_total", "Committed checkpoints")
CHECKPOINT_ABORTS = Counter("kstreamlet_checkpoint_aborts_total", "Aborted checkpoints (replayed)")
CHECKPOINT_SECONDS = Histogram("kstreamlet_checkpoint_seconds", "Duration of a checkpoint commit",
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REBALANCES = Counter("kstreamlet_rebalances_total", "Partition assignment changes", ["kind"])
RESTORED_RECORDS = Counter("kstreamlet_restore_records_total", "Changelog records restored", ["store"])
RESTORE_REMAINING = Gauge("kstreamlet_restore_remaining_records", "Changelog records left to restore", ["store", "partition"])
ASSIGNED_PARTITIONS = Gauge("kstreamlet_assigned_partitions", "Input partitions owned by this process")
LATE_RECORDS = Counter("kstreamlet_late_records_total", "Records dropped or side-output as late by event-time operators",
                       ["operator"])
TASK_WATERMARK = Gauge("kstreamlet_task_watermark_ms",
                       "Event-time watermark of a task (epoch ms), set at each checkpoint once it has one", ["task"])
PRODUCTION_ERRORS = Counter("kstreamlet_production_errors_total",
                            "Output records the broker would reject (too large, invalid timestamp...), handled by error_policy",
                            ["topic", "error", "policy"])
