"""MySQL connection URLs: ``mysql://user:password@host:port/database`` → :class:`MySQLEndpoint`.

Used by :class:`~kstreamlet.sinks.mysql.MySQLSink`, :class:`~kstreamlet.sources.mysql.MySQLPollingSource`
and the development server launcher (:mod:`kstreamlet.dev.mysql`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:  # PyMySQL is an optional dependency (``kstreamlet[mysql]``); import it lazily.
    import pymysql.connections

_SCHEMES = ("mysql", "mysql+pymysql")


@dataclass(frozen=True)
class MySQLEndpoint:
    """Where a MySQL-compatible server listens, and the credentials to use there."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @property
    def url(self) -> str:
        """``mysql://user:password@host:port/database`` (user, password, database percent-encoded)."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host}:{self.port}/{quote(self.database, safe='')}"
        )

    def connect(self, **kw: Any) -> "pymysql.connections.Connection":
        """Open a PyMySQL connection to this endpoint.

        Defaults: ``autocommit=False``, ``charset="utf8mb4"``, ``connect_timeout=10``;
        any keyword given here overrides them and is passed through to ``pymysql.connect``.
        """
        try:
            import pymysql
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("PyMySQL is needed to connect: pip install 'kstreamlet[mysql]'") from e
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "autocommit": False,
            "charset": "utf8mb4",
            "connect_timeout": 10,
        }
        params.update(kw)
        return pymysql.connect(**params)


def mask_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def parse_mysql_url(url: str) -> MySQLEndpoint:
    """Parse ``mysql://user:password@host[:port]/database`` (also ``mysql+pymysql://``).

    The port defaults to 3306 and the password to empty; user, host and database are
    required. Percent-encoded parts are decoded. Query strings are rejected rather than
    silently dropped (an ignored ``?ssl=...`` would connect differently than asked).

    Raises:
        ValueError: naming what is wrong with the URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("MySQL URL is empty; expected mysql://user:password@host:port/database")
    url = url.strip()
    shown = mask_url(url)
    form = "expected mysql://user:password@host:port/database"
    if "://" not in url:
        raise ValueError(f"MySQL URL {shown!r} has no scheme; {form}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"MySQL URL {shown!r} has unsupported scheme {parts.scheme!r}; "
            f"use one of {', '.join(s + '://' for s in _SCHEMES)} ({form})"
        )
    if not parts.hostname:
        raise ValueError(f"MySQL URL {shown!r} has no host; {form}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"MySQL URL {shown!r} has an invalid port ({e}); {form}") from None
    if port == 0:
        raise ValueError(f"MySQL URL {shown!r} has port 0; {form}")
    if not parts.username:
        raise ValueError(f"MySQL URL {shown!r} has no user; {form}")
    database = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not database:
        raise ValueError(f"MySQL URL {shown!r} has no database name; {form}")
    if "/" in database:
        raise ValueError(f"MySQL URL {shown!r} has a path with more than a database name ({database!r}); {form}")
    if parts.query or parts.fragment:
        raise ValueError(
            f"MySQL URL {shown!r} has query parameters or a fragment, which are not supported; {form}"
        )
    return MySQLEndpoint(
        host=parts.hostname,
        port=port or 3306,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )


__all__ = ["MySQLEndpoint", "parse_mysql_url", "mask_url"]
