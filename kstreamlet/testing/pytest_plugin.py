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
import uuid
from typing import Callable, Iterator

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
    from kstreamlet.dev.topics import create_topics, delete_topics

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
