"""``kstreamlet state stores|get|scan`` on a real broker: a running word count's committed counts,
and list, map, TTL value and window stores, read from their changelogs and decoded."""

from __future__ import annotations

import collections
import random
import uuid

import pytest
from confluent_kafka import Producer

from tests.integration.members import Members, read_committed
from tests.integration.tools_cli import cli, cli_json, cli_json_lines

pytestmark = [pytest.mark.integration]


def test_word_counts_from_the_changelog(kafka_bootstrap, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=3, name="lines")
    out = kafka_topic(partitions=3, name="counts")
    app_id = f"statetool-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state")}
    rnd = random.Random(3)
    vocab = [f"w{i}" for i in range(30)] + ["héllo"]
    lines = [" ".join(rnd.choice(vocab) for _ in range(4)) for _ in range(300)]
    truth = collections.Counter(w for line in lines for w in line.split())
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for line in lines:
        p.produce(inp, line.encode())
    p.flush(10)
    members = Members("services.wordcount:app", env, tmp_path)
    try:
        members.start("m1")
        updates = read_committed(kafka_bootstrap, out, expect=sum(truth.values()), timeout=120, settle=1)
        assert len(updates) == sum(truth.values())
        # While the app runs: committed state, from any machine (no local state used).
        stores = cli_json(["state", "stores", "services.wordcount:app"], env)
        assert [(s["store"], s["kind"], s["key_serde"], s["value_serde"]) for s in stores] == [
            ("counts-value", "value", "str", "int64")]
        scanned = cli_json_lines(["state", "scan", "services.wordcount:app", "counts-value"], env)
        assert {e["key"]: e["value"] for e in scanned} == dict(truth)
        assert len(scanned) == len(truth)
        assert {e["partition"] for e in scanned} <= {0, 1, 2}
        got = cli_json(["state", "get", "services.wordcount:app", "counts", "héllo"], env)  # operator name
        assert (got["key"], got["value"]) == ("héllo", truth["héllo"])
        text = cli(["state", "get", "services.wordcount:app", "counts-value", "w1"], env).stdout
        assert text.strip() == f"w1\t{truth['w1']}"
        missing = cli(["state", "get", "services.wordcount:app", "counts-value", "nope"], env, check=1)
        assert "no committed value" in missing.stderr
        raw = cli_json_lines(["state", "scan", "services.wordcount:app", "counts-value", "--raw", "--limit", "2"], env)
        assert len(raw) == 2
        nostore = cli(["state", "scan", "services.wordcount:app", "nope"], env, check=1)
        assert "counts-value" in nostore.stderr
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}


def test_list_map_ttl_value_and_window_stores(kafka_bootstrap, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=2, name="items")
    out = kafka_topic(partitions=2, name="seen")
    app_id = f"storestool-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state")}
    values = ["a:x", "a:y", "a:x", "b:z", "c:x", "b:z", "a:q"]
    ts = 1_700_000_000_000  # all in one event-time hour
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, v in enumerate(values):
        p.produce(inp, v.encode(), timestamp=ts + i, partition=0)  # one partition: the order per key is known
    p.flush(10)
    members = Members("tests.apps.stores:app", env, tmp_path)
    try:
        members.start("m1")
        assert len(read_committed(kafka_bootstrap, out, expect=len(values), timeout=120, settle=1)) == len(values)
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}
    # After the app stopped, too.
    seen = {e["key"]: e["value"] for e in cli_json_lines(["state", "scan", "tests.apps.stores:app", "remember-seen"], env)}
    assert seen == {"a": ["x", "y", "x", "q"], "b": ["z", "z"], "c": ["x"]}
    per_item = cli_json(["state", "get", "tests.apps.stores:app", "remember-per-item", "a"], env)
    assert per_item["value"] == {"x": 2, "y": 1, "q": 1}
    last = {e["key"]: e for e in cli_json_lines(["state", "scan", "tests.apps.stores:app", "remember-last"], env)}
    assert {k: e["value"] for k, e in last.items()} == {"a": "q", "b": "z", "c": "x"}
    assert all(e["expires"] > ts for e in last.values())  # TTL: the expiry is shown
    windows = cli_json_lines(["state", "scan", "tests.apps.stores:app", "hourly-windows"], env)
    start = ts - ts % 3_600_000
    assert sorted((w["key"], w["value"], w["window_start"], w["window_end"]) for w in windows) == [
        ("a", 4, start, start + 3_600_000), ("b", 2, start, start + 3_600_000), ("c", 1, start, start + 3_600_000)]
    timers = cli_json_lines(["state", "get", "tests.apps.stores:app", "hourly-timers", "b"], env)
    assert [t["value"] for t in timers] == [{"domain": "event", "timestamp": start + 3_600_000 - 1}]
