"""The metrics of a running member on a real broker (docs/metrics.md): a member process of the
stateless test service is scraped on /metrics before and after input. Every series exists from
the start; records in/out equal what was produced; the DLQ counter names the error type of a
poison record; the lag (from librdkafka statistics) is seen above 0 and drops to 0 once the member
has caught up, although the input was written by a transactional producer (commit markers take
offsets too)."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.members import Members, read_committed

pytestmark = [pytest.mark.integration]

N = 3000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(port: int, what: str, cond, timeout: float, members: Members) -> dict:
    deadline = time.monotonic() + timeout
    samples: dict = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if samples and cond(samples):
            return samples
        time.sleep(0.3)
    kst = {k: v for k, v in samples.items() if k[0].startswith("kstreamlet_") and not k[0].endswith("_bucket")}
    raise AssertionError(f"{what} not seen within {timeout}s; last scrape: {kst}\n{members.log_tail()}")


def test_metrics_of_a_running_member_before_and_after_input(kafka_bootstrap, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=2, name="metrics-in")
    out = kafka_topic(partitions=2, name="metrics-out")
    app_id = f"metrics-{uuid.uuid4().hex[:8]}"
    dlq = f"{app_id}-dlq"
    port = _free_port()
    members = Members("tests.apps.stateless:app", {
        "IN_TOPIC": inp, "OUT_TOPIC": out,
        "KSTREAMLET_APPLICATION_ID": app_id,
        "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KSTREAMLET_PROCESSING_GUARANTEE": "exactly_once",
        "KSTREAMLET_COMMIT_INTERVAL": "0.2",
        "KSTREAMLET_ERROR_POLICY": "dlq",
        "KSTREAMLET_HTTP_PORT": str(port),
        "KSTREAMLET_KAFKA_CONFIG": '{"statistics.interval.ms": 500}',
    }, tmp_path)
    try:
        members.start("m1")
        members.wait_event("m1", "partitions assigned", 60)

        # Before any input: every series known at start is there, at 0.
        before = wait_for(port, "lag series of both partitions",
                          lambda s: all(get(s, "kstreamlet_consumer_lag_records", topic=inp, partition=p) is not None
                                        for p in ("0", "1")), 30, members)
        expected_zero = [
            ("kstreamlet_records_in_total", {"topic": inp}),
            ("kstreamlet_records_out_total", {"topic": out}),
            ("kstreamlet_records_out_total", {"topic": dlq}),
            *[("kstreamlet_dlq_records_total", {"policy": "dlq", "error_type": e})
              for e in ("deserialize", "process", "produce", "timer")],
            *[("kstreamlet_rebalances_total", {"kind": k}) for k in ("revoked", "lost", "rebuilt")],
            *[("kstreamlet_consumer_lag_records", {"topic": inp, "partition": p}) for p in ("0", "1")],
            *[("kstreamlet_consumer_lag_seconds", {"topic": inp, "partition": p}) for p in ("0", "1")],
            *[("kstreamlet_task_stream_time_ms", {"task": t}) for t in ("0_0", "0_1")],
            ("kstreamlet_processing_latency_seconds_count", {}),
            ("kstreamlet_e2e_latency_seconds_count", {}),
        ]
        for name, labels in expected_zero:
            assert get(before, name, **labels) == 0, f"{name}{labels} = {get(before, name, **labels)} at start"
        assert get(before, "kstreamlet_rebalances_total", kind="assigned") >= 1
        assert get(before, "kstreamlet_assigned_partitions") == 2
        assert get(before, "kstreamlet_commit_interval_seconds") == 0.2

        # Input: N records and one poison record, in transactions (commit markers take offsets).
        p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"feed-{app_id}", "linger.ms": 5})
        p.init_transactions(30)
        for chunk in range(3):
            p.begin_transaction()
            for i in range(chunk * N // 3, (chunk + 1) * N // 3):
                p.produce(inp, str(i).encode(), str(i).encode())
            if chunk == 1:
                p.produce(inp, b"poison", b"poison")
            p.commit_transaction(30)

        outputs = read_committed(kafka_bootstrap, out, expect=N, timeout=120, settle=1.0)
        assert len(outputs) == N, f"expected {N} outputs, saw {len(outputs)}"
        after = wait_for(
            port, "counts equal to what was produced and lag 0",
            lambda s: (get(s, "kstreamlet_records_in_total", topic=inp) == N + 1
                       and get(s, "kstreamlet_records_out_total", topic=out) == N
                       and get(s, "kstreamlet_records_out_total", topic=dlq) == 1
                       and all(get(s, "kstreamlet_consumer_lag_records", topic=inp, partition=q) == 0 for q in ("0", "1"))),
            60, members)
        assert get(after, "kstreamlet_dlq_records_total", policy="dlq", error_type="process") == 1
        for e in ("deserialize", "produce", "timer"):
            assert get(after, "kstreamlet_dlq_records_total", policy="dlq", error_type=e) == 0
        for q in ("0", "1"):
            assert get(after, "kstreamlet_consumer_lag_seconds", topic=inp, partition=q) == 0
        assert get(after, "kstreamlet_processing_latency_seconds_count") >= 1
        assert get(after, "kstreamlet_e2e_latency_seconds_count") >= 1
        assert get(after, "kstreamlet_checkpoint_records_sum") == N + 1, "the checkpoints covered every input record"
        assert get(after, "kstreamlet_checkpoints_total") >= 1
        now_ms = time.time() * 1000
        for t in ("0_0", "0_1"):
            st = get(after, "kstreamlet_task_stream_time_ms", task=t)
            assert now_ms - 300_000 < st <= now_ms, f"stream time of task {t}: {st}"
        assert time.time() - get(after, "kstreamlet_last_checkpoint_timestamp_seconds") < 120
        # A record's latency (record timestamp -> produce / commit) is seconds here, not hours.
        assert get(after, "kstreamlet_e2e_latency_seconds_sum") / get(after, "kstreamlet_e2e_latency_seconds_count") < 60
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}, codes


def test_watermark_records_of_repartition_topics_are_not_records_in_or_out(kafka_bootstrap, kafka_topic, tmp_path):
    """The windowed service forwards watermarks through its repartition topics (watermark records
    at each checkpoint): the records in/out of a repartition topic are exactly the data records."""
    import json

    topics = {n: kafka_topic(partitions=2, name=f"metrics-{n}") for n in ("events", "clicks", "sums", "joined")}
    app_id = f"metricsw-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    members = Members("tests.apps.windows:app", {
        "EVENTS_TOPIC": topics["events"], "CLICKS_TOPIC": topics["clicks"], "SUMS_TOPIC": topics["sums"],
        "JOINED_TOPIC": topics["joined"], "KSTREAMLET_APPLICATION_ID": app_id,
        "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
        "KSTREAMLET_STATE_DIR": str(tmp_path / "state"), "KSTREAMLET_HTTP_PORT": str(port),
        "KSTREAMLET_KAFKA_CONFIG": '{"statistics.interval.ms": 500}',
    }, tmp_path)
    rep = f"{app_id}-events-by-k-repartition"
    n = 400
    try:
        members.start("m1")
        members.wait_event("m1", "partitions assigned", 60)
        start = wait_for(port, "repartition series", lambda s: get(s, "kstreamlet_records_in_total", topic=rep) is not None,
                         30, members)
        assert get(start, "kstreamlet_records_out_total", topic=rep) == 0
        p = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(n):
            p.produce(topics["events"], json.dumps({"k": f"k{i % 7}", "ts": 1_000 + 10 * i, "v": 1, "id": f"e{i}"}).encode(),
                      f"k{i % 7}".encode())
        p.flush(30)
        wait_for(
            port, "every event in and out of the repartition topic, and watermark records forwarded",
            lambda s: (get(s, "kstreamlet_records_in_total", topic=topics["events"]) == n
                       and get(s, "kstreamlet_records_out_total", topic=rep) == n
                       and get(s, "kstreamlet_records_in_total", topic=rep) == n
                       and any(k[0] == "kstreamlet_task_watermark_ms" and v > 0 for k, v in s.items())),
            90, members)
        time.sleep(3)  # more checkpoints, more watermark records: the counts must not move
        later = scrape(port)
        for name, topic in (("kstreamlet_records_in_total", rep), ("kstreamlet_records_out_total", rep),
                            ("kstreamlet_records_in_total", topics["events"])):
            assert get(later, name, topic=topic) == n, f"{name}{{topic={topic}}} = {get(later, name, topic=topic)}"
        assert get(later, "kstreamlet_checkpoint_state_records_sum") > 0, "window state was written to changelogs"
        assert get(later, "kstreamlet_checkpoint_state_bytes_sum") > 0
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}, codes
