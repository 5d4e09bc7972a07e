"""Application configuration: code arguments, then ``KSTREAMLET_*`` environment variables.

Every field can be set in code (``App(application_id=..., commit_interval=0.1)``) or by
environment (``KSTREAMLET_APPLICATION_ID``, ``KSTREAMLET_COMMIT_INTERVAL=0.1``); code wins.
Invalid values fail at start with :class:`kstreamlet.errors.ConfigError` naming the field.

librdkafka settings for security (SASL/SSL, as in Kafka's own clients) pass through
``kafka_config`` (env: ``KSTREAMLET_KAFKA_CONFIG='{"security.protocol": "SASL_SSL", ...}'``);
they are applied to every consumer, producer and admin client the app creates.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kstreamlet.errors import ConfigError

#: Set by ``kstreamlet run --workers N`` in each forked member (runtime/runner.py): its index
#: picks its HTTP port (observability) and its state directory ``w<index>/`` (state/factory.py).
WORKER_INDEX_ENV = "KSTREAMLET_WORKER_INDEX"

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
ErrorPolicy = Literal["dlq", "skip", "fail"]

# Settings kstreamlet owns: passing them through kafka_config would break its guarantees.
_RESERVED = {
    "group.id", "enable.auto.commit", "transactional.id", "isolation.level",
    "enable.auto.offset.store", "bootstrap.servers",
}


def _default_instance_id() -> str:
    # The pod name is stable across restarts of a StatefulSet pod. Several processes on one
    # host must set distinct instance ids (tests do; `--workers` appends -w<index>).
    return os.environ.get("HOSTNAME") or socket.gethostname()


class Settings(BaseSettings):
    """All knobs of an :class:`~kstreamlet.App`."""

    model_config = SettingsConfigDict(env_prefix="KSTREAMLET_", extra="forbid", validate_default=True)

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
    kafka_config: dict[str, Any] = Field(default_factory=dict, description="librdkafka passthrough (SASL/SSL...).")
    internal_topic_replication: int = Field(-1, description="Replication factor of internal topics; -1 = broker default.")
    shutdown_timeout: float = Field(30.0, gt=0, description="Seconds a SIGTERM may take before the process exits.")
    state_dir: str = Field("/tmp/kstreamlet/state", description="Local state directory (a PVC in Kubernetes).")
    state_backend: Literal["rocksdb", "memory"] = Field("rocksdb", description="Where keyed state lives locally.")
    rocksdb_block_cache_mb: int = Field(64, ge=1, description="Block cache shared by all RocksDB stores of a process.")
    http_port: int | None = Field(None, ge=0, le=65535, description="Port of /healthz /readyz /metrics; None = off.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
        return v

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

    @property
    def effective_instance_id(self) -> str:
        return self.instance_id or f"{_default_instance_id()}-{os.getpid()}"

    @property
    def effective_dlq_topic(self) -> str:
        return self.dlq_topic or f"{self.application_id}-dlq"


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from keyword overrides and the environment; raise ConfigError naming the field."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            if not err["loc"]:  # a rule across fields: its message names them and their env variables
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field = ".".join(str(p) for p in err["loc"])
            env = f"KSTREAMLET_{field.upper()}"
            problems.append(f"{field} (env {env}): {err['msg']}")
        raise ConfigError("invalid kstreamlet configuration: " + "; ".join(problems)) from None
