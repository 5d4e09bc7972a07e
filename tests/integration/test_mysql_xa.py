"""The MySQL harness is fit for two-phase commit (XA), as the exactly-once MySQL sink needs.

A transaction that reached ``XA PREPARE`` must survive its client going away (a clean
``conn.close()`` and a SIGKILLed process), be listed by ``XA RECOVER`` on a new connection,
stay invisible to readers until ``XA COMMIT``, and vanish on ``XA ROLLBACK``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pymysql
import pytest

from kstreamlet.sinks.mysql import MySQLEndpoint, parse_mysql_url

ROWS = [(1, "a"), (2, "b"), (3, "c")]
ER_XAER_NOTA = 1397  # "Unknown XID": the xid is still attached to a session the server has not reaped yet

# A worker that prepares an XA transaction and then dies without saying goodbye (no COM_QUIT,
# no rollback), like a process killed mid-checkpoint. It uses PyMySQL directly so it does not
# depend on how kstreamlet is installed.
_CRASHING_WORKER = r"""
import json, os, signal, sys
import pymysql
ep, table, xid, rows = json.loads(sys.argv[1])
conn = pymysql.connect(autocommit=False, **ep)
cur = conn.cursor()
cur.execute("XA START %s", (xid,))
cur.executemany(f"INSERT INTO `{table}` (id, val) VALUES (%s, %s)", [tuple(r) for r in rows])
cur.execute("XA END %s", (xid,))
cur.execute("XA PREPARE %s", (xid,))
print("prepared", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@dataclass(frozen=True)
class Probe:
    endpoint: MySQLEndpoint
    table: str
    xid: str


@pytest.fixture
def probe(mysql_url: str) -> Iterator[Probe]:
    """A fresh table and a unique xid; afterwards any leftover prepared xid is rolled back and the table dropped."""
    endpoint = parse_mysql_url(mysql_url)
    suffix = uuid.uuid4().hex[:10]
    p = Probe(endpoint, f"xa_probe_{suffix}", f"x1-{suffix}")  # unique: the server may be shared (KSTREAMLET_MYSQL_URL)
    with _connect(endpoint) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{p.table}` (id INT PRIMARY KEY, val VARCHAR(16) NOT NULL) ENGINE=InnoDB")
    yield p
    with _connect(endpoint) as conn, conn.cursor() as cur:
        # A prepared transaction still holds its locks; DROP TABLE would wait on it forever.
        if p.xid in _recovered_xids(conn):
            cur.execute("XA ROLLBACK %s", (p.xid,))
        cur.execute("SET SESSION lock_wait_timeout = 10")
        cur.execute(f"DROP TABLE IF EXISTS `{p.table}`")


@contextlib.contextmanager
def _connect(endpoint: MySQLEndpoint, **kw: Any) -> Iterator[pymysql.connections.Connection]:
    # autocommit=True for observers and the recovering coordinator: an open local transaction
    # would (a) pin an old REPEATABLE READ snapshot and (b) make MariaDB refuse XA COMMIT/ROLLBACK
    # with XAER_OUTSIDE (1400).
    kw.setdefault("autocommit", True)
    conn = endpoint.connect(**kw)
    try:
        yield conn
    finally:
        conn.close()


def _recovered_xids(conn: pymysql.connections.Connection) -> list[str]:
    """The gtrids that XA RECOVER lists (rows are formatID, gtrid_length, bqual_length, data)."""
    with conn.cursor() as cur:
        cur.execute("XA RECOVER")
        out = []
        for _format_id, gtrid_length, _bqual_length, data in cur.fetchall():
            raw = data.encode() if isinstance(data, str) else bytes(data)
            out.append(raw[: int(gtrid_length)].decode(errors="replace"))
        return out


def _rows(conn: pymysql.connections.Connection, table: str) -> list[tuple[int, str]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, val FROM `{table}` ORDER BY id")
        return [(int(i), str(v)) for i, v in cur.fetchall()]


def _prepare_in_process(p: Probe) -> None:
    """XA START … INSERT … XA END … XA PREPARE, then a clean disconnect (COM_QUIT)."""
    conn = p.endpoint.connect()  # autocommit=False, like the sink
    with conn.cursor() as cur:
        cur.execute("XA START %s", (p.xid,))
        cur.executemany(f"INSERT INTO `{p.table}` (id, val) VALUES (%s, %s)", ROWS)
        cur.execute("XA END %s", (p.xid,))
        cur.execute("XA PREPARE %s", (p.xid,))
    conn.close()
    assert not conn.open, "expected the preparing connection to be closed after conn.close(); it is still open"


def _prepare_then_sigkill(p: Probe) -> None:
    """Same, from a child process that is SIGKILLed right after XA PREPARE."""
    ep = {"host": p.endpoint.host, "port": p.endpoint.port, "user": p.endpoint.user,
          "password": p.endpoint.password, "database": p.endpoint.database}
    res = subprocess.run(
        [sys.executable, "-c", _CRASHING_WORKER, json.dumps([ep, p.table, p.xid, ROWS])],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == -signal.SIGKILL and "prepared" in res.stdout, (
        f"expected the worker to print 'prepared' and die by SIGKILL (returncode {-signal.SIGKILL}); "
        f"saw returncode {res.returncode}, stdout {res.stdout!r}, stderr {res.stderr[-2000:]!r}"
    )


PREPARERS = {"conn.close": _prepare_in_process, "sigkill": _prepare_then_sigkill}


def _prepared_after_disconnect(p: Probe, how: str) -> None:
    """Prepare via ``how``; check from a new connection that the xid is listed and its rows are invisible."""
    PREPARERS[how](p)
    with _connect(p.endpoint) as observer:
        listed = _recovered_xids(observer)
        assert p.xid in listed, (
            f"expected XA RECOVER on a new connection to list {p.xid!r} after the client disconnected "
            f"({how}); saw {listed!r}"
        )
        seen = _rows(observer, p.table)
        assert seen == [], f"expected no rows visible before XA COMMIT/ROLLBACK (transaction only prepared); saw {seen!r}"


def _finish(p: Probe, verb: str, timeout: float = 15.0) -> None:
    """Run ``XA COMMIT``/``XA ROLLBACK`` from a new connection, as a recovering coordinator would.

    After a SIGKILL the server reaps the dead client's session asynchronously; until then the
    xid is still attached to it and XA COMMIT answers XAER_NOTA, so retry that (bounded) error.
    """
    deadline = time.monotonic() + timeout
    with _connect(p.endpoint) as coordinator, coordinator.cursor() as cur:
        while True:
            try:
                cur.execute(f"XA {verb} %s", (p.xid,))
                return
            except pymysql.err.MySQLError as e:
                if e.args[0] != ER_XAER_NOTA or time.monotonic() >= deadline:
                    raise AssertionError(
                        f"expected XA {verb} {p.xid!r} to succeed from a new connection within {timeout}s; saw {e!r}"
                    ) from e
            time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize("how", sorted(PREPARERS))
def test_prepared_xa_survives_disconnect_and_commits(probe: Probe, how: str) -> None:
    _prepared_after_disconnect(probe, how)
    _finish(probe, "COMMIT")
    with _connect(probe.endpoint) as observer:
        seen = _rows(observer, probe.table)
        assert seen == ROWS, f"expected the committed rows {ROWS!r} to be visible after XA COMMIT; saw {seen!r}"
        listed = _recovered_xids(observer)
        assert probe.xid not in listed, f"expected {probe.xid!r} gone from XA RECOVER after XA COMMIT; saw {listed!r}"


@pytest.mark.integration
@pytest.mark.parametrize("how", sorted(PREPARERS))
def test_prepared_xa_survives_disconnect_and_rolls_back(probe: Probe, how: str) -> None:
    _prepared_after_disconnect(probe, how)
    _finish(probe, "ROLLBACK")
    with _connect(probe.endpoint) as observer:
        seen = _rows(observer, probe.table)
        assert seen == [], f"expected no rows after XA ROLLBACK of the prepared transaction; saw {seen!r}"
        listed = _recovered_xids(observer)
        assert probe.xid not in listed, f"expected {probe.xid!r} gone from XA RECOVER after XA ROLLBACK; saw {listed!r}"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("not a url", "no scheme"),
        ("postgres://u:p@localhost:5432/db", "unsupported scheme"),
        ("mysql://u:p@:3306/db", "no host"),
        ("mysql://u:p@localhost:notaport/db", "invalid port"),
        ("mysql://u:p@localhost:99999/db", "invalid port"),
        ("mysql://localhost:3306/db", "no user"),
        ("mysql://u:p@localhost:3306", "no database"),
        ("mysql://u:p@localhost:3306/db/extra", "more than a database name"),
        ("mysql://u:p@localhost:3306/db?ssl=true", "query parameters"),
    ],
)
def test_parse_mysql_url_rejects_garbage(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_mysql_url(url)
    message = str(info.value)
    assert problem in message, f"expected the ValueError for {url!r} to mention {problem!r}; saw {message!r}"
    assert ":p@" not in message, f"expected the password to be masked in the error message; saw {message!r}"


def test_parse_mysql_url_round_trips() -> None:
    ep = parse_mysql_url("mysql+pymysql://us%40er:p%3Ass@db.example:3307/my_db")
    expected = MySQLEndpoint("db.example", 3307, "us@er", "p:ss", "my_db")
    assert ep == expected, f"expected {expected!r} (password 'p:ss'); saw {ep!r} (password {ep.password!r})"
    again = parse_mysql_url(ep.url)
    assert again == ep, f"expected parse_mysql_url(ep.url) to give back {ep!r}; saw {again!r} from {ep.url!r}"
    default_port = parse_mysql_url("mysql://u@h/d")
    assert (default_port.port, default_port.password) == (3306, ""), (
        f"expected port 3306 and an empty password by default; saw {default_port.port} and {default_port.password!r}"
    )
