"""The services of ``services/`` as real processes on the real broker (and MariaDB).

- ``wordcount`` scaled 1 → 4 → 2 replicas while input flows: exactly-once counts, every
  partition owned at the end; start→first record and SIGTERM→exit are measured and printed;
- ``enrichment`` against MariaDB's ``user_info``, including an update picked up by the poll;
- ``orders`` and ``sensors`` with their generated inputs (the seed's sources);
- the README's main job (``python -m services.demo``).
"""

from __future__ import annotations

import collections
import json
import os
import random
import struct
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Producer

from kstreamlet.sinks.mysql import parse_mysql_url
from tests.integration.members import ROOT, Feeder, Members, read_committed

pytestmark = [pytest.mark.integration]


def _updates(bootstrap: str, topic: str, expect: int, timeout: float = 120) -> list[tuple[str, int]]:
    return [(k.decode(), struct.unpack(">q", v)[0])
            for k, v in read_committed(bootstrap, topic, expect, timeout, with_keys=True)]


def _assignment(bootstrap: str, group: str) -> dict[str, set[tuple[str, int]]]:
    """Member (instance id or client id) → assigned partitions, from the group coordinator."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(30)
    return {(m.group_instance_id or m.client_id): {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
            for m in desc.members}


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_wordcount_scales_1_to_4_to_2_replicas_exactly_once(kafka_bootstrap, kafka_topic, tmp_path):
    parts = 8
    inp, out = kafka_topic(partitions=parts, name="lines"), kafka_topic(partitions=parts, name="counts")
    app_id = f"wordcount-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    members = Members("services.wordcount:app", env, tmp_path)
    start = lambda n: members.start(n, {"KSTREAMLET_STATE_DIR": str(tmp_path / f"state-{n}")})  # noqa: E731
    rnd = random.Random(5)
    vocab = [f"w{i}" for i in range(300)]
    lines = [" ".join(rnd.choice(vocab) for _ in range(4)) for _ in range(36_000)]
    truth = collections.Counter(w for line in lines for w in line.split())
    stops: dict[str, tuple[int, float]] = {}
    try:
        start("r1")
        feeder = Feeder(kafka_bootstrap, inp, lines, rate=1_500)
        feeder.start()
        time.sleep(6)
        for n in ("r2", "r3", "r4"):           # scale 1 -> 4
            start(n)
        time.sleep(9)
        assert feeder.is_alive(), "input finished before the scale-in"
        for n in ("r3", "r4"):                 # scale 4 -> 2 (a rolling scale-in, as a StatefulSet does it)
            stops[n] = members.terminate(n)
        feeder.join(120)
        updates = _updates(kafka_bootstrap, out, expect=sum(truth.values()))
        owners = _assignment(kafka_bootstrap, app_id)
    finally:
        codes = members.stop_all()
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for word, n in updates:
        seqs[word].append(n)
    wrong = {w: (len(seqs[w]), truth[w]) for w in truth if seqs[w] != list(range(1, truth[w] + 1))}
    assert not wrong, (f"{len(wrong)} words whose committed updates are not exactly 1..N (#updates, true count): "
                       f"{dict(list(wrong.items())[:5])}\n{members.log_tail()}")
    assert set(owners) == {f"{app_id}-r1", f"{app_id}-r2"}, f"group members at the end: {sorted(owners)}"
    owned = set().union(*owners.values())
    for topic in (inp, f"{app_id}-words-repartition"):
        assert {(topic, p) for p in range(parts)} <= owned, f"partitions of {topic} not owned: {owners}"
    assert all(rc == 0 for rc, _ in stops.values()), f"SIGTERM exit codes: {stops}"
    assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0: {codes}"
    first = {n: [e["seconds_since_start"] for e in members.events(n, "first record processed")]
             for n in ("r1", "r2", "r3", "r4")}
    assert all(first.values()), f"every replica processed records: {first}"
    print(f"\nscaling timings: start -> first processed record (s): "
          f"{ {n: v[0] for n, v in first.items()} }; SIGTERM -> exit (s): "
          f"{ {n: round(s, 2) for n, (_, s) in stops.items()} }")
    assert max(s for _, s in stops.values()) < 30, "SIGTERM -> exit must stay within the shutdown timeout"


def _mysql(url: str, sql: str, args=None) -> None:
    conn = parse_mysql_url(url).connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
    finally:
        conn.close()


@pytest.mark.timeout(150)
def test_enrichment_reads_user_info_from_mysql_and_follows_updates(kafka_bootstrap, kafka_topic, mysql_url, tmp_path):
    table = f"user_info_{uuid.uuid4().hex[:6]}"
    _mysql(mysql_url, f"CREATE TABLE {table} (userID VARCHAR(20) PRIMARY KEY, userName VARCHAR(20), userAge INT) "
                      "DEFAULT CHARSET=utf8mb4")
    _mysql(mysql_url, f"INSERT INTO {table} VALUES ('user_1','张三',10),('user_2','李四',20),('user_3','王五',30),"
                      "('user_4','赵六',40)")
    events, out = kafka_topic(partitions=2, name="events"), kafka_topic(partitions=2, name="enriched")
    app_id = f"enrichment-{uuid.uuid4().hex[:8]}"
    env = {"EVENTS_TOPIC": events, "OUT_TOPIC": out, "MYSQL_URL": mysql_url, "KSTREAMLET_APPLICATION_ID": app_id,
           "USER_INFO_QUERY": f"SELECT userID, userName, userAge FROM {table}", "USER_INFO_POLL_SECONDS": "1",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    members = Members("services.enrichment:app", env, tmp_path)
    p = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(uid: str, t: str) -> None:
        p.produce(events, json.dumps({"userID": uid, "eventTime": t, "eventType": "browse", "productID": 1}).encode(),
                  uid.encode())
        p.flush(10)

    try:
        members.start("e1")
        # The first poll must have reached the broadcast topic (as a pod's readiness would wait for it).
        read_committed(kafka_bootstrap, f"{app_id}-broadcast-user-info", expect=4, timeout=60, settle=1)
        time.sleep(2)
        send("user_3", "2019-08-17 12:19:47")
        send("user_9", "2019-08-17 12:19:48")   # not in user_info: dropped, as in the seed
        first = read_committed(kafka_bootstrap, out, expect=1, timeout=60, settle=2)
        _mysql(mysql_url, f"UPDATE {table} SET userAge = 31 WHERE userID = 'user_3'")
        time.sleep(4)                           # > one poll + the broadcast reader's delay
        send("user_3", "2019-08-17 12:19:49")
        both = read_committed(kafka_bootstrap, out, expect=2, timeout=60, settle=2)
    finally:
        codes = members.stop_all()
        p.flush(5)
    got = [json.loads(v) for v in both]
    assert [json.loads(v)["userAge"] for v in first] == [30]
    assert [(e["userID"], e["eventTime"], e["userName"], e["userAge"]) for e in got] == [
        ("user_3", "2019-08-17 12:19:47", "王五", 30), ("user_3", "2019-08-17 12:19:49", "王五", 31)], \
        f"{got}\n{members.log_tail()}"
    assert codes == {"e1": 0}


@pytest.mark.timeout(150)
def test_orders_and_sensors_run_on_their_generated_inputs(kafka_bootstrap, kafka_topic, tmp_path):
    """The seed's sources feed the joins and windows end to end (event time from custom sources)."""
    wj, ij = kafka_topic(partitions=2, name="facts-window"), kafka_topic(partitions=2, name="facts-interval")
    stats, alerts = kafka_topic(partitions=2, name="stats"), kafka_topic(partitions=2, name="alerts")
    common = {"KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.3"}
    orders = Members("services.orders:app", {**common, "KSTREAMLET_APPLICATION_ID": f"orders-{uuid.uuid4().hex[:8]}",
                                             "WINDOW_JOIN_TOPIC": wj, "INTERVAL_JOIN_TOPIC": ij,
                                             "ORDERS_WINDOW_MS": "2000", "ORDERS_GENERATE_INTERVAL": "0.2"}, tmp_path)
    sensors = Members("services.sensors:app", {**common, "KSTREAMLET_APPLICATION_ID": f"sensors-{uuid.uuid4().hex[:8]}",
                                               "STATS_TOPIC": stats, "ALERTS_TOPIC": alerts,
                                               "SENSORS_WINDOW_MS": "1000"}, tmp_path)
    try:
        orders.start("o1")
        sensors.start("s1")
        facts_w = read_committed(kafka_bootstrap, wj, expect=12, timeout=90, settle=0)
        facts_i = read_committed(kafka_bootstrap, ij, expect=12, timeout=30, settle=0)
        windows = read_committed(kafka_bootstrap, stats, expect=20, timeout=60, settle=0)
    finally:
        codes = {**orders.stop_all(), **sensors.stop_all()}
    price = {"1": ("小米12", 4890), "2": ("iphone12", 12000), "3": ("MacBookPro", 15000),  # the seed's catalogue
             "4": ("Thinkpad X1", 9800), "5": ("MeiZu One", 3200), "6": ("Mate 40", 6500)}
    for f in (json.loads(v) for v in facts_w + facts_i):
        name, p = price[f["goodsId"]]   # never the seed's unmatched "111"
        assert f["goodsName"] == name and float(f["totalMoney"]) == float(p) * f["count"], f
    assert len(facts_w) >= 12 and len(facts_i) >= 12, (len(facts_w), len(facts_i), orders.log_tail())
    ws = [json.loads(v) for v in windows]
    assert len(ws) >= 20, sensors.log_tail()
    assert all(w["id"].startswith("sensor_") and w["min"] <= w["max"] and w["count"] >= 1
               and w["windowEnd"] - w["windowStart"] == 1000 for w in ws), ws[:3]
    assert codes == {"o1": 0, "s1": 0}


@pytest.mark.timeout(180)
def test_the_readme_main_job_runs_and_counts_exactly(kafka_bootstrap):
    env = {**os.environ, "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap}
    r = subprocess.run([sys.executable, "-m", "services.demo", "--seconds", "6"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "final counts match the input exactly" in r.stdout, r.stdout[-2000:]
