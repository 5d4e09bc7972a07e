"""Schema Registry serdes: Avro, Protobuf and JSON Schema in Confluent's wire format.

Built on confluent-kafka's own ``schema_registry`` serializers (``pip install
kstreamlet[schema-registry]``), so what kstreamlet writes is what any Confluent client reads
and the other way round (magic byte 0, 4-byte schema id, payload)::

    from kstreamlet import App
    from kstreamlet.serdes_registry import SchemaRegistry

    app = App(application_id="orders", schema_registry_url="https://sr:8081")
    sr = SchemaRegistry.from_settings(app.settings)        # or app-independent: SchemaRegistry(url)
    orders = app.stream("orders", value_serde=sr.avro(ORDER_SCHEMA, model=Order))
    orders.map(enrich).to("orders-enriched", value_serde=sr.avro(ENRICHED_SCHEMA))

The subject comes from the topic a serde reads or writes (``subject_name_strategy``: ``"topic"``
= ``<topic>-key|value``, ``"record"``, ``"topic_record"``, or a callable ``(ctx, record_name) ->
subject``): sources and sinks bind a serde to their topic (:meth:`Serde.for_topic`). Used
without a topic (as a store serde), the serde uses ``topic=`` (default ``kstreamlet-state``).

Errors: a record that cannot be (de)serialized with its schema — a writer schema the reader
schema cannot resolve, a value that does not match, a subject that rejects the schema as
incompatible (HTTP 409) or has none while ``auto_register=False`` — is a :class:`SchemaError`
of that record: the error policy sends it to the DLQ with ``kstreamlet.error.schema.*``
headers (format, subject, schema id, the underlying error). A registry that cannot be reached
(connection error, HTTP 5xx/429) is not the record's fault: :class:`SchemaRegistryUnavailable`
aborts the checkpoint, which is replayed (nothing goes to the DLQ).

Models: ``model=`` (a pydantic v2 model class) turns records into model instances and back;
for JSON Schema the schema defaults to ``model.model_json_schema()``, for Avro to the model's
``avro_schema()`` when it has one (pydantic-avro's ``AvroBase``, dataclasses-avroschema).
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Callable, Mapping

from kstreamlet.errors import ConfigError
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.serdes import Serde, SerdeError

__all__ = ["SchemaRegistry", "SchemaError", "SchemaRegistryUnavailable", "RegistrySerde"]

#: The topic an unbound registry serde (a store serde) uses for its subject.
STATE_TOPIC = "kstreamlet-state"

_STRATEGIES = {"topic": "TOPIC", "record": "RECORD", "topic_record": "TOPIC_RECORD"}


def _import_registry() -> Any:
    try:
        from confluent_kafka import schema_registry
    except ImportError as e:  # pragma: no cover - confluent-kafka is a core dependency
        raise ConfigError(f"Schema Registry serdes need confluent-kafka's schema_registry: {e}") from e
    return schema_registry


def _missing_extra(fmt: str, e: ImportError) -> ConfigError:
    return ConfigError(f"{fmt} serdes need the schema-registry extra (pip install 'kstreamlet[schema-registry]'): "
                       f"{e}")


class SchemaError(SerdeError):
    """A record's key or value does not fit its schema (or the registry rejected the schema).

    :meth:`dlq_headers` are added to the record's dead-letter headers (runtime/error_policy.py)."""

    def __init__(self, message: str, fmt: str, topic: str, subject: str | None = None,
                 schema_id: int | None = None, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.format = fmt
        self.topic = topic
        self.subject = subject
        self.schema_id = schema_id
        self.cause_type = type(cause).__name__ if cause is not None else None

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        h = [("kstreamlet.error.schema.format", self.format.encode()),
             ("kstreamlet.error.schema.topic", self.topic.encode())]
        if self.subject:
            h.append(("kstreamlet.error.schema.subject", self.subject.encode()))
        if self.schema_id is not None:
            h.append(("kstreamlet.error.schema.id", str(self.schema_id).encode()))
        if self.cause_type:
            h.append(("kstreamlet.error.schema.error", self.cause_type.encode()))
        return h


class SchemaRegistryUnavailable(AbortCheckpoint):
    """The registry could not be reached: the checkpoint aborts and is replayed (no DLQ record)."""


def _unavailable(e: BaseException) -> bool:
    """A transport problem or a server-side error of the registry (retry), not the record's."""
    status = getattr(e, "http_status_code", None)
    if status is not None and (status == -1 or status == 429 or status >= 500):
        return True
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, TimeoutError)) or type(cur).__module__.split(".")[0] in (
                "httpx", "httpx2", "httpcore", "httpcore2"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _schema_id(data: bytes | None) -> int | None:
    if data is not None and len(data) >= 5 and data[0] == 0:
        return int(struct.unpack(">I", data[1:5])[0])
    return None


class RegistrySerde(Serde[Any]):
    """A Schema Registry serde; sources and sinks bind it to their topic with :meth:`for_topic`."""

    __slots__ = ("format", "default_topic", "_make", "_pair", "_lock", "_subject_of", "_bound")

    def __init__(self, name: str, fmt: str, make: Callable[[], tuple[Any, Any]],
                 subject_of: Callable[[str, bool], str | None], topic: str | None) -> None:
        self.format = fmt
        self.default_topic = topic or STATE_TOPIC
        self._make = make
        self._pair: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self._subject_of = subject_of
        self._bound: dict[tuple[str, bool], Serde[Any]] = {}
        ser, de = self._functions(self.default_topic, False)
        super().__init__(name, ser, de)

    def _serializers(self) -> tuple[Any, Any]:
        pair = self._pair
        if pair is None:
            with self._lock:
                if self._pair is None:
                    self._pair = self._make()
                pair = self._pair
        return pair

    def for_topic(self, topic: str, is_key: bool) -> Serde[Any]:
        bound = self._bound.get((topic, is_key))
        if bound is None:
            ser, de = self._functions(topic, is_key)
            bound = self._bound[(topic, is_key)] = Serde(self.name, ser, de)
        return bound

    def _functions(self, topic: str, is_key: bool) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
        sr = _import_registry()
        ctx = sr.SerializationContext(topic, sr.MessageField.KEY if is_key else sr.MessageField.VALUE)
        fmt = self.format
        serde = self

        def fail(e: BaseException, what: str, data: bytes | None) -> BaseException:
            if isinstance(e, (SchemaError, AbortCheckpoint)):
                return e
            if _unavailable(e):
                return SchemaRegistryUnavailable(f"schema registry unavailable while {what} a record of {topic}: "
                                                 f"{type(e).__name__}: {e}")
            try:
                subject = serde._subject_of(topic, is_key)
            except Exception:
                subject = None
            return SchemaError(f"{fmt} {what} failed for topic {topic} ({'key' if is_key else 'value'}"
                               f"{', subject ' + subject if subject else ''}): {type(e).__name__}: {e}",
                               fmt, topic, subject, _schema_id(data), e)

        def ser(obj: Any) -> bytes:
            if obj is None:
                return None  # type: ignore[return-value]
            try:
                return serde._serializers()[0](obj, ctx)  # type: ignore[no-any-return]
            except Exception as e:
                raise fail(e, "serializing", None) from e

        def de(data: bytes) -> Any:
            if data is None:
                return None
            try:
                return serde._serializers()[1](data, ctx)
            except Exception as e:
                raise fail(e, "deserializing", data) from e

        return ser, de


class SchemaRegistry:
    """A Schema Registry client (lazily created) and the serdes built on it.

    ``url``: one or more comma-separated URLs (``mock://<scope>``: confluent-kafka's in-process
    mock, for tests); ``basic_auth_user_info``: ``"user:password"`` (never logged or shown in
    ``repr``); ``config``: more ``SchemaRegistryClient`` properties (``ssl.ca.location``,
    ``bearer.auth.credentials.source``, ...); ``client``: an existing client to share. The client
    is created at once (without contacting the registry): invalid settings raise ConfigError here."""

    def __init__(self, url: str | None = None, *, basic_auth_user_info: Any = None,
                 config: Mapping[str, Any] | None = None, client: Any = None) -> None:
        if client is None and not url:
            raise ConfigError("invalid kstreamlet configuration: schema_registry_url (env "
                              "KSTREAMLET_SCHEMA_REGISTRY_URL): a Schema Registry serde needs the registry's URL")
        self.url = url
        self._config = dict(config or {})
        if basic_auth_user_info is not None:
            secret = getattr(basic_auth_user_info, "get_secret_value", None)
            self._config["basic.auth.user.info"] = secret() if secret else str(basic_auth_user_info)
        self._client = client
        self._lock = threading.Lock()
        # Created now (no request is made): a bad URL or property fails where the serde is defined,
        # not as an error of the first record.
        self.client

    @classmethod
    def from_settings(cls, settings: Any) -> "SchemaRegistry":
        """From an app's settings: ``schema_registry_url``, ``schema_registry_basic_auth_user_info``,
        ``schema_registry_config`` (a ConfigError naming the setting when the URL is missing)."""
        return cls(settings.schema_registry_url, basic_auth_user_info=settings.schema_registry_basic_auth_user_info,
                   config=settings.schema_registry_config)

    def __repr__(self) -> str:
        auth = ", basic auth" if "basic.auth.user.info" in self._config else ""
        return f"SchemaRegistry({self.url or 'client'}{auth})"

    @property
    def client(self) -> Any:
        """The ``confluent_kafka.schema_registry.SchemaRegistryClient``."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    sr = _import_registry()
                    conf = {**self._config, "url": self.url}
                    try:
                        self._client = sr.SchemaRegistryClient.new_client(conf)
                    except ImportError as e:
                        raise _missing_extra("schema registry", e) from e
                    except (ValueError, TypeError) as e:
                        # The message names the property, never its value (it may be a secret).
                        raise ConfigError(f"invalid kstreamlet configuration: schema_registry_config (env "
                                          f"KSTREAMLET_SCHEMA_REGISTRY_CONFIG) or schema_registry_url (env "
                                          f"KSTREAMLET_SCHEMA_REGISTRY_URL): {e}") from None
        return self._client

    # --- serdes ----------------------------------------------------------------------------------------

    @staticmethod
    def _conf(subject_name_strategy: Any, auto_register: bool, use_latest_version: bool,
              normalize_schemas: bool) -> dict[str, Any]:
        conf: dict[str, Any] = {"auto.register.schemas": auto_register, "use.latest.version": use_latest_version,
                                "normalize.schemas": normalize_schemas}
        if callable(subject_name_strategy):
            conf["subject.name.strategy"] = subject_name_strategy
        elif subject_name_strategy in _STRATEGIES:
            conf["subject.name.strategy.type"] = _STRATEGIES[subject_name_strategy]
        else:
            raise ValueError(f"unknown subject_name_strategy {subject_name_strategy!r}: use one of "
                             f"{sorted(_STRATEGIES)} or a callable (SerializationContext, record_name) -> subject")
        return conf

    @staticmethod
    def _subject_fn(subject_name_strategy: Any, record_name: str | None) -> Callable[[str, bool], str | None]:
        def subject(topic: str, is_key: bool) -> str | None:
            suffix = "key" if is_key else "value"
            if subject_name_strategy == "topic":
                return f"{topic}-{suffix}"
            if subject_name_strategy == "record":
                return record_name
            if subject_name_strategy == "topic_record":
                return f"{topic}-{record_name}" if record_name else None
            return None

        return subject

    def avro(self, schema: str | None = None, *, model: type | None = None, reader_schema: str | None = None,
             subject_name_strategy: Any = "topic", auto_register: bool = True, use_latest_version: bool = False,
             normalize_schemas: bool = False, topic: str | None = None) -> RegistrySerde:
        """Avro. ``schema``: the writer schema (JSON string); the reader schema is ``reader_schema``
        (default: ``schema``), so a record written with an older or newer schema is resolved into it
        (Avro schema resolution) or fails as a :class:`SchemaError`. Without a schema the serde
        writes with the subject's latest version and reads with each record's writer schema."""
        if schema is None and model is not None and hasattr(model, "avro_schema"):
            schema = model.avro_schema()
        if schema is None and not use_latest_version:
            raise ValueError("avro() needs schema= (or model= with avro_schema(), or use_latest_version=True)")
        conf = self._conf(subject_name_strategy, auto_register and schema is not None, use_latest_version,
                          normalize_schemas)
        to_dict, from_dict = _model_functions(model, json_mode=False)
        reader = reader_schema or schema
        registry = self

        def make() -> tuple[Any, Any]:
            try:
                from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
            except ImportError as e:
                raise _missing_extra("Avro", e) from e
            return (AvroSerializer(registry.client, schema, to_dict=to_dict, conf=conf),
                    AvroDeserializer(registry.client, reader, from_dict=from_dict))

        name = _record_name(schema)
        return RegistrySerde(f"avro:{name or (model.__name__ if model else 'latest')}", "avro", make,
                             self._subject_fn(subject_name_strategy, name), topic)

    def json_schema(self, schema: str | None = None, *, model: type | None = None,
                    subject_name_strategy: Any = "topic", auto_register: bool = True,
                    use_latest_version: bool = False, normalize_schemas: bool = False,
                    topic: str | None = None) -> RegistrySerde:
        """JSON Schema. ``schema`` defaults to ``model.model_json_schema()``; values are validated
        against it on both sides (a mismatch is a :class:`SchemaError`)."""
        import json

        if schema is None and model is not None and hasattr(model, "model_json_schema"):
            schema = json.dumps(model.model_json_schema())
        if schema is None:
            raise ValueError("json_schema() needs schema= or a pydantic model=")
        conf = self._conf(subject_name_strategy, auto_register, use_latest_version, normalize_schemas)
        to_dict, from_dict = _model_functions(model, json_mode=True)
        registry = self
        title = json.loads(schema).get("title")

        def make() -> tuple[Any, Any]:
            try:
                from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
            except ImportError as e:
                raise _missing_extra("JSON Schema", e) from e
            return (JSONSerializer(schema, registry.client, to_dict=to_dict, conf=conf),
                    JSONDeserializer(schema, from_dict=from_dict, schema_registry_client=registry.client))

        return RegistrySerde(f"json_schema:{title or (model.__name__ if model else 'schema')}", "json_schema", make,
                             self._subject_fn(subject_name_strategy, title), topic)

    def protobuf(self, message_type: type, *, model: type | None = None, subject_name_strategy: Any = "topic",
                 auto_register: bool = True, use_latest_version: bool = False, normalize_schemas: bool = False,
                 topic: str | None = None) -> RegistrySerde:
        """Protobuf, for a generated message class (``message_type``); values are instances of it
        (or, with ``model=``, pydantic models converted through ``json_format`` dicts)."""
        conf = self._conf(subject_name_strategy, auto_register, use_latest_version, normalize_schemas)
        registry = self
        to_msg: Callable[[Any], Any] | None = None
        from_msg: Callable[[Any], Any] | None = None
        if model is not None:
            from google.protobuf import json_format

            def to_msg(o: Any) -> Any:
                return json_format.ParseDict(o.model_dump(mode="json"), message_type())

            def from_msg(m: Any) -> Any:
                return model.model_validate(json_format.MessageToDict(  # type: ignore[attr-defined]
                    m, preserving_proto_field_name=True))

        def make() -> tuple[Any, Any]:
            try:
                from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
            except ImportError as e:
                raise _missing_extra("Protobuf", e) from e
            ser = ProtobufSerializer(message_type, registry.client, conf={**conf, "use.deprecated.format": False})
            de = ProtobufDeserializer(message_type, conf={"use.deprecated.format": False},
                                      schema_registry_client=registry.client)
            if to_msg is None or from_msg is None:
                return ser, de
            return (lambda o, ctx: ser(to_msg(o), ctx)), (lambda b, ctx: from_msg(de(b, ctx)))

        full_name = message_type.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        return RegistrySerde(f"protobuf:{full_name}", "protobuf", make,
                             self._subject_fn(subject_name_strategy, full_name), topic)


def _record_name(schema: str | None) -> str | None:
    import json

    if not schema:
        return None
    try:
        parsed = json.loads(schema)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("name"):
        ns = parsed.get("namespace")
        return f"{ns}.{parsed['name']}" if ns else str(parsed["name"])
    return None


def _model_functions(model: type | None, json_mode: bool) -> tuple[Any, Any]:
    """``to_dict(obj, ctx)`` / ``from_dict(dict, ctx)`` for a pydantic model (None: plain dicts)."""
    if model is None:
        return None, None
    if not hasattr(model, "model_validate"):
        raise ValueError(f"model= must be a pydantic v2 model class, got {model!r}")
    mode = "json" if json_mode else "python"
    validate = model.model_validate  # type: ignore[attr-defined]

    def to_dict(o: Any, ctx: Any) -> Any:
        return o.model_dump(mode=mode) if hasattr(o, "model_dump") else o

    def from_dict(d: Any, ctx: Any) -> Any:
        return validate(d)

    return to_dict, from_dict
