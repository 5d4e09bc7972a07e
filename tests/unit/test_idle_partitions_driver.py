"""Windows after ``key_by`` when input partitions are empty, idle or lagging (Flink's idleness
semantics), pinned through the TopologyTestDriver with a 3-partition input topic.

The topology: clicks (3 partitions) -> filter -> key_by(user) -> 1-minute tumbling event-time
count. The repartition input's watermark is the minimum over the three upstream tasks (one per
input partition), so an upstream task that never gets a record must still report — as idle —
or the windows never fire.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from kstreamlet import App, serdes
from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import TumblingEventTimeWindows

MINUTE = 60_000
IDLE_MS = 10_000


def click_app(idleness: int | None = IDLE_MS) -> App:
    app = App(application_id="clicks-app", bootstrap_servers="127.0.0.1:1")
    wm = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda c: c["ts"])
    if idleness is not None:
        wm = wm.with_idleness(idleness)
    (app.stream("clicks", value_serde=serdes.JSON, watermarks=wm)
        .filter(lambda c: c["kind"] == "click")
        .key_by(lambda c: c["user"], key_serde=serdes.STR, name="by-user")
        .window(TumblingEventTimeWindows.of(MINUTE))
        .count(name="per-minute")
        .to("counts", value_serde=serdes.INT64))
    return app


REPARTITION = "clicks-app-by-user-repartition"


def downstream_watermark(d: TopologyTestDriver) -> int:
    """The window tasks' watermark (all partitions of the repartition topic agree here)."""
    wms = {d.watermark(REPARTITION, p) for p in range(d.partition_counts[REPARTITION])}
    assert len(wms) == 1, f"window tasks disagree on the watermark: {wms}"
    return wms.pop()


def click(user: str, ts: int, kind: str = "click") -> dict:
    return {"user": user, "ts": ts, "kind": kind}


def test_driver_simulates_every_partition_and_its_task():
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        assert d.partition_counts["clicks"] == 3 and d.partition_counts[REPARTITION] == 3, d.partition_counts
        assert sorted(t.id for t in d.tasks.values()) == ["0_0", "0_1", "0_2", "1_0", "1_1", "1_2"]
    with TopologyTestDriver(click_app(), wall_clock_ms=0) as d:
        d.input_topic("clicks", value_serde=serdes.JSON, partitions=3)  # the same, set per topic
        assert d.partition_counts[REPARTITION] == 3 and len(d.tasks) == 6


def test_all_records_on_one_partition_fire_once_the_empty_partitions_are_idle():
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        for i, user in enumerate(["ann", "bob", "ann", "cid", "ann"]):
            clicks.pipe_input(click(user, 1_000 + i * 10_000), partition=0)
        clicks.pipe_input(click("bob", 20_000, kind="view"), partition=0)  # filtered out
        clicks.pipe_input(click("ann", MINUTE + 5_000), partition=0)  # partition 0 is past the window
        d.advance_wall_clock_time(IDLE_MS - 1)
        assert counts.is_empty(), "partitions 1 and 2 are not idle yet: they hold the window back"
        assert downstream_watermark(d) == MIN_WATERMARK
        d.advance_wall_clock_time(1)  # partitions 1 and 2 never had a record: idle now
        got = sorted(counts.read_key_values_to_list())
        assert got == [("ann", 3), ("bob", 1), ("cid", 1)], got
        assert downstream_watermark(d) == MINUTE + 5_000 - 1, "partition 0 is active: its watermark rules"
        gauge = {t: REGISTRY.get_sample_value("kstreamlet_task_watermark_ms", {"task": t}) for t in ("0_0", "0_1", "1_2")}
        assert gauge == {"0_0": MINUTE + 5_000 - 1, "0_1": None, "1_2": MINUTE + 5_000 - 1}, gauge
    assert REGISTRY.get_sample_value("kstreamlet_task_watermark_ms", {"task": "1_2"}) is None, "closed tasks leave"


def test_without_idleness_an_empty_partition_holds_the_window_back_for_ever():
    with TopologyTestDriver(click_app(idleness=None), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        clicks.pipe_input(click("ann", 1_000), partition=0)
        clicks.pipe_input(click("ann", 2 * MINUTE), partition=0)
        for _ in range(10):
            d.advance_wall_clock_time(IDLE_MS * 10)
        assert counts.is_empty(), "no idleness configured: partitions 1 and 2 are waited for (Flink semantics)"
        assert downstream_watermark(d) == MIN_WATERMARK
        # As soon as the other partitions report a watermark the window fires.
        clicks.pipe_input(click("x", 2 * MINUTE, kind="view"), partition=1)
        clicks.pipe_input(click("y", 2 * MINUTE, kind="view"), partition=2)
        assert counts.read_key_values_to_list() == [("ann", 1)]


def test_a_lagging_partition_with_older_data_holds_the_watermark_back():
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        clicks.pipe_input(click("ann", 1_000), partition=0)
        clicks.pipe_input(click("ann", 2 * MINUTE), partition=0)
        # Partition 1 is active but behind: its records are older than partition 0's.
        for i in range(5):
            clicks.pipe_input(click("bob", 30_000 + i), partition=1)
            d.advance_wall_clock_time(IDLE_MS // 2)
        assert counts.is_empty(), "partition 1 (event time 30 s) holds the watermark below the window end"
        assert downstream_watermark(d) == 30_004 - 1
        # A backlog is lagging too, not idle: records waiting on a paused partition 1 keep it
        # active however long nothing is processed from it.
        d.pause("clicks", 1)
        clicks.pipe_input(click("bob", 59_000), partition=1)
        d.advance_wall_clock_time(IDLE_MS * 3)
        assert counts.is_empty() and downstream_watermark(d) == 30_004 - 1
        d.resume("clicks", 1)  # catches up to 59 s: still inside the first window
        assert counts.is_empty() and downstream_watermark(d) == 59_000 - 1
        clicks.pipe_input(click("bob", MINUTE + 1), partition=1)  # partition 1 past the window end
        assert sorted(counts.read_key_values_to_list()) == [("ann", 1), ("bob", 6)]


def test_a_partition_active_again_rejoins_without_moving_the_watermark_back():
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        clicks.pipe_input(click("ann", 1_000), partition=0)
        d.advance_wall_clock_time(IDLE_MS)  # partitions 1 and 2 idle (and 0, for now)
        clicks.pipe_input(click("ann", 2 * MINUTE + 30_000), partition=0)  # 0 active again, alone
        assert counts.read_key_values_to_list() == [("ann", 1)]
        wm = downstream_watermark(d)
        assert wm == 2 * MINUTE + 30_000 - 1
        # Partition 2 becomes active with data behind the watermark: late (dropped), and the
        # watermark does not go back.
        clicks.pipe_input(click("cid", 10_000), partition=2)
        assert downstream_watermark(d) == wm, "a rejoining partition must not move the watermark backwards"
        assert counts.is_empty()
        # Its records later than the watermark count, in the window they belong to; the window
        # closes when partition 2 (now active, it holds the watermark back too) and 0 pass its end.
        clicks.pipe_input(click("cid", 2 * MINUTE + 40_000), partition=2)
        clicks.pipe_input(click("cid", 2 * MINUTE + 50_000), partition=2)
        assert downstream_watermark(d) == wm and counts.is_empty()
        clicks.pipe_input(click("ann", 3 * MINUTE + 1), partition=0)
        assert counts.is_empty(), "partition 2 (event time 2:50) still holds the window [2:00, 3:00) open"
        clicks.pipe_input(click("cid", 3 * MINUTE + 2), partition=2)
        assert sorted(counts.read_key_values_to_list()) == [("ann", 1), ("cid", 2)]
        assert downstream_watermark(d) == 3 * MINUTE


def test_partition_one_idle_then_active_with_only_later_records():
    """A partition idle from the start that gets its first record late in the stream: that record
    (later than the watermark) counts in its window."""
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        clicks.pipe_input(click("ann", 5_000), partition=0)
        d.advance_wall_clock_time(IDLE_MS)  # everything idle: partition 0 catches up to its max - 1
        assert counts.is_empty() and downstream_watermark(d) == 5_000 - 1
        clicks.pipe_input(click("ann", 6_000), partition=1)  # partition 1 active: counted
        clicks.pipe_input(click("ann", MINUTE + 1), partition=1)
        clicks.pipe_input(click("ann", MINUTE + 2), partition=0)
        assert counts.read_key_values_to_list() == [("ann", 2)]


def test_idle_upstream_tasks_survive_a_handover_in_the_offset_metadata():
    """Upstream tasks send a watermark record only when something changes, so a new owner of a
    window task must learn from the committed offset metadata which upstream tasks are idle."""
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as d:
        clicks = d.input_topic("clicks", value_serde=serdes.JSON)
        d.advance_wall_clock_time(IDLE_MS)
        clicks.pipe_input(click("ann", 2 * MINUTE), partition=0)
        md = d.task(REPARTITION, 1).stream_time_metadata(REPARTITION)
    assert md.endswith(";0_1,0_2"), md
    with TopologyTestDriver(click_app(), wall_clock_ms=0, partitions={"clicks": 3}) as fresh:
        task = fresh.task(REPARTITION, 1)
        task.restore_stream_time(REPARTITION, md)
        inp = task.watermarks.inputs[REPARTITION]
        assert inp.idle_upstream == {"0_1", "0_2"} and inp.upstream["0_0"] == 2 * MINUTE - 1
        assert task.watermarks.recompute(0) == 2 * MINUTE - 1
        # Metadata written before idleness was forwarded (three parts) still restores.
        old = fresh.task(REPARTITION, 2)
        old.restore_stream_time(REPARTITION, "120000;119999;0_0=119999,0_1=5,0_2=7")
        assert old.watermarks.inputs[REPARTITION].idle_upstream == set()
        assert old.watermarks.recompute(0) == 119_999
