"""On a real broker: an Avro pipeline through a Schema Registry serde (the in-process ``mock://``
registry — no Schema Registry server runs here — or a real one with
``KSTREAMLET_SCHEMA_REGISTRY_URL``), with a record of an incompatible schema going to the DLQ;
and input headers + W3C traceparent surviving a repartition (key_by) and an aggregate."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from confluent_kafka import Producer

from kstreamlet import App, serdes
from kstreamlet.topology.headers import parse_traceparent
from tests.integration.members import RunningMember, read_committed

pytestmark = pytest.mark.integration

ORDER_V1 = json.dumps({"type": "record", "name": "Order", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "long"}]})
ENRICHED = json.dumps({"type": "record", "name": "Enriched", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "long"}, {"name": "big", "type": "boolean"}]})
ORDER_BAD = json.dumps({"type": "record", "name": "Order", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "string"}]})
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TRACE}-00f067aa0ba902b7-01".encode()


def test_avro_pipeline_and_an_incompatible_record_to_the_dlq(kafka_bootstrap, kafka_topic):
    pytest.importorskip("fastavro")
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from kstreamlet.serdes_registry import SchemaRegistry

    url = os.environ.get("KSTREAMLET_SCHEMA_REGISTRY_URL") or f"mock://{uuid.uuid4().hex}"
    sr = SchemaRegistry(url, basic_auth_user_info=os.environ.get("KSTREAMLET_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
                        or None)
    inp = kafka_topic(partitions=2, name="orders")
    out = kafka_topic(partitions=2, name="enriched")
    app_id = f"sr-{uuid.uuid4().hex[:8]}"
    dlq = kafka_topic(partitions=1, name=f"{app_id}-dlq")
    app = App(application_id=app_id, bootstrap_servers=kafka_bootstrap, commit_interval=0.1, dlq_topic=dlq,
              schema_registry_url=url)
    (app.stream(inp, key_serde=serdes.STR, value_serde=sr.avro(ORDER_V1))
        .map(lambda o: {**o, "big": o["amount"] >= 100})
        .to(out, value_serde=sr.avro(ENRICHED)))

    ctx = SerializationContext(inp, MessageField.VALUE)
    good, bad = AvroSerializer(sr.client, ORDER_V1), AvroSerializer(sr.client, ORDER_BAD)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        p.produce(inp, good({"id": f"o{i}", "amount": i * 20}, ctx), key=f"o{i}".encode())
    # A producer that wrote with an incompatible schema (another subject: it bypassed the check).
    bad_bytes = bad({"id": "x", "amount": "lots"}, SerializationContext(inp + "-legacy", MessageField.VALUE))
    p.produce(inp, bad_bytes, key=b"x", headers=[("origin", b"legacy")])
    p.flush(10)

    rm = RunningMember(app)
    try:
        got = read_committed(kafka_bootstrap, out, expect=10, timeout=60, settle=2)
        dead = read_committed(kafka_bootstrap, dlq, expect=1, timeout=30, settle=1, with_headers=True)
    finally:
        rm.stop()
    de = AvroDeserializer(sr.client)
    values = sorted((de(v, SerializationContext(out, MessageField.VALUE)) for v in got), key=lambda r: r["id"])
    assert values == sorted(({"id": f"o{i}", "amount": i * 20, "big": i * 20 >= 100} for i in range(10)),
                            key=lambda r: r["id"])
    assert len(dead) == 1, f"one dead-letter record expected, got {dead}"
    value, headers = dead[0]
    h = dict(headers)
    assert value == bad_bytes, "the DLQ keeps the original bytes"
    assert h["kstreamlet.error.stage"] == b"deserialize"
    assert h["kstreamlet.error.schema.format"] == b"avro"
    assert h["kstreamlet.error.schema.subject"] == f"{inp}-value".encode()
    assert int(h["kstreamlet.error.schema.id"]) == int.from_bytes(bad_bytes[1:5], "big")
    assert h["kstreamlet.error.schema.error"] == b"SchemaResolutionError"
    assert h["origin"] == b"legacy", "the input's own headers follow the error headers"


def test_headers_and_traceparent_survive_a_repartition_and_an_aggregate(kafka_bootstrap, kafka_topic):
    inp = kafka_topic(partitions=2, name="events")
    out = kafka_topic(partitions=2, name="counts")
    app_id = f"hdr-{uuid.uuid4().hex[:8]}"
    app = App(application_id=app_id, bootstrap_servers=kafka_bootstrap, commit_interval=0.1, state_backend="memory")
    (app.stream(inp, value_serde=serdes.JSON)
        .key_by(lambda v: v["user"], key_serde=serdes.STR, name="by-user")
        .count(name="per-user")
        .to(out, value_serde=serdes.INT64))
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    n = 20
    for i in range(n):
        p.produce(inp, json.dumps({"user": f"u{i % 4}", "i": i}).encode(), partition=i % 2,
                  headers=[("request-id", f"r{i}".encode()), ("traceparent", TP),
                           ("kstreamlet.internal", b"must not leak")])
    p.flush(10)
    rm = RunningMember(app)
    try:
        got = read_committed(kafka_bootstrap, out, expect=n, timeout=60, settle=2, with_headers=True)
    finally:
        rm.stop()
    assert len(got) == n
    span_ids = set()
    request_ids = set()
    for _, headers in got:
        h = dict(headers or [])
        assert "kstreamlet.internal" not in h
        tp = parse_traceparent(h["traceparent"])
        assert tp is not None and tp[1] == TRACE and tp[3] == "01"
        span_ids.add(tp[2])
        request_ids.add(h["request-id"])
    # Each count update carries the headers of the record that triggered it (Kafka Streams' rule).
    assert request_ids == {f"r{i}".encode() for i in range(n)}
    assert len(span_ids) == n and "00f067aa0ba902b7" not in span_ids, "a new span id per record and hop"
