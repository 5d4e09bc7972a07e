"""``a.connect(b).process(fn)``: Flink's (Keyed)CoProcessFunction, through the TopologyTestDriver
with several partitions (the seed's "connect" example: orders matched with payments)."""

from __future__ import annotations

import pytest

from kstreamlet import App, serdes
from kstreamlet import CoProcessFunction, KeyedCoProcessFunction
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.testing import TopologyTestDriver


class MatchOrderAndPayment(KeyedCoProcessFunction):
    """Emit once both the order (input 1) and its payment (input 2) arrived, in either order;
    an order without payment 5 s (event time) after it is reported as unpaid."""

    def open(self, ctx):
        self.order = ctx.get_state(ValueStateDescriptor("order", serdes.JSON))
        self.paid = ctx.get_state(ValueStateDescriptor("paid", serdes.JSON))

    def process_element1(self, order, ctx):
        if self.paid.value() is not None:
            ctx.emit({"order": order["id"], "status": "paid", "amount": self.paid.value()})
            self.paid.clear()
        else:
            self.order.update(order)
            ctx.timers.register_event_time(ctx.timestamp + 5_000)

    def process_element2(self, payment, ctx):
        order = self.order.value()
        if order is not None:
            ctx.emit({"order": order["id"], "status": "paid", "amount": payment["amount"]})
            self.order.clear()
        else:
            self.paid.update(payment["amount"])

    def on_timer(self, ts, ctx):
        order = self.order.value()
        if order is not None:
            ctx.emit({"order": order["id"], "status": "unpaid"})
            self.order.clear()


def orders_app():
    app = App(application_id="shop", bootstrap_servers="127.0.0.1:1")
    wm = WatermarkStrategy.for_monotonous_timestamps()
    orders = app.stream("orders", value_serde=serdes.JSON, watermarks=wm).key_by(
        lambda o: o["id"], key_serde=serdes.STR, name="orders-by-id")
    payments = app.stream("payments", value_serde=serdes.JSON, watermarks=wm).key_by(
        lambda p: p["order"], key_serde=serdes.STR, name="payments-by-order")
    orders.connect(payments).process(MatchOrderAndPayment(), name="match").to("matched", value_serde=serdes.JSON)
    return app


def test_keyed_connect_shares_keyed_state_between_both_inputs_in_either_order():
    with TopologyTestDriver(orders_app(), partitions={"orders": 3, "payments": 3}) as d:
        o = d.input_topic("orders", key_serde=serdes.STR, value_serde=serdes.JSON)
        p = d.input_topic("payments", key_serde=serdes.STR, value_serde=serdes.JSON)
        out = d.output_topic("matched", key_serde=serdes.STR, value_serde=serdes.JSON)
        o.pipe_input({"id": "o1"}, key="x", timestamp=1_000)
        p.pipe_input({"order": "o2", "amount": 7}, key="y", timestamp=1_100)  # payment first
        p.pipe_input({"order": "o1", "amount": 5}, key="z", timestamp=1_200)
        o.pipe_input({"id": "o2"}, key="w", timestamp=1_300)
        got = sorted((r.key, r.value["status"], r.value.get("amount")) for r in out.read_records_to_list())
        assert got == [("o1", "paid", 5), ("o2", "paid", 7)]


def test_keyed_connect_timers_fire_on_the_watermark_of_both_inputs():
    with TopologyTestDriver(orders_app(), partitions={"orders": 1, "payments": 1}) as d:
        o = d.input_topic("orders", key_serde=serdes.STR, value_serde=serdes.JSON)
        p = d.input_topic("payments", key_serde=serdes.STR, value_serde=serdes.JSON)
        out = d.output_topic("matched", key_serde=serdes.STR, value_serde=serdes.JSON)
        o.pipe_input({"id": "o3"}, key="a", timestamp=1_000)
        o.pipe_input({"id": "o4"}, key="b", timestamp=7_000)
        assert out.read_records_to_list() == [], "the payments input holds the watermark back: no timer yet"
        p.pipe_input({"order": "o4", "amount": 1}, key="c", timestamp=7_000)
        got = [(r.key, r.value["status"]) for r in out.read_records_to_list()]
        assert ("o3", "unpaid") in got and ("o4", "paid") in got
        assert ("o4", "unpaid") not in got


class Tagger(CoProcessFunction):
    def process_element1(self, value, ctx):
        ctx.emit(f"1:{value}")

    def process_element2(self, value, ctx):
        ctx.emit(f"2:{value}")
        ctx.emit(f"2:{value}!", key=b"again")


def test_unkeyed_connect_calls_each_inputs_method():
    app = App(application_id="co", bootstrap_servers="127.0.0.1:1")
    a = app.stream("a", value_serde=serdes.STR)
    b = app.stream("b", value_serde=serdes.STR)
    a.connect(b).process(Tagger(), output_serde=serdes.STR).to("out")
    with TopologyTestDriver(app, partitions={"a": 2, "b": 2}) as d:
        d.input_topic("a", value_serde=serdes.STR).pipe_input("x", key=b"k1")
        d.input_topic("b", value_serde=serdes.STR).pipe_input("y", key=b"k2")
        got = sorted(r.value for r in d.output_topic("out", value_serde=serdes.STR).read_records_to_list())
        assert got == ["1:x", "2:y", "2:y!"]


def test_connect_rejects_mixed_keyedness_and_the_wrong_function_with_a_clear_error():
    app = App(application_id="co2", bootstrap_servers="127.0.0.1:1")
    a = app.stream("a", value_serde=serdes.JSON)
    b = app.stream("b", value_serde=serdes.JSON)
    with pytest.raises(TypeError, match="two keyed streams"):
        a.key_by(lambda v: v).connect(b)
    with pytest.raises(TypeError, match="KeyedCoProcessFunction"):
        a.key_by(lambda v: v, name="ka").connect(b.key_by(lambda v: v, name="kb")).process(Tagger())
    with pytest.raises(TypeError, match="CoProcessFunction"):
        app.stream("c").connect(app.stream("d")).process(MatchOrderAndPayment())


@pytest.mark.parametrize("method", ["window", "count", "reduce", "aggregate", "sum", "interval_join", "count_window"])
def test_keyed_only_operations_on_an_unkeyed_stream_name_the_fix(method):
    app = App(application_id="unkeyed", bootstrap_servers="127.0.0.1:1")
    s = app.stream("in")
    with pytest.raises(TypeError, match=rf"\.{method}\(\) needs a keyed stream.*key_by\(.*\)\.{method}\(\.\.\.\)"):
        getattr(s, method)
    with pytest.raises(AttributeError):
        s.no_such_method  # noqa: B018
