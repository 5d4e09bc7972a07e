"""A polling MySQL source: re-reads a query every N seconds, e.g. to feed a broadcast state.

Example: enrich a user-event stream with ``user_info(userID, userName, userAge)`` read
from MySQL every 5 seconds and broadcast to every parallel instance::

    users = MySQLPollingSource(os.environ["MYSQL_URL"],
                               "SELECT userID, userName, userAge FROM user_info", interval=5.0)
    config = app.broadcast(source=users, name="user-info", key_serde=serdes.STR)
    events.connect(config).process(EnrichFunction())

Every poll emits every row as a dict (column → value) keyed by ``key_column`` (default the
first column; the broadcast topic is compacted, which needs keys). Values are made
JSON-friendly: ``Decimal`` → ``str`` (lossless), ``bytes`` → ``str`` (UTF-8),
``timedelta`` (``TIME`` columns) → seconds; dates and datetimes stay (orjson writes ISO 8601).
With ``only_changes=True`` a row is emitted only when it differs from the previous poll
(deleted rows are not signalled).

Errors: a malformed URL raises ``ValueError`` when the source is created; a wrong query,
table, credentials or an unreachable server fail the first poll with
:class:`MySQLSourceError` (which stops the app with that message). Once it has worked,
connection trouble is logged and retried at the next interval, so a database restart does
not take the app down.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import threading
from typing import Any, Callable, Sequence

import structlog

from kstreamlet.sinks.mysql.url import MySQLEndpoint, parse_mysql_url
from kstreamlet.sources.base import Source, SourceContext

log = structlog.get_logger("kstreamlet.sources.mysql")


class MySQLSourceError(RuntimeError):
    """The query cannot be run (wrong SQL, table, credentials or server)."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", errors="replace")
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    return v


class MySQLPollingSource(Source):
    """Runs ``query`` every ``interval`` seconds and emits its rows (see module docs)."""

    def __init__(self, url: str, query: str, interval: float = 5.0, *, params: Sequence[Any] | None = None,
                 key_column: str | None = None, key_fn: Callable[[dict[str, Any]], Any] | None = None,
                 only_changes: bool = False, connect_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        """
        Args:
            url: ``mysql://user:password@host:port/database`` (checked here: ValueError).
            query: a ``SELECT``; ``params`` fill its ``%s`` placeholders.
            interval: seconds between polls.
            key_column: column whose value (as UTF-8 bytes) keys each record; default the first.
            key_fn: instead of ``key_column``, ``key_fn(row)`` gives the key (serialized by the
                stream's key serde).
            only_changes: emit a row only if it differs from the previous poll's row with that key.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("MySQLPollingSource needs a non-empty query")
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self.endpoint: MySQLEndpoint = parse_mysql_url(url)
        self.query = query
        self.params = tuple(params) if params is not None else None
        self.interval = interval
        self.key_column = key_column
        self.key_fn = key_fn
        self.only_changes = only_changes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._cancel = threading.Event()
        self._conn: Any = None
        self._last: dict[Any, dict[str, Any]] = {}
        self.polls = 0

    # --- polling ---------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is None or not self._conn.open:
            # autocommit: each poll sees the latest committed rows, not a REPEATABLE READ snapshot.
            self._conn = self.endpoint.connect(autocommit=True, connect_timeout=self.connect_timeout,
                                               read_timeout=self.read_timeout, write_timeout=self.read_timeout)
        return self._conn

    def poll_once(self) -> list[dict[str, Any]]:
        """Run the query once and return its rows as dicts (raises pymysql errors)."""
        import pymysql.cursors

        conn = self._connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(self.query, self.params)
                rows = cur.fetchall()
        except pymysql.MySQLError:
            self._close()
            raise
        self.polls += 1
        return [{k: _jsonable(v) for k, v in r.items()} for r in rows]

    def _key(self, row: dict[str, Any]) -> Any:
        if self.key_fn is not None:
            return self.key_fn(row)
        col = self.key_column if self.key_column is not None else next(iter(row), None)
        if col is None:
            return None
        if col not in row:
            raise MySQLSourceError(f"key_column {col!r} is not a column of the query result {list(row)}")
        v = row[col]
        return v if isinstance(v, bytes) else str(v).encode()

    def run(self, ctx: SourceContext) -> None:
        import pymysql

        first = True
        while not self._cancel.is_set() and not ctx.cancelled:
            try:
                rows = self.poll_once()
            except pymysql.MySQLError as e:
                if first:
                    raise MySQLSourceError(
                        f"MySQL polling source: {self.query!r} failed on {self.endpoint.host}:{self.endpoint.port}/"
                        f"{self.endpoint.database}: {e.args[-1] if e.args else e!r}"
                    ) from None
                log.warning("MySQL poll failed; retrying at the next interval", error=repr(e))
                rows = None
            if rows is not None:
                first = False
                self._emit(ctx, rows)
            self._cancel.wait(self.interval)
        self._close()

    def _emit(self, ctx: SourceContext, rows: list[dict[str, Any]]) -> None:
        seen: dict[Any, dict[str, Any]] = {}
        for row in rows:
            key = self._key(row)
            if self.only_changes:
                seen[key] = row
                if self._last.get(key) == row:
                    continue
            ctx.collect(row, key=key)
        if self.only_changes:
            self._last = seen

    def cancel(self) -> None:
        self._cancel.set()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


__all__ = ["MySQLPollingSource", "MySQLSourceError"]
