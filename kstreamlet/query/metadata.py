"""Who owns what: every member's advertised URL and tasks, known to every other member.

Each member publishes ``{instance, url, client_id, tasks: [[sub-topology, partition], ...],
published}`` to the compacted topic ``<application_id>-query-metadata`` (one partition, keyed
by instance id) whenever its set of tasks changes and at least every ``refresh`` seconds (a
heartbeat), and a tombstone when it stops. A background thread of every member reads that
topic from the start and keeps the latest entry per instance, with the local time it last
heard of it. A member that died without its tombstone (``kill -9``) drops out once it has not
been heard of for ``expiry`` seconds (3 heartbeats + 1 s). A partition's owner is the live
member whose latest entry lists it (the latest publication wins a handover's brief overlap;
an instance asked for a key it no longer owns answers 503 itself, never a stale value).

The group coordinator is deliberately not asked (``describe_consumer_groups``): under a broker
outage librdkafka 2.16's coordinator requests from a second thread aborted the whole process
(``rd_kafka_enq_once_del_source_return`` assertion) in the broker-fault tests.

Nothing here runs on the member's loop thread: the thread reads the task manager's task keys
(a snapshot, retried if the dict changes meanwhile) and publishes on change.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import structlog
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

log = structlog.get_logger("kstreamlet.query")

TaskKey = tuple[int, int]


def metadata_topic(application_id: str) -> str:
    return f"{application_id}-query-metadata"


@dataclass
class InstanceInfo:
    """One member as it published itself."""

    instance: str
    url: str
    client_id: str
    tasks: list[TaskKey] = field(default_factory=list)
    published: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "url": self.url, "client_id": self.client_id,
                "tasks": [list(t) for t in self.tasks], "published": self.published}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "InstanceInfo":
        return cls(str(d["instance"]), str(d["url"]), str(d.get("client_id", "")),
                   [(int(a), int(b)) for a, b in d.get("tasks", [])], float(d.get("published", 0.0)))


class MetadataBoard:
    """Publishes this member's entry (on change and as a heartbeat) and keeps everyone's."""

    def __init__(self, me: InstanceInfo, application_id: str, kafka_config: dict[str, Any],
                 tasks: Callable[[], Iterable[TaskKey]],
                 make_consumer: Callable[[dict[str, Any]], Any], make_producer: Callable[[dict[str, Any]], Any],
                 refresh: float = 2.0, expiry: float | None = None) -> None:
        self.me = me
        self.group_id = application_id
        self.topic = metadata_topic(application_id)
        self._config = kafka_config
        self._tasks = tasks
        self._make_consumer = make_consumer
        self._make_producer = make_producer
        self.refresh = refresh
        #: Seconds without a heartbeat after which a member counts as gone.
        self.expiry = 3 * refresh + 1.0 if expiry is None else expiry
        self._lock = threading.Lock()
        #: instance id -> its latest published entry (tombstones remove it)
        self.entries: dict[str, InstanceInfo] = {}
        #: instance id -> time.monotonic() when its latest entry was read (or published, for ours)
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None
        self._published: tuple[TaskKey, ...] | None = None
        self._published_at = 0.0
        self.error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._producer = self._make_producer({**self._config, "enable.idempotence": True, "linger.ms": 0})
        self._consumer = self._make_consumer({
            **self._config, "group.id": f"{self.group_id}-query-metadata", "enable.auto.commit": False,
            "enable.partition.eof": False, "auto.offset.reset": "earliest"})
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread = threading.Thread(target=self._run, name="kstreamlet-query-metadata", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading; publish this member's tombstone (it serves no queries any more)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            if self._producer is not None:
                self._producer.produce(self.topic, None, self.me.instance.encode())
                self._producer.flush(timeout)
        except Exception as e:  # best effort: the group's member list drops us anyway
            log.warning("could not publish the query metadata tombstone", error=str(e))
        try:
            if self._consumer is not None:
                self._consumer.close()
        except Exception:
            pass

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._publish_if_due()
                self._read()
            except Exception as e:  # never ends the thread: queries answer 503 while it cannot know
                self.error = f"{type(e).__name__}: {e}"
                log.warning("query metadata update failed", error=self.error)
                self._stop.wait(1.0)

    def _snapshot(self) -> tuple[TaskKey, ...]:
        for _ in range(10):
            try:
                return tuple(sorted(self._tasks()))
            except RuntimeError:  # the loop thread changed the task dict meanwhile
                time.sleep(0.01)
        return self._published or ()

    def _publish_if_due(self) -> None:
        """Publish this member's entry when its tasks changed, or as the heartbeat."""
        tasks = self._snapshot()
        now = time.monotonic()
        if tasks == self._published and now - self._published_at < self.refresh:
            return
        self._published, self._published_at = tasks, now
        self.me.tasks = list(tasks)
        self.me.published = time.time()
        self._producer.produce(self.topic, json.dumps(self.me.to_json()).encode(), self.me.instance.encode())
        self._producer.poll(0)
        with self._lock:
            self.entries[self.me.instance] = InstanceInfo.from_json(self.me.to_json())
            self.seen[self.me.instance] = now

    def _read(self) -> None:
        for m in self._consumer.consume(500, 0.2):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.debug("query metadata read error", error=str(err))
                continue
            key = (m.key() or b"").decode(errors="replace")
            value = m.value()
            with self._lock:
                if value is None:
                    if key != self.me.instance:
                        self.entries.pop(key, None)
                        self.seen.pop(key, None)
                    continue
                try:
                    info = InstanceInfo.from_json(json.loads(value))
                except (ValueError, KeyError, TypeError):
                    continue
                if key == self.me.instance:
                    continue  # our own entry is what we hold, not an older record of it
                self.entries[key] = info
                self.seen[key] = time.monotonic()
        if self._producer is not None:
            self._producer.poll(0)

    # --- answers ---------------------------------------------------------------------------------

    def _live(self) -> list[InstanceInfo]:
        now = time.monotonic()
        with self._lock:
            return [e for name, e in self.entries.items()
                    if name == self.me.instance or now - self.seen.get(name, 0.0) <= self.expiry]

    def instances(self) -> list[InstanceInfo]:
        """The live members' entries: ours, and those heard of within ``expiry`` seconds."""
        return self._live()

    def owners(self) -> dict[TaskKey, InstanceInfo]:
        """(sub-topology, partition) -> the live instance whose latest entry lists it (with its URL);
        the latest publication wins while a handover has two entries listing it."""
        out: dict[TaskKey, InstanceInfo] = {}
        for e in sorted(self._live(), key=lambda e: e.published):
            for t in e.tasks:
                out[t] = e
        return out