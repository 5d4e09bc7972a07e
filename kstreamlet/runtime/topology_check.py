"""The start-up check of the topology against the one the application ran before.

The stores (with serdes) and repartition topics of the topology (topology/record.py) are kept in
the compacted topic ``<application_id>-topology``, one record per store / topic keyed by
``store:<name>`` / ``repartition:<topic>`` (value: JSON). At start, before joining the group, the
member reads the topic to its end, compares, and

- fails with :class:`TopologyChangeError` (a ConfigError: one line per change, naming the stores,
  what changed and the fix) when the change would silently re-map state — shifted generated
  names, a name reused for another operator, a store whose serde changed, a removed store —
  unless ``allow_topology_change`` is set;
- otherwise writes what differs (new and changed records; with ``allow_topology_change`` also
  tombstones for removed stores), flushed before the member goes on.

Several members starting at once read the same records and write the same values, so the
order does not matter; only a member that passed the check writes. A first start (empty topic)
records the topology as it is.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from kstreamlet.errors import ConfigError
from kstreamlet.runtime.broadcasts import read_all_partitions
from kstreamlet.runtime.topics import create_topics, partition_count
from kstreamlet.topology.builder import Topology
from kstreamlet.topology.record import Change, ResourceRecord, compare, explain, topology_record

log = structlog.get_logger("kstreamlet.topology_check")


class TopologyChangeError(ConfigError):
    """The topology changed in a way that would silently re-map state (see the message)."""

    def __init__(self, message: str, changes: list[Change]) -> None:
        super().__init__(message)
        self.changes = changes


def topology_topic(application_id: str) -> str:
    return f"{application_id}-topology"


def ensure_topic(admin: AdminClient, topic: str, replication: int = -1) -> None:
    if partition_count(admin, topic) is not None:
        return
    try:
        create_topics(admin, {topic: 1}, config={"cleanup.policy": "compact"}, exist_ok=True)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def read_recorded(make_consumer: Callable[[dict[str, Any]], Consumer], config: dict[str, Any],
                  application_id: str, topic: str, timeout: float = 30.0) -> dict[str, ResourceRecord]:
    raw = read_all_partitions(make_consumer, config, application_id, topic, 1, timeout=timeout).get(0, {})
    out: dict[str, ResourceRecord] = {}
    for key, value in raw.items():
        try:
            rec = ResourceRecord.from_json(json.loads(value))
        except (ValueError, TypeError) as e:
            log.warning("ignoring an unreadable topology record", key=key.decode(errors="replace"), error=str(e))
            continue
        out[rec.key] = rec
    return out


def check_topology(topology: Topology, settings: Any, admin: AdminClient, config: dict[str, Any],
                   make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer,
                   make_producer: Callable[[dict[str, Any]], Producer] = Producer) -> list[Change]:
    """Compare ``topology`` with the recorded one; raise TopologyChangeError or record it.
    Returns the changes accepted under ``allow_topology_change`` (empty when nothing changed)."""
    app = settings.application_id
    topic = topology_topic(app)
    if getattr(settings, "require_explicit_names", False):
        require_explicit_names(topology, settings)
    ensure_topic(admin, topic)
    recorded = read_recorded(make_consumer, config, app, topic)
    current, unknown = topology_record(topology, settings)
    if unknown:
        log.warning("stores of some operators could not be determined (their open() failed outside a task); "
                    "their removal is not checked", operators=unknown)
    changes = compare(recorded, current, unknown)
    if changes and not settings.allow_topology_change:
        raise TopologyChangeError(explain(changes, app, topic), changes)
    if changes:
        log.warning("topology change accepted (allow_topology_change): the affected stores must have been reset",
                    changes=[c.message for c in changes])
    writes: dict[str, bytes | None] = {}
    for key, rec in current.items():
        old = recorded.get(key)
        if old is None or old.to_json() != rec.to_json():
            writes[key] = json.dumps(rec.to_json(), sort_keys=True).encode()
    if settings.allow_topology_change:
        for key, old in recorded.items():
            if key not in current and old.operator not in unknown:
                writes[key] = None
    if writes:
        p = make_producer({**config, "enable.idempotence": True, "linger.ms": 5})
        for key, value in writes.items():
            p.produce(topic, value, key.encode(), partition=0)
        left = p.flush(30)
        if left:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{left} topology records not delivered to {topic}"))
        log.info("topology recorded", topic=topic, records=len(writes), first_start=not recorded)
    return changes


def require_explicit_names(topology: Topology, settings: Any) -> None:
    """ConfigError naming every store and repartition topic whose operator's name was generated."""
    current, _ = topology_record(topology, settings)
    unnamed = sorted({(r.operator, r.resource) for r in current.values() if r.generated})
    if unnamed:
        listed = ", ".join(f"{op!r} ({'key_by' if kind == 'repartition' else 'stateful operator'})" for op, kind in unnamed)
        raise ConfigError(
            f"require_explicit_names (env KSTREAMLET_REQUIRE_EXPLICIT_NAMES) is set, but these operators have generated "
            f"names, which shift when operators are added in front of them: {listed}; give each name= (to keep a "
            "running app's state, its current name)")


__all__ = ["check_topology", "require_explicit_names", "TopologyChangeError", "topology_topic", "read_recorded"]
