"""The services of ``services/`` through the TopologyTestDriver: the seed's examples, broker-free."""

from __future__ import annotations

import collections
import importlib
import sys
from decimal import Decimal

import pytest

from kstreamlet import serdes
from kstreamlet.testing import TopologyTestDriver


@pytest.fixture
def load_service(monkeypatch):
    """Import ``services.<name>`` afresh with ``env`` (the modules build their app from the environment)."""

    def load(name, **env):
        monkeypatch.setenv("KSTREAMLET_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        sys.modules.pop(f"services.{name}", None)
        return importlib.import_module(f"services.{name}")

    yield load
    for name in ("wordcount", "enrichment", "orders", "sensors"):
        sys.modules.pop(f"services.{name}", None)


def test_wordcount_counts_every_word_of_every_line(load_service):
    svc = load_service("wordcount", IN_TOPIC="lines", OUT_TOPIC="counts")
    with TopologyTestDriver(svc.app) as d:
        d.input_topic("lines", value_serde=serdes.STR).pipe_values(["to be or not to be", "be quick"])
        out = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64).read_key_values_to_list()
    assert dict(out) == {"to": 2, "be": 3, "or": 1, "not": 1, "quick": 1}
    assert [v for k, v in out if k == "be"] == [1, 2, 3], "every update is emitted, in order"


def test_wordcount_missing_topic_setting_fails_naming_it(load_service, monkeypatch):
    monkeypatch.delenv("OUT_TOPIC", raising=False)
    with pytest.raises(SystemExit, match="OUT_TOPIC"):
        load_service("wordcount", IN_TOPIC="lines")


SEED_USERS = [("user_1", "张三", 10), ("user_2", "李四", 20), ("user_3", "王五", 30), ("user_4", "赵六", 40)]


def _enrichment(load_service, **env):
    svc = load_service("enrichment", MYSQL_URL="mysql://u:p@127.0.0.1:1/bigdata", OUT_TOPIC="enriched",
                       EVENTS_TOPIC="events", KSTREAMLET_APPLICATION_ID="enrichment", **env)
    return svc


def test_enrichment_adds_name_and_age_as_in_the_seed_and_follows_updates(load_service):
    svc = _enrichment(load_service)
    with TopologyTestDriver(svc.app) as d:
        users = d.input_topic("enrichment-broadcast-user-info", key_serde=serdes.STR, value_serde=serdes.JSON)
        for uid, name, age in SEED_USERS:
            users.pipe_input({"userID": uid, "userName": name, "userAge": age}, key=uid)
        events = d.input_topic("events", value_serde=serdes.JSON)
        events.pipe_input({"userID": "user_3", "eventTime": "2019-08-17 12:19:47", "eventType": "browse", "productID": 1})
        events.pipe_input({"userID": "user_9", "eventTime": "2019-08-17 12:19:48", "eventType": "click", "productID": 1})
        users.pipe_input({"userID": "user_3", "userName": "王五", "userAge": 31}, key="user_3")  # the next poll
        events.pipe_input({"userID": "user_3", "eventTime": "2019-08-17 12:19:49", "eventType": "click", "productID": 2})
        out = d.output_topic("enriched", value_serde=serdes.JSON).read_values_to_list()
    seed = [(e["userID"], e["eventTime"], e["eventType"], e["productID"], e["userName"], e["userAge"]) for e in out]
    assert seed == [("user_3", "2019-08-17 12:19:47", "browse", 1, "王五", 30),
                    ("user_3", "2019-08-17 12:19:49", "click", 2, "王五", 31)], "unknown user_9 dropped, as in the seed"


def test_enrichment_can_keep_events_of_unknown_users(load_service):
    svc = _enrichment(load_service, UNKNOWN_USERS="keep")
    with TopologyTestDriver(svc.app) as d:
        d.input_topic("events", value_serde=serdes.JSON).pipe_input(
            {"userID": "user_9", "eventTime": "t", "eventType": "click", "productID": 1})
        out = d.output_topic("enriched", value_serde=serdes.JSON).read_values_to_list()
    assert out == [{"userID": "user_9", "eventTime": "t", "eventType": "click", "productID": 1,
                    "userName": None, "userAge": None}]


def test_enrichment_rejects_an_unknown_mode(load_service):
    with pytest.raises(SystemExit, match="UNKNOWN_USERS"):
        _enrichment(load_service, UNKNOWN_USERS="maybe")


def _orders_input(rounds=12, t0=1_700_000_000_000):
    """As the seed's sources: the catalogue every second, an item (and its "111" twin) every second."""
    import random

    from services.orders import GOODS  # (imported by the test that calls this, with its environment)

    rnd = random.Random(3)
    goods, items = [], []
    for r in range(rounds):
        for gid, name, price in GOODS:
            goods.append((t0 + r * 1000, {"goodsId": gid, "goodsName": name, "goodsPrice": price}))
        item = {"itemId": f"i{r}", "goodsId": rnd.choice(GOODS)[0], "count": rnd.randint(1, 10)}
        ts = t0 + r * 1000 + rnd.randint(0, 999)
        items += [(ts, item), (ts, {**item, "goodsId": "111"})]
    return goods, items


def _fact(g, i):
    return (g["goodsId"], g["goodsName"], i["count"], str(Decimal(g["goodsPrice"]) * i["count"]))


def test_orders_window_join_and_interval_join_match_the_seed_semantics(load_service):
    svc = load_service("orders", GOODS_TOPIC="goods", ORDER_ITEMS_TOPIC="items", WINDOW_JOIN_TOPIC="wj",
                       INTERVAL_JOIN_TOPIC="ij", ORDERS_OUT_OF_ORDERNESS_MS="0")
    goods, items = _orders_input()
    with TopologyTestDriver(svc.app) as d:
        g_in = d.input_topic("goods", value_serde=serdes.JSON)
        i_in = d.input_topic("items", value_serde=serdes.JSON)
        for ts, v in sorted(goods + items, key=lambda x: x[0]):
            (g_in if "goodsName" in v else i_in).pipe_input(v, timestamp=ts)
        end = max(ts for ts, _ in goods + items) + 60_000  # moves both inputs' watermarks past every window
        g_in.pipe_input({"goodsId": "flush", "goodsName": "-", "goodsPrice": "0"}, timestamp=end)
        i_in.pipe_input({"itemId": "-", "goodsId": "flush", "count": 0}, timestamp=end)
        wj = d.output_topic("wj", value_serde=serdes.JSON).read_values_to_list()
        ij = d.output_topic("ij", value_serde=serdes.JSON).read_values_to_list()
    as_facts = lambda out: collections.Counter(  # noqa: E731
        (f["goodsId"], f["goodsName"], f["count"], f["totalMoney"]) for f in out if f["goodsId"] != "flush")
    want_w = collections.Counter(_fact(g, i) for gts, g in goods for its, i in items
                                 if g["goodsId"] == i["goodsId"] and gts // 5000 == its // 5000)
    want_i = collections.Counter(_fact(g, i) for gts, g in goods for its, i in items
                                 if g["goodsId"] == i["goodsId"] and gts - 2000 <= its <= gts + 1000)
    assert want_w and want_i
    assert as_facts(wj) == want_w
    assert as_facts(ij) == want_i
    assert not any(f["goodsId"] == "111" for f in wj + ij), "the seed's '111' items never match"


def test_sensor_source_walks_like_the_seed(load_service):
    SensorSource = load_service("sensors", STATS_TOPIC="stats", ALERTS_TOPIC="alerts").SensorSource  # noqa: N806

    seen = []

    class Ctx:
        index = 0

        def collect(self, value, key=None, timestamp=None):
            seen.append(value)
            if len(seen) >= 40:
                src.cancel()

    src = SensorSource(sensors=10, pause=0, seed=1)
    src.run(Ctx())
    assert [r["id"] for r in seen[:10]] == [f"sensor_{i}" for i in range(1, 11)]
    by_id = collections.defaultdict(list)
    for r in seen:
        by_id[r["id"]].append(r["temperature"])
    steps = [abs(b - a) for temps in by_id.values() for a, b in zip(temps, temps[1:])]
    assert steps and max(steps) < 3.0, "a random walk: small steps (Gaussian x 0.5)"


def test_sensors_window_min_max_and_rising_alert(load_service):
    svc = load_service("sensors", SENSORS_TOPIC="readings", STATS_TOPIC="stats", ALERTS_TOPIC="alerts",
                       SENSORS_WINDOW_MS="10000", SENSORS_ALERT_MS="5000", SENSORS_OUT_OF_ORDERNESS_MS="0")
    t0 = 1_700_000_000_000
    rising = [20.0 + i for i in range(8)]   # rises from t0+1000 on -> one alert at t0 + 1000 + 5000
    wobbly = [20.0, 21.0, 20.5, 21.5, 21.0, 22.0, 21.5, 21.0]   # never rises for 5 s in a row
    with TopologyTestDriver(svc.app) as d:
        inp = d.input_topic("readings", value_serde=serdes.JSON)
        for i in range(8):
            for sid, temps in (("sensor_1", rising), ("sensor_2", wobbly)):
                inp.pipe_input({"id": sid, "timestamp": t0 + i * 1000, "temperature": temps[i]}, timestamp=t0 + i * 1000)
        inp.pipe_input({"id": "flush", "timestamp": t0 + 60_000, "temperature": 0.0}, timestamp=t0 + 60_000)
        stats = [s for s in d.output_topic("stats", value_serde=serdes.JSON).read_values_to_list() if s["id"] != "flush"]
        alerts = d.output_topic("alerts", value_serde=serdes.JSON).read_values_to_list()
    w0 = (t0 // 10_000) * 10_000
    want = {}
    for sid, temps in (("sensor_1", rising), ("sensor_2", wobbly)):
        for i, t in enumerate(temps):
            ws = w0 + ((t0 + i * 1000 - w0) // 10_000) * 10_000
            lo, hi, n = want.get((sid, ws), (t, t, 0))
            want[(sid, ws)] = (min(lo, t), max(hi, t), n + 1)
    assert {(s["id"], s["windowStart"]): (s["min"], s["max"], s["count"]) for s in stats} == want
    assert len(stats) == len(want), "each window emitted once"
    assert [(a["id"], a["since"], a["at"]) for a in alerts] == [("sensor_1", t0 + 1000, t0 + 6000)]
