"""MySQLSink and MySQLPollingSource against a real MariaDB (the ``mysql_url`` fixture): XA
two-phase commit through the test driver, recovery of prepared transactions, idempotent
upserts, value mapping, configuration errors, and the polling source of the seed's
broadcast example. No Kafka broker is needed: the driver runs the tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Iterator

import pydantic
import pymysql
import pytest

from kstreamlet import App, serdes
from kstreamlet.sinks import RecordMetadata, SinkContext
from kstreamlet.sinks.mysql import MySQLEndpoint, MySQLSink, MySQLSinkError, parse_mysql_url
from kstreamlet.sources.mysql import MySQLPollingSource, MySQLSourceError
from kstreamlet.testing import TopologyTestDriver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]  # a real database server


# --- fixtures and helpers -------------------------------------------------------------------------


def q(ep: MySQLEndpoint, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = ep.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def xids(ep: MySQLEndpoint, prefix: str) -> list[tuple[str, str]]:
    out = []
    for _f, gl, bl, data in q(ep, "XA RECOVER"):
        raw = data.encode() if isinstance(data, str) else bytes(data)
        g, b = raw[: int(gl)].decode(), raw[int(gl): int(gl) + int(bl)].decode()
        if g.startswith(prefix):
            out.append((g, b))
    return sorted(out)


@dataclasses.dataclass
class DB:
    url: str
    ep: MySQLEndpoint
    table: str
    app: str


@pytest.fixture
def db(mysql_url: str) -> Iterator[DB]:
    ep = parse_mysql_url(mysql_url)
    suffix = uuid.uuid4().hex[:8]
    d = DB(mysql_url, ep, f"sink_unit_{suffix}", f"unit-{suffix}")
    q(ep, f"CREATE TABLE `{d.table}` (id BIGINT AUTO_INCREMENT PRIMARY KEY, value VARCHAR(255), "
          "insert_time DATETIME(3), doc TEXT, UNIQUE KEY v (value))")
    yield d
    for g, b in xids(ep, f"ks:{d.app}:"):
        with contextlib.suppress(pymysql.MySQLError):
            q(ep, "XA ROLLBACK %s, %s", (g, b))
    q(ep, f"DROP TABLE IF EXISTS `{d.table}`")


def values(d: DB) -> list[str]:
    return [r[0] for r in q(d.ep, f"SELECT value FROM `{d.table}` ORDER BY id")]


def opened(sink: MySQLSink, d: DB, partition: int = 0, record: Any = None) -> MySQLSink:
    """What the runtime does per task: a copy of the user's sink, opened with the task context."""
    import copy

    s = copy.copy(sink)
    s.open(SinkContext(partition, d.app, "mysql", f"0_{partition}", "exactly_once", lambda: 0,
                       _record=record or (lambda: None)))
    return s


def prepare(s: MySQLSink, seq: int, vals: list[str]) -> Any:
    s.ctx.checkpoint_id = seq
    txn = s.begin_transaction()
    for v in vals:
        s.write(txn, {"value": v}, None, 0)
    return s.pre_commit(txn)


def crash(s: MySQLSink) -> None:
    """Drop the connection without a goodbye, as a killed process would."""
    assert s._conn is not None
    s._conn._sock.close()  # type: ignore[union-attr]
    s._conn = None


# --- exactly-once with XA ---------------------------------------------------------------------------


def test_exactly_once_through_the_driver(db: DB) -> None:
    app = App(application_id=db.app)
    sink = MySQLSink(db.url, db.table, ["value", "insert_time"], batch_size=3,
                     mapper=lambda v: {"value": v, "insert_time": datetime(2024, 1, 1)})
    app.stream("in", value_serde=serdes.STR).sink(sink, name="mysql")
    with TopologyTestDriver(app) as drv:
        inp = drv.input_topic("in", value_serde=serdes.STR)
        for i in range(7):
            inp.pipe_input(f"v{i}")
            assert values(db) == [f"v{j}" for j in range(i + 1)], "each checkpoint must be visible after its commit"
        store = drv.key_value_store("mysql-2pc")[b"2pc"]
    assert xids(db.ep, f"ks:{db.app}:") == [], "no prepared XA transaction may remain"
    assert f'"xid":"ks:{db.app}:0:'.encode() in store, f"expected the xid in the stored committable; saw {store!r}"


def test_recovery_commits_the_stored_xid_and_rolls_back_the_rest(db: DB) -> None:
    sink = MySQLSink(db.url, db.table, ["value"])
    s0 = opened(sink, db, partition=0)
    s0.commit(prepare(s0, 5, ["kept-1", "kept-2"]))  # an earlier, completed checkpoint
    s0_bis = opened(sink, db, partition=0)
    c6 = prepare(s0_bis, 6, ["in-kafka"])  # committed in Kafka; the process dies before XA COMMIT
    crash(s0_bis)
    s0_ter = opened(sink, db, partition=0)
    prepare(s0_ter, 7, ["not-in-kafka"])  # prepared; the Kafka commit never happened
    crash(s0_ter)
    other = opened(sink, db, partition=1)
    prepare(other, 7, ["partition-1"])  # another partition's work: not ours to touch
    assert [g for g, _ in xids(db.ep, f"ks:{db.app}:")] == [f"ks:{db.app}:0:6", f"ks:{db.app}:0:7", f"ks:{db.app}:1:7"]

    new = opened(sink, db, partition=0)
    new.commit(c6)  # the runtime commits the stored committable on recovery ...
    new.recover(c6)  # ... then the sink rolls back everything else of partition 0
    assert sorted(values(db)) == ["in-kafka", "kept-1", "kept-2"], values(db)
    assert [g for g, _ in xids(db.ep, f"ks:{db.app}:")] == [f"ks:{db.app}:1:7"], "partition 1 must stay prepared"
    other.commit({"xid": f"ks:{db.app}:1:7", "bqual": "mysql"})
    assert "partition-1" in values(db)


def test_commit_is_idempotent_and_abort_rolls_back_prepared_work(db: DB) -> None:
    s = opened(MySQLSink(db.url, db.table, ["value"]), db)
    c = prepare(s, 1, ["a"])
    s.commit(c)
    s.commit(c)  # after a crash the runtime may commit again: "unknown xid" means done
    s.ctx.checkpoint_id = 2
    txn = s.begin_transaction()
    s.write(txn, {"value": "b"}, None, 0)
    s.pre_commit(txn)
    s.abort(txn)  # the Kafka commit failed after XA PREPARE
    s.ctx.checkpoint_id = 3
    txn = s.begin_transaction()
    s.write(txn, {"value": "c"}, None, 0)
    s.abort(txn)  # aborted before pre-commit
    assert values(db) == ["a"] and xids(db.ep, f"ks:{db.app}:") == []


def test_leftover_xid_with_the_same_name_is_rolled_back_before_reuse(db: DB) -> None:
    sink = MySQLSink(db.url, db.table, ["value"])
    ghost = opened(sink, db)
    prepare(ghost, 9, ["ghost"])  # e.g. a zombie owner's prepared work, never committed
    crash(ghost)
    s = opened(sink, db)
    s.commit(prepare(s, 9, ["real"]))
    assert values(db) == ["real"] and xids(db.ep, f"ks:{db.app}:") == []


def test_upsert_on_key_columns_in_exactly_once_mode(db: DB) -> None:
    s = opened(MySQLSink(db.url, db.table, ["value", "doc"], key_columns=["value"]), db)
    for seq, doc in enumerate(["v1", "v2"]):
        s.ctx.checkpoint_id = seq
        txn = s.begin_transaction()
        s.write(txn, {"value": "k", "doc": doc}, None, 0)
        s.commit(s.pre_commit(txn))
    assert q(db.ep, f"SELECT value, doc FROM `{db.table}`") == [("k", "v2")]


# --- idempotent mode ---------------------------------------------------------------------------


def test_idempotent_mode_replays_without_duplicates(db: DB) -> None:
    q(db.ep, f"ALTER TABLE `{db.table}` DROP KEY v, ADD COLUMN kafka_topic VARCHAR(100), ADD COLUMN kafka_partition INT, "
             "ADD COLUMN kafka_offset BIGINT, ADD COLUMN kafka_index INT, "
             "ADD UNIQUE KEY rec (kafka_topic, kafka_partition, kafka_offset, kafka_index)")
    current: list[RecordMetadata] = []
    s = opened(MySQLSink(db.url, db.table, ["value"], mode="idempotent"), db, record=lambda: current[-1])

    def attempt(offsets: range, commit: bool) -> None:
        txn = s.begin_transaction()
        for off in offsets:
            for index in range(2):  # a flat_map: two rows per input record
                current.append(RecordMetadata("in", 0, off, index))
                s.write(txn, {"value": f"{off}.{index}"}, None, 0)
        assert s.pre_commit(txn) is None, "idempotent mode has nothing to commit after Kafka"
        if not commit:
            s.abort(txn)

    attempt(range(0, 5), commit=False)  # written and committed locally, then the Kafka commit fails
    attempt(range(0, 8), commit=True)  # the replay, and more
    got = sorted(values(db), key=lambda v: tuple(map(int, v.split("."))))
    assert got == [f"{o}.{i}" for o in range(8) for i in range(2)], f"expected each row once; saw {got}"


# --- mapping and configuration ---------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    value: str
    doc: Any


class RowModel(pydantic.BaseModel):
    value: str
    doc: dict[str, int]


def test_value_mapping(db: DB) -> None:
    s = opened(MySQLSink(db.url, db.table, ["value", "doc"]), db)
    txn = s.begin_transaction()
    for v in ({"value": "dict", "doc": None}, Row("dataclass", [1, 2]), RowModel(value="model", doc={"a": 1}),
              ("tuple", "text")):
        s.write(txn, v, None, 0)
    for bad, msg in (({"doc": 1}, "no field 'value'"), (("only-one",), "needs 2 fields"), (42, "cannot map int")):
        with pytest.raises(ValueError, match=msg):
            s.write(txn, bad, None, 0)
    s.commit(s.pre_commit(txn))
    got = q(db.ep, f"SELECT value, doc FROM `{db.table}` ORDER BY id")
    assert got == [("dict", None), ("dataclass", "[1,2]"), ("model", '{"a":1}'), ("tuple", "text")], got


def test_configuration_errors_are_clear(db: DB) -> None:
    with pytest.raises(ValueError, match="no database name"):
        MySQLSink("mysql://u:p@localhost:3306", "t", ["a"])
    with pytest.raises(ValueError, match="must be"):
        MySQLSink(db.url, "bad table; drop", ["a"])
    with pytest.raises(ValueError, match="key_columns"):
        MySQLSink(db.url, db.table, ["value"], key_columns=["nope"])
    with pytest.raises(MySQLSinkError, match="no_such_table"):
        opened(MySQLSink(db.url, "no_such_table", ["value"]), db)
    with pytest.raises(MySQLSinkError, match="nope"):
        opened(MySQLSink(db.url, db.table, ["value", "nope"]), db)
    ep = db.ep
    wrong = f"mysql://{ep.user}:wrong@{ep.host}:{ep.port}/{ep.database}"
    with pytest.raises(MySQLSinkError, match="cannot log in"):
        opened(MySQLSink(wrong, db.table, ["value"]), db)


# --- the polling source -----------------------------------------------------------------------------


class Collector:
    """Stands in for the SourceContext: records what the source collects."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []
        self.stop = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()

    def collect(self, value: Any, key: Any = None, timestamp: int | None = None) -> None:
        self.items.append((key, value))


def test_polling_source_rereads_the_query(db: DB) -> None:
    table = f"user_info_{uuid.uuid4().hex[:6]}"
    q(db.ep, f"CREATE TABLE `{table}` (userID VARCHAR(10) PRIMARY KEY, userName VARCHAR(20), userAge INT, "
             "score DECIMAL(5,2))")
    try:
        q(db.ep, f"INSERT INTO `{table}` VALUES ('user_1', 'alice', 18, 1.50), ('user_2', 'bob', 20, NULL)")
        src = MySQLPollingSource(db.url, f"SELECT userID, userName, userAge, score FROM `{table}` ORDER BY userID",
                                 interval=0.2, only_changes=True)
        ctx = Collector()
        t = threading.Thread(target=src.run, args=(ctx,), daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while len(ctx.items) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        q(db.ep, f"UPDATE `{table}` SET userAge = 21 WHERE userID = 'user_2'")
        while len(ctx.items) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        polls = src.polls
        src.cancel()
        t.join(5)
    finally:
        q(db.ep, f"DROP TABLE `{table}`")
    assert ctx.items == [
        (b"user_1", {"userID": "user_1", "userName": "alice", "userAge": 18, "score": "1.50"}),
        (b"user_2", {"userID": "user_2", "userName": "bob", "userAge": 20, "score": None}),
        (b"user_2", {"userID": "user_2", "userName": "bob", "userAge": 21, "score": None}),
    ], f"expected both rows, then only the changed one (after {polls} polls); saw {ctx.items}"
    assert not t.is_alive(), "cancel() must end run() within the interval"


def test_polling_source_errors_are_clear(db: DB) -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        MySQLPollingSource("postgres://u:p@h/db", "SELECT 1")
    with pytest.raises(ValueError, match="non-empty query"):
        MySQLPollingSource(db.url, " ")
    src = MySQLPollingSource(db.url, "SELECT userID FROM no_such_user_info", interval=0.1)
    with pytest.raises(MySQLSourceError, match="no_such_user_info"):
        src.run(Collector())
