"""Upgrading a running application on the real broker (issue 16 part 3): the recorded topology
(``<app>-topology``) makes a version whose generated names shifted, or whose state serde changed,
fail at start with a message naming the store; the version that names the old operators keeps
their state; ``--allow-topology-change`` accepts a change. Members run as processes
(tests/apps/evolving.py)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from tests.integration.members import Members
from tests.integration.test_state_eos import read_counts

pytestmark = [pytest.mark.integration]


def _produce(bootstrap: str, topic: str, words: list[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for w in words:
        p.produce(topic, w.encode(), w.encode())
    p.flush(30)


def test_shifted_names_and_changed_serdes_fail_fast_and_named_operators_keep_state(
        kafka_bootstrap, kafka_topic, tmp_path):
    inp, out = kafka_topic(partitions=2, name="words"), kafka_topic(partitions=2, name="counts")
    other, other_out = kafka_topic(partitions=2, name="other"), kafka_topic(partitions=2, name="other-counts")
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "OTHER_TOPIC": other, "OTHER_OUT_TOPIC": other_out,
           "KSTREAMLET_APPLICATION_ID": f"evolve-{uuid.uuid4().hex[:8]}", "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state"), "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    members = Members("tests.apps.evolving:app", env, tmp_path)
    try:
        members.start("v1", {"VERSION": "1"})
        members.wait_event("v1", "topology recorded", timeout=60)
        _produce(kafka_bootstrap, inp, ["a", "b", "a"])
        got = read_counts(kafka_bootstrap, out, expect=3, timeout=60, settle=1)
        assert sorted(got) == [("a", 1), ("a", 2), ("b", 1)], got
        rc, _ = members.terminate("v1")
        assert rc == 0

        members.start("v2", {"VERSION": "2"})
        assert members.wait_exit("v2", timeout=60) == 2
        text = members.grep("process-", limit=50) + members.grep("allow_topology_change", limit=5)
        assert "process-0-n" in text and "shifted the generated names" in text, members.log_tail()
        assert "name='process-0'" in text and "'process-1'" in text, text
        assert "allow_topology_change" in text and "kstreamlet reset" in text, text
        members.procs.pop("v2", None)

        members.start("v3", {"VERSION": "3"})
        assert members.wait_exit("v3", timeout=60) == 2
        text = members.grep("value serde changed", limit=5)
        assert "process-0-n" in text and "json -> int64" in text, members.log_tail()
        members.procs.pop("v3", None)

        # Two members of the named version at once: both pass, and the old pipeline's counts go on.
        members.start("n1", {"VERSION": "2-named"})
        members.start("n2", {"VERSION": "2-named"})
        for n in ("n1", "n2"):
            members.wait_event(n, "member started", timeout=60)
        _produce(kafka_bootstrap, inp, ["a", "b"])
        _produce(kafka_bootstrap, other, ["a"])
        got = read_counts(kafka_bootstrap, out, expect=5, timeout=90, settle=2)
        assert sorted(got) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)], got
        assert read_counts(kafka_bootstrap, other_out, expect=1, timeout=60, settle=1) == [("a", 1)]
        codes = members.stop_all()
        assert codes == {"n1": 0, "n2": 0}, codes

        # An intended change: allowed once, then recorded (a later start passes without the flag).
        members.start("v3a", {"VERSION": "3", "KSTREAMLET_ALLOW_TOPOLOGY_CHANGE": "true"})
        members.wait_event("v3a", "topology change accepted (allow_topology_change): the affected stores must "
                                  "have been reset", timeout=60)
        members.wait_event("v3a", "member started", timeout=60)
        rc, _ = members.terminate("v3a")
        assert rc == 0
        members.start("v3b", {"VERSION": "3"})
        members.wait_event("v3b", "member started", timeout=60)
        time.sleep(1)
        assert "v3b" in members.alive()
    finally:
        members.stop_all()
