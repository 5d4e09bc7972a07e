"""Goods ⋈ order items: the seed's window join and interval join (002, 双流Join).

Two inputs, joined on the goods id:

- goods ``{"goodsId", "goodsName", "goodsPrice"}`` — the seed's ``GoodsSource`` emits the
  whole catalogue of six goods every second;
- order items ``{"itemId", "goodsId", "count"}`` — the seed's ``OrderItemSource`` emits a
  random item every second, and the same item again with goods id ``"111"`` (never matches).

Two outputs, the seed's ``FactOrderItem`` as JSON
``{"goodsId", "goodsName", "count", "totalMoney"}`` (``totalMoney = goodsPrice × count``,
exact decimals as strings):

- ``WINDOW_JOIN_TOPIC``: tumbling event-time window join (default 5 s, as in the seed):
  every (goods, item) pair of the same goods id in the same window, emitted when the
  window closes;
- ``INTERVAL_JOIN_TOPIC``: interval join ``goods.ts - 2 s <= item.ts <= goods.ts + 1 s``
  (the seed's ``between(-2 s, 1 s)``, inclusive), emitted as soon as both sides are there.

Event time is the Kafka record timestamp (the seed uses the system time at the source,
which is what a producer's CreateTime is); the watermark trails the largest timestamp by
``ORDERS_OUT_OF_ORDERNESS_MS`` and an input silent for ``ORDERS_IDLENESS_MS`` stops
holding it back, so the last windows close without new data. Both joins run exactly once.

Inputs come from ``GOODS_TOPIC`` and ``ORDER_ITEMS_TOPIC`` (JSON values; keys are not
used: the joins repartition by goods id), or, when those are unset, from generators like
the seed's (``ORDERS_GENERATE_INTERVAL`` seconds between rounds, default 1).

Run::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=orders
    export GOODS_TOPIC=goods ORDER_ITEMS_TOPIC=order-items       # omit both to generate
    export WINDOW_JOIN_TOPIC=order-facts-window INTERVAL_JOIN_TOPIC=order-facts-interval
    kstreamlet run services.orders:app

Environment (besides ``KSTREAMLET_*``): the topics above, ``ORDERS_WINDOW_MS`` (5000),
``ORDERS_LOWER_MS`` (-2000), ``ORDERS_UPPER_MS`` (1000), ``ORDERS_OUT_OF_ORDERNESS_MS`` (200),
``ORDERS_IDLENESS_MS`` (5000), ``ORDERS_GENERATE_INTERVAL`` (1).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from decimal import Decimal
from typing import Any

from kstreamlet import App, Source, SourceContext, TumblingEventTimeWindows, WatermarkStrategy, serdes
from services._env import integer, required

#: The seed's catalogue: (goodsId, goodsName, goodsPrice).
GOODS = [("1", "小米12", "4890"), ("2", "iphone12", "12000"), ("3", "MacBookPro", "15000"),
         ("4", "Thinkpad X1", "9800"), ("5", "MeiZu One", "3200"), ("6", "Mate 40", "6500")]


class GoodsSource(Source):
    """Every ``interval`` seconds, the whole catalogue."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval, self.running = interval, True

    def run(self, ctx: SourceContext) -> None:
        while self.running:
            for gid, name, price in GOODS:
                ctx.collect({"goodsId": gid, "goodsName": name, "goodsPrice": price})
            time.sleep(self.interval)

    def cancel(self) -> None:
        self.running = False


class OrderItemSource(Source):
    """Every ``interval`` seconds, a random item, then the same item with goods id ``"111"``."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval, self.running = interval, True

    def run(self, ctx: SourceContext) -> None:
        rnd = random.Random()
        while self.running:
            item = {"itemId": str(uuid.uuid4()), "goodsId": rnd.choice(GOODS)[0], "count": rnd.randint(1, 10)}
            ctx.collect(item)
            ctx.collect({**item, "goodsId": "111"})
            time.sleep(self.interval)

    def cancel(self) -> None:
        self.running = False


def fact(goods: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """The seed's ``FactOrderItem(goodsId, goodsName, count, goodsPrice * count)``."""
    return {"goodsId": goods["goodsId"], "goodsName": goods["goodsName"], "count": item["count"],
            "totalMoney": str(Decimal(str(goods["goodsPrice"])) * item["count"])}




app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "orders")
wm = WatermarkStrategy.for_bounded_out_of_orderness(integer("ORDERS_OUT_OF_ORDERNESS_MS", 200)).with_idleness(
    integer("ORDERS_IDLENESS_MS", 5000))
if os.environ.get("GOODS_TOPIC") or os.environ.get("ORDER_ITEMS_TOPIC"):
    goods = app.stream(required("GOODS_TOPIC"), value_serde=serdes.JSON, watermarks=wm)
    items = app.stream(required("ORDER_ITEMS_TOPIC"), value_serde=serdes.JSON, watermarks=wm)
else:
    every = float(os.environ.get("ORDERS_GENERATE_INTERVAL", "1"))
    goods = app.source(GoodsSource(every), name="goods", value_serde=serdes.JSON, watermarks=wm)
    items = app.source(OrderItemSource(every), name="order-items", value_serde=serdes.JSON, watermarks=wm)

(goods.join(items).where(lambda g: g["goodsId"], key_serde=serdes.STR).equal_to(lambda i: i["goodsId"])
    .window(TumblingEventTimeWindows.of(integer("ORDERS_WINDOW_MS", 5000)))
    .apply(fact, output_serde=serdes.JSON, name="window-join")
    .to(required("WINDOW_JOIN_TOPIC"), value_serde=serdes.JSON))

(goods.key_by(lambda g: g["goodsId"], key_serde=serdes.STR, name="goods-by-id")
    .interval_join(items.key_by(lambda i: i["goodsId"], key_serde=serdes.STR, name="items-by-goods-id"))
    .between(integer("ORDERS_LOWER_MS", -2000), integer("ORDERS_UPPER_MS", 1000))
    .apply(fact, output_serde=serdes.JSON, name="interval-join")
    .to(required("INTERVAL_JOIN_TOPIC"), value_serde=serdes.JSON))
