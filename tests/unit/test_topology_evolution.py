"""Issue 16 part 3, broker-free: generated names are known to the topology, reserved state names
are rejected at build, and the recorded topology (stores, serdes, repartition topics) is compared
so that shifted generated names, changed serdes and removed stores are found and explained."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.errors import ConfigError, TopologyError
from kstreamlet.runtime.topology_check import TopologyChangeError, check_topology, topology_topic
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.topology.record import ResourceRecord, compare, explain, topology_record
from kstreamlet.windowing.assigners import TumblingEventTimeWindows


class Remember(KeyedProcessFunction):
    def __init__(self, serde: Any = serdes.JSON, state: str = "last") -> None:
        self.serde, self.state_name = serde, state

    def open(self, ctx: Any) -> None:
        self.last = ctx.get_state(ValueStateDescriptor(self.state_name, self.serde))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.last.update(value)
        ctx.emit(value)


class WithTimer(Remember):
    def on_timer(self, timestamp: int, ctx: Any) -> None:
        pass


def windowed(app: App, topic: str, out: str, name: str | None = None, key_name: str | None = None) -> None:
    (app.stream(topic, value_serde=serdes.JSON).key_by(lambda v: v["u"], name=key_name)
     .window(TumblingEventTimeWindows.of(1000)).count(name=name).to(out))


def record(app: App) -> dict[str, ResourceRecord]:
    return topology_record(app.topology(), app.settings)[0]


def test_generated_names_are_known_and_explicit_names_are_not():
    app = App(application_id="names")
    windowed(app, "clicks", "out")
    app.stream("views", value_serde=serdes.JSON).key_by(lambda v: v, name="views").count(name="view-counts").to("o2")
    t = app.topology()
    assert t.is_generated_name("window-aggregate-0") and t.is_generated_name("key_by-0")
    assert not t.is_generated_name("view-counts") and not t.is_generated_name("views")
    rec = record(app)
    assert rec["store:window-aggregate-0-windows"].generated
    assert rec["store:window-aggregate-0-windows"].upstream == ["clicks"]
    assert not rec["store:view-counts-value"].generated
    assert rec["store:view-counts-value"].value_serde == "int64"
    assert rec["repartition:names-key_by-0-repartition"].operator == "key_by-0"


def test_a_pipeline_added_in_front_is_a_shift_with_the_old_name_as_fix():
    before = App(application_id="a")
    windowed(before, "clicks", "out")
    after = App(application_id="a")
    windowed(after, "views", "out2")
    windowed(after, "clicks", "out")
    changes = compare(record(before), record(after))
    kinds = {(c.kind, c.name) for c in changes}
    assert ("shifted", "window-aggregate-0-windows") in kinds
    assert ("shifted", "a-key_by-0-repartition") in kinds
    text = explain(changes, "a", topology_topic("a"))
    assert "name='window-aggregate-0'" in text and "'window-aggregate-1'" in text
    assert "reading [clicks]" in text and "reading [views]" in text
    assert "allow_topology_change" in text and "kstreamlet reset" in text


def test_naming_the_old_operator_passes():
    before = App(application_id="a")
    windowed(before, "clicks", "out")
    after = App(application_id="a")
    windowed(after, "views", "out2", name="view-windows", key_name="views")
    windowed(after, "clicks", "out", name="window-aggregate-0", key_name="key_by-0")
    assert compare(record(before), record(after)) == []


def test_a_same_kind_operator_added_before_another_on_the_same_stream_is_a_removed_store_with_a_hint():
    before = App(application_id="b")
    k = before.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k")
    k.reduce(lambda a, b: a + b).to("o")
    after = App(application_id="b")
    k = after.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k")
    k.count().to("o0")
    k.reduce(lambda a, b: a + b).to("o")
    changes = compare(record(before), record(after))
    assert [c.kind for c in changes] == ["removed"], changes
    assert "reduce-1-value" in changes[0].message and "name='reduce-0'" in changes[0].message


def test_a_changed_state_serde_is_named_with_old_and_new():
    def app_with(serde: Any) -> App:
        app = App(application_id="c")
        app.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k").process(
            Remember(serde), name="remember").to("o")
        return app

    changes = compare(record(app_with(serdes.JSON)), record(app_with(serdes.INT64)))
    assert [(c.kind, c.name) for c in changes] == [("serde", "remember-last")]
    assert "value serde changed json -> int64" in changes[0].message, changes[0].message
    assert "remember" in changes[0].message
    assert compare(record(app_with(serdes.JSON)), record(app_with(serdes.JSON))) == []


def test_a_removed_store_fails_and_an_added_one_does_not():
    base = App(application_id="d")
    s = base.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k")
    s.count(name="counts").to("o")
    more = App(application_id="d")
    s = more.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k")
    s.count(name="counts").to("o")
    s.sum(name="sums").to("o2")
    assert compare(record(base), record(more)) == []
    changes = compare(record(more), record(base))
    assert [(c.kind, c.name) for c in changes] == [("removed", "sums-value")]


def test_a_user_state_named_timers_is_rejected_at_build():
    app = App(application_id="e")
    app.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k").process(
        WithTimer(state="timers"), name="p").to("o")
    with pytest.raises(TopologyError, match=r"'p' declares state 'timers'.*reserves"):
        app.topology()


def test_the_same_without_timers_is_rejected_too():
    app = App(application_id="e2")
    app.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k").process(
        Remember(state="timers"), name="p").to("o")
    with pytest.raises(TopologyError, match="timers"):
        app.topology()


def test_records_round_trip_through_json():
    app = App(application_id="f")
    windowed(app, "clicks", "out")
    for r in record(app).values():
        assert ResourceRecord.from_json(json.loads(json.dumps(r.to_json()))) == r


# --- the start-up check against fake clients ---------------------------------------------------------


class FakeMessage:
    def __init__(self, key: bytes, value: bytes | None, offset: int) -> None:
        self._k, self._v, self._o = key, value, offset

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def error(self) -> None:
        return None


class Log:
    """One compacted partition shared by the fake consumers and producers."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []


class FakeConsumer:
    def __init__(self, log: Log) -> None:
        self.log, self.pos = log, 0

    def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log.records)

    def assign(self, tps: Any) -> None:
        self.pos = 0

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        out = [FakeMessage(k, v, i) for i, (k, v) in enumerate(self.log.records[self.pos:], self.pos)]
        self.pos = len(self.log.records)
        return out

    def position(self, tps: Any) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, self.pos) for tp in tps]

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def produce(self, topic: str, value: bytes | None, key: bytes, partition: int = 0) -> None:
        self.log.records.append((key, value))

    def flush(self, timeout: float) -> int:
        return 0


class FakeAdmin:
    def __init__(self) -> None:
        self.created: list[str] = []

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        class MD:
            topics = {t: type("T", (), {"partitions": {0: None}, "error": None})() for t in self.created}
        return MD()

    def create_topics(self, new: list[Any], request_timeout: float = 0) -> dict[str, Any]:
        from concurrent.futures import Future

        out = {}
        for nt in new:
            self.created.append(nt.topic)
            f: Future[None] = Future()
            f.set_result(None)
            out[nt.topic] = f
        return out


def run_check(app: App, log: Log, admin: FakeAdmin) -> list[Any]:
    return check_topology(app.topology(), app.settings, admin, {}, lambda c: FakeConsumer(log),  # type: ignore[arg-type]
                          lambda c: FakeProducer(log))  # type: ignore[arg-type]


def test_check_records_on_first_start_and_fails_fast_on_a_shift():
    log, admin = Log(), FakeAdmin()
    before = App(application_id="g")
    windowed(before, "clicks", "out")
    assert run_check(before, log, admin) == []
    assert topology_topic("g") in admin.created
    assert len(log.records) == 3  # two stores + a repartition topic
    assert run_check(before, log, admin) == [] and len(log.records) == 3  # unchanged: nothing written
    after = App(application_id="g")
    windowed(after, "views", "out2")
    windowed(after, "clicks", "out")
    with pytest.raises(TopologyChangeError) as e:
        run_check(after, log, admin)
    assert isinstance(e.value, ConfigError)
    assert "window-aggregate-0-windows" in str(e.value)
    assert len(log.records) == 3  # a member that failed the check writes nothing


def test_allowed_change_is_recorded_with_tombstones_and_then_passes():
    log, admin = Log(), FakeAdmin()
    before = App(application_id="h")
    s = before.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k")
    s.count(name="counts").to("o")
    s.sum(name="sums").to("o2")
    run_check(before, log, admin)
    after = App(application_id="h", allow_topology_change=True)
    after.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k").count(name="counts").to("o")
    changes = run_check(after, log, admin)
    assert [c.kind for c in changes] == ["removed"]
    assert (b"store:sums-value", None) in log.records
    strict = App(application_id="h")
    strict.stream("in", value_serde=serdes.JSON).key_by(lambda v: v, name="k").count(name="counts").to("o")
    assert run_check(strict, log, admin) == []


def test_require_explicit_names_lists_the_unnamed_stateful_operators():
    from kstreamlet.runtime.topology_check import require_explicit_names

    app = App(application_id="i", require_explicit_names=True)
    windowed(app, "clicks", "out")
    app.stream("v", value_serde=serdes.JSON).key_by(lambda v: v, name="v").count(name="vc").to("o")
    with pytest.raises(ConfigError, match=r"'key_by-0' \(key_by\), 'window-aggregate-0' \(stateful operator\)"):
        require_explicit_names(app.topology(), app.settings)
    with pytest.raises(ConfigError, match="require_explicit_names"):
        run_check(app, Log(), FakeAdmin())
    named = App(application_id="i", require_explicit_names=True)
    windowed(named, "clicks", "out", name="w", key_name="k")
    assert run_check(named, Log(), FakeAdmin()) == []
