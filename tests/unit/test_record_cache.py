"""The record cache of keyed running aggregations (kstreamlet/state/cache.py), broker-free.

Every test uses two input partitions (and a repartitioning key_by, so the counting tasks are
fed through the repartition topic): folding within a checkpoint, flush at the checkpoint, flush
(eviction) when full, read-through, discard on abort, the per-operator override and the setting.
"""

from __future__ import annotations

import pytest

from kstreamlet import App, serdes
from kstreamlet.errors import ConfigError, ProcessingError
from kstreamlet.state.cache import ENTRY_OVERHEAD
from kstreamlet.state.codec import key_prefix
from kstreamlet.testing import TopologyTestDriver


def _app(cache_bytes: int | None = None, **count_kw: object) -> App:
    kw = {} if cache_bytes is None else {"record_cache_max_bytes": cache_bytes}
    app = App(application_id="cache", error_policy="fail", **kw)  # type: ignore[arg-type]

    def check(w: str) -> str:
        if w == "boom":
            raise ValueError("boom")
        return w

    (app.stream("words", value_serde=serdes.STR).map(check)
        .key_by(lambda w: w, key_serde=serdes.STR)
        .count(name="counts", **count_kw)  # type: ignore[arg-type]
        .to("counts", key_serde=serdes.STR, value_serde=serdes.INT64))
    return app


def _driver(app: App) -> tuple[TopologyTestDriver, object, object]:
    d = TopologyTestDriver(app, partitions={"words": 2})
    return d, d.input_topic("words", value_serde=serdes.STR), d.output_topic("counts", serdes.STR, serdes.INT64)


def _committed(d: TopologyTestDriver, word: str) -> int | None:
    for (name, _p), store in d.stores.items():
        if name == "counts-value":
            raw = store.backend.get(key_prefix(word.encode()))
            if raw is not None:
                return serdes.INT64.deserialize(raw)
    return None


def test_updates_of_a_key_fold_within_a_checkpoint_and_flush_at_it() -> None:
    d, words, counts = _driver(_app(1 << 20))
    with d:
        with d.one_checkpoint():
            for i, w in enumerate(["a", "b", "a", "a", "b", "c"]):
                words.pipe_input(w, partition=i % 2)
            assert counts.read_key_values_to_list() == []  # nothing committed yet
            assert _committed(d, "a") is None
        # One update per key: the last, with the timestamp of the key's last record.
        assert sorted(counts.read_key_values_to_list()) == [("a", 3), ("b", 2), ("c", 1)]
        assert (_committed(d, "a"), _committed(d, "b"), _committed(d, "c")) == (3, 2, 1)
        # Read-through across checkpoints (clean entries) and on a miss (the store).
        with d.one_checkpoint():
            words.pipe_input("a", partition=1)
            words.pipe_input("a", partition=0)
        assert counts.read_key_values_to_list() == [("a", 5)]
        # A piped record outside a block is its own checkpoint: every update is seen.
        words.pipe_input("c")
        words.pipe_input("c", partition=1)
        assert counts.read_key_values_to_list() == [("c", 2), ("c", 3)]


def test_without_the_cache_every_update_is_forwarded() -> None:
    for app in (_app(0), _app(1 << 20, cache=False), _app(None)):  # setting 0, operator off, default off
        d, words, counts = _driver(app)
        with d:
            with d.one_checkpoint():
                for i, w in enumerate(["a", "b", "a"]):
                    words.pipe_input(w, partition=i % 2)
            assert counts.read_key_values_to_list() == [("a", 1), ("b", 1), ("a", 2)]


def test_per_operator_override_turns_it_on_with_its_own_limit() -> None:
    for kw in ({"cache": True}, {"cache_max_bytes": 1 << 20}):
        d, words, counts = _driver(_app(0, **kw))
        with d:
            with d.one_checkpoint():
                for i, w in enumerate(["a", "b", "a"]):
                    words.pipe_input(w, partition=i % 2)
            assert sorted(counts.read_key_values_to_list()) == [("a", 2), ("b", 1)]


def test_a_full_cache_evicts_least_recently_updated_entries() -> None:
    # Room for one entry ("a" or "b": 1 key byte + 8 value bytes + overhead): the second key evicts the first.
    one = 1 + 8 + ENTRY_OVERHEAD
    d, words, counts = _driver(_app(0, cache_max_bytes=one))
    with d:
        with d.one_checkpoint():
            words.pipe_input("a", partition=0)
            words.pipe_input("b", partition=1)  # evicts a=1: written to the store's buffer, forwarded
            task = next(t for t in d.tasks.values() if "counts-value" in t.stores
                        and t.stores["counts-value"].buffer.get(key_prefix(b"a")) is not None)
            assert serdes.INT64.deserialize(task.stores["counts-value"].buffer[key_prefix(b"a")]) == 1
            words.pipe_input("a", partition=1)  # read from the store (a=1) -> 2; evicts b=1
        # Evicted updates in eviction order, then the checkpoint's flush of what is left.
        assert counts.read_key_values_to_list() == [("a", 1), ("b", 1), ("a", 2)]
        assert (_committed(d, "a"), _committed(d, "b")) == (2, 1)


def test_an_abort_discards_the_cache() -> None:
    d, words, counts = _driver(_app(1 << 20))
    with d:
        words.pipe_input("a")  # committed: a=1
        assert counts.read_key_values_to_list() == [("a", 1)]
        with pytest.raises(ProcessingError):
            with d.one_checkpoint():
                words.pipe_input("a", partition=0)
                words.pipe_input("a", partition=1)  # cached a=3, never flushed
                words.pipe_input("boom")  # error_policy fail: the checkpoint aborts
        assert counts.read_key_values_to_list() == []
        assert _committed(d, "a") == 1
        # Replayed (here: piped again), the count continues from the committed 1, not the cached 3.
        with d.one_checkpoint():
            words.pipe_input("a", partition=0)
            words.pipe_input("a", partition=1)
        assert counts.read_key_values_to_list() == [("a", 3)]
        # A restart (new owner, committed state only) sees the flushed value.
        d.restart()
        words.pipe_input("a")
        assert counts.read_key_values_to_list() == [("a", 4)]


def test_chained_cached_aggregations_flush_in_one_checkpoint() -> None:
    # count -> reduce on the same key in the same task: the count's flush fills the reduce's cache,
    # which must flush in the same checkpoint (the task runs its flushers until none forwards).
    app = App(application_id="chain", record_cache_max_bytes=1 << 20)
    (app.stream("words", value_serde=serdes.STR).key_by(lambda w: w, key_serde=serdes.STR)
        .count(name="counts").keyed().reduce(lambda a, b: a + b, name="sums", serde=serdes.INT64)
        .to("sums", key_serde=serdes.STR, value_serde=serdes.INT64))
    with TopologyTestDriver(app, partitions={"words": 2}) as d:
        words = d.input_topic("words", value_serde=serdes.STR)
        sums = d.output_topic("sums", serdes.STR, serdes.INT64)
        with d.one_checkpoint():
            for i in range(3):
                words.pipe_input("a", partition=i % 2)
        assert sums.read_key_values_to_list() == [("a", 3)]  # the reduce saw one update (3)
        with d.one_checkpoint():
            words.pipe_input("a")
        assert sums.read_key_values_to_list() == [("a", 7)]  # 3 + 4


def test_bad_settings_fail_fast() -> None:
    with pytest.raises(ConfigError, match="record_cache_max_bytes.*KSTREAMLET_RECORD_CACHE_MAX_BYTES"):
        App(application_id="x", record_cache_max_bytes=-1).settings  # noqa: B018
    app = App(application_id="x")
    keyed = app.stream("w").key_by(lambda w: w)
    with pytest.raises(ValueError, match="cache_max_bytes"):
        keyed.count(cache_max_bytes=-5)
    with pytest.raises(ValueError, match="cache=False contradicts"):
        keyed.count(cache=False, cache_max_bytes=10)


def test_the_process_budget_is_split_between_live_caches_and_freed_on_close() -> None:
    from kstreamlet.state import cache as cache_mod

    before = len(cache_mod._budget.caches)
    d, words, _ = _driver(_app(1 << 20))
    with d:
        app = _app(1 << 20)
        app.topology()  # recording the topology's stores opens the operator, registers no cache
        from kstreamlet.testing.driver import murmur2_partition

        w0 = next(w for w in "abcdefgh" if murmur2_partition(w.encode(), 2) == 0)
        w1 = next(w for w in "abcdefgh" if murmur2_partition(w.encode(), 2) == 1)
        words.pipe_input(w0)
        words.pipe_input(w1)  # both counting tasks hold an entry now
        assert len(cache_mod._budget.caches) == before + 2
        caches = [p for t in d.tasks.values() for p in t.participants if isinstance(p, cache_mod.RecordCache)]
        assert caches and all(c.limit == (1 << 20) // (before + 2) for c in caches)
    assert len(cache_mod._budget.caches) == before


def test_a_flush_precedes_the_checkpoint_s_watermark_records() -> None:
    # The cached counts go downstream (through a repartition topic) before the watermark records the
    # same checkpoint forwards; after them they would be late for the event-time window downstream.
    from kstreamlet.eventtime import WatermarkStrategy
    from kstreamlet.windowing import TumblingEventTimeWindows

    ts = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v[1])
    app = App(application_id="wm", record_cache_max_bytes=1 << 20)
    (app.stream("words", key_serde=serdes.STR, value_serde=serdes.JSON, watermarks=ts)
        .keyed().count(name="counts")  # counted in the source task: its watermark moves with the records
        .key_by(lambda c: "all", key_serde=serdes.STR, name="all")
        .window(TumblingEventTimeWindows.of(10)).sum(name="total")
        .to("totals", key_serde=serdes.STR, value_serde=serdes.JSON))
    with TopologyTestDriver(app, partitions={"words": 2}) as d:
        words = d.input_topic("words", key_serde=serdes.STR, value_serde=serdes.JSON)
        totals = d.output_topic("totals", serdes.STR, serdes.JSON)
        with d.one_checkpoint():
            for i, w in enumerate(["a", "b", "a"]):
                words.pipe_input([w, i], key=w, partition=i % 2)
            for p in (0, 1):
                words.pipe_input(["z", 100], key="z", partition=p)  # this checkpoint's watermark passes [0, 10)
        with d.one_checkpoint():
            for p in (0, 1):
                words.pipe_input(["z", 200], key="z", partition=p)
        got = totals.read_key_values_to_list()
    assert got[0] == ("all", 2 + 1), got  # window [0, 10): a=2 (folded) + b=1, none of them late


def test_no_eviction_inside_a_guarded_timer_call_whose_failure_would_undo_it() -> None:
    # Window results (fired by timers) feed a cached reduce in the same task. A failing timer call
    # undoes its store writes; had the cache evicted another key's value into the store during that
    # call, the undo would lose it. So the cache only evicts outside guarded timer calls.
    from kstreamlet.eventtime import WatermarkStrategy
    from kstreamlet.windowing import TumblingEventTimeWindows

    ts = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v[1])
    app = App(application_id="guard", error_policy="dlq")

    def check(total: int) -> int:
        if total == 2:
            raise ValueError("two")
        return total

    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON, watermarks=ts).keyed()
        .window(TumblingEventTimeWindows.of(10)).count(name="w")
        .keyed().reduce(lambda a, b: a + b, name="r", cache_max_bytes=1 + 8 + ENTRY_OVERHEAD + 5)
        .map(check).to("out", key_serde=serdes.STR, value_serde=serdes.INT64))
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        for k, t in [("a", 1), ("a", 2), ("b", 3)]:
            inp.pipe_input([k, t], key=k, partition=0)
        with d.one_checkpoint():
            for p in (0, 1):
                inp.pipe_input(["z", 100], key="z", partition=p)  # fires a (count 2), then b (count 1)
        stores = [s for (name, _), s in d.stores.items() if name == "r-value"]
        committed = {k: serdes.INT64.deserialize(v) for s in stores for k, v in s.backend.iter_from(b"")}
        assert committed == {key_prefix(b"a"): 2, key_prefix(b"b"): 1}
        assert d.output_topic("out", serdes.STR, serdes.INT64).read_key_values_to_list() == [("b", 1)]
        assert len(d.dlq_topic().read_records_to_list()) == 1  # a's flushed 2 failed in check()


def test_a_flushed_update_carries_the_record_context_of_the_record_that_made_it() -> None:
    # As Kafka Streams' cache entries keep their record context: the output of key a carries a's
    # last record's headers, not the headers of whatever record the task saw last.
    d, words, counts = _driver(_app(1 << 20))
    with d:
        with d.one_checkpoint():
            words.pipe_input("a", headers=[("tenant", b"first")], partition=0)
            words.pipe_input("a", headers=[("tenant", b"alpha")], partition=0)
            words.pipe_input("b", headers=[("tenant", b"beta")], partition=1)
            words.pipe_input("c", partition=1)  # no headers
        got = {r.key: dict(r.headers or []) for r in counts.read_records_to_list()}
    assert got["a"].get("tenant") == b"alpha"
    assert got["b"].get("tenant") == b"beta"
    assert "tenant" not in got["c"]
