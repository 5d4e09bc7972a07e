"""XA two-phase commit on MySQL/MariaDB for :class:`~kstreamlet.sinks.mysql.MySQLSink`.

The transaction of one checkpoint of one task (:class:`MySQLTxn`), the server's error codes
and how they are classified, xid naming, and the XA commands (``XA START`` with leftover
handling, ``XA COMMIT``/``XA ROLLBACK`` from any session, ``XA RECOVER``) as
:class:`XACommands`, a mixin of the sink that uses its connection and error mapping.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kstreamlet.sinks.twophase.protocol import SinkUnavailableError

if TYPE_CHECKING:
    import pymysql.connections
    import structlog

    from kstreamlet.sinks.mysql.url import MySQLEndpoint

ER_XAER_NOTA = 1397  # unknown xid (finished already — or still attached to a dying session)
ER_XAER_RMFAIL = 1399  # this session's XA state forbids the command
ER_XAER_OUTSIDE = 1400  # a local transaction is open on this session
ER_XA_RBROLLBACK = 1402  # the branch was rolled back (answered by a successful XA ROLLBACK, too)
ER_XAER_DUPID = 1440  # the xid exists (a leftover of an earlier attempt)

# Errors that a retry can cure: connection trouble, timeouts, lock conflicts, shutdowns.
TRANSIENT_ERRORS = {1040, 1053, 1077, 1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1205, 1213,
                    1317, 1614, 1927, 2002, 2003, 2006, 2011, 2013, 2014, 2055, 4031}
# Errors that say the configuration is wrong (credentials, database, table, columns, privileges).
CONFIG_ERRORS = {1044, 1045, 1049, 1054, 1064, 1142, 1143, 1146, 1227}

XID_MAX = 64  # bytes, for both gtrid and bqual


class MySQLSinkError(Exception):
    """The sink is misconfigured (URL, credentials, table, columns, privileges); not retried."""


def short_id(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` bytes, else a deterministic prefix + hash of it."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
    return raw[: limit - 17].decode(errors="ignore") + "~" + digest


def error_code(e: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL error (None if it has none)."""
    return e.args[0] if e.args and isinstance(e.args[0], int) else None


@dataclass
class MySQLTxn:
    """One checkpoint's work of one task."""

    gtrid: str
    bqual: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: XA START ran (exactly-once) / rows were sent (idempotent).
    started: bool = False
    #: XA PREPARE was sent (it may have succeeded even if its answer was lost).
    prepare_sent: bool = False
    prepared: bool = False
    written: int = 0


class XACommands:
    """The XA commands of :class:`~kstreamlet.sinks.mysql.MySQLSink` (a mixin: it runs them on
    the sink's connection and maps errors with the sink's ``_error``)."""

    endpoint: "MySQLEndpoint"
    _log: "structlog.typing.FilteringBoundLogger"
    _bqual: str
    _gtrid_prefix: str
    #: Prepared xids whose rollback failed (server unreachable): retried before new work.
    _orphans: set[tuple[str, str]]

    if TYPE_CHECKING:  # provided by the sink
        def _connection(self) -> "pymysql.connections.Connection": ...

        def _drop_connection(self) -> None: ...

        def _error(self, e: Exception, doing: str) -> Exception: ...

    def _xa_start(self, cur: Any, txn: MySQLTxn) -> None:
        import pymysql

        base = txn.gtrid
        for attempt in range(6):
            try:
                cur.execute("XA START %s, %s", (txn.gtrid, txn.bqual))
                return
            except pymysql.MySQLError as e:
                if error_code(e) != ER_XAER_DUPID:
                    raise
                # A leftover of an aborted attempt (its rollback failed) or of a zombie owner.
                # Its checkpoint never committed (sequences only grow), so it is safe to roll back.
                self._log.warning("xid exists; rolling the leftover back", xid=txn.gtrid)
                self._finish("ROLLBACK", txn.gtrid, txn.bqual, wait=1.0)
                if attempt >= 1:
                    txn.gtrid = f"{base}.{attempt}"  # still matches this partition's recovery prefix
        raise SinkUnavailableError(f"cannot start XA transaction {base!r}: the xid keeps existing")

    def _retry_orphans(self) -> None:
        for gtrid, bqual in list(self._orphans):
            try:
                self._finish("ROLLBACK", gtrid, bqual, wait=1.0)
                self._orphans.discard((gtrid, bqual))
            except Exception:
                pass  # still unreachable or attached; recover() sweeps them at the latest

    def _recover_mine(self) -> list[tuple[str, str]]:
        """Prepared xids of this app, partition and sink."""
        return [(g, b) for g, b in self._xa_recover() if b == self._bqual and g.startswith(self._gtrid_prefix)]

    def _xa_recover(self) -> list[tuple[str, str]]:
        import pymysql

        try:
            with self._connection().cursor() as cur:
                cur.execute("XA RECOVER")
                rows = cur.fetchall()
        except pymysql.MySQLError as e:
            if error_code(e) in (1227, 1142, 1044):
                raise MySQLSinkError(
                    f"XA RECOVER is not allowed for {self.endpoint.user!r}: {e.args[-1]}. On MySQL 8 grant it with "
                    f"GRANT XA_RECOVER_ADMIN ON *.* TO '{self.endpoint.user}'@'%';"
                ) from None
            raise self._error(e, "listing prepared XA transactions") from None
        out = []
        for _fmt, glen, blen, data in rows:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            g, b = int(glen), int(blen)
            out.append((raw[:g].decode(errors="replace"), raw[g:g + b].decode(errors="replace")))
        return out

    def _finish(self, verb: str, gtrid: str, bqual: str, wait: float) -> bool:
        """``XA COMMIT``/``XA ROLLBACK`` an xid, from whatever session; True if it did, False if
        the xid was already gone. An xid still attached to a dead client's session answers
        "unknown" although XA RECOVER lists it: retry that for up to ``wait`` seconds."""
        import pymysql

        deadline = time.monotonic() + wait
        reset = False
        while True:
            try:
                with self._connection().cursor() as cur:
                    cur.execute(f"XA {verb} %s, %s", (gtrid, bqual))
                return True
            except pymysql.MySQLError as e:
                code = error_code(e)
                if code == ER_XA_RBROLLBACK and verb == "ROLLBACK":
                    return True  # MariaDB's answer when rolling back a detached prepared branch
                if code in (ER_XAER_RMFAIL, ER_XAER_OUTSIDE) and not reset:
                    # This session has its own XA/local transaction state; use a fresh one.
                    self._drop_connection()
                    reset = True
                    continue
                if code != ER_XAER_NOTA:
                    if code in CONFIG_ERRORS:
                        raise MySQLSinkError(f"XA {verb} {gtrid!r} not allowed: {e.args[-1]}") from None
                    raise self._error(e, f"XA {verb} {gtrid}") from None
                if (gtrid, bqual) not in self._xa_recover():
                    return False  # finished before (e.g. committed just before a crash)
                if time.monotonic() >= deadline:
                    raise SinkUnavailableError(
                        f"XA {verb} {gtrid!r}: still attached to another session after {wait}s") from None
                time.sleep(0.2)


__all__ = ["MySQLTxn", "MySQLSinkError", "XACommands"]
