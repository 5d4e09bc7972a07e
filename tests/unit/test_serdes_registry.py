"""Schema Registry serdes (kstreamlet/serdes_registry.py): wire compatibility in both directions
with confluent-kafka's own serializers and deserializers, for Avro, Protobuf and JSON Schema.

No Schema Registry server runs here: the registry is confluent-kafka's in-process ``mock://``
client, shared by both sides. With ``KSTREAMLET_SCHEMA_REGISTRY_URL`` set (and optionally
``KSTREAMLET_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO``) every test also runs against that real
registry (subjects are unique per run).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("fastavro")
pytest.importorskip("google.protobuf")
pytest.importorskip("jsonschema")

from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer  # noqa: E402
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

from kstreamlet import App, serdes  # noqa: E402
from kstreamlet.errors import ConfigError  # noqa: E402
from kstreamlet.runtime.checkpoint import AbortCheckpoint  # noqa: E402
from kstreamlet.serdes_registry import SchemaError, SchemaRegistry, SchemaRegistryUnavailable  # noqa: E402
from kstreamlet.testing.driver import TopologyTestDriver  # noqa: E402

REAL_URL = os.environ.get("KSTREAMLET_SCHEMA_REGISTRY_URL")

ORDER_V1 = json.dumps({"type": "record", "name": "Order", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "long"}]})
#: Backward compatible with v1: a new field with a default.
ORDER_V2 = json.dumps({"type": "record", "name": "Order", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "long"},
    {"name": "currency", "type": "string", "default": "EUR"}]})
#: Not readable as v1: amount is a string.
ORDER_BAD = json.dumps({"type": "record", "name": "Order", "namespace": "kstest", "fields": [
    {"name": "id", "type": "string"}, {"name": "amount", "type": "string"}]})

ORDER_JSON = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
                         "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}},
                         "required": ["id", "amount"]})


class Order(BaseModel):
    id: str
    amount: int


def _order_proto() -> Any:
    pool = descriptor_pool.Default()
    try:
        desc = pool.FindMessageTypeByName("kstest.Order")
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(name="kstest/order.proto", package="kstest", syntax="proto3")
        m = fdp.message_type.add(name="Order")
        F = descriptor_pb2.FieldDescriptorProto
        m.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        m.field.add(name="amount", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
        pool.Add(fdp)
        desc = pool.FindMessageTypeByName("kstest.Order")
    return message_factory.GetMessageClass(desc)


OrderProto = _order_proto()


@pytest.fixture(params=["mock", "real"])
def registry(request: Any) -> SchemaRegistry:
    if request.param == "real":
        if not REAL_URL:
            pytest.skip("KSTREAMLET_SCHEMA_REGISTRY_URL not set: no real Schema Registry to test against")
        return SchemaRegistry(REAL_URL, basic_auth_user_info=os.environ.get(
            "KSTREAMLET_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") or None)
    return SchemaRegistry(f"mock://{uuid.uuid4().hex}")


@pytest.fixture
def topic() -> str:
    return f"orders-{uuid.uuid4().hex[:10]}"


def ctx(topic: str, key: bool = False) -> SerializationContext:
    return SerializationContext(topic, MessageField.KEY if key else MessageField.VALUE)


# --- the matrix: each format, each direction, dicts and models ------------------------------------

def _kstreamlet_serde(registry: SchemaRegistry, fmt: str, model: bool) -> Any:
    if fmt == "avro":
        return registry.avro(ORDER_V1, model=Order if model else None)
    if fmt == "json_schema":
        return registry.json_schema(ORDER_JSON if not model else None, model=Order if model else None)
    return registry.protobuf(OrderProto, model=Order if model else None)


def _confluent_pair(client: SchemaRegistryClient, fmt: str) -> tuple[Any, Any]:
    conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}
    if fmt == "avro":
        return AvroSerializer(client, ORDER_V1, conf=conf), AvroDeserializer(client)
    if fmt == "json_schema":
        return JSONSerializer(ORDER_JSON, client, conf=conf), JSONDeserializer(ORDER_JSON, schema_registry_client=client)
    return (ProtobufSerializer(OrderProto, client, conf={**conf, "use.deprecated.format": False}),
            ProtobufDeserializer(OrderProto, {"use.deprecated.format": False}, schema_registry_client=client))


def _value(fmt: str, model: bool) -> Any:
    if model:
        return Order(id="o-1", amount=42)
    if fmt == "protobuf":
        return OrderProto(id="o-1", amount=42)
    return {"id": "o-1", "amount": 42}


def _as_tuple(v: Any) -> tuple[str, int]:
    if isinstance(v, dict):
        return v["id"], int(v["amount"])
    return v.id, int(v.amount)


FORMATS = ["avro", "protobuf", "json_schema"]


@pytest.mark.parametrize("model", [False, True], ids=["plain", "pydantic"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_kstreamlet_writes_confluent_reads(registry: SchemaRegistry, topic: str, fmt: str, model: bool) -> None:
    ours = _kstreamlet_serde(registry, fmt, model).for_topic(topic, False)
    data = ours.serialize(_value(fmt, model))
    assert data[0] == 0, "Confluent wire format: magic byte 0, then the 4-byte schema id"
    _, theirs = _confluent_pair(registry.client, fmt)
    assert _as_tuple(theirs(data, ctx(topic))) == ("o-1", 42)
    assert f"{topic}-value" in registry.client.get_subjects()


@pytest.mark.parametrize("model", [False, True], ids=["plain", "pydantic"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_confluent_writes_kstreamlet_reads(registry: SchemaRegistry, topic: str, fmt: str, model: bool) -> None:
    theirs, _ = _confluent_pair(registry.client, fmt)
    value = OrderProto(id="o-1", amount=42) if fmt == "protobuf" else {"id": "o-1", "amount": 42}
    data = theirs(value, ctx(topic))
    got = _kstreamlet_serde(registry, fmt, model).for_topic(topic, False).deserialize(data)
    if model:
        assert got == Order(id="o-1", amount=42)
    assert _as_tuple(got) == ("o-1", 42)


# --- subjects, registration, evolution ------------------------------------------------------------

def test_key_serde_uses_the_key_subject_and_strategies(registry: SchemaRegistry, topic: str) -> None:
    registry.avro(ORDER_V1).for_topic(topic, True).serialize({"id": "k", "amount": 1})
    assert f"{topic}-key" in registry.client.get_subjects()
    registry.avro(ORDER_V1, subject_name_strategy="topic_record").for_topic(topic, False).serialize(
        {"id": "k", "amount": 1})
    assert f"{topic}-kstest.Order" in registry.client.get_subjects()
    with pytest.raises(ValueError, match="subject_name_strategy"):
        registry.avro(ORDER_V1, subject_name_strategy="nope")


def test_without_auto_register_an_unregistered_schema_is_a_schema_error(registry: SchemaRegistry, topic: str) -> None:
    serde = registry.avro(ORDER_V1, auto_register=False).for_topic(topic, False)
    with pytest.raises(SchemaError) as e:
        serde.serialize({"id": "a", "amount": 1})
    assert dict(e.value.dlq_headers())["kstreamlet.error.schema.subject"] == f"{topic}-value".encode()
    AvroSerializer(registry.client, ORDER_V1)({"id": "a", "amount": 1}, ctx(topic))  # registers it
    assert serde.deserialize(serde.serialize({"id": "a", "amount": 1})) == {"id": "a", "amount": 1}


def test_schema_evolution_resolves_compatible_and_rejects_incompatible_writers(registry: SchemaRegistry,
                                                                               topic: str) -> None:
    reader = registry.avro(ORDER_V2, reader_schema=ORDER_V2).for_topic(topic, False)
    old = AvroSerializer(registry.client, ORDER_V1)({"id": "a", "amount": 1}, ctx(topic))
    assert reader.deserialize(old) == {"id": "a", "amount": 1, "currency": "EUR"}, "v1 record read as v2"
    # A writer schema the reader cannot resolve (registered under another subject, as a producer
    # that bypassed the compatibility check would).
    bad = AvroSerializer(registry.client, ORDER_BAD)({"id": "a", "amount": "1"}, ctx(topic + "-other"))
    with pytest.raises(SchemaError) as e:
        reader.deserialize(bad)
    h = dict(e.value.dlq_headers())
    assert h["kstreamlet.error.schema.format"] == b"avro"
    assert int(h["kstreamlet.error.schema.id"]) == int.from_bytes(bad[1:5], "big")
    assert h["kstreamlet.error.schema.error"]


def test_json_schema_validates_values(registry: SchemaRegistry, topic: str) -> None:
    serde = registry.json_schema(ORDER_JSON).for_topic(topic, False)
    with pytest.raises(SchemaError):
        serde.serialize({"id": "a", "amount": "not a number"})


def test_an_unreachable_registry_aborts_the_checkpoint_instead_of_failing_the_record() -> None:
    sr = SchemaRegistry("http://127.0.0.1:9", config={"max.retries": 0})
    with pytest.raises(SchemaRegistryUnavailable) as e:
        sr.avro(ORDER_V1).for_topic("t", False).serialize({"id": "a", "amount": 1})
    assert isinstance(e.value, AbortCheckpoint)


# --- settings: URL, secret ---------------------------------------------------------------------------

def test_settings_url_and_secret_never_logged(monkeypatch: Any) -> None:
    monkeypatch.delenv("KSTREAMLET_SCHEMA_REGISTRY_URL", raising=False)  # set for the real-registry runs
    monkeypatch.setenv("KSTREAMLET_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "svc:s3cret")
    app = App(application_id="sr", schema_registry_url="mock://settings")
    sr = SchemaRegistry.from_settings(app.settings)
    assert "s3cret" not in repr(sr) and "s3cret" not in repr(app.settings)
    assert "s3cret" not in json.dumps(app.settings.report(), default=str)
    assert sr._config["basic.auth.user.info"] == "svc:s3cret"
    with pytest.raises(ConfigError, match="schema_registry_url.*KSTREAMLET_SCHEMA_REGISTRY_URL"):
        SchemaRegistry.from_settings(App(application_id="sr2").settings)
    real = SchemaRegistry("http://sr:8081", basic_auth_user_info="svc:s3cret")  # the HTTP client accepts it
    assert "s3cret" not in repr(real) and "basic auth" in repr(real)
    with pytest.raises(ConfigError, match="schema_registry_config.*KSTREAMLET_SCHEMA_REGISTRY_CONFIG.*bogus"):
        SchemaRegistry("http://sr:8081", config={"bogus.property": 1})  # fails where defined, not per record
    monkeypatch.setenv("KSTREAMLET_SCHEMA_REGISTRY_CONFIG", "[1]")
    with pytest.raises(ConfigError, match="schema_registry_config \\(env KSTREAMLET_SCHEMA_REGISTRY_CONFIG\\)"):
        App(application_id="sr3")
    monkeypatch.setenv("KSTREAMLET_SCHEMA_REGISTRY_CONFIG", '{"ssl.ca.location": "/ca.pem", "basic.auth.user.info": "a:b"}')
    report = App(application_id="sr4").settings.report()["settings"]["schema_registry_config"]["value"]
    assert report == {"ssl.ca.location": "/ca.pem", "basic.auth.user.info": "***"}


# --- in a pipeline: an incompatible record goes to the DLQ with the schema error -------------------

def test_pipeline_avro_in_avro_out_and_schema_errors_to_the_dlq(registry: SchemaRegistry, topic: str) -> None:
    out_topic = topic + "-enriched"
    app = App(application_id="sr-pipeline", state_backend="memory")
    (app.stream(topic, key_serde=serdes.STR, value_serde=registry.avro(ORDER_V1, model=Order))
        .map(lambda o: {"id": o.id, "amount": o.amount * 2, "currency": "USD"})
        .to(out_topic, value_serde=registry.avro(ORDER_V2)))
    writer = AvroSerializer(registry.client, ORDER_V1)
    bad_writer = AvroSerializer(registry.client, ORDER_BAD)
    with TopologyTestDriver(app) as d:
        d._pipe(topic, b"a", writer({"id": "a", "amount": 2}, ctx(topic)), 1, None, 0)
        d._pipe(topic, b"b", bad_writer({"id": "b", "amount": "x"}, ctx(topic + "-other")), 2, None, 0)
        out = d.output_topic(out_topic, value_serde=serdes.BYTES).read_records_to_list()
        dlq = d.dlq_topic().read_records_to_list()
    assert len(out) == 1
    assert AvroDeserializer(registry.client)(out[0].value, ctx(out_topic)) == {"id": "a", "amount": 4,
                                                                              "currency": "USD"}
    assert len(dlq) == 1
    h = dict(dlq[0].headers)
    assert h["kstreamlet.error.stage"] == b"deserialize"
    assert h["kstreamlet.error.schema.format"] == b"avro"
    assert h["kstreamlet.error.schema.subject"] == f"{topic}-value".encode()
    assert int(h["kstreamlet.error.schema.id"]) == int.from_bytes(dlq[0].value[1:5], "big")

    assert h["kstreamlet.error.schema.error"]


def test_driver_an_unreachable_registry_aborts_and_sends_nothing_to_the_dlq() -> None:
    sr = SchemaRegistry("http://127.0.0.1:9", config={"max.retries": 0})
    app = App(application_id="sr-down", state_backend="memory")
    app.stream("in", value_serde=serdes.JSON).to("out", value_serde=sr.avro(ORDER_V1))
    with TopologyTestDriver(app) as d:
        with pytest.raises(SchemaRegistryUnavailable):
            d.input_topic("in", value_serde=serdes.JSON).pipe_input({"id": "a", "amount": 1})
        assert d.dlq_topic().is_empty() and d.output_topic("out").is_empty()
