"""``kstreamlet topics create|list|describe|delete`` (and ``create module:app``) on a real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from kstreamlet.runtime.topics import delete_topics
from tests.integration.tools_cli import cli, cli_json

pytestmark = [pytest.mark.integration]


def _ensure_offsets_topic(bootstrap: str) -> None:
    """Make ``__consumer_offsets`` exist (a committed offset), so hiding ``__`` topics is tested."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}"})
    try:
        md = c.list_topics(timeout=10)
        topic = next(t for t in md.topics if not t.startswith("__"))
        c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        c.close()


def test_create_list_describe_delete(kafka_bootstrap, kafka_admin, kafka_topic):
    kafka_topic()  # at least one user topic
    _ensure_offsets_topic(kafka_bootstrap)
    env = {"KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap}
    name = f"tools-topic-{uuid.uuid4().hex[:8]}"
    try:
        created = cli_json(["topics", "create", name, "--partitions", "3", "--config", "cleanup.policy=compact",
                            "--config", "retention.ms=3600000"], env)
        assert created == {"topics": {name: "created"}}
        again = cli(["topics", "create", name], env, check=2)
        assert "already exists" in again.stderr.lower(), again.stderr
        assert cli_json(["topics", "create", name, "--if-not-exists"], env) == {"topics": {name: "exists"}}

        listed = cli_json(["topics", "list"], env)
        assert name in [t["name"] for t in listed] and not any(t["name"].startswith("__") for t in listed)
        assert {"name": name, "partitions": 3, "replication_factor": 1} in listed
        everything = [t["name"] for t in cli_json(["topics", "list", "--all"], env)]
        assert "__consumer_offsets" in everything
        assert name in cli(["topics", "list"], env).stdout.split()

        [d] = cli_json(["topics", "describe", name], env)
        assert d["partitions"] == 3 and d["replication_factor"] == 1
        assert d["configs"]["cleanup.policy"] == "compact" and d["configs"]["retention.ms"] == "3600000"
        assert [p["partition"] for p in d["partition_details"]] == [0, 1, 2]
        for p in d["partition_details"]:
            assert p["leader"] >= 0 and p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]]
        text = cli(["topics", "describe", name], env).stdout
        assert "cleanup.policy=compact" in text and text.count("Leader:") == 3
        missing = cli(["topics", "describe", f"{name}-nope"], env, check=1)
        assert "do not exist" in missing.stderr

        refused = cli(["topics", "delete", name], env, check=2)
        assert "--yes" in refused.stderr
        assert name in kafka_admin.list_topics(timeout=10).topics
        assert cli_json(["topics", "delete", name, "--yes"], env) == {"topics": {name: "deleted"}}
        assert name not in kafka_admin.list_topics(timeout=10).topics
        cli(["topics", "delete", name, "--yes"], env, check=1)
        cli(["topics", "delete", name, "--yes", "--if-exists"], env, check=0)
    finally:
        delete_topics(kafka_admin, [name])


def test_create_app_topics_and_bootstrap_resolution(kafka_bootstrap, kafka_admin):
    inp, out = f"tools-in-{uuid.uuid4().hex[:8]}", f"tools-out-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": "tools-create",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap}
    try:
        made = cli_json(["topics", "create", "tests.apps.stateless:app", "--partitions", "4"], env)
        assert made == {"topics": {inp: "created", out: "created"}}
        md = kafka_admin.list_topics(timeout=10).topics
        assert len(md[inp].partitions) == 4 and len(md[out].partitions) == 4
        assert cli_json(["topics", "create", "tests.apps.stateless:app"], env) == {"topics": {inp: "exists", out: "exists"}}
        # --bootstrap-servers wins over KSTREAMLET_BOOTSTRAP_SERVERS ...
        bad_env = {**env, "KSTREAMLET_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
        assert inp in [t["name"] for t in cli_json(["topics", "list", "--bootstrap-servers", kafka_bootstrap], bad_env)]
        # ... and an unreachable address is one line, exit 2, in about the connect timeout.
        t0 = time.monotonic()
        p = cli(["topics", "list"], bad_env, check=2)
        assert time.monotonic() - t0 < 30
        assert "cannot reach Kafka at 127.0.0.1:1" in p.stderr and "KSTREAMLET_BOOTSTRAP_SERVERS" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    finally:
        delete_topics(kafka_admin, [inp, out])
