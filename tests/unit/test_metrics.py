"""The metrics of issue 15 on a member with fake clients (docs/metrics.md): every series known at
start exists before its first increment, records in/out per topic (watermark records excluded),
consumer lag from librdkafka statistics, latency, per-task watermark and stream time, DLQ by error
type, checkpoint size, rebalances; and that the Grafana dashboard only queries metrics that exist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.observability.kafka_stats import ConsumerStats, ProducerStats
from kstreamlet.runtime.member import Member
from kstreamlet.runtime.watermarks import WATERMARK_HEADER, WATERMARK_KEY, WATERMARK_SOURCE_HEADER
from kstreamlet.windowing import TumblingEventTimeWindows
from tests.unit.fakes import Msg
from tests.unit.test_member_rebalance import FakeClients, FakeConsumer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "kstreamlet" / "dashboards" / "kstreamlet.json"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (sample name, labels) the process registry exposes now."""
    out = set()
    for fam in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in fam.samples:
            out.add((s.name, tuple(sorted(s.labels.items()))))
    return out


def stateless_member(app_id: str, policy: str = "dlq") -> tuple[Member, FakeClients, FakeConsumer]:
    app = App(application_id=app_id, bootstrap_servers="127.0.0.1:1", processing_guarantee="exactly_once",
              instance_id="m1", error_policy=policy)

    def f(v: bytes) -> bytes:
        if v == b"poison":
            raise ValueError("poison")
        return v + b"!"

    app.stream(f"{app_id}-in").map(f).to(f"{app_id}-out")
    clients = FakeClients()
    m = Member(app.topology(), "m1", install_signal_handlers=False, settings=app.settings, clients=clients)  # type: ignore[arg-type]
    m.topics.partition_counts.update({f"{app_id}-in": 2, f"{app_id}-out": 2})
    m._create_clients()
    return m, clients, clients.consumers[0]


def test_every_series_known_at_start_exists_before_its_first_increment():
    m, _, consumer = stateless_member("mstart")
    seen = series()
    for name, labels in [
        ("kstreamlet_records_in_total", {"topic": "mstart-in"}),
        ("kstreamlet_records_out_total", {"topic": "mstart-out"}),
        ("kstreamlet_records_out_total", {"topic": "mstart-dlq"}),
        *[("kstreamlet_dlq_records_total", {"policy": "dlq", "error_type": e})
          for e in ("deserialize", "process", "produce", "timer")],
        *[("kstreamlet_rebalances_total", {"kind": k}) for k in ("assigned", "revoked", "lost", "rebuilt")],
        ("kstreamlet_late_records_total", {"operator": "window"}),
        ("kstreamlet_commit_interval_seconds", {}),
        ("kstreamlet_last_checkpoint_timestamp_seconds", {}),
        ("kstreamlet_checkpoint_seconds_count", {}),
        ("kstreamlet_checkpoint_records_count", {}),
        ("kstreamlet_checkpoint_state_bytes_count", {}),
        ("kstreamlet_processing_latency_seconds_count", {}),
        ("kstreamlet_e2e_latency_seconds_count", {}),
        ("kstreamlet_assigned_partitions", {}),
    ]:
        assert (name, tuple(sorted(labels.items()))) in seen, f"{name}{labels} missing from /metrics at start"
    assert value("kstreamlet_records_in_total", topic="mstart-in") == 0
    assert value("kstreamlet_last_checkpoint_timestamp_seconds") > 0, "the start time until the first checkpoint"
    # On assignment: lag per partition, stream time per task.
    consumer.callbacks["assign"](consumer, [TopicPartition("mstart-in", 0), TopicPartition("mstart-in", 1)])
    for p in ("0", "1"):
        assert value("kstreamlet_consumer_lag_records", topic="mstart-in", partition=p) == 0
        assert value("kstreamlet_consumer_lag_seconds", topic="mstart-in", partition=p) == 0
    for t in ("0_0", "0_1"):
        assert value("kstreamlet_task_stream_time_ms", task=t) == 0
    # On revoke they go (another member reports them).
    consumer.callbacks["revoke"](consumer, [TopicPartition("mstart-in", 1)])
    assert value("kstreamlet_consumer_lag_records", topic="mstart-in", partition="1") is None
    assert value("kstreamlet_task_stream_time_ms", task="0_1") is None
    assert value("kstreamlet_task_stream_time_ms", task="0_0") == 0


def test_records_in_latency_checkpoint_size_and_stream_time_per_batch_and_checkpoint():
    m, _, consumer = stateless_member("mflow")
    consumer.callbacks["assign"](consumer, [TopicPartition("mflow-in", 0), TopicPartition("mflow-in", 1)])
    before_in = value("kstreamlet_records_in_total", topic="mflow-in")
    lat0 = value("kstreamlet_processing_latency_seconds_count")
    e2e0 = value("kstreamlet_e2e_latency_seconds_count")
    ck0 = value("kstreamlet_checkpoint_records_sum")
    now = int(time.time() * 1000)
    m._process([Msg("mflow-in", 0, i, timestamp=now - 2000 + i) for i in range(5)]
               + [Msg("mflow-in", 1, i, timestamp=now - 5000) for i in range(3)])
    m._process([Msg("mflow-in", 0, 5, timestamp=now - 1000)])
    assert value("kstreamlet_records_in_total", topic="mflow-in") - before_in == 9
    assert value("kstreamlet_processing_latency_seconds_count") - lat0 == 2, "one sample per batch"
    assert value("kstreamlet_e2e_latency_seconds_count") == e2e0, "end-to-end latency is observed at the commit"
    m._commit()
    assert value("kstreamlet_e2e_latency_seconds_count") - e2e0 == 2
    assert value("kstreamlet_checkpoint_records_sum") - ck0 == 9, "the checkpoint covered 9 input records"
    assert value("kstreamlet_last_checkpoint_timestamp_seconds") >= now / 1000 - 1
    assert m.tasks.consumed_ts[("mflow-in", 0)] == now - 1000
    assert value("kstreamlet_task_stream_time_ms", task="0_0") == now - 1000
    assert value("kstreamlet_task_stream_time_ms", task="0_1") == now - 5000


def test_dlq_records_are_counted_by_error_type():
    m, _, consumer = stateless_member("mdlq")
    consumer.callbacks["assign"](consumer, [TopicPartition("mdlq-in", 0)])
    before = {e: value("kstreamlet_dlq_records_total", policy="dlq", error_type=e)
              for e in ("deserialize", "process", "produce", "timer")}
    m._process([Msg("mdlq-in", 0, 0, value=b"poison"), Msg("mdlq-in", 0, 1), Msg("mdlq-in", 0, 2, value=b"poison")])
    after = {e: value("kstreamlet_dlq_records_total", policy="dlq", error_type=e) for e in before}
    assert {e: after[e] - before[e] for e in before} == {"deserialize": 0, "process": 2, "produce": 0, "timer": 0}


def test_rebalances_count_lost_partitions_and_rebuilds():
    m, clients, consumer = stateless_member("mrb")
    lost0, rebuilt0 = value("kstreamlet_rebalances_total", kind="lost"), value("kstreamlet_rebalances_total", kind="rebuilt")
    consumer.callbacks["assign"](consumer, [TopicPartition("mrb-in", 0), TopicPartition("mrb-in", 1)])
    consumer.callbacks["lost"](consumer, [TopicPartition("mrb-in", 1)])
    assert value("kstreamlet_rebalances_total", kind="lost") - lost0 == 1
    assert value("kstreamlet_consumer_lag_records", topic="mrb-in", partition="1") is None
    assert value("kstreamlet_assigned_partitions") == 1

    class Beat:
        def beat(self) -> None:
            pass

    m.heartbeat = Beat()  # type: ignore[assignment]
    m._rebuild("test")
    assert value("kstreamlet_rebalances_total", kind="rebuilt") - rebuilt0 == 1
    assert value("kstreamlet_consumer_lag_records", topic="mrb-in", partition="0") is None
    assert value("kstreamlet_assigned_partitions") == 0


def test_the_member_sets_statistics_callbacks_unless_statistics_are_turned_off():
    seen: list[dict[str, Any]] = []

    class Recording(FakeClients):
        def consumer(self, config: dict[str, Any]) -> FakeConsumer:
            seen.append(config)
            return super().consumer(config)

        def producer(self, config: dict[str, Any]) -> Any:
            seen.append(config)
            return super().producer(config)

    for kafka_config, expect in (({}, 5000), ({"statistics.interval.ms": 1000}, 1000), ({"statistics.interval.ms": 0}, 0)):
        seen.clear()
        app = App(application_id="mstats", bootstrap_servers="127.0.0.1:1", instance_id="m1", kafka_config=kafka_config)
        app.stream("a").to("b")
        m = Member(app.topology(), "m1", install_signal_handlers=False, settings=app.settings, clients=Recording())  # type: ignore[arg-type]
        m._create_clients()
        member_clients = [c for c in seen if c.get("group.id") == "mstats" or "transactional.id" in c
                          or str(c.get("client.id", "")).endswith("-producer")]
        assert len(member_clients) == 2, [c.get("client.id") for c in seen]
        for c in member_clients:
            assert c.get("statistics.interval.ms") == expect, (kafka_config, c.get("client.id"))
            assert ("stats_cb" in c) == bool(expect)


# --- librdkafka statistics -------------------------------------------------------------------------

def _consumer_stats(parts: dict[int, dict[str, int]], topic: str = "lag-in") -> str:
    """The shape of librdkafka's consumer statistics (topics.<t>.partitions.<p>), as seen on a broker."""
    ps = {str(p): {"partition": p, "hi_offset": 0, "lo_offset": 0, "ls_offset": 0, "app_offset": -1001,
                   "committed_offset": -1001, "consumer_lag": -1, **fields} for p, fields in parts.items()}
    ps["-1"] = {"partition": -1, "hi_offset": -1, "ls_offset": -1, "app_offset": -1001, "committed_offset": -1001}
    return json.dumps({"type": "consumer", "topics": {topic: {"topic": topic, "partitions": ps}}})


def test_consumer_lag_in_records_and_seconds_from_statistics():
    assigned_at = {("lag-in", 0): 1000.0, ("lag-in", 1): 1000.0, ("lag-in", 2): 1000.0}
    consumed = {("lag-in", 0): 990_000}  # ms: consumed a record stamped 10 s before "now"
    stats = ConsumerStats(assigned_at, consumed, clock=lambda: 1000.0)
    stats(_consumer_stats({
        0: {"ls_offset": 150, "hi_offset": 152, "app_offset": 100},   # read_committed end, not the high watermark
        1: {"ls_offset": 80, "hi_offset": 80, "app_offset": 80},      # caught up
        2: {"ls_offset": 40, "hi_offset": 40, "committed_offset": 10},  # nothing consumed since assignment
        3: {"ls_offset": 9, "app_offset": 1},                          # not assigned here: ignored
    }))
    assert value("kstreamlet_consumer_lag_records", topic="lag-in", partition="0") == 50
    assert value("kstreamlet_consumer_lag_seconds", topic="lag-in", partition="0") == 10.0
    assert value("kstreamlet_consumer_lag_records", topic="lag-in", partition="1") == 0
    assert value("kstreamlet_consumer_lag_seconds", topic="lag-in", partition="1") == 0
    assert value("kstreamlet_consumer_lag_records", topic="lag-in", partition="2") == 30
    assert value("kstreamlet_consumer_lag_seconds", topic="lag-in", partition="2") == 0, "assigned just now"
    assert value("kstreamlet_consumer_lag_records", topic="lag-in", partition="3") is None
    stats("not json")  # never raises out of the client's poll
    abandoned = ConsumerStats(assigned_at, consumed, clock=lambda: 1000.0, active=lambda: False)
    abandoned(_consumer_stats({0: {"ls_offset": 999, "app_offset": 1}}))
    assert value("kstreamlet_consumer_lag_records", topic="lag-in", partition="0") == 50, \
        "the statistics of a consumer abandoned by a rebuild are ignored"


def test_records_out_from_producer_statistics_exclude_watermark_records_and_never_decrease():
    wm_sent = {"pout-rep": 2}
    stats = ProducerStats(wm_sent)
    base = {t: value("kstreamlet_records_out_total", topic=t) or 0 for t in ("pout-a", "pout-rep")}

    def emit(a: tuple[int, int], rep: int) -> None:
        stats(json.dumps({"type": "producer", "topics": {
            "pout-a": {"partitions": {"-1": {"msgs": 0}, "0": {"msgs": a[0]}, "1": {"msgs": a[1]}}},
            "pout-rep": {"partitions": {"0": {"msgs": rep}}}}}))

    def out(t: str) -> float:
        return (value("kstreamlet_records_out_total", topic=t) or 0) - base[t]

    emit((3, 4), 5)
    assert (out("pout-a"), out("pout-rep")) == (7, 3)
    wm_sent["pout-rep"] = 4  # two more watermark records, not in these statistics yet
    emit((3, 6), 5)
    assert (out("pout-a"), out("pout-rep")) == (9, 3), "a counter never goes down"
    emit((3, 6), 8)
    assert out("pout-rep") == 4


# --- watermark records are not records in -----------------------------------------------------------

class WatermarkMsg(Msg):
    def __init__(self, topic: str, partition: int, offset: int, wm: int, source: str) -> None:
        super().__init__(topic, partition, offset, value=None, timestamp=wm)
        self._headers = [(WATERMARK_HEADER, str(wm).encode()), (WATERMARK_SOURCE_HEADER, source.encode())]

    def key(self) -> bytes | None:
        return WATERMARK_KEY

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def test_watermark_records_of_a_repartition_topic_are_not_counted_as_records_in(tmp_path):
    app = App(application_id="mwm", bootstrap_servers="127.0.0.1:1", processing_guarantee="exactly_once",
              instance_id="m1", state_backend="memory", state_dir=str(tmp_path))
    (app.stream("mwm-in", value_serde=serdes.STR, watermarks=WatermarkStrategy.for_bounded_out_of_orderness(0))
        .key_by(lambda v: v, key_serde=serdes.STR, name="k")
        .window(TumblingEventTimeWindows.of(1000)).count(name="c")
        .map(lambda v: str(v)).to("mwm-out", value_serde=serdes.STR))
    topology = app.topology()
    rep = next(t for t in topology.source_topics if t.endswith("-repartition"))
    clients = FakeClients()
    m = Member(topology, "m1", install_signal_handlers=False, settings=app.settings, clients=clients)  # type: ignore[arg-type]
    m.topics.partition_counts.update({"mwm-in": 1, rep: 1, "mwm-out": 1})
    m.topics.ensure_changelog = lambda topic, partitions: False  # type: ignore[method-assign]
    make = clients.consumer

    def consumer(config: dict[str, Any]) -> FakeConsumer:
        c = make(config)
        c.get_watermark_offsets = lambda tp, timeout=0, cached=False: (0, 0)  # type: ignore[attr-defined]
        return c

    clients.consumer = consumer  # type: ignore[method-assign]
    m._create_clients()
    c = clients.consumers[0]
    c.callbacks["assign"](c, [TopicPartition("mwm-in", 0), TopicPartition(rep, 0)])
    assert value("kstreamlet_task_watermark_ms", task="1_0") == 0, "an event-time task's watermark series exists"
    before = {t: value("kstreamlet_records_in_total", topic=t) for t in ("mwm-in", rep)}
    m._process([Msg("mwm-in", 0, 0, value=b"a"), Msg("mwm-in", 0, 1, value=b"b"),
                Msg(rep, 0, 0, value=b"a"), WatermarkMsg(rep, 0, 1, 5000, "0_0"), Msg(rep, 0, 2, value=b"b"),
                WatermarkMsg(rep, 0, 3, 6000, "0_0")])
    assert {t: value("kstreamlet_records_in_total", topic=t) - before[t] for t in before} == {"mwm-in": 2, rep: 2}
    m._commit()
    assert value("kstreamlet_task_watermark_ms", task="1_0") == 6000


def test_restore_progress_series_exist_from_the_assignment(tmp_path):
    from kstreamlet.state.recovery import Restorer

    class Store:
        name, partition, changelog_topic = "mrs-store", 3, "mrs-store-changelog"

        class backend:
            @staticmethod
            def changelog_offset() -> None:
                return None

            @staticmethod
            def has_data() -> bool:
                return False

    class Consumer:
        def get_watermark_offsets(self, tp: Any, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
            return 0, 7

        def incremental_assign(self, tps: Any) -> None:
            pass

    r = Restorer({}, make_consumer=lambda cfg: Consumer())  # type: ignore[arg-type,return-value]
    assert r.add("0_3", [Store()], exactly_once=True)  # type: ignore[list-item]
    assert value("kstreamlet_restore_remaining_records", store="mrs-store", partition="3") == 7
    assert value("kstreamlet_restore_records_total", store="mrs-store") == 0


# --- the dashboard -----------------------------------------------------------------------------------

def _registered_metric_names() -> set[str]:
    import kstreamlet.metrics  # noqa: F401  (registers every kstreamlet metric)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for fam in REGISTRY.collect():  # a labelled metric without any series yet has no samples: by its type
        for suffix in suffixes.get(fam.type, ("",)):
            names.add(fam.name + suffix)
        names.update(s.name for s in fam.samples)
    return names


def test_dashboard_json_loads_and_queries_only_metrics_kstreamlet_registers():
    import re

    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["panels"], "a dashboard with panels"
    exprs = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if "expr" in o:
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(dash)
    assert len(exprs) >= 10, exprs
    names = _registered_metric_names()
    used = {n for e in exprs for n in re.findall(r"\bkstreamlet_[a-z0-9_]+", e)}
    missing = sorted(used - names)
    assert not missing, f"the dashboard queries metrics kstreamlet does not export: {missing}"
    for required in ("kstreamlet_consumer_lag_records", "kstreamlet_consumer_lag_seconds", "kstreamlet_records_in_total",
                     "kstreamlet_records_out_total", "kstreamlet_task_watermark_ms", "kstreamlet_task_stream_time_ms",
                     "kstreamlet_processing_latency_seconds_bucket", "kstreamlet_e2e_latency_seconds_bucket",
                     "kstreamlet_dlq_records_total", "kstreamlet_checkpoint_seconds_bucket",
                     "kstreamlet_rebalances_total", "kstreamlet_restore_remaining_records"):
        assert required in used, f"the dashboard has no panel for {required}"


def test_every_kstreamlet_metric_is_documented():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    import kstreamlet.metrics as km
    from prometheus_client.metrics import MetricWrapperBase

    for name in dir(km):
        obj = getattr(km, name)
        if isinstance(obj, MetricWrapperBase):
            full = obj._name + ("_total" if obj._type == "counter" else "")  # type: ignore[attr-defined]
            assert f"`{full}`" in doc, f"{full} is not documented in docs/metrics.md"


