"""Kafka → MySQL, exactly once: the seed's ``Kafka_Flink_MySQL_EndToEnd_ExactlyOnce``.

Reads records like ``{"value": "15"}`` (the seed's ``DataBean``; a plain text value works
too) from ``IN_TOPIC`` and inserts ``(value, insert_time)`` into the seed's table::

    CREATE TABLE t_test (
      id BIGINT NOT NULL AUTO_INCREMENT,
      value VARCHAR(255) DEFAULT NULL,
      insert_time DATETIME(3) DEFAULT NULL,
      PRIMARY KEY (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4

Each checkpoint of each partition is one XA transaction, prepared before and committed
after the Kafka transaction that carries the consumed offsets (see
:mod:`kstreamlet.sinks.mysql`). With ``MYSQL_SINK_MODE=idempotent`` it upserts instead,
keyed by the input record's identity (extra columns ``kafka_topic, kafka_partition,
kafka_offset, kafka_index`` with a unique key), without XA.

Run::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=mysql-sink
    export IN_TOPIC=flink_kafka MYSQL_URL=mysql://user:password@localhost:3306/bigdata
    kstreamlet run services.mysql_sink:app

Environment (besides ``KSTREAMLET_*``, see :mod:`kstreamlet.config`):

``IN_TOPIC``              input topic (required; must exist)
``MYSQL_URL``             ``mysql://user:password@host:port/database`` (required)
``MYSQL_TABLE``           table (default ``t_test``)
``MYSQL_SINK_MODE``       ``exactly_once`` (default) or ``idempotent``
``MYSQL_CREATE_TABLE``    ``1`` (default): create the table if it is missing
``MYSQL_BATCH_SIZE``      rows per insert batch (default 500)
``MYSQL_CONNECT_TIMEOUT`` / ``MYSQL_READ_TIMEOUT``  seconds (default 5 / 15)

The MySQL user needs INSERT and SELECT on the table (and CREATE if it creates it); on
MySQL 8, exactly-once also needs ``GRANT XA_RECOVER_ADMIN ON *.* TO 'user'@'%'``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import orjson

from kstreamlet import App, serdes
from kstreamlet.sinks import DEFAULT_SOURCE_COLUMNS, MySQLSink, SinkContext, quote_ident
from services._env import required


def to_row(raw: str) -> dict[str, Any]:
    """The seed's mapping: ``value`` from the JSON object (or the raw text), ``insert_time`` = now."""
    value: Any = raw
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and "value" in doc:
            value = doc["value"]
    except orjson.JSONDecodeError:
        pass
    return {"value": value if isinstance(value, str) else orjson.dumps(value).decode(), "insert_time": datetime.now()}


class SeedTableSink(MySQLSink):
    """:class:`MySQLSink` that first creates the seed's table when asked to."""

    def __init__(self, *args: Any, create_table: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.create_table = create_table

    def open(self, ctx: SinkContext) -> None:
        if self.create_table:
            extra, key = "", ""
            if self.with_source:
                t, p, o, i = (quote_ident(c, "column") for c in DEFAULT_SOURCE_COLUMNS)
                extra = f"{t} VARCHAR(249) NOT NULL, {p} INT NOT NULL, {o} BIGINT NOT NULL, {i} INT NOT NULL, "
                key = f", UNIQUE KEY kafka_record ({t}, {p}, {o}, {i})"
            conn = self.endpoint.connect(autocommit=True, connect_timeout=self.connect_timeout,
                                         read_timeout=self.read_timeout)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {quote_ident(self.table, 'table')} ("
                        "id BIGINT NOT NULL AUTO_INCREMENT, value VARCHAR(255) DEFAULT NULL, "
                        f"insert_time DATETIME(3) DEFAULT NULL, {extra}PRIMARY KEY (id){key}"
                        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                    )
            finally:
                conn.close()
        super().open(ctx)



app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "mysql-sink")
sink = SeedTableSink(
    required("MYSQL_URL"),
    os.environ.get("MYSQL_TABLE", "t_test"),
    ["value", "insert_time"],
    mode=os.environ.get("MYSQL_SINK_MODE", "exactly_once"),  # type: ignore[arg-type]
    mapper=to_row,
    batch_size=int(os.environ.get("MYSQL_BATCH_SIZE", "500")),
    connect_timeout=float(os.environ.get("MYSQL_CONNECT_TIMEOUT", "5")),
    read_timeout=float(os.environ.get("MYSQL_READ_TIMEOUT", "15")),
    write_timeout=float(os.environ.get("MYSQL_READ_TIMEOUT", "15")),
    create_table=os.environ.get("MYSQL_CREATE_TABLE", "1") == "1",
)
app.stream(required("IN_TOPIC"), value_serde=serdes.STR).sink(sink, name="mysql")
