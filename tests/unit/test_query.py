"""Interactive queries without a broker (kstreamlet/query): committed reads of the tasks of a
TopologyTestDriver (real tasks and stores), decoding with the stores' serdes, 503 while a task
restores or is elsewhere, routing to the owner over HTTP between two services, key ->
partition as the producers choose it, the metadata's owners, the advertised URL."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from kstreamlet import App, TumblingEventTimeWindows, serdes
from kstreamlet.observability import start_http_server
from kstreamlet.query import InstanceInfo, MetadataBoard, QueryService, QueryUnavailable, advertised_url, murmur2, partition_of
from kstreamlet.testing import TopologyTestDriver

PARTITIONS = 3


def make_app() -> App:
    app = App(application_id="q")
    keyed = app.stream("in", value_serde=serdes.STR).key_by(lambda v: v.split(":")[0], key_serde=serdes.STR, name="by")
    keyed.count(name="counts")
    keyed.window(TumblingEventTimeWindows.of(1000)).count(name="win")
    return app


class Tasks:
    """The task manager's query view (tasks, queryable, query_lock) over a driver's tasks."""

    def __init__(self, tasks: dict[tuple[int, int], Any], only: set[int] | None = None) -> None:
        self.tasks = {k: t for k, t in tasks.items() if only is None or k[1] in only}
        self.queryable = dict(self.tasks)
        self.query_lock = threading.Lock()


class Board:
    def __init__(self, owners: dict[tuple[int, int], InstanceInfo]) -> None:
        self._owners = owners

    def owners(self) -> dict[tuple[int, int], InstanceInfo]:
        return self._owners

    def instances(self) -> list[InstanceInfo]:
        return list({i.instance: i for i in self._owners.values()}.values())


@pytest.fixture
def driver():  # type: ignore[no-untyped-def]
    app = make_app()
    with TopologyTestDriver(app, partitions={"in": PARTITIONS}) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        for i, v in enumerate(["a:1", "b:1", "a:2", "c:1", "a:3", "d:1"]):
            inp.pipe_input(v, timestamp=1000 * (i // 2))  # windows [0,1000) [1000,2000) [2000,3000)
        yield d


def service(d: TopologyTestDriver, tasks: Tasks | None = None, **kw: Any) -> QueryService:
    return QueryService(d.app.settings, d.topology, tasks or Tasks(d.tasks), lambda t: d.partition_counts.get(t, 1),
                        kw.pop("instance", "m1"), **kw)


def call(svc: QueryService, path: str, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
    status, extra, body = svc.handle(path, query, headers or {})
    return status, extra, json.loads(body)


def test_key_partition_is_murmur2_as_the_producers_choose_it():
    # Kafka's own murmur2 vectors (clients' UtilsTest), as signed 32-bit ints.
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829, "abc": 479470107,
               "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for text, signed in vectors.items():
        h = murmur2(text.encode())
        assert (h - (1 << 32) if h >= 1 << 31 else h) == signed
        for n in (1, 3, 12):
            assert partition_of(text.encode(), n) == (signed & 0x7FFFFFFF) % n


def test_get_range_all_and_fetch_read_committed_state_decoded(driver):
    svc = service(driver)
    counts = svc.store("counts-value")
    assert [counts.get(k) for k in "abcdz"] == [3, 1, 1, 1, None]
    assert counts.all() == [("a", 3), ("b", 1), ("c", 1), ("d", 1)]
    assert counts.range("b", "c") == [("b", 1), ("c", 1)]
    assert svc.store("counts").get("a") == 3  # an operator with one store names it
    win = svc.store("win-windows")
    assert win.fetch("a") == [(0, 1000, 1), (1000, 2000, 1), (2000, 3000, 1)]
    assert win.fetch("a", 1000, 3000) == [(1000, 2000, 1), (2000, 3000, 1)]
    assert win.fetch("a", 0, 999) == [(0, 1000, 1)]
    assert win.get("b") == [(0, 1000, 1)]
    assert ("c", (1000, 2000, 1)) in win.all()


def test_uncommitted_writes_are_never_read(driver):
    svc = service(driver)
    kb = b"a"
    task = driver.tasks[(1, partition_of(kb, PARTITIONS))]
    store = task.stores["counts-value"]
    from kstreamlet.state.codec import key_prefix

    store.put(key_prefix(kb), serdes.INT64.serialize(99))  # in the checkpoint's buffer only
    store.put(key_prefix(b"new"), serdes.INT64.serialize(1))
    assert store.get(key_prefix(kb)) == serdes.INT64.serialize(99)  # the task itself sees it
    assert svc.store("counts-value").get("a") == 3
    assert svc.store("counts-value").get("new") is None
    store.committed()
    assert svc.store("counts-value").get("a") == 99


def test_http_routes(driver):
    svc = service(driver)
    status, _, body = call(svc, "/stores")
    assert status == 200
    kinds = {s["name"]: s["kind"] for s in body["stores"]}
    assert kinds["counts-value"] == "value" and kinds["win-windows"] == "window"
    status, _, body = call(svc, "/stores/counts-value/a")
    assert status == 200 and body["value"] == 3 and body["key"] == "a" and body["instance"] == "m1"
    assert body["partition"] == partition_of(b"a", PARTITIONS)
    status, _, body = call(svc, "/stores/counts-value", "from=b&to=d")
    assert status == 200 and [(e["key"], e["value"]) for e in body["entries"]] == [("b", 1), ("c", 1), ("d", 1)]
    status, _, body = call(svc, "/stores/counts-value")
    assert len(body["entries"]) == 4
    status, _, body = call(svc, "/stores/win-windows/a/window", "from=0&to=999")
    assert status == 200 and body["windows"] == [{"window_start": 0, "window_end": 1000, "value": 1}]
    # 404: an unknown store or a key without a value; 400: not a window store, a bad time
    assert call(svc, "/stores/nope/a")[0] == 404
    assert call(svc, "/stores/counts-value/zzz")[0] == 404
    assert call(svc, "/stores/counts-value/a/window")[0] == 400
    assert call(svc, "/stores/win-windows/a/window", "from=yesterday")[0] == 400
    # key_hex: the serialized key's bytes
    assert call(svc, "/stores/counts-value/61", "key_hex=1")[2]["value"] == 3
    status, _, body = call(svc, "/metadata")
    assert status == 200 and body["stores"]["counts-value"]["owners"] == {"0": "m1", "1": "m1", "2": "m1"}
    status, _, body = call(svc, "/metadata/counts-value/a")
    assert body["instance"] == "m1" and body["partition"] == partition_of(b"a", PARTITIONS)


def test_a_key_the_serde_cannot_read_is_400():
    app = App(application_id="q2")
    app.stream("in", key_serde=serdes.INT64, value_serde=serdes.STR).key_by(
        lambda v: len(v), key_serde=serdes.INT64, name="by").count(name="n")
    with TopologyTestDriver(app) as d:
        d.input_topic("in", key_serde=serdes.INT64, value_serde=serdes.STR).pipe_input("abc", key=1)
        svc = service(d)
        status, _, body = call(svc, "/stores/n-value/abc")
        assert status == 400 and "int64" in body["error"]
        assert call(svc, "/stores/n-value/3")[2]["value"] == 1


def test_503_with_retry_after_while_restoring_or_not_assigned(driver):
    tasks = Tasks(driver.tasks)
    svc = service(driver, tasks)
    p = partition_of(b"a", PARTITIONS)
    del tasks.queryable[(1, p)]  # assigned, restoring
    status, extra, body = call(svc, "/stores/counts-value/a")
    assert status == 503 and extra["Retry-After"] == "1" and "restoring" in body["error"]
    with pytest.raises(QueryUnavailable):
        svc.store("counts-value").get("a")
    # a scan needs every partition: one restoring makes it 503, never a partial answer
    assert call(svc, "/stores/counts-value")[0] == 503
    other = next(k for k in "bcd" if partition_of(k.encode(), PARTITIONS) != p)
    assert call(svc, f"/stores/counts-value/{other}")[0] == 200
    # not assigned here and no other instance known
    del tasks.tasks[(1, p)]
    status, extra, body = call(svc, "/stores/counts-value/a")
    assert status == 503 and extra["Retry-After"] == "1"
    # a member rebuilding its clients answers nothing
    svc2 = service(driver, unavailable=lambda: "its Kafka clients are being rebuilt")
    assert call(svc2, f"/stores/counts-value/{other}")[0] == 503


def test_keys_owned_elsewhere_are_answered_by_their_owner(driver):
    pa = partition_of(b"a", PARTITIONS)
    mine, theirs = {p for p in range(PARTITIONS) if p != pa}, {pa}
    servers = []
    try:
        owner_svc = service(driver, Tasks(driver.tasks, theirs), instance="m2")
        s2 = start_http_server(0, health=lambda: True, ready=lambda: True, host="127.0.0.1", queries=owner_svc.handle)
        servers.append(s2)
        m2 = InstanceInfo("m2", s2.url, "q-m2")
        svc = service(driver, Tasks(driver.tasks, mine), instance="m1")
        s1 = start_http_server(0, health=lambda: True, ready=lambda: True, host="127.0.0.1", queries=svc.handle)
        servers.append(s1)
        m1 = InstanceInfo("m1", s1.url, "q-m1")
        owners = {(st, p): (m2 if p in theirs else m1) for st in (0, 1) for p in range(PARTITIONS)}
        svc.board = owner_svc.board = Board(owners)  # type: ignore[assignment]

        assert svc.store("counts-value").get("a") == 3  # routed to m2
        assert svc.store("counts-value").all() == [("a", 3), ("b", 1), ("c", 1), ("d", 1)]  # fanned out
        assert svc.store("win-windows").fetch("a", 2000, 2000) == [(2000, 3000, 1)]
        with urllib.request.urlopen(f"{s1.url}/stores/counts-value/a", timeout=5) as r:
            body = json.loads(r.read())
        assert body["value"] == 3 and body["instance"] == "m2"
        with urllib.request.urlopen(f"{s1.url}/metadata/counts-value/a", timeout=5) as r:
            assert json.loads(r.read())["url"] == s2.url
        # A forwarded request is answered from local state only: m2 asked for m1's key says 503.
        req = urllib.request.Request(f"{s2.url}/stores/counts-value/b", headers={"X-Kstreamlet-Forwarded": "x"})
        if partition_of(b"b", PARTITIONS) != pa:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 503 and e.value.headers["Retry-After"] == "1"
        # The owner gone: 503 + Retry-After, not a hang or a 500.
        s2.shutdown()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{s1.url}/stores/counts-value/a", timeout=10)
        assert e.value.code == 503 and e.value.headers["Retry-After"] == "1"
        assert "cannot be reached" in json.loads(e.value.read())["error"]
        with pytest.raises(QueryUnavailable):
            svc.store("counts-value").all()
    finally:
        for s in servers:
            s.shutdown()


def test_the_existing_routes_are_unchanged_and_queries_404_without_a_handler():
    s = start_http_server(0, health=lambda: True, ready=lambda: False, host="127.0.0.1")
    try:
        with urllib.request.urlopen(f"{s.url}/healthz", timeout=5) as r:
            assert r.status == 200
        for path in ("/stores", "/metadata"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{s.url}{path}", timeout=5)
            assert e.value.code == 404
    finally:
        s.shutdown()


def test_owners_are_the_live_members_latest_entries_and_a_silent_member_expires():
    board = MetadataBoard(InstanceInfo("m1", "http://m1:1", "app-m1"), "app", {}, tasks=lambda: [],
                          make_consumer=None, make_producer=None, expiry=5.0)  # type: ignore[arg-type]
    now = time.monotonic()
    board.entries = {"m1": InstanceInfo("m1", "http://m1:1", "app-m1", [(0, 0)], 1.0),
                     "m2": InstanceInfo("m2", "http://m2:1", "app-m2", [(0, 1), (0, 2)], 4.0),
                     "dead": InstanceInfo("dead", "http://dead:1", "app-dead", [(0, 2), (0, 3)], 3.0)}
    board.seen = {"m1": now, "m2": now, "dead": now}
    # A handover's overlap: m2 published (0, 2) after 'dead' did, so m2 owns it.
    assert {t: e.instance for t, e in board.owners().items()} == {(0, 0): "m1", (0, 1): "m2", (0, 2): "m2",
                                                                  (0, 3): "dead"}
    # 'dead' was killed: no heartbeat for longer than the expiry, so it owns nothing and is not listed.
    board.seen["dead"] = now - 6.0
    assert {t: e.instance for t, e in board.owners().items()} == {(0, 0): "m1", (0, 1): "m2", (0, 2): "m2"}
    assert sorted(i.instance for i in board.instances()) == ["m1", "m2"]
    board.seen["m1"] = now - 60  # our own entry never expires
    assert "m1" in {i.instance for i in board.instances()}


def test_advertised_url():
    assert advertised_url("http://pod-0.svc.ns.svc:8080", 8080) == "http://pod-0.svc.ns.svc:8080"
    assert advertised_url("http://pod-0.svc.ns.svc:8080/", 8082, worker_index=2) == "http://pod-0.svc.ns.svc:8082"
    assert advertised_url(None, 9000).endswith(":9000")


def test_app_query_needs_a_member_in_this_process():
    with pytest.raises(RuntimeError, match="no member"):
        make_app().query("counts-value")


class _Log:
    """One compacted topic partition shared by fake producers and consumers."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []


class _Msg:
    def __init__(self, key: bytes, value: bytes | None) -> None:
        self._k, self._v = key, value

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes | None:
        return self._v


class _Producer:
    def __init__(self, log: _Log) -> None:
        self.log = log

    def produce(self, topic: str, value: bytes | None, key: bytes) -> None:
        self.log.records.append((key, value))

    def poll(self, t: float) -> None:
        pass

    def flush(self, t: float) -> None:
        pass


class _Consumer:
    def __init__(self, log: _Log) -> None:
        self.log, self.pos = log, 0

    def assign(self, tps: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[_Msg]:
        out = [_Msg(k, v) for k, v in self.log.records[self.pos:]]
        self.pos = len(self.log.records)
        if not out:
            threading.Event().wait(min(timeout, 0.02))
        return out

    def close(self) -> None:
        pass


def test_metadata_boards_publish_read_each_other_and_drop_a_stopped_or_silent_member():
    log = _Log()
    tasks = {"m1": [(0, 0), (0, 1)], "m2": [(0, 2)], "m3": [(0, 3)], "m4": [(0, 4)]}

    def board(name: str) -> MetadataBoard:
        return MetadataBoard(InstanceInfo(name, f"http://{name}:1", f"app-{name}"), "app", {},
                             tasks=lambda: tasks[name],
                             make_consumer=lambda c: _Consumer(log), make_producer=lambda c: _Producer(log),
                             refresh=0.05, expiry=0.5)

    b1, b2, b3, b4 = board("m1"), board("m2"), board("m3"), board("m4")
    for b in (b1, b2, b3, b4):
        b.start()
    try:
        def wait(cond: Any) -> None:
            for _ in range(300):
                if cond():
                    return
                threading.Event().wait(0.02)
            raise AssertionError("not reached")

        wait(lambda: {t: e.instance for t, e in b1.owners().items()}
             == {(0, 0): "m1", (0, 1): "m1", (0, 2): "m2", (0, 3): "m3", (0, 4): "m4"})
        assert b1.owners()[(0, 2)].url == "http://m2:1"
        tasks["m1"] = [(0, 0)]  # a rebalance: the board republishes
        wait(lambda: b2.entries.get("m1") is not None and b2.entries["m1"].tasks == [(0, 0)])
        b2.stop()  # a tombstone
        wait(lambda: "m2" not in b1.entries)
        # m3 goes silent without a tombstone (kill -9): its heartbeats stop, it expires.
        b3._stop.set()
        wait(lambda: "m3" not in {i.instance for i in b1.instances()} and (0, 3) not in b1.owners())
        # Heartbeats keep a member with unchanged tasks (m4, published once at start) alive past the expiry.
        threading.Event().wait(0.7)
        assert "m4" in {i.instance for i in b1.instances()} and b1.owners()[(0, 4)].instance == "m4"
    finally:
        b1.stop()
        b2.stop()
        b4.stop()