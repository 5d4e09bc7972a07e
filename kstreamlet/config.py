"""Application configuration: defaults, values in code, ``KSTREAMLET_*`` environment, flags.

Every field can be set in code (``App(application_id=..., commit_interval=0.1)``) and by
environment (``KSTREAMLET_APPLICATION_ID``, ``KSTREAMLET_COMMIT_INTERVAL=0.1``). Precedence,
highest first (:func:`resolve_settings`)::

    explicit overrides   CLI flags (kstreamlet run --bootstrap-servers ...), app.configure(...)
    environment          KSTREAMLET_<NAME> (the deployment: Helm chart, compose file, shell)
    code                 App(<name>=...)
    defaults             the Settings fields below

So values in code are the app's own defaults and a deployment can change any of them without
a code change; :meth:`Settings.report` says where each effective value came from (the runner
logs it once at start, secrets masked). Invalid values fail at start with
:class:`kstreamlet.errors.ConfigError` naming the field and its variable; so does an unknown
``App(...)`` keyword or a ``KSTREAMLET_*`` variable close to a setting's name ("did you
mean"), a malformed ``KSTREAMLET_KAFKA_CONFIG`` and an unknown librdkafka property.

Security has first-class settings (``security_protocol``, ``sasl_mechanism``, ``sasl_username``,
``sasl_password``, ``ssl_ca_location``, ``ssl_certificate_location``, ``ssl_key_location``,
``ssl_key_password``; docs/security.md): :meth:`Settings.security_config` maps them onto the
librdkafka properties every consumer, producer and admin client of the app gets. Passwords are
``SecretStr`` (never in a log line, an error message or ``repr``). Other librdkafka properties
(OAUTHBEARER, Kerberos, ...) still pass through ``kafka_config``
(env: ``KSTREAMLET_KAFKA_CONFIG='{"sasl.kerberos.service.name": "kafka"}'``).
"""

from __future__ import annotations

import contextvars
import difflib
import json
import logging
import os
import re
import socket
from typing import Any, Iterable, Literal, Mapping

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kstreamlet.errors import ConfigError

#: Set by ``kstreamlet run --workers N`` in each forked member (runtime/runner.py): its index
#: picks its HTTP port (observability) and its state directory ``w<index>/`` (state/factory.py).
WORKER_INDEX_ENV = "KSTREAMLET_WORKER_INDEX"

#: ``KSTREAMLET_*`` variables that kstreamlet, its services, tests and tools read but that are
#: not settings: never reported as unknown. Add a variable here when the project starts using one
#: (tests/unit/test_settings.py greps the repository for them).
NON_SETTING_ENV: dict[str, str] = {
    WORKER_INDEX_ENV: "set by `kstreamlet run --workers N` in each worker (runtime/runner.py)",
    "KSTREAMLET_WORKERS": "default of `kstreamlet run --workers`",
    "KSTREAMLET_MYSQL_URL": "MySQL URL of services and of the mysql_url fixture (dev/mysql.py)",
    "KSTREAMLET_MYSQL_IMAGE": "Testcontainers MySQL image (dev/mysql.py)",
    "KSTREAMLET_MYSQL_BACKEND": "forces a dev MySQL backend (dev/mysql.py)",
    "KSTREAMLET_MARIADBD": "path of mariadbd for the local MariaDB (dev/mysql.py)",
    "KSTREAMLET_MARIADB_INSTALL_DB": "path of mariadb-install-db (dev/mysql.py)",
    "KSTREAMLET_KAFKA_VERSION": "Apache Kafka version of the local broker (dev/kafka.py)",
    "KSTREAMLET_KAFKA_BACKEND": "forces a dev Kafka backend (dev/kafka.py)",
    "KSTREAMLET_CACHE_DIR": "cache of Kafka jars and dev servers (dev/kafka.py)",
    "KSTREAMLET_TEST_CRASH_AT": "fault-injection crash point (runtime/faults.py)",
    "KSTREAMLET_TEST_CRASH_AFTER": "fault-injection crash count (runtime/faults.py)",
    "KSTREAMLET_FULL_CHAOS": "runs the extended chaos tests in CI (tests/conftest.py)",
    "KSTREAMLET_HYPOTHESIS_EXAMPLES": "property-test examples (tests/unit)",
    "KSTREAMLET_HELM": "helm binary for the chart tests (tests/unit/test_helm_chart.py)",
    "KSTREAMLET_BIN_DIR": "where scripts/install-helm.sh installs helm",
    "KSTREAMLET_EXTRAS": "extras of the image build (docker/Dockerfile)",
}

ENV_PREFIX = "KSTREAMLET_"

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]

#: First-class security settings and the librdkafka property each one sets (Settings.security_config).
SECURITY_PROPERTIES: dict[str, str] = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanisms",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}
#: Settings whose values are secrets: never logged, shown as ``***``.
SECRET_SETTINGS = frozenset({"sasl_password", "ssl_key_password", "http_auth_token", "schema_registry_basic_auth_user_info"})
ErrorPolicy = Literal["dlq", "skip", "fail"]

# Settings kstreamlet owns: passing them through kafka_config would break its guarantees.
_RESERVED = {
    "group.id", "enable.auto.commit", "transactional.id", "isolation.level",
    "enable.auto.offset.store", "bootstrap.servers", "group.instance.id",
}


def _default_instance_id() -> str:
    # The pod name is stable across restarts of a StatefulSet pod. Several processes on one
    # host must set distinct instance ids (tests do; `--workers` appends -w<index>).
    return os.environ.get("HOSTNAME") or socket.gethostname()


class Settings(BaseSettings):
    """All knobs of an :class:`~kstreamlet.App`."""

    model_config = SettingsConfigDict(env_prefix="KSTREAMLET_", extra="forbid", validate_default=True)

    # Where each value came from (resolve_settings fills them in) and KSTREAMLET_* variables ignored.
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _shadowed: dict[str, Any] = PrivateAttr(default_factory=dict)
    _ignored_env: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _RESOLVING.get():  # resolve_settings read the environment itself, with better errors
            return (init_settings,)
        # Settings(...) used directly follows the same rule: the environment beats arguments.
        return (env_settings, init_settings)

    application_id: str = Field(description="Consumer group id and prefix of internal topics.")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    processing_guarantee: ProcessingGuarantee = "exactly_once"
    commit_interval: float = Field(0.1, gt=0, le=600, description="Seconds between checkpoints.")
    instance_id: str | None = Field(
        None,
        description="Stable id of this instance (e.g. the pod name), part of transactional.id. "
        "Defaults to HOSTNAME plus the process id.",
    )
    error_policy: ErrorPolicy = Field("dlq", description="What to do with a record that fails: dlq | skip | fail.")
    dlq_topic: str | None = Field(None, description="Dead-letter topic; default '<application_id>-dlq'.")
    group_protocol: Literal["consumer", "classic"] = Field(
        "consumer", description="'consumer' = KIP-848 (Kafka 4+), 'classic' = cooperative-sticky."
    )
    session_timeout: float = Field(10.0, ge=1, le=300, description="Seconds until a silent member is dropped (classic).")
    transaction_timeout: float = Field(
        10.0, ge=1, le=900,
        description="Seconds before the broker aborts an open transaction of a dead member.",
    )
    poll_batch_size: int = Field(1000, ge=1, le=100_000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: SecurityProtocol | None = Field(
        None, description="How the clients talk to the brokers: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL; "
        "None = librdkafka's default (PLAINTEXT) or kafka_config's security.protocol.")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, OAUTHBEARER, GSSAPI); needs a SASL_* "
        "security_protocol.")
    sasl_username: str | None = Field(None, description="SASL user (PLAIN/SCRAM); the ACL principal is User:<it>.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (PLAIN/SCRAM): a secret, never logged (the Helm chart reads it from a Secret).")
    ssl_ca_location: str | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates; None = the system's CAs.")
    ssl_certificate_location: str | None = Field(
        None, description="PEM client certificate for mTLS (with ssl_key_location).")
    ssl_key_location: str | None = Field(None, description="PEM private key of ssl_certificate_location (mTLS).")
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted ssl_key_location: a secret, never logged.")
    kafka_config: dict[str, Any] = Field(default_factory=dict, description="librdkafka passthrough (SASL/SSL...).")
    internal_topic_replication: int = Field(-1, description="Replication factor of internal topics; -1 = broker default.")
    shutdown_timeout: float = Field(30.0, gt=0, description="Seconds a SIGTERM may take before the process exits.")
    state_dir: str = Field("/tmp/kstreamlet/state", description="Local state directory (a PVC in Kubernetes).")
    state_backend: Literal["rocksdb", "memory"] = Field("rocksdb", description="Where keyed state lives locally.")
    rocksdb_block_cache_mb: int = Field(64, ge=1, description="Block cache shared by all RocksDB stores of a process.")
    record_cache_max_bytes: int = Field(
        0, ge=0,
        description="Bytes of the record cache of keyed running aggregations (count/sum/min/max/reduce/aggregate) "
        "per process, split between its tasks (Kafka Streams' statestore.cache.max.bytes); 0 = off. With it on, "
        "updates of a key are folded in memory and written to the store, changelog and downstream once per "
        "checkpoint (or when the cache is full): fewer, later updates, the last per key per checkpoint.",
    )
    fuse_operators: bool = Field(
        True,
        description="Compile each linear run of stateless operators (map, filter, flat_map, peek, with the topic "
        "sink or branch ending it and the source's per-record entry before it) into one function per task: the "
        "same calls in the same order, one Python call per record instead of one per operator "
        "(kstreamlet/topology/fusion.py). Off: one closure per operator, e.g. to step through them in a debugger.",
    )
    http_port: int | None = Field(None, ge=0, le=65535, description="Port of /healthz /readyz /metrics; None = off.")
    http_host: str = Field(
        "0.0.0.0", min_length=1,
        description="Address the HTTP port listens on: all interfaces by default (kubelet probes and Prometheus "
        "connect from outside); 127.0.0.1 = this host only. Queries on it are guarded (query_access).")
    http_auth_token: SecretStr | None = Field(
        None, description="Bearer token /stores and /metadata require (Authorization: Bearer <token>); every "
        "instance of the app shares it and sends it with forwarded queries. A secret, never logged.")
    http_tls_certificate_location: str | None = Field(
        None, description="PEM certificate the HTTP port serves HTTPS with (with http_tls_key_location).")
    http_tls_key_location: str | None = Field(None, description="PEM private key of http_tls_certificate_location.")
    http_tls_ca_location: str | None = Field(
        None, description="PEM CA: /stores and /metadata require a client certificate it signed (mTLS; probes and "
        "scrapes need none), and forwarded queries verify the owner's certificate with it. Needs HTTPS.")
    query_access: Literal["local", "open"] = Field(
        "local", description="Who may call /stores and /metadata when neither http_auth_token nor "
        "http_tls_ca_location is set: local = loopback clients only; open = anyone who reaches the port "
        "(a trusted network).")
    advertised_url: str | None = Field(
        None, description="URL other instances reach this one's HTTP port at, for interactive queries routed to the "
        "owner of a key (docs/operations.md); default http://<hostname>:<http_port>. The Helm chart sets the pod's "
        "DNS name.")
    static_membership: bool = Field(
        False,
        description="Static group membership (KIP-345, group.instance.id = the instance id): a restart within the "
        "session timeout keeps the member's partitions and local state, without a rebalance; a member that does "
        "not come back holds its partitions until the session times out. Opt-in, as in Kafka Streams; needs an "
        "explicit instance_id (the Helm chart turns it on for StatefulSets, with the pod name as instance id).",
    )
    state_cleanup_delay: float = Field(
        600.0, ge=0,
        description="Seconds a local state directory of a partition this member no longer owns is kept (a task "
        "that comes back within it needs no restore) before it is removed (Kafka Streams' state.cleanup.delay.ms).",
    )
    require_explicit_names: bool = Field(
        False,
        description="Refuse to start when a stateful operator or key_by has a generated name (Kafka Streams' "
        "KIP-1111 ensure.explicit.internal.resource.naming): its state would shift when operators are added.",
    )
    allow_topology_change: bool = Field(
        False,
        description="Start even when the topology's stores differ from the recorded ones (renamed operators, a "
        "store whose serde changed, a removed store): the change is intended; reset the affected stores.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL(s), comma-separated, for the serdes of kstreamlet.serdes_registry "
        "(Avro, Protobuf, JSON Schema); None = no registry. mock://<scope> is confluent-kafka's in-process registry.",
    )
    schema_registry_basic_auth_user_info: SecretStr | None = Field(
        None,
        description="'user:password' for the Schema Registry's HTTP basic auth (a secret: never logged).",
    )
    schema_registry_config: dict[str, Any] = Field(
        default_factory=dict,
        description="SchemaRegistryClient passthrough (ssl.ca.location, bearer.auth.*, ...); secret keys masked in logs.",
    )
    tracing: Literal["off", "w3c", "otel"] = Field(
        "off",
        description="W3C traceparent headers always continue through the pipeline (new span id per hop). 'w3c': "
        "records without one get a new trace; 'otel': also OpenTelemetry spans per checkpoint (kstreamlet[otel]).",
    )

    @field_validator("tracing")
    @classmethod
    def _otel_installed(cls, v: str) -> str:
        if v == "otel":
            import importlib.util

            if importlib.util.find_spec("opentelemetry") is None:
                raise ValueError("'otel' needs OpenTelemetry: pip install 'kstreamlet[otel]' (or use 'w3c')")
        return v
    async_event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="Event loop of async operators (map_async, async process_element): 'uvloop' "
        "needs the optional extra kstreamlet[async].")
    async_checkpoint_timeout: float | None = Field(
        None, gt=0,
        description="Seconds a checkpoint waits for in-flight async calls to complete; past it the checkpoint "
        "aborts and its records are replayed. Below transaction_timeout under exactly-once; default: "
        "min(5, transaction_timeout / 2).")

    @field_validator("application_id")
    @classmethod
    def _valid_app_id(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", v):
            raise ValueError("must be 1-200 characters of letters, digits, '.', '_' or '-' (it names Kafka topics)")
        return v

    @field_validator("bootstrap_servers")
    @classmethod
    def _valid_bootstrap(cls, v: str) -> str:
        for hp in v.split(","):
            host, _, port = hp.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    @field_validator("kafka_config")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) & _RESERVED)
        if bad:
            raise ValueError(f"{bad} are managed by kstreamlet and cannot be passed through")
        check_librdkafka_config(v)
        return v

    @model_validator(mode="after")
    def _coherent_security(self) -> "Settings":
        """Fail at start on a security configuration that cannot log in, naming the settings."""
        problems: list[str] = []
        for name, prop in SECURITY_PROPERTIES.items():
            value = getattr(self, name)
            if value is None or prop not in self.kafka_config:
                continue
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            if str(self.kafka_config[prop]) != str(plain):
                problems.append(f"{name} (env {env_name(name)}) and kafka_config's {prop!r} are both set, to different "
                                "values; set only the first")
        if self.kafka_config.get("sasl.mechanism") is not None and self.sasl_mechanism is not None:
            problems.append(f"sasl_mechanism (env {env_name('sasl_mechanism')}) and kafka_config's 'sasl.mechanism' "
                            "are both set; set only the first")
        proto = str(self.security_protocol or self.kafka_config.get("security.protocol") or "PLAINTEXT").upper()
        sasl = proto.startswith("SASL_")
        mechanism = str(self.sasl_mechanism or self.kafka_config.get("sasl.mechanisms")
                        or self.kafka_config.get("sasl.mechanism") or "GSSAPI").upper()
        given = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, n) is not None]
        if given and not sasl:
            problems.append(f"{', '.join(given)} set but security_protocol (env KSTREAMLET_SECURITY_PROTOCOL) is "
                            f"{proto}: use SASL_SSL (or SASL_PLAINTEXT)")
        if sasl and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            missing = [f"{n} (env {env_name(n)})" for n, prop in (("sasl_username", "sasl.username"),
                                                                   ("sasl_password", "sasl.password"))
                       if getattr(self, n) is None and prop not in self.kafka_config]
            if missing:
                problems.append(f"security_protocol {proto} with sasl_mechanism {mechanism} needs {' and '.join(missing)}")
        tls = proto in ("SSL", "SASL_SSL")
        files = [n for n in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location") if getattr(self, n)]
        if files and not tls:
            problems.append(f"{', '.join(files)} set but security_protocol (env KSTREAMLET_SECURITY_PROTOCOL) is "
                            f"{proto}: use SSL or SASL_SSL")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            problems.append("mTLS needs both ssl_certificate_location (env KSTREAMLET_SSL_CERTIFICATE_LOCATION) and "
                            "ssl_key_location (env KSTREAMLET_SSL_KEY_LOCATION)")
        for n in files:
            path = str(getattr(self, n))
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                problems.append(f"{n} (env {env_name(n)}): no readable file at {path}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def security_config(self) -> dict[str, Any]:
        """The librdkafka properties of the first-class security settings (only those set), for
        every client of the app; secrets in plain text (never log this dict: :func:`mask_config`)."""
        out: dict[str, Any] = {}
        for name, prop in SECURITY_PROPERTIES.items():
            value = getattr(self, name)
            if value is None:
                continue
            out[prop] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return out

    @property
    def principal(self) -> str | None:
        """The ACL principal the app logs in as when it is known from the settings (``User:<sasl_username>``)."""
        user = self.sasl_username or self.kafka_config.get("sasl.username")
        return f"User:{user}" if user else None

    @model_validator(mode="after")
    def _http_tls_is_coherent(self) -> "Settings":
        """Fail at start on an HTTP port protection that cannot work, naming the settings."""
        problems: list[str] = []
        if (self.http_tls_certificate_location is None) != (self.http_tls_key_location is None):
            problems.append("HTTPS needs both http_tls_certificate_location (env KSTREAMLET_HTTP_TLS_CERTIFICATE_LOCATION) "
                            "and http_tls_key_location (env KSTREAMLET_HTTP_TLS_KEY_LOCATION)")
        if self.http_tls_ca_location is not None and self.http_tls_certificate_location is None:
            problems.append("http_tls_ca_location (env KSTREAMLET_HTTP_TLS_CA_LOCATION) asks for client certificates, "
                            "which need HTTPS: set http_tls_certificate_location and http_tls_key_location too")
        for n in ("http_tls_certificate_location", "http_tls_key_location", "http_tls_ca_location"):
            path = getattr(self, n)
            if path is not None and (not os.path.isfile(path) or not os.access(path, os.R_OK)):
                problems.append(f"{n} (env {env_name(n)}): no readable file at {path}")
        if self.http_auth_token is not None and not self.http_auth_token.get_secret_value().strip():
            problems.append("http_auth_token (env KSTREAMLET_HTTP_AUTH_TOKEN) is empty")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _transaction_outlasts_a_checkpoint(self) -> "Settings":
        # A checkpoint's transaction stays open for a whole commit interval: with a shorter
        # timeout the broker aborts every checkpoint and the producer is fenced, over and over.
        if self.processing_guarantee == "exactly_once" and self.transaction_timeout <= self.commit_interval:
            raise ValueError(
                f"transaction_timeout (env KSTREAMLET_TRANSACTION_TIMEOUT) = {self.transaction_timeout:g}s must be "
                f"greater than commit_interval (env KSTREAMLET_COMMIT_INTERVAL) = {self.commit_interval:g}s: each "
                "checkpoint's transaction is open for a commit interval; use several commit intervals")
        return self

    @model_validator(mode="after")
    def _async_settings(self) -> "Settings":
        if self.async_event_loop == "uvloop":
            import importlib.util

            if importlib.util.find_spec("uvloop") is None:
                raise ValueError("async_event_loop (env KSTREAMLET_ASYNC_EVENT_LOOP) = 'uvloop' needs uvloop: "
                                 "pip install 'kstreamlet[async]'")
        if self.processing_guarantee == "exactly_once" and self.async_checkpoint_timeout is not None \
                and self.async_checkpoint_timeout >= self.transaction_timeout:
            raise ValueError(
                f"async_checkpoint_timeout (env KSTREAMLET_ASYNC_CHECKPOINT_TIMEOUT) = {self.async_checkpoint_timeout:g}s "
                f"must be below transaction_timeout (env KSTREAMLET_TRANSACTION_TIMEOUT) = {self.transaction_timeout:g}s: "
                "the checkpoint's transaction stays open while it waits for async calls")
        return self

    @model_validator(mode="after")
    def _static_needs_a_stable_id(self) -> "Settings":
        # The generated id (HOSTNAME-pid) changes with every start: as a group.instance.id each restart
        # would leave a ghost member holding partitions until the session timeout.
        if self.static_membership and self.instance_id is None:
            raise ValueError(
                "static_membership (env KSTREAMLET_STATIC_MEMBERSHIP) needs a stable instance_id (env "
                "KSTREAMLET_INSTANCE_ID, e.g. the StatefulSet pod name): the generated HOSTNAME-pid id changes "
                "with every start")
        return self

    def __repr_args__(self) -> Any:
        # repr() and str() of the settings never show a secret (kafka_config's included).
        for name, value in super().__repr_args__():
            yield name, (mask_setting(name, value) if name is not None else value)

    @property
    def sources(self) -> dict[str, str]:
        """Where each setting's value came from: ``default``, ``code``, ``env KSTREAMLET_<NAME>``,
        ``flag --<name>`` or ``configure()``."""
        return {name: self._sources.get(name, "default") for name in type(self).model_fields}

    def report(self) -> dict[str, Any]:
        """The effective settings for the start-up log: ``{"settings": {name: {"value", "source"[,
        "overrides_code"]}}, "ignored_env": [...]}``, secrets in ``kafka_config`` masked."""
        out: dict[str, Any] = {}
        sources = self.sources
        for name in type(self).model_fields:
            entry: dict[str, Any] = {"value": mask_setting(name, getattr(self, name)), "source": sources[name]}
            if name in self._shadowed:
                entry["overrides_code"] = mask_setting(name, self._shadowed[name])
            out[name] = entry
        report: dict[str, Any] = {"settings": out}
        if self._ignored_env:
            report["ignored_env"] = list(self._ignored_env)
        return report

    @property
    def effective_instance_id(self) -> str:
        return self.instance_id or f"{_default_instance_id()}-{os.getpid()}"

    @property
    def effective_static_membership(self) -> bool:
        """Static membership on (it is opt-in: ``static_membership=true`` with an explicit instance id)."""
        return self.static_membership

    @property
    def effective_dlq_topic(self) -> str:
        return self.dlq_topic or f"{self.application_id}-dlq"

    @property
    def effective_async_checkpoint_timeout(self) -> float:
        """How long a checkpoint waits for in-flight async calls (runtime/async_io.py)."""
        if self.async_checkpoint_timeout is not None:
            return self.async_checkpoint_timeout
        return min(5.0, self.transaction_timeout / 2)




# --- resolution: defaults < code < environment < overrides ------------------------------------------

_RESOLVING: contextvars.ContextVar[bool] = contextvars.ContextVar("kstreamlet_resolving_settings", default=False)
_log = logging.getLogger("kstreamlet.config")
_warned: set[str] = set()

#: How close (difflib ratio of the names without prefix) a name must be to a setting's for an error.
_TYPO_CUTOFF = 0.8
#: How close it must be for a suggestion in a warning.
_HINT_CUTOFF = 0.6


def setting_names() -> list[str]:
    return list(Settings.model_fields)


def env_name(field: str) -> str:
    """The environment variable of setting ``field``: ``KSTREAMLET_<FIELD>``."""
    return f"{ENV_PREFIX}{field.upper()}"


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = _HINT_CUTOFF) -> str | None:
    """The candidate closest to ``name`` (case-insensitive), if any is at least ``cutoff`` similar."""
    pool = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(pool), n=1, cutoff=cutoff)
    return pool[found[0]] if found else None


def check_setting_names(names: Iterable[str], where: str = "App()") -> None:
    """Raise ConfigError for names that are not settings, with the closest setting's name."""
    known = setting_names()
    problems = []
    for name in names:
        if name in Settings.model_fields:
            continue
        hint = did_you_mean(name, known)
        problems.append(f"unknown setting {name!r} in {where}" + (f"; did you mean {hint!r}?" if hint else
                                                                   f"; settings are: {', '.join(known)}"))
    if problems:
        raise ConfigError("invalid kstreamlet configuration: " + "; ".join(problems))


#: Settings whose environment variable is a JSON object.
_JSON_FIELDS = ("kafka_config", "schema_registry_config")


def parse_kafka_config_env(var: str, raw: str, field: str = "kafka_config") -> dict[str, Any]:
    """``KSTREAMLET_KAFKA_CONFIG``'s JSON object, or a ConfigError saying where it is malformed
    (the value itself is not repeated: it may hold credentials)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"invalid kstreamlet configuration: {field} (env {var}): not valid JSON: {e.msg} at line {e.lineno} "
            f"column {e.colno} (char {e.pos}); expected an object such as "
            '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"}') from None
    if not isinstance(value, dict):
        raise ConfigError(f"invalid kstreamlet configuration: {field} (env {var}): expected a JSON object of "
                          f"{'librdkafka ' if field == 'kafka_config' else ''}properties, got a JSON {type(value).__name__}")
    return value


def read_env(environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Settings from ``KSTREAMLET_*`` variables: ``(values, variable per field, ignored variables)``.

    Empty values count as unset (as the Helm chart's null/""). A variable that is no setting and not
    in :data:`NON_SETTING_ENV` is a ConfigError when its name is close to a setting's (a typo), else
    ignored with a one-line warning (once per process)."""
    environ = os.environ if environ is None else environ
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    ignored: list[str] = []
    typos: list[str] = []
    for var, raw in environ.items():
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        field = upper[len(ENV_PREFIX):].lower()
        if field in fields:
            if raw == "":
                continue
            values[field] = parse_kafka_config_env(var, raw, field) if field in _JSON_FIELDS else raw
            names[field] = var
            continue
        if upper in NON_SETTING_ENV:
            continue
        suffix = upper[len(ENV_PREFIX):]
        close = did_you_mean(suffix, [f.upper() for f in fields], cutoff=_TYPO_CUTOFF)
        if close is not None:
            typos.append(f"unknown environment variable {var}; did you mean {ENV_PREFIX}{close}?")
            continue
        ignored.append(var)
        if var not in _warned:
            _warned.add(var)
            pool = [f.upper() for f in fields] + [n[len(ENV_PREFIX):] for n in NON_SETTING_ENV]
            hint = did_you_mean(suffix, pool)
            _log.warning("kstreamlet: ignoring %s: not a kstreamlet setting%s", var,
                         f" (did you mean {ENV_PREFIX}{hint}?)" if hint else "")
    if typos:
        raise ConfigError("invalid kstreamlet configuration: " + "; ".join(sorted(typos)))
    return values, names, ignored


def resolve_settings(code: Mapping[str, Any] | None = None,
                     overrides: Mapping[str, tuple[Any, str]] | None = None,
                     environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings`: defaults < ``code`` < ``KSTREAMLET_*`` environment < ``overrides``.

    ``code``: values written in the app (``App(...)`` keywords; None = not set).
    ``overrides``: ``{field: (value, source)}`` set explicitly for this run, e.g. a CLI flag
    (``"flag --bootstrap-servers"``) or ``app.configure(...)``; they beat the environment.
    Raises ConfigError naming the field and its variable, or an unknown name with "did you mean"."""
    code = {k: v for k, v in (code or {}).items() if v is not None}
    overrides = {k: sv for k, sv in (overrides or {}).items() if sv[0] is not None}
    check_setting_names(code)
    check_setting_names(overrides, "configure()/flags")
    env_values, env_vars, ignored = read_env(environ)
    merged: dict[str, Any] = dict(code)
    sources = {k: "code" for k in code}
    shadowed: dict[str, Any] = {}
    for field, value in env_values.items():
        _layer(merged, sources, shadowed, code, field, value, f"env {env_vars[field]}")
    for field, (value, source) in overrides.items():
        _layer(merged, sources, shadowed, code, field, value, source)
    token = _RESOLVING.set(True)
    try:
        settings = Settings(**merged)
    except ValidationError as e:
        raise ConfigError("invalid kstreamlet configuration: " + "; ".join(_problems(e, sources, merged))) from None
    finally:
        _RESOLVING.reset(token)
    settings._sources = sources
    settings._shadowed = {k: v for k, v in shadowed.items() if k in sources and sources[k] != "code"}
    settings._ignored_env = ignored
    return settings


def _layer(merged: dict[str, Any], sources: dict[str, str], shadowed: dict[str, Any], code: Mapping[str, Any],
           field: str, value: Any, source: str) -> None:
    """Put a higher layer's ``value`` over ``merged[field]``. ``kafka_config`` is merged per
    property (the deployment's SASL settings and the code's client tuning both apply; a property
    in both takes the higher layer's value); every other setting is replaced."""
    below = merged.get(field)
    if field == "kafka_config" and isinstance(below, Mapping) and isinstance(value, Mapping) and below:
        if field in code and any(k in value and value[k] != v for k, v in code[field].items()):
            shadowed.setdefault(field, code[field])
        merged[field] = {**below, **value}
        sources[field] = f"{sources[field]} + {source}"
        return
    if field in code:
        shadowed.setdefault(field, code[field])
    merged[field] = value
    sources[field] = source


def _problems(e: ValidationError, sources: Mapping[str, str], merged: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in e.errors():
        if not err["loc"]:  # a rule across fields: its message names them and their env variables
            problems.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0])
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = ""
        if top in sources:
            shown = "" if top == "kafka_config" else f"got {mask_setting(top, merged.get(top))!r} "
            where = f" ({shown}from {sources[top]})"
        problems.append(f"{field} (env {env_name(top)}): {msg}{where}")
    return problems


def load_settings(**code: Any) -> Settings:
    """Build :class:`Settings` from values in code and the environment (environment wins);
    raise ConfigError naming the field. Same as ``resolve_settings(code)``."""
    return resolve_settings(code)


# --- secrets -------------------------------------------------------------------------------------------

# user.info: a Schema Registry client's basic.auth.user.info ("user:password").
_SECRET_KEY = re.compile(r"password|secret|token|credential|jaas|oauthbearer\.config|\.pem$|keytab|user\.info", re.I)
MASK = "***"


def is_secret_key(key: str) -> bool:
    """Whether a librdkafka property holds a secret (its value is never logged)."""
    return bool(_SECRET_KEY.search(key))


def mask_setting(name: str, value: Any) -> Any:
    """``value`` as it may be logged: secret settings (``sasl_password``, ``ssl_key_password``,
    ``http_auth_token``, ``schema_registry_basic_auth_user_info``) and secret ``kafka_config`` /
    ``schema_registry_config`` entries replaced by ``***``."""
    if name in ("kafka_config", "schema_registry_config") and isinstance(value, Mapping):
        return mask_config(value)
    if name in SECRET_SETTINGS or isinstance(value, SecretStr):
        return None if value is None else MASK
    return value


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A librdkafka configuration as it may be logged: secret properties replaced by ``***``."""
    return {k: (MASK if is_secret_key(str(k)) else v) for k, v in config.items()}


# --- librdkafka properties ------------------------------------------------------------------------------

# Handled by confluent-kafka itself (callables), never seen by librdkafka's configuration.
_PYTHON_CLIENT_KEYS = {"error_cb", "throttle_cb", "stats_cb", "oauth_cb", "logger", "on_delivery", "on_commit",
                       "delivery.report.only.error"}
_SECURITY_PROTOCOLS = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}
# Common properties offered as "did you mean" suggestions (librdkafka cannot list its own).
_COMMON_KEYS = [
    "security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
    "sasl.oauthbearer.method", "sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.scope", "sasl.kerberos.service.name",
    "sasl.kerberos.principal", "sasl.kerberos.keytab", "ssl.ca.location", "ssl.certificate.location",
    "ssl.key.location", "ssl.key.password", "ssl.endpoint.identification.algorithm", "ssl.ca.pem",
    "ssl.certificate.pem", "ssl.key.pem", "ssl.keystore.location", "ssl.keystore.password", "client.id",
    "client.rack", "socket.timeout.ms", "socket.keepalive.enable", "message.max.bytes", "fetch.max.bytes",
    "max.partition.fetch.bytes", "compression.type", "linger.ms", "batch.size", "batch.num.messages",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "request.timeout.ms", "retry.backoff.ms",
    "reconnect.backoff.ms", "reconnect.backoff.max.ms", "metadata.max.age.ms", "statistics.interval.ms",
    "debug", "log_level", "broker.address.family", "api.version.request", "enable.ssl.certificate.verification",
    "connections.max.idle.ms", "fetch.wait.max.ms", "fetch.min.bytes", "max.poll.interval.ms",
]
_NO_SUCH = re.compile(r'No such configuration property: "([^"]+)"')


def check_librdkafka_config(config: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first key librdkafka does not know, or whose value it refuses.

    librdkafka itself is the authority: a producer configuration is built without bootstrap
    servers (no connection, no thread left behind). ``security.protocol`` is checked by value and
    left out of that build, so SSL contexts and SASL logins are not set up here."""
    if not config:
        return
    for key, value in config.items():
        if not isinstance(key, str):
            raise ValueError(f"librdkafka property names are strings, got {key!r}")
        if key in _PYTHON_CLIENT_KEYS:
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"librdkafka property {key!r} needs a string, number or boolean value, "
                             f"got {type(value).__name__}")
    proto = config.get("security.protocol")
    if proto is not None and str(proto).lower() not in _SECURITY_PROTOCOLS:
        raise ValueError(f"librdkafka property 'security.protocol' must be one of "
                         f"{sorted(p.upper() for p in _SECURITY_PROTOCOLS)}, got {proto!r}")
    checked = {k: v for k, v in config.items() if k not in _PYTHON_CLIENT_KEYS and k != "security.protocol"}
    if not checked:
        return
    error = _librdkafka_error(checked)
    if error is None:
        return
    unknown = _NO_SUCH.search(error)
    if unknown:
        key = unknown.group(1)
        hint = did_you_mean(key, _COMMON_KEYS, cutoff=0.75)
        raise ValueError(f"unknown librdkafka property {key!r}" + (f"; did you mean {hint!r}?" if hint else
                         " (see librdkafka's CONFIGURATION.md)"))
    # A refused value names librdkafka's canonical property (e.g. request.required.acks for acks):
    # find the key as written.
    for key, value in checked.items():
        if _librdkafka_error({key: value}) is not None:
            shown = MASK if is_secret_key(key) else repr(value)
            raise ValueError(f"librdkafka refuses {key}={shown}: {error}")
    raise ValueError(f"librdkafka refuses this configuration: {error}")


_null_logger = logging.getLogger("kstreamlet.config.librdkafka-check")
_null_logger.addHandler(logging.NullHandler())
_null_logger.propagate = False


def _librdkafka_error(config: Mapping[str, Any]) -> str | None:
    from confluent_kafka import KafkaException, Producer

    try:
        producer = Producer({**config, "logger": _null_logger})
    except KafkaException as e:
        err: Any = e.args[0] if e.args else None
        return str(err.str()) if hasattr(err, "str") else str(e)
    except (TypeError, ValueError) as e:
        return str(e)
    del producer
    return None
