"""User events enriched with ``user_info`` from MySQL through broadcast state (the seed's example).

The seed (002, BroadcastState) enriches a stream of user events
``(userID, eventTime, eventType, productID)`` with ``(userName, userAge)`` from the MySQL
table ``user_info``, re-read every 5 s and broadcast to every parallel instance; the event
of ``user_3`` becomes ``(user_3, 2019-08-17 12:19:47, browse, 1, 王五, 30)``. Here:

- ``user_info`` is polled by :class:`~kstreamlet.sources.mysql.MySQLPollingSource`
  into the compacted topic ``<application_id>-broadcast-user-info``; every replica reads
  all of it into its broadcast state (so a changed age reaches every pod within one poll);
- events come from ``EVENTS_TOPIC`` (JSON objects with the four fields), or, if that is
  not set, from a generator like the seed's ``MySource`` (a random event every 0.5 s);
- each event of a known user goes to ``OUT_TOPIC`` as JSON with ``userName`` and
  ``userAge`` added; events of users not (yet) in ``user_info`` are dropped as in the seed
  (``UNKNOWN_USERS=keep`` emits them with ``null`` name and age instead).

Table (as in the seed)::

    CREATE TABLE user_info (userID VARCHAR(20) PRIMARY KEY, userName VARCHAR(20), userAge INT);

Run::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=enrichment
    export MYSQL_URL=mysql://user:password@localhost:3306/bigdata OUT_TOPIC=enriched-events
    export EVENTS_TOPIC=user-events   # omit to generate events
    kstreamlet run services.enrichment:app

Environment (besides ``KSTREAMLET_*``, see :mod:`kstreamlet.config`):

``MYSQL_URL``               ``mysql://user:password@host:port/database`` (required)
``OUT_TOPIC``               enriched events (required)
``EVENTS_TOPIC``            input events; unset = generated
``USER_INFO_QUERY``         default ``SELECT userID, userName, userAge FROM user_info``
``USER_INFO_POLL_SECONDS``  default 5
``UNKNOWN_USERS``           ``drop`` (default, the seed's behaviour) or ``keep``
``EVENTS_INTERVAL``         seconds between generated events (default 0.5)

The MySQL user needs SELECT on ``user_info``.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import time
from typing import Any

from kstreamlet import App, BroadcastProcessFunction, Source, SourceContext, serdes
from kstreamlet.sources.mysql import MySQLPollingSource
from services._env import required

DEFAULT_QUERY = "SELECT userID, userName, userAge FROM user_info"


class UserEventSource(Source):
    """The seed's ``MySource``: a random ``user_1..4`` event every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.running = True

    def run(self, ctx: SourceContext) -> None:
        rnd = random.Random()
        while self.running:
            ctx.collect({"userID": f"user_{rnd.randint(1, 4)}",
                         "eventTime": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                         "eventType": f"type_{rnd.randint(0, 2)}", "productID": rnd.randint(0, 3)})
            time.sleep(self.interval)

    def cancel(self) -> None:
        self.running = False


class EnrichWithUserInfo(BroadcastProcessFunction):
    """Data side: look the user up (read-only); broadcast side: one ``user_info`` row."""

    def __init__(self, keep_unknown: bool = False) -> None:
        self.keep_unknown = keep_unknown

    def process_element(self, event: dict[str, Any], ctx: Any) -> None:
        user = ctx.broadcast_state.get(event.get("userID"))
        if user is None and not self.keep_unknown:
            return
        name, age = user if user is not None else (None, None)
        ctx.emit({**event, "userName": name, "userAge": age})

    def process_broadcast_element(self, row: dict[str, Any], ctx: Any) -> None:
        ctx.broadcast_state.put(row["userID"], (row["userName"], row["userAge"]))



def _unknown_users() -> bool:
    mode = os.environ.get("UNKNOWN_USERS", "drop")
    if mode not in ("drop", "keep"):
        raise SystemExit(f"services.enrichment: UNKNOWN_USERS must be 'drop' or 'keep', not {mode!r}")
    return mode == "keep"


app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "enrichment")
users = app.broadcast(
    source=MySQLPollingSource(required("MYSQL_URL"), os.environ.get("USER_INFO_QUERY", DEFAULT_QUERY),
                              interval=float(os.environ.get("USER_INFO_POLL_SECONDS", "5"))),
    name="user-info")  # keyed by userID (the first column), as UTF-8 bytes
if os.environ.get("EVENTS_TOPIC"):
    events = app.stream(os.environ["EVENTS_TOPIC"], value_serde=serdes.JSON)
else:
    events = app.source(UserEventSource(float(os.environ.get("EVENTS_INTERVAL", "0.5"))), name="user-events",
                        value_serde=serdes.JSON)
(
    events.connect(users)
    .process(EnrichWithUserInfo(keep_unknown=_unknown_users()), output_serde=serdes.JSON, name="enrich")
    .to(required("OUT_TOPIC"), value_serde=serdes.JSON)
)
