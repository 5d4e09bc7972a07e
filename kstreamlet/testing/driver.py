"""TopologyTestDriver: run an app's topology without a broker, deterministically.

It uses the same tasks and compiled nodes as the real runtime; only the Kafka consumer
and producer are replaced by in-memory topics. Every topic has one partition; records
written to repartition topics are fed back in immediately, as a broker would deliver them.
Error policies apply as in production: with ``dlq`` a failing record appears in the
dead-letter topic with the same headers.

Example::

    from kstreamlet import App, serdes
    from kstreamlet.testing import TopologyTestDriver

    app = App(application_id="upper")
    app.stream("in", value_serde=serdes.STR).map(str.upper).to("out")

    with TopologyTestDriver(app) as driver:
        inp = driver.input_topic("in", value_serde=serdes.STR)
        out = driver.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("hello", timestamp=1000)
        assert out.read_value() == "HELLO"
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kstreamlet import serdes as _serdes
from kstreamlet.errors import ProcessingError
from kstreamlet.runtime.dlq import ErrorHandler
from kstreamlet.runtime.task import Task
from kstreamlet.serdes import Serde
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.store import Store


@dataclass
class TestRecord:
    """A record as read from an output topic."""

    key: Any
    value: Any
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    __test__ = False  # not a pytest test class


class _Message:
    """Looks like ``confluent_kafka.Message`` to a task."""

    __slots__ = ("_t", "_p", "_o", "_k", "_v", "_ts", "_h")

    def __init__(self, t: str, p: int, o: int, k: bytes | None, v: bytes | None, ts: int, h: list[tuple[str, bytes]] | None):
        self._t, self._p, self._o, self._k, self._v, self._ts, self._h = t, p, o, k, v, ts, h

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def error(self) -> None:
        return None


class TestInputTopic:
    """Pipes records into one input topic of the driver."""

    __test__ = False

    def __init__(self, driver: "TopologyTestDriver", topic: str, key_serde: Serde[Any], value_serde: Serde[Any]):
        self._driver, self.topic, self._ks, self._vs = driver, topic, key_serde, value_serde

    def pipe_input(self, value: Any, key: Any = None, timestamp: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send one record; ``timestamp`` (ms) defaults to the driver's wall-clock time."""
        ts = self._driver.wall_clock_ms if timestamp is None else timestamp
        self._driver._deliver(self.topic, self._ks.serialize(key), self._vs.serialize(value), ts, headers)

    def pipe_values(self, values: list[Any], timestamp: int | None = None, advance_ms: int = 0) -> None:
        """Send values in order, ``advance_ms`` apart."""
        ts = self._driver.wall_clock_ms if timestamp is None else timestamp
        for v in values:
            self.pipe_input(v, timestamp=ts)
            ts += advance_ms


class TestOutputTopic:
    """Reads what the topology wrote to one topic, in order."""

    __test__ = False

    def __init__(self, driver: "TopologyTestDriver", topic: str, key_serde: Serde[Any], value_serde: Serde[Any]):
        self._driver, self.topic, self._ks, self._vs = driver, topic, key_serde, value_serde

    def _queue(self) -> deque[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]]:
        return self._driver._outputs.setdefault(self.topic, deque())

    def is_empty(self) -> bool:
        return not self._queue()

    def read_record(self) -> TestRecord:
        q = self._queue()
        if not q:
            raise AssertionError(f"expected a record in topic {self.topic!r}, but it is empty")
        k, v, ts, h = q.popleft()
        return TestRecord(self._ks.deserialize(k) if k is not None else None,
                          self._vs.deserialize(v) if v is not None else None, ts, h)

    def read_value(self) -> Any:
        return self.read_record().value

    def read_key_value(self) -> tuple[Any, Any]:
        r = self.read_record()
        return r.key, r.value

    def read_records_to_list(self) -> list[TestRecord]:
        out = []
        while not self.is_empty():
            out.append(self.read_record())
        return out

    def read_values_to_list(self) -> list[Any]:
        return [r.value for r in self.read_records_to_list()]

    def read_key_values_to_list(self) -> list[tuple[Any, Any]]:
        return [(r.key, r.value) for r in self.read_records_to_list()]


class TopologyTestDriver:
    """Broker-free driver for an :class:`~kstreamlet.App`'s topology (see module docs)."""

    def __init__(self, app: Any, wall_clock_ms: int | None = None) -> None:
        self.app = app
        self.topology = app.topology()
        self.wall_clock_ms = int(time.time() * 1000) if wall_clock_ms is None else wall_clock_ms
        self._outputs: dict[str, deque[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]]] = {}
        self._offsets: dict[str, int] = {}
        self._pending: deque[_Message] = deque()
        self._delivering = False
        self.stores: dict[str, Store] = {}
        forwarded = self.topology.forwarded_inputs(lambda topic: 1)
        self.tasks = {st.id: Task(st, 0, self, lambda topic: 1, store_factory=self._make_store,
                                  clock=lambda: self.wall_clock_ms, forwarded=forwarded,
                                  event_time=self.topology.uses_event_time)
                      for st in self.topology.subtopologies}
        for task in self.tasks.values():
            task.recover()
        s = app.settings
        self.errors = ErrorHandler(s.error_policy, s.effective_dlq_topic, s.application_id, self._send_raw)
        self._internal = set(self.topology.internal_topics)

    def __enter__(self) -> "TopologyTestDriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()

    # --- topics ---------------------------------------------------------------------------------

    def input_topic(self, topic: str, key_serde: Serde[Any] | str | None = None,
                    value_serde: Serde[Any] | str | None = None) -> TestInputTopic:
        return TestInputTopic(self, topic, _serdes.resolve(key_serde, _serdes.BYTES), _serdes.resolve(value_serde, _serdes.BYTES))

    def output_topic(self, topic: str, key_serde: Serde[Any] | str | None = None,
                     value_serde: Serde[Any] | str | None = None) -> TestOutputTopic:
        return TestOutputTopic(self, topic, _serdes.resolve(key_serde, _serdes.BYTES), _serdes.resolve(value_serde, _serdes.BYTES))

    def dlq_topic(self) -> TestOutputTopic:
        """The dead-letter topic, raw bytes (headers say what failed)."""
        return self.output_topic(self.app.settings.effective_dlq_topic)

    # --- time -------------------------------------------------------------------------------------

    def advance_wall_clock_time(self, ms: int) -> None:
        """Move the driver's wall clock forward: processing-time timers fire, idle inputs time out,
        state TTL counts from it, and it is the default timestamp of piped records."""
        self.wall_clock_ms += ms
        for task in self.tasks.values():
            task.tick(self.wall_clock_ms)
        self._commit()

    # --- state ------------------------------------------------------------------------------------

    def _make_store(self, name: str, partition: int) -> Store:
        store = Store(name, partition, MemoryBackend(), None, None, backend_factory=MemoryBackend)
        self.stores[name] = store
        return store

    def key_value_store(self, name: str) -> dict[bytes, bytes]:
        """Raw committed contents of a state store (store names: ``<operator name>-<state name>``)."""
        store = self.stores[name]
        return dict(store.backend.iter_from(b""))

    def watermark(self, topic: str) -> int:
        """Current watermark of the task reading ``topic``."""
        return self.tasks[self.topology.subtopology_of(topic).id].watermarks.watermark

    def _commit(self) -> None:
        # Every piped record is its own checkpoint: state is committed as soon as it is processed.
        for task in self.tasks.values():
            task.prepare_commit()
            task.committed()

    # --- the collector the tasks write to -------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int) -> None:
        if topic in self._internal:
            self._deliver(topic, key, value, ts, None)
        else:
            self._outputs.setdefault(topic, deque()).append((key, value, ts, []))

    def send_watermark(self, topic: str, partition: int, key: bytes, ts: int, headers: list[tuple[str, bytes]]) -> None:
        self._deliver(topic, key, None, ts, headers)

    def _send_raw(self, topic: str, key: bytes | None, value: bytes | None, ts: int, headers: list[tuple[str, bytes]]) -> None:
        self._outputs.setdefault(topic, deque()).append((key, value, ts, headers))

    def _deliver(self, topic: str, key: bytes | None, value: bytes | None, ts: int,
                 headers: list[tuple[str, bytes]] | None) -> None:
        if topic in self.app._broadcasts:
            for task in self.tasks.values():
                task.on_broadcast(topic, key, value, ts)
            self._commit()
            return
        try:
            self.topology.subtopology_of(topic)
        except KeyError:
            raise KeyError(f"topic {topic!r} is not an input of this topology; inputs: {self.topology.source_topics}") from None
        off = self._offsets.get(topic, 0)
        self._offsets[topic] = off + 1
        self._pending.append(_Message(topic, 0, off, key, value, ts, headers))
        if self._delivering:
            return  # a repartitioned record: processed after the current one, as a broker would
        self._delivering = True
        try:
            while self._pending:
                m = self._pending.popleft()
                task = self.tasks[self.topology.subtopology_of(m.topic()).id]
                try:
                    task.on_message[m.topic()](m)
                except ProcessingError:
                    raise
                except Exception as e:
                    self.errors.handle(m, e)
        finally:
            self._delivering = False
        self._commit()
