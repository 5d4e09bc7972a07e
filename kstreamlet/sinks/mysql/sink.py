"""MySQL / MariaDB sink: exactly-once with XA two-phase commit, or idempotent upserts.

Modes
-----
``exactly_once`` (default)
    Each checkpoint of each task is one XA transaction: ``XA START`` on the first batch,
    batched ``executemany`` inserts (or upserts with ``key_columns``), ``XA END`` +
    ``XA PREPARE`` at pre-commit, ``XA COMMIT`` after the Kafka transaction committed.
    The xid is ``gtrid = ks:<application_id>:<partition>:<checkpoint seq>`` and
    ``bqual = <sink name>``; the checkpoint sequence lives in the sink's state store, so it
    survives restarts and is never reused for a committed transaction. On (re)assignment,
    ``XA RECOVER`` lists what is prepared: the stored committable is committed, every other
    xid of this app, sink and partition is rolled back.

``idempotent``
    Plain local transactions committed at pre-commit (before the Kafka commit), as upserts
    keyed by a deterministic key — by default the input record's identity, written to the
    columns ``kafka_topic, kafka_partition, kafka_offset, kafka_index`` (give the table a
    UNIQUE KEY on them), or the ``key_columns`` of your rows. Replays after a crash rewrite
    the same rows: at-least-once delivery with an exactly-once effect, and no XA.

Requirements
------------
* Prepared XA transactions must survive the client disconnecting: MySQL >= 5.7.7 or
  MariaDB >= 10.5 (older MariaDB rolls them back, which breaks recovery).
* Grants: ``INSERT`` (and ``UPDATE`` for upserts) and ``SELECT`` on the table. Exactly-once
  also needs ``XA RECOVER``: on MySQL 8 that is
  ``GRANT XA_RECOVER_ADMIN ON *.* TO 'user'@'%';`` (MariaDB lets any user run it).
* Each task holds one connection; a server-side ``max_connections`` must cover the
  partitions of the sink's sub-topology.

Mapping: each value becomes one row of ``columns`` — a dict (``value[col]``), a pydantic
model or dataclass or any object (``getattr(value, col)``), or a tuple/list in column
order; ``mapper`` may convert the value first. dict/list field values are stored as JSON
text. A value that cannot be mapped is a record error (dead-letter topic by default).

Failures: connection loss, timeouts, deadlocks and a server that does not answer raise
:class:`~kstreamlet.sinks.SinkUnavailableError`: the checkpoint aborts, the records
are replayed after a backoff, and the connection is re-opened. ``connect_timeout``,
``read_timeout`` and ``write_timeout`` bound how long a hung server can block the task.

Example (a table ``t_test(id AUTO_INCREMENT, value, insert_time)``)::

    from datetime import datetime
    sink = MySQLSink(os.environ["MYSQL_URL"], "t_test", ["value", "insert_time"],
                     mapper=lambda v: {"value": v["value"], "insert_time": datetime.now()})
    app.stream("topic_in", value_serde=serdes.JSON).sink(sink, name="mysql")
"""

from __future__ import annotations

import collections.abc as _abc
import re
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import orjson
import structlog

from kstreamlet.sinks.mysql.url import MySQLEndpoint, parse_mysql_url
from kstreamlet.sinks.mysql.xa import (
    CONFIG_ERRORS,
    TRANSIENT_ERRORS,
    XID_MAX,
    MySQLSinkError,
    MySQLTxn,
    XACommands,
    error_code,
    short_id,
)
from kstreamlet.sinks.twophase.protocol import SinkContext, SinkUnavailableError, SinkWriteError, TwoPhaseCommitSink

if TYPE_CHECKING:
    import pymysql.connections

log = structlog.get_logger("kstreamlet.sinks.mysql")

#: Columns that hold the input record's identity in ``idempotent`` mode without ``key_columns``.
DEFAULT_SOURCE_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_index")

_IDENT = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


def quote_ident(name: str, what: str) -> str:
    """`name` or `db`.`name` after checking it is a plain identifier (``what`` names it in the error)."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"{what} {name!r} must be [database.]name of letters, digits, '_' or '$'")
    return ".".join(f"`{p}`" for p in parts)


_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def _db_value(v: Any) -> Any:
    """Nested values become JSON text; everything else goes to PyMySQL as is (datetime, Decimal...)."""
    if hasattr(v, "model_dump"):
        return orjson.dumps(v.model_dump(mode="json")).decode()
    if isinstance(v, (dict, list, tuple)):
        return orjson.dumps(v).decode()
    return v


class MySQLSink(XACommands, TwoPhaseCommitSink[MySQLTxn]):
    """Writes a stream into a MySQL/MariaDB table (see the module docs for modes and grants)."""

    def __init__(
        self,
        url: str,
        table: str,
        columns: Sequence[str],
        *,
        mode: Literal["exactly_once", "idempotent"] = "exactly_once",
        key_columns: Sequence[str] | None = None,
        mapper: Callable[[Any], Any] | None = None,
        batch_size: int = 500,
        source_columns: Sequence[str] = DEFAULT_SOURCE_COLUMNS,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        write_timeout: float = 15.0,
        xid_prefix: str | None = None,
        xa_wait: float = 30.0,
    ) -> None:
        """
        Args:
            url: ``mysql://user:password@host:port/database``.
            table: ``name`` or ``database.name``.
            columns: the table columns each value maps to, in order.
            mode: ``exactly_once`` (XA) or ``idempotent`` (upserts, no XA).
            key_columns: a unique key among ``columns``: rows are upserted on it
                (``INSERT … ON DUPLICATE KEY UPDATE``). In ``idempotent`` mode it defaults to
                ``source_columns``, which are then appended to every row.
            mapper: converts a value before mapping (to a dict, object or tuple).
            batch_size: rows per ``executemany`` (also sent at every checkpoint).
            source_columns: names of the four input-identity columns (idempotent default key).
            connect_timeout, read_timeout, write_timeout: seconds; bound how long a hung
                server blocks the task before the checkpoint aborts and is retried.
            xid_prefix: replaces the application id in xids (e.g. to share a server between
                apps with long ids); default the application id.
            xa_wait: seconds to wait for an xid still attached to a dead client's session.
        """
        if mode not in ("exactly_once", "idempotent"):
            raise ValueError(f"mode must be 'exactly_once' or 'idempotent', not {mode!r}")
        self.endpoint: MySQLEndpoint = parse_mysql_url(url)  # ValueError naming what is wrong
        self.table = table
        self._qtable = quote_ident(table, "table")
        self.columns = tuple(columns)
        if not self.columns:
            raise ValueError("columns must name at least one column")
        for c in self.columns:
            quote_ident(c, "column")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns {list(self.columns)} name a column twice")
        self.mode = mode
        self.mapper = mapper
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.source_columns = tuple(source_columns)
        self.with_source = mode == "idempotent" and key_columns is None
        if self.with_source:
            if len(self.source_columns) != 4:
                raise ValueError("source_columns must name 4 columns: topic, partition, offset, index")
            clash = set(self.source_columns) & set(self.columns)
            if clash:
                raise ValueError(f"columns {sorted(clash)} are also source_columns")
            key_columns = self.source_columns
        all_cols = self.columns + (self.source_columns if self.with_source else ())
        self.key_columns = tuple(key_columns) if key_columns is not None else None
        if self.key_columns is not None:
            unknown = [c for c in self.key_columns if c not in all_cols]
            if unknown or not self.key_columns:
                raise ValueError(f"key_columns {unknown or []} must be non-empty and among the columns {list(all_cols)}")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.xid_prefix = xid_prefix
        self.xa_wait = xa_wait
        self._sql = self._insert_sql(all_cols)
        self._all_cols = all_cols

    def _insert_sql(self, cols: tuple[str, ...]) -> str:
        names = ", ".join(quote_ident(c, "column") for c in cols)
        marks = ", ".join(["%s"] * len(cols))
        if self.key_columns is None:
            return f"INSERT INTO {self._qtable} ({names}) VALUES ({marks})"
        rest = [c for c in cols if c not in self.key_columns]
        if not rest:
            return f"INSERT IGNORE INTO {self._qtable} ({names}) VALUES ({marks})"
        # VALUES(col) works on MariaDB and MySQL (deprecated but supported in 8.x).
        update = ", ".join(f"{quote_ident(c, 'column')}=VALUES({quote_ident(c, 'column')})" for c in rest)
        return f"INSERT INTO {self._qtable} ({names}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {update}"

    @property
    def exactly_once(self) -> bool:
        return self.mode == "exactly_once"

    # --- lifecycle ---------------------------------------------------------------------------------

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)
        self._conn: pymysql.connections.Connection | None = None
        app = short_id(self.xid_prefix or ctx.application_id, 40)
        self._gtrid_prefix = f"ks:{app}:{ctx.partition}:"
        self._bqual = short_id(ctx.sink_name, XID_MAX)
        #: Prepared xids whose rollback failed (server unreachable): retried before new work.
        self._orphans: set[tuple[str, str]] = set()
        self._log = log.bind(sink=ctx.sink_name, partition=ctx.partition)
        self._check_table()

    def _check_table(self) -> None:
        """Fail fast, with a clear message, on a wrong table or column list."""
        import pymysql

        conn = self._connection()
        names = ", ".join(quote_ident(c, "column") for c in self._all_cols)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT {names} FROM {self._qtable} LIMIT 0")
                cur.fetchall()
            if not self.exactly_once:
                conn.commit()
        except pymysql.MySQLError as e:
            if error_code(e) in CONFIG_ERRORS:
                raise MySQLSinkError(
                    f"MySQL sink: table {self.table!r} with columns {list(self._all_cols)} is not usable "
                    f"on {self.endpoint.host}:{self.endpoint.port}/{self.endpoint.database}: {e.args[-1]}"
                ) from None
            raise self._unavailable(e, "checking the table") from None

    def close(self) -> None:
        # Closing the connection rolls back an unprepared XA transaction; prepared ones persist
        # for the next owner's recover().
        self._drop_connection()

    # --- connection --------------------------------------------------------------------------------

    def _connection(self) -> "pymysql.connections.Connection":
        import pymysql

        if self._conn is not None and self._conn.open:
            return self._conn
        ep = self.endpoint
        try:
            # XA needs autocommit: an open local transaction makes XA COMMIT/ROLLBACK fail (1400).
            self._conn = pymysql.connect(
                host=ep.host, port=ep.port, user=ep.user, password=ep.password, database=ep.database,
                autocommit=self.exactly_once, charset="utf8mb4", connect_timeout=self.connect_timeout,
                # The read timeout also bounds the handshake: a stopped server accepts TCP connections.
                read_timeout=self.read_timeout, write_timeout=self.write_timeout,
            )
        except pymysql.MySQLError as e:
            if error_code(e) in (1044, 1045, 1049):
                raise MySQLSinkError(f"MySQL sink cannot log in to {ep.host}:{ep.port}/{ep.database} "
                                     f"as {ep.user!r}: {e.args[-1]}") from None
            raise SinkUnavailableError(f"cannot connect to MySQL at {ep.host}:{ep.port}: {e.args[-1]}") from None
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass  # already broken; the server cleans the session up when the socket closes

    def _unavailable(self, e: BaseException, doing: str) -> SinkUnavailableError:
        self._drop_connection()
        return SinkUnavailableError(f"MySQL error while {doing}: {e!r}")

    def _error(self, e: Exception, doing: str) -> Exception:
        """Classify an error from a write path: transient → unavailable, otherwise a write error."""
        import pymysql

        if isinstance(e, (SinkUnavailableError, SinkWriteError)):
            return e
        code = error_code(e)
        if isinstance(e, pymysql.err.InterfaceError) or code in TRANSIENT_ERRORS or (code is not None and code >= 2000) \
                or isinstance(e, OSError):
            return self._unavailable(e, doing)
        return SinkWriteError(f"MySQL rejected {doing} into {self.table}: {e!r}")

    # --- the protocol ----------------------------------------------------------------------------

    def begin_transaction(self) -> MySQLTxn:
        # No I/O here: XA START runs with the first batch, so idle checkpoints cost nothing.
        return MySQLTxn(f"{self._gtrid_prefix}{self.ctx.checkpoint_id}", self._bqual)

    def write(self, txn: MySQLTxn, value: Any, key: Any, timestamp: int) -> None:
        txn.rows.append(self._row(value))
        if len(txn.rows) >= self.batch_size:
            self._flush(txn)

    def _row(self, value: Any) -> tuple[Any, ...]:
        if self.mapper is not None:
            value = self.mapper(value)
        if type(value) is dict or isinstance(value, _abc.Mapping):  # the dict check first: it is the common case
            try:
                row = [value[c] for c in self.columns]
            except KeyError as e:
                raise ValueError(f"value has no field {e.args[0]!r} for table {self.table} "
                                 f"(columns {list(self.columns)}); value: {value!r:.200}") from None
        elif isinstance(value, (tuple, list)):
            if len(value) != len(self.columns):
                raise ValueError(f"a tuple value needs {len(self.columns)} fields for columns {list(self.columns)}, "
                                 f"got {len(value)}: {value!r:.200}")
            row = list(value)
        else:
            try:
                row = [getattr(value, c) for c in self.columns]
            except AttributeError as e:
                raise ValueError(f"cannot map {type(value).__name__} to columns {list(self.columns)} of {self.table}: "
                                 f"{e}") from None
        for i, v in enumerate(row):
            if type(v) not in _PLAIN:
                row[i] = _db_value(v)
        if self.with_source:
            meta = self.ctx.record()
            if meta is None:
                raise ValueError("idempotent mode needs the input record's identity, but there is none "
                                 "(a write outside of record processing); give key_columns instead")
            row.extend((meta.topic, meta.partition, meta.offset, meta.index))
        return tuple(row)

    def _flush(self, txn: MySQLTxn) -> None:
        if not txn.rows:
            return
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                if self.exactly_once and not txn.started:
                    self._retry_orphans()
                    self._xa_start(cur, txn)
                txn.started = True
                cur.executemany(self._sql, txn.rows)
        except Exception as e:
            raise self._error(e, f"inserting {len(txn.rows)} rows") from e
        txn.written += len(txn.rows)
        txn.rows.clear()

    def pre_commit(self, txn: MySQLTxn) -> Any:
        self._flush(txn)
        if not txn.started:
            return None
        if not self.exactly_once:
            try:
                self._connection().commit()
            except Exception as e:
                raise self._error(e, "committing") from e
            return None
        try:
            with self._connection().cursor() as cur:
                cur.execute("XA END %s, %s", (txn.gtrid, txn.bqual))
                txn.prepare_sent = True
                cur.execute("XA PREPARE %s, %s", (txn.gtrid, txn.bqual))
        except Exception as e:
            raise self._error(e, "preparing the XA transaction") from e
        txn.prepared = True
        return {"xid": txn.gtrid, "bqual": txn.bqual, "rows": txn.written}

    def commit(self, committable: Any) -> None:
        if not committable:
            return
        done = self._finish("COMMIT", committable["xid"], committable["bqual"], wait=self.xa_wait)
        if not done:
            self._log.info("xid already committed", xid=committable["xid"])

    def abort(self, txn: MySQLTxn) -> None:
        txn.rows.clear()
        if not txn.started:
            return
        if not self.exactly_once:
            try:
                self._connection().rollback()
            except Exception:
                self._drop_connection()  # the server rolls back a closed session's transaction
            return
        if txn.prepared or txn.prepare_sent:
            # Prepared work survives disconnects: it must be rolled back explicitly.
            try:
                self._finish("ROLLBACK", txn.gtrid, txn.bqual, wait=2.0)
            except Exception as e:
                self._orphans.add((txn.gtrid, txn.bqual))
                self._log.warning("rollback of a prepared xid failed; retried later", xid=txn.gtrid, error=repr(e))
            return
        try:
            with self._connection().cursor() as cur:
                cur.execute("XA END %s, %s", (txn.gtrid, txn.bqual))
                cur.execute("XA ROLLBACK %s, %s", (txn.gtrid, txn.bqual))
        except Exception:
            # An unprepared XA transaction dies with its session.
            self._drop_connection()

    def recover(self, committable: Any | None) -> None:
        if not self.exactly_once:
            return
        keep = committable["xid"] if committable else None
        mine = self._recover_mine()
        for gtrid, bqual in mine:
            if gtrid == keep:
                # Committed by the runtime already; only if that commit raced a crash is it still here.
                self._finish("COMMIT", gtrid, bqual, wait=self.xa_wait)
            else:
                self._finish("ROLLBACK", gtrid, bqual, wait=self.xa_wait)
        self._orphans.clear()
        if mine:
            self._log.info("recovered prepared XA transactions", rolled_back=[g for g, _ in mine if g != keep],
                           committed=[g for g, _ in mine if g == keep])



__all__ = ["MySQLSink", "MySQLSinkError", "MySQLTxn", "DEFAULT_SOURCE_COLUMNS", "quote_ident"]
