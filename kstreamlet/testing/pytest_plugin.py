"""pytest fixtures for kstreamlet services, registered through the ``pytest11`` entry point.

Fixtures (all real servers, never fakes):

``kafka_bootstrap``  (session)
    ``"host:port"`` of a running broker: ``KSTREAMLET_BOOTSTRAP_SERVERS`` if set, else
    Testcontainers Kafka when Docker answers, else a local broker from Kafka's jars.
``kafka_admin``      (session)
    a ``confluent_kafka.admin.AdminClient`` on that broker.
``kafka_topic``      (function)
    factory ``kafka_topic(partitions=1, name=None, config=None) -> str`` creating a topic
    with a unique name; the topics are deleted when the test ends.
``kafka_local_broker`` (function)
    a private restartable single-node broker for fault injection (kill / restart / pause).
``kafka_cluster``    (function)
    a private 3-node KRaft cluster (RF 3, min ISR 2) with per-node kill / restart.
``kafka_secure``     (session)
    a private single-node broker with a ``SASL_SSL`` listener (SCRAM-SHA-512 over TLS, throwaway
    CA) and the StandardAuthorizer on, besides its plaintext super-user listener: a
    :class:`SecureKafka` with ``sasl_bootstrap_servers``, ``ca_file``, ``untrusted_ca_file``,
    ``client_cert_file``/``client_key_file``, ``admin`` (plaintext, super user) and
    ``new_user()`` (a fresh SCRAM user without any ACL: its ``settings``, ``env``, ``client_config``).
``kafka_secure_cluster`` (function)
    the same security on a 3-node cluster (``LocalKafkaCluster(3, security=...)``).
``mysql_url``        (session)
    ``mysql://user:pass@host:port/db`` of a running server: ``KSTREAMLET_MYSQL_URL``, else
    Testcontainers MySQL, else a private MariaDB.

Example::

    def test_roundtrip(kafka_bootstrap, kafka_topic):
        topic = kafka_topic(partitions=3)
        ...
"""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from kstreamlet.dev.kafka import kafka_broker

    with kafka_broker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


_counter = itertools.count()


@pytest.fixture
def kafka_topic(kafka_admin, request) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    from kstreamlet.runtime.topics import create_topics, delete_topics

    created: list[str] = []

    def make(partitions: int = 1, name: str | None = None, config: dict[str, str] | None = None) -> str:
        base = name or request.node.name.replace("[", "-").replace("]", "")[:60]
        topic = f"{base}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        create_topics(kafka_admin, {topic: partitions}, config=config)
        created.append(topic)
        return topic

    yield make
    if created:
        delete_topics(kafka_admin, created)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    from kstreamlet.dev.mysql import mysql_server

    with mysql_server() as endpoint:
        yield endpoint.url


@pytest.fixture
def kafka_local_broker(tmp_path):  # type: ignore[no-untyped-def]
    """A private single-node broker of this test (never the shared one), which the test may
    ``kill()``, ``terminate()``, ``pause()``/``resume()`` and ``restart()`` (same data and port).
    Needs the jars backend (Java + Maven): these are fault-injection tests on a broker we own."""
    from kstreamlet.dev.kafka import LocalKafkaBroker

    broker = LocalKafkaBroker(workdir=tmp_path / "kafka", heap="512m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_cluster():  # type: ignore[no-untyped-def]
    """A private 3-node KRaft cluster (replication 3, ``min.insync.replicas=2``) whose nodes the
    test may kill and restart: ``kafka_cluster.node(kafka_cluster.transaction_coordinator()).kill()``."""
    from kstreamlet.dev.kafka import LocalKafkaCluster

    with LocalKafkaCluster(3) as cluster:
        yield cluster


@dataclass
class SecureUser:
    """A SCRAM-SHA-512 user of a secured broker and how an app or client logs in as it."""

    name: str
    password: str
    bootstrap_servers: str  # the SASL_SSL listener
    ca_file: Path

    @property
    def principal(self) -> str:
        return f"User:{self.name}"

    def settings(self, **changes: Any) -> dict[str, Any]:
        """kstreamlet settings (``App(...)`` / ``configure()`` keywords); ``changes`` override."""
        return {"bootstrap_servers": self.bootstrap_servers, "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": self.name, "sasl_password": self.password,
                "ssl_ca_location": str(self.ca_file), **changes}

    def env(self, **changes: Any) -> dict[str, str]:
        """The same as ``KSTREAMLET_*`` variables (for ``kstreamlet run`` in a subprocess)."""
        return {f"KSTREAMLET_{k.upper()}": str(v) for k, v in self.settings(**changes).items() if v is not None}

    def client_config(self, **changes: Any) -> dict[str, Any]:
        """librdkafka properties (confluent-kafka clients), bootstrap servers included."""
        return {"bootstrap.servers": self.bootstrap_servers, "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": self.name, "sasl.password": self.password,
                "ssl.ca.location": str(self.ca_file), **changes}


@dataclass
class SecureKafka:
    """A secured broker (or cluster) of the ``kafka_secure`` fixtures."""

    broker: Any  # LocalKafkaBroker | LocalKafkaCluster
    admin: Any  # AdminClient on the plaintext listener (User:ANONYMOUS, a super user)
    _users: list[str] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        """The plaintext listener (super user): for the test's own setup and checks."""
        return str(self.broker.bootstrap_servers)

    @property
    def sasl_bootstrap_servers(self) -> str:
        return str(self.broker.sasl_bootstrap_servers)

    @property
    def ca_file(self) -> Path:
        return Path(self.broker.security.ca_file)

    @property
    def untrusted_ca_file(self) -> Path:
        return Path(self.broker.security.untrusted_ca_file)

    @property
    def client_cert_file(self) -> Path:
        return Path(self.broker.security.client_cert_file)

    @property
    def client_key_file(self) -> Path:
        return Path(self.broker.security.client_key_file)

    def new_user(self, prefix: str = "user") -> SecureUser:
        """A fresh SCRAM-SHA-512 user (created through the admin API) with no ACL at all."""
        from kstreamlet.dev.security import create_scram_user

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        password = secrets.token_urlsafe(16)
        create_scram_user(self.admin, name, password)
        self._users.append(name)
        return SecureUser(name, password, self.sasl_bootstrap_servers, self.ca_file)

    def user(self, name: str) -> SecureUser:
        """A user the broker was formatted with (``admin``: a super user)."""
        return SecureUser(name, self.broker.security.users[name], self.sasl_bootstrap_servers, self.ca_file)


@pytest.fixture(scope="session")
def kafka_secure(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A private secured single-node broker: ``SASL_SSL`` (SCRAM-SHA-512, throwaway CA) with ACLs
    enforced, plus its plaintext super-user listener. Needs the jars backend (Java + Maven) and openssl."""
    from confluent_kafka.admin import AdminClient

    from kstreamlet.dev.kafka import LocalKafkaBroker
    from kstreamlet.dev.security import BrokerSecurity

    security = BrokerSecurity(directory=tmp_path_factory.mktemp("tls"))
    broker = LocalKafkaBroker(workdir=tmp_path_factory.mktemp("kafka-secure"), heap="512m", security=security)
    broker.start()
    try:
        yield SecureKafka(broker, AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0}))
    finally:
        broker.stop()


@pytest.fixture
def kafka_secure_cluster(tmp_path):  # type: ignore[no-untyped-def]
    """A private secured 3-node cluster (replication 3, ``min.insync.replicas=2``): as ``kafka_secure``."""
    from confluent_kafka.admin import AdminClient

    from kstreamlet.dev.kafka import LocalKafkaCluster
    from kstreamlet.dev.security import BrokerSecurity

    with LocalKafkaCluster(3, security=BrokerSecurity(directory=tmp_path / "tls")) as cluster:
        yield SecureKafka(cluster, AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0}))
