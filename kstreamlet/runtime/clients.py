"""The member's Kafka clients: how each is configured, and the injectable factory that makes
them (a test can hand the member fakes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

if TYPE_CHECKING:
    from kstreamlet.config import Settings
    from kstreamlet.topology.builder import Topology


def client_config(settings: "Settings", logger: Any = None) -> dict[str, Any]:
    """Settings every Kafka client of the app shares — bootstrap servers, the ``kafka_config``
    passthrough and the first-class security settings (``Settings.security_config``: SASL, TLS) —
    and the ``logging.Logger`` librdkafka's own log lines go to (see kstreamlet.logging.librdkafka_logger).
    Every consumer (the member's, restore, broadcast, topology check, sources), producer and admin
    client is built on this dict."""
    extra = {} if logger is None else {"logger": logger}
    return {"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_config, **settings.security_config(),
            **extra}


def consumer_config(s: "Settings", topology: "Topology", base: dict[str, Any], instance_id: str,
                    error_cb: Callable[[KafkaError], None]) -> dict[str, Any]:
    """The group member's consumer: read_committed, offsets committed only by the checkpoint.

    Static membership (``Settings.effective_static_membership``): ``group.instance.id`` is
    ``instance_id`` (the pod name; ``<pod>-w<i>`` per ``--workers`` worker). A static member does not
    leave the group on close (classic: no LeaveGroup; KIP-848: a heartbeat with member epoch -2),
    so a restart within the session timeout gets its partitions back without a rebalance."""
    cc: dict[str, Any] = {
        **base,
        "group.id": s.application_id,
        "client.id": f"{s.application_id}-{instance_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": s.auto_offset_reset,
        "enable.partition.eof": False,
        "group.protocol": s.group_protocol,
        "error_cb": error_cb,
        # librdkafka waits 1 s (fetch.queue.backoff.ms) once its local queue is full, which caps a
        # catch-up read far below what processing can do; a short backoff keeps fetching.
        "fetch.queue.backoff.ms": s.kafka_config.get("fetch.queue.backoff.ms", 10),
    }
    if s.effective_static_membership:
        cc["group.instance.id"] = instance_id
    if s.group_protocol == "classic":
        # Co-partitioned inputs need partition p of each topic in one member: only the range
        # assignor guarantees that (eager); otherwise cooperative-sticky (incremental).
        cc["partition.assignment.strategy"] = "range" if topology.has_copartitioned_inputs else "cooperative-sticky"
        cc["session.timeout.ms"] = int(s.session_timeout * 1000)
        cc["heartbeat.interval.ms"] = max(500, int(s.session_timeout * 1000 / 4))
    elif topology.has_copartitioned_inputs:
        cc["group.remote.assignor"] = "range"
    return cc


def producer_config(s: "Settings", base: dict[str, Any], instance_id: str, error_cb: Callable[[KafkaError], None],
                    batch_size: int | None, on_delivery: Callable[[Any, Any], None]) -> dict[str, Any]:
    """The member's producer: idempotent; transactional under exactly-once (one transactional.id
    per member instance), else reporting delivery errors only (``on_delivery``)."""
    pc: dict[str, Any] = {
        **base,
        "client.id": f"{s.application_id}-{instance_id}-producer",
        "enable.idempotence": True,
        "linger.ms": 5,
        # Same partition for the same key bytes as Kafka's Java clients and Kafka Streams.
        "partitioner": "murmur2_random",
        "error_cb": error_cb,
    }
    if s.processing_guarantee == "exactly_once":
        pc["transactional.id"] = f"{s.application_id}-{instance_id}"
        pc["transaction.timeout.ms"] = int(s.transaction_timeout * 1000)
    else:
        pc["delivery.report.only.error"] = True
        pc["on_delivery"] = on_delivery
    if batch_size is not None:  # librdkafka never splits a batch a topic rejects (runtime/production.py)
        pc["batch.size"] = batch_size
    return pc


class KafkaClients:
    """Makes the member's Kafka clients (confluent-kafka). Injectable: a test can pass fakes."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def admin(self, config: dict[str, Any]) -> AdminClient:
        return AdminClient(config)
