"""Records the broker would reject, caught before produce (runtime/production.py), and how the
error policy treats them; librdkafka's log lines through structlog. Broker-free."""

from __future__ import annotations

import socket
import time

import pytest
import structlog
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from kstreamlet.errors import ProcessingError, RecordProductionError
from kstreamlet.logging import librdkafka_logger
from kstreamlet.runtime.error_policy import ErrorHandler
from kstreamlet.runtime.production import OVERHEAD, OutputLimits, TopicLimit, record_size
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.store import Store


class Msg:
    """An input record as the consumer hands it over (the fields ErrorHandler reads)."""

    def __init__(self, value: bytes, key: bytes = b"k", topic: str = "in", partition: int = 0, offset: int = 7):
        self._v, self._k, self._t, self._p, self._o = value, key, topic, partition, offset

    def topic(self): return self._t
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return self._k
    def value(self): return self._v
    def timestamp(self): return (1, 1_700_000_000_000)
    def headers(self): return None


def test_a_record_larger_than_the_topic_accepts_is_a_record_error_naming_topic_and_limit():
    limits = OutputLimits()
    limits.set_topic("out", TopicLimit(max_message_bytes=10_000))
    limits.check("out", b"k", b"x" * (10_000 - OVERHEAD - 1), 0)  # fits
    with pytest.raises(RecordProductionError) as e:
        limits.check("out", b"k", b"x" * 50_000, 0)
    assert e.value.topic == "out" and e.value.code == "MSG_SIZE_TOO_LARGE"
    assert "max.message.bytes=10000" in str(e.value) and "50001" in str(e.value), str(e.value)
    # The fast path bound is the smallest budget: anything above it gets the per-topic check.
    assert limits.fast[0] == 10_000 - OVERHEAD


def test_the_producer_limit_applies_to_topics_without_a_lower_one():
    limits = OutputLimits({"message.max.bytes": 20_000})
    limits.set_topic("big", TopicLimit(max_message_bytes=1_048_588))
    with pytest.raises(RecordProductionError, match="message.max.bytes=20000"):
        limits.check("big", None, b"x" * 30_000, 0)
    with pytest.raises(RecordProductionError):
        limits.check("unknown-topic", None, b"x" * 30_000, 0)


def test_timestamps_outside_the_topic_bounds_and_missing_partitions_are_record_errors():
    limits = OutputLimits()
    limits.set_topic("out", TopicLimit(max_message_bytes=1_000_000, after_ms=3_600_000, partitions=3))
    now = int(time.time() * 1000)
    limits.check("out", b"k", b"v", now)
    limits.check("out", b"k", b"v", -1)  # "no timestamp" is accepted by the broker
    with pytest.raises(RecordProductionError, match="INVALID_TIMESTAMP"):
        limits.check("out", b"k", b"v", -5)
    with pytest.raises(RecordProductionError, match="after.max.ms"):
        limits.check("out", b"k", b"v", now + 2 * 3_600_000)
    with pytest.raises(RecordProductionError, match="_UNKNOWN_PARTITION"):
        limits.check("out", b"k", b"v", now, partition=3)
    limits.set_topic("appended", TopicLimit(max_message_bytes=1_000_000, create_time=False, after_ms=1))
    limits.check("appended", b"k", b"v", now + 10 * 3_600_000)  # LogAppendTime: the broker sets it


def test_batch_size_is_capped_by_the_smallest_topic_limit():
    limits = OutputLimits()
    assert limits.batch_size() is None
    limits.set_topic("out", TopicLimit(max_message_bytes=10_000))
    assert limits.batch_size() == 10_000


def test_a_rejected_record_near_the_limit_lowers_it_but_a_small_one_does_not():
    limits = OutputLimits()
    limits.set_topic("out", TopicLimit(max_message_bytes=10_000))
    assert not limits.learn("out", 50), "a small record was rejected with its batch: nothing to learn"
    assert limits.learn("out", 9_000)
    with pytest.raises(RecordProductionError):
        limits.check("out", None, b"x" * 9_000, 0)
    limits.check("out", None, b"x" * 8_999, 0)


def test_a_dead_letter_record_too_large_for_its_topic_is_cut_with_a_header_saying_so():
    limits = OutputLimits()
    limits.set_topic("dlq", TopicLimit(max_message_bytes=2_000))
    headers = [("kstreamlet.error.message", b"boom"), ("kstreamlet.source.topic", b"in")]
    k, v, h = limits.fit("dlq", b"key", b"y" * 5_000, headers)
    assert record_size(k, v, h) + OVERHEAD <= 2_000
    assert k == b"key" and v is not None and v == b"y" * len(v) and len(v) > 1_000
    k, v, h = limits.fit("dlq", b"k" * 5_000, b"y" * 5_000, headers)  # both large: they share the room
    assert record_size(k, v, h) + OVERHEAD <= 2_000 and len(k) > 500 and len(v) > 500, (len(k), len(v))
    note = dict(h)["kstreamlet.dlq.truncated"]
    assert b"value 5000" in note and b"cut" in note, note
    assert limits.fit("dlq", b"key", b"small", headers) == (b"key", b"small", headers)


def _handler(policy: str) -> tuple[ErrorHandler, list]:
    sent: list = []
    return ErrorHandler(policy, "app-dlq", "app", lambda *rec: sent.append(rec)), sent


def _metric(topic: str, policy: str) -> float:
    return REGISTRY.get_sample_value("kstreamlet_production_errors_total",
                                     {"topic": topic, "error": "MSG_SIZE_TOO_LARGE", "policy": policy}) or 0.0


def test_dlq_policy_sends_the_input_record_with_the_output_topic_and_code():
    handler, sent = _handler("dlq")
    before = _metric("out-dlq", "dlq")
    handler.handle(Msg(b"big1"), RecordProductionError("out-dlq", "MSG_SIZE_TOO_LARGE", "record of 50004 bytes ..."))
    (topic, key, value, ts, headers), = sent
    h = dict(headers)
    assert (topic, key, value) == ("app-dlq", b"k", b"big1")
    assert h["kstreamlet.error.stage"] == b"produce" and h["kstreamlet.error.output.topic"] == b"out-dlq"
    assert h["kstreamlet.error.code"] == b"MSG_SIZE_TOO_LARGE" and h["kstreamlet.source.offset"] == b"7"
    assert _metric("out-dlq", "dlq") == before + 1


def test_skip_policy_drops_with_a_warning_and_a_metric_and_fail_stops():
    handler, sent = _handler("skip")
    before = _metric("out-skip", "skip")
    with structlog.testing.capture_logs() as logs:
        handler.handle(Msg(b"big1"), RecordProductionError("out-skip", "MSG_SIZE_TOO_LARGE", "too large"))
    assert not sent and _metric("out-skip", "skip") == before + 1
    assert [(e["event"], e["log_level"], e["stage"], e["output_topic"]) for e in logs] == [
        ("record skipped", "warning", "produce", "out-skip")], logs
    handler, sent = _handler("fail")
    with pytest.raises(ProcessingError, match="MSG_SIZE_TOO_LARGE"):
        handler.handle(Msg(b"big1"), RecordProductionError("out-fail", "MSG_SIZE_TOO_LARGE", "too large"))


def test_a_state_write_larger_than_its_changelog_accepts_fails_at_put_and_leaves_no_trace():
    store = Store("counts", 0, MemoryBackend(), "app-counts-changelog", send=None)
    store.max_record_bytes = 100
    store.put(b"a", b"x" * 99)
    with pytest.raises(RecordProductionError, match="app-counts-changelog"):
        store.put(b"b", b"x" * 100)
    assert store.get(b"b") is None and store.get(b"a") == b"x" * 99


def test_librdkafka_log_lines_become_structlog_events_with_the_member_context():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    p = Producer({"bootstrap.servers": f"127.0.0.1:{port}",
                  "logger": librdkafka_logger(app="app-x", instance="i-1"), "reconnect.backoff.ms": 10})
    with structlog.testing.capture_logs() as logs:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not logs:
            p.poll(0.2)  # clients serve their log lines on poll
    lines = [e for e in logs if e["event"] == "librdkafka"]
    assert lines, "expected librdkafka's connection failures as structlog events"
    e = lines[0]
    assert e["app"] == "app-x" and e["instance"] == "i-1" and e["log_level"] in ("error", "warning", "info")
    assert e["facility"] and str(port) in e["message"], e
