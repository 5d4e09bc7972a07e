"""MySQL / MariaDB sink: XA two-phase commit (:mod:`.xa`) or idempotent upserts (:mod:`.sink`),
and the connection URL both it and :class:`~kstreamlet.sources.mysql.MySQLPollingSource` take (:mod:`.url`)."""

from kstreamlet.sinks.mysql.sink import DEFAULT_SOURCE_COLUMNS, MySQLSink, quote_ident
from kstreamlet.sinks.mysql.url import MySQLEndpoint, parse_mysql_url
from kstreamlet.sinks.mysql.xa import MySQLSinkError, MySQLTxn

__all__ = ["MySQLSink", "MySQLSinkError", "MySQLTxn", "DEFAULT_SOURCE_COLUMNS", "MySQLEndpoint", "parse_mysql_url",
           "quote_ident"]
