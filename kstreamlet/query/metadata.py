"""Who owns what: every member's advertised URL and tasks, known to every other member.

Each member publishes ``{instance, url, client_id, tasks: [[sub-topology, partition], ...],
published}`` to the compacted topic ``<application_id>-query-metadata`` (one partition, keyed
by instance id) whenever its set of tasks changes, and a tombstone when it stops. A background
thread of every member reads that topic from the start and keeps the latest entry per
instance. Ownership itself comes from the group: the same thread asks the group coordinator
(``describe_consumer_groups``, every ``refresh`` seconds) for the live members and their
assigned partitions, so a member that died without its tombstone drops out at once, and a
partition's owner is the member the group assigned it to. Without an answer from the
coordinator the published tasks of the entries are used.

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
    """Publishes this member's entry and keeps everyone's, plus the group's live assignment."""

    def __init__(self, me: InstanceInfo, application_id: str, kafka_config: dict[str, Any],
                 tasks: Callable[[], Iterable[TaskKey]], subtopology_of: Callable[[str], int],
                 make_consumer: Callable[[dict[str, Any]], Any], make_producer: Callable[[dict[str, Any]], Any],
                 admin: Callable[[], Any], refresh: float = 2.0) -> None:
        self.me = me
        self.group_id = application_id
        self.topic = metadata_topic(application_id)
        self._config = kafka_config
        self._tasks = tasks
        self._subtopology_of = subtopology_of
        self._make_consumer = make_consumer
        self._make_producer = make_producer
        self._admin = admin
        self.refresh = refresh
        self._lock = threading.Lock()
        #: instance id -> its latest published entry (tombstones remove it)
        self.entries: dict[str, InstanceInfo] = {}
        #: client.id -> the (sub-topology, partition) tasks the group assigned it; None: not known
        self.live: dict[str, set[TaskKey]] | None = None
        self.group_stable = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None
        self._published: tuple[TaskKey, ...] | None = None
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
        next_describe = 0.0
        while not self._stop.is_set():
            try:
                self._publish_if_changed()
                self._read()
                now = time.monotonic()
                if now >= next_describe:
                    next_describe = now + self.refresh
                    self._describe()
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

    def _publish_if_changed(self) -> None:
        tasks = self._snapshot()
        if tasks == self._published:
            return
        self._published = tasks
        self.me.tasks = list(tasks)
        self.me.published = time.time()
        self._producer.produce(self.topic, json.dumps(self.me.to_json()).encode(), self.me.instance.encode())
        self._producer.poll(0)
        with self._lock:
            self.entries[self.me.instance] = InstanceInfo.from_json(self.me.to_json())

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
                    continue
                try:
                    info = InstanceInfo.from_json(json.loads(value))
                except (ValueError, KeyError, TypeError):
                    continue
                if key == self.me.instance:
                    continue  # our own entry is what we hold, not an older record of it
                self.entries[key] = info
        if self._producer is not None:
            self._producer.poll(0)

    def _describe(self) -> None:
        admin = self._admin()
        gid = self.group_id
        try:
            desc = admin.describe_consumer_groups([gid], request_timeout=5)[gid].result(timeout=5)
        except Exception as e:
            log.debug("describe_consumer_groups failed; using the published tasks", error=str(e))
            with self._lock:
                self.live = None
            return
        live: dict[str, set[TaskKey]] = {}
        for m in desc.members:
            owned: set[TaskKey] = set()
            tps = m.assignment.topic_partitions if m.assignment is not None else []
            for tp in tps or []:
                try:
                    owned.add((self._subtopology_of(tp.topic), tp.partition))
                except KeyError:
                    continue
            live[m.client_id] = owned
        with self._lock:
            self.live = live
            self.group_stable = getattr(desc.state, "name", str(desc.state)) == "STABLE"

    # --- answers ---------------------------------------------------------------------------------

    def instances(self) -> list[InstanceInfo]:
        """The live members' entries (all published entries while the group's members are unknown)."""
        with self._lock:
            entries = list(self.entries.values())
            live = self.live
        if live is None:
            return entries
        return [e for e in entries if e.client_id in live]

    def owners(self) -> dict[TaskKey, InstanceInfo]:
        """(sub-topology, partition) -> the live instance the group assigned it to (with its URL).
        A partition the group assigned to a member without an entry yet is absent."""
        with self._lock:
            entries = {e.client_id: e for e in self.entries.values()}
            live = self.live
        out: dict[TaskKey, InstanceInfo] = {}
        if live is None:
            for e in sorted(entries.values(), key=lambda e: e.published):
                for t in e.tasks:
                    out[t] = e  # the latest publication wins a conflict
            return out
        for client_id, owned in live.items():
            found = entries.get(client_id)
            if found is None:
                continue
            for t in owned:
                out[t] = found
        return out
