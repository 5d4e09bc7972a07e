"""Custom sources (Flink's ``SourceFunction``): code that generates records.

A source is either an object with ``run(ctx)`` and ``cancel()`` (like ``SensorSource``
below) or a callable returning an iterable (a generator function). It runs
in a thread of every member process and calls ``ctx.collect(value, key=None,
timestamp=None)``.

**Guarantee.** A generator cannot be replayed, so its records are first written to an
internal topic ``<application_id>-source-<name>`` with an idempotent producer
(at-least-once from the generator into Kafka: records collected but not yet acknowledged
when the process is killed are lost, exactly as a crashed Flink source loses what it had
not emitted). From that topic on, the stream is processed with the app's processing
guarantee, e.g. exactly-once.

Example::

    class SensorSource(Source):
        def __init__(self):
            self.running = True
        def run(self, ctx):
            while self.running:
                ctx.collect({"id": "sensor_1", "temperature": 20.0}, key=b"sensor_1")
                time.sleep(0.1)
        def cancel(self):
            self.running = False
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

import structlog
from confluent_kafka import KafkaException, Producer

from kstreamlet.serdes import Serde

log = structlog.get_logger("kstreamlet.sources")


class Source:
    """Base class for generating sources: implement :meth:`run`; :meth:`cancel` stops it."""

    def run(self, ctx: "SourceContext") -> None:
        raise TypeError(f"{type(self).__name__} must implement run(ctx)")

    def cancel(self) -> None:
        """Ask :meth:`run` to return; called on shutdown. The default does nothing."""


class SourceContext:
    """Given to :meth:`Source.run`: ``collect`` emits; ``cancelled`` tells a loop to stop."""

    def __init__(self, producer: Producer, topic: str, key_serde: Serde[Any], value_serde: Serde[Any],
                 index: int, stop: threading.Event) -> None:
        self._producer = producer
        self._topic = topic
        self._kser = key_serde.serialize
        self._vser = value_serde.serialize
        #: Which member of the group runs this copy (0-based within its process group).
        self.index = index
        self._stop = stop
        self.collected = 0

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def collect(self, value: Any, key: Any = None, timestamp: int | None = None) -> None:
        """Emit one record (timestamp in ms; default now)."""
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        kb, vb = self._kser(key), self._vser(value)
        while True:
            try:
                self._producer.produce(self._topic, vb, kb, timestamp=ts)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.collected += 1


class SourceRunner:
    """Runs one source in a daemon thread, feeding its buffer topic."""

    def __init__(self, name: str, source: Source | Callable[[], Iterable[Any]], topic: str,
                 key_serde: Serde[Any], value_serde: Serde[Any], producer_config: dict[str, Any], index: int = 0) -> None:
        self.name = name
        self.source = source
        self.topic = topic
        self._stop = threading.Event()
        self._producer = Producer({**producer_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        self.ctx = SourceContext(self._producer, topic, key_serde, value_serde, index, self._stop)
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            if isinstance(self.source, Source):
                self.source.run(self.ctx)
            else:
                for item in self.source():
                    if self._stop.is_set():
                        break
                    self.ctx.collect(item)
        except BaseException as e:  # surfaced to the member loop, which stops the app
            self.error = e
            log.error("source failed", source=self.name, error=repr(e))
        finally:
            self._producer.flush(10)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if isinstance(self.source, Source):
            self.source.cancel()
        self._thread.join(timeout)
        try:
            self._producer.flush(timeout)
        except KafkaException:
            pass
