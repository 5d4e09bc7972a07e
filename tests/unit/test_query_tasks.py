"""What interactive queries may read (runtime/tasks.py ``queryable``): a new task only once its
stores are restored, never a task being closed (revoked, lost, rebuilt), and a read in progress
holds back the close of the task's stores."""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import TopicPartition

from kstreamlet import App, serdes
from kstreamlet.runtime.task import Task
from kstreamlet.runtime.tasks import TaskManager
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.store import Store
from tests.unit.test_task_manager import Collector, FakeConsumer


class FakeRestorer:
    """Restores the tasks of ``slow`` partitions until ``finish()``; the others need nothing."""

    def __init__(self, slow: set[int]) -> None:
        self.slow = slow
        self.active: set[Any] = set()
        self.done: list[Any] = []

    def add(self, key: Any, stores: list[Store], exactly_once: bool) -> bool:
        if key[1] in self.slow:
            self.active.add(key)
            return True
        return False

    def finish(self) -> None:
        self.done, self.active = list(self.active), set()

    def poll(self) -> list[Any]:
        done, self.done = self.done, []
        return done

    def is_restoring(self, key: Any) -> bool:
        return key in self.active

    def remove_task(self, key: Any) -> None:
        self.active.discard(key)


def manager() -> TaskManager:
    app = App(application_id="qt", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR, name="k").count(name="c")
    topology = app.topology()
    st = topology.subtopology_of("qt-k-repartition")

    def new_task(sub: Any, partition: int) -> Task:
        return Task(sub, partition, Collector(), lambda t: 3, settings=app.settings,
                    store_factory=lambda name, p: Store(name, p, MemoryBackend(), None, None))

    tm = TaskManager(topology, new_task, exactly_once=True, transaction_timeout=1.0)
    tm.st_id = st.id  # type: ignore[attr-defined]
    return tm


def test_a_task_is_queryable_once_restored_and_leaves_before_it_closes():
    tm = manager()
    st = tm.st_id  # type: ignore[attr-defined]
    restorer = FakeRestorer(slow={1})
    tps = [TopicPartition("qt-k-repartition", p) for p in (0, 1)]
    tm.assign(FakeConsumer(), restorer, tps)  # type: ignore[arg-type]
    assert set(tm.tasks) == {(st, 0), (st, 1)}
    assert set(tm.queryable) == {(st, 0)}  # partition 1 is restoring
    restorer.finish()
    tm.restore_step(restorer)  # type: ignore[arg-type]
    assert set(tm.queryable) == {(st, 0), (st, 1)}
    tm.revoke([tps[0]], restorer)  # type: ignore[arg-type]
    assert set(tm.queryable) == {(st, 1)}
    tm.close_all()
    assert tm.queryable == {}


def test_a_read_in_progress_holds_back_closing_the_task():
    tm = manager()
    st = tm.st_id  # type: ignore[attr-defined]
    tp = TopicPartition("qt-k-repartition", 0)
    tm.assign(FakeConsumer(), FakeRestorer(set()), [tp])  # type: ignore[arg-type]
    task = tm.queryable[(st, 0)]
    store = task.stores["c-value"]
    closed_at: list[float] = []
    orig_close = store.close

    def close() -> None:
        closed_at.append(time.monotonic())
        orig_close()

    store.close = close  # type: ignore[method-assign]
    with tm.query_lock:  # a query reading the store
        t = threading.Thread(target=tm.revoke, args=([tp], None))
        t.start()
        time.sleep(0.2)
        assert not closed_at, "the store was closed while a query read it"
        read_done = time.monotonic()
    t.join(5)
    assert closed_at and closed_at[0] >= read_done
    assert tm.queryable == {}
