"""FileSink on real local files (and fsspec's memory filesystem): buckets, rolling, encodings,
Parquet, and recovery at every point of the two-phase commit.

Two levels: through the TopologyTestDriver (every piped record is a checkpoint; the driver's
wall clock is the task clock, so rolling by time is deterministic), and by driving the sink
protocol directly (to cut a checkpoint anywhere and "crash" between phases: a crash is a
sink copy dropped without close, and a fresh copy recovering from the last committable).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

from kstreamlet import App, serdes
from kstreamlet.sinks import SinkContext
from kstreamlet.sinks.files import (
    BasePathBucketAssigner,
    BucketContext,
    CsvEncoder,
    DateTimeBucketAssigner,
    DefaultRollingPolicy,
    FileSink,
    JsonLinesEncoder,
    OnCheckpointRollingPolicy,
    OutputFileConfig,
    ParquetFormat,
    java_date_formatter,
)
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.testing.files import finished_part_files, hidden_part_files

HOUR = 3_600_000
#: 2024-03-05 10:00:00 UTC
T10 = int(datetime(2024, 3, 5, 10, tzinfo=timezone.utc).timestamp() * 1000)


# --- helpers ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: int = T10) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def task_copy(sink: FileSink, partition: int = 0, clock: Clock | None = None) -> FileSink:
    """What the runtime does per task: a copy of the user's sink, opened with the task's context."""
    s = copy.copy(sink)
    s.open(SinkContext(partition, "app", "files", f"0_{partition}", "exactly_once", clock or Clock()))
    return s


def checkpoint(s: FileSink, values: list[Any], seq: int = 0) -> Any:
    """One full checkpoint: begin, write, pre-commit, commit. Returns the committable."""
    s.ctx.checkpoint_id = seq
    txn = s.begin_transaction()
    for v in values:
        s.write(txn, v, None, s.ctx.clock())
    c = s.pre_commit(txn)
    if c is not None:
        s.commit(c)
    return c


def lines_of(files: list[str]) -> list[str]:
    out: list[str] = []
    for f in files:
        out.extend(Path(f).read_text().splitlines())
    return out


def rel(base: Path, files: list[str]) -> list[str]:
    return [os.path.relpath(f, base) for f in files]


def driver_app(sink: FileSink, value_serde: Any = serdes.STR) -> App:
    app = App(application_id="files-unit")
    app.stream("in", value_serde=value_serde).sink(sink, name="files")
    return app


# --- date patterns and buckets ---------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), [
    ("yyyy-MM-dd--HH", "2024-03-05--07"),
    ("yy/M/d", "24/3/5"),
    ("yyyyMMdd'T'HHmmss", "20240305T070809"),
    ("MMM MMMM", "Mar March"),
    ("HH'h'mm''ss", "07h08'09"),
    ("ss.SSS", "09.123"),
    ("'yyyy'", "yyyy"),
])
def test_java_date_patterns(pattern: str, expected: str) -> None:
    got = java_date_formatter(pattern)(datetime(2024, 3, 5, 7, 8, 9, 123456))
    assert got == expected, f"pattern {pattern!r}: expected {expected!r}, saw {got!r}"


@pytest.mark.parametrize(("pattern", "problem"), [("yyyy-MM-dd hh", "unsupported letter 'h'"), ("yyyy'T", "unterminated")])
def test_java_date_pattern_errors(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        java_date_formatter(pattern)
    assert problem in str(info.value), f"expected {problem!r} in the error; saw {info.value}"


def test_date_time_bucket_assigner_time_kinds_and_zones() -> None:
    ctx = BucketContext(processing_time=T10 + 5 * 60_000, timestamp=T10 - 3 * HOUR, key=None)
    cases = [
        (DateTimeBucketAssigner(tz="UTC"), "2024-03-05--10"),
        (DateTimeBucketAssigner(tz="UTC", use_event_time=True), "2024-03-05--07"),
        (DateTimeBucketAssigner("yyyy/MM/dd/HH-mm", tz="Asia/Shanghai"), "2024/03/05/18-05"),
        (BasePathBucketAssigner(), ""),
    ]
    for assigner, expected in cases:
        got = assigner.bucket_id("v", ctx)
        assert got == expected, f"{assigner!r}: expected {expected!r}, saw {got!r}"


# --- rolling, through the driver -----------------------------------------------------------------


def test_rolls_by_size_and_keeps_in_progress_across_checkpoints(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(),
                    rolling_policy=DefaultRollingPolicy(max_part_size=50, rollover_interval=3600, inactivity_interval=3600))
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10) as drv:
        inp = drv.input_topic("in", value_serde=serdes.STR)
        for i in range(12):  # 10 bytes per line: 5 lines reach 50 bytes
            inp.pipe_input(f"line-{i:04d}")
        finished = finished_part_files(str(tmp_path))
        hidden = hidden_part_files(str(tmp_path))
    assert rel(tmp_path, finished) == ["part-0-0", "part-0-1"], f"expected two finished files; saw {rel(tmp_path, finished)}"
    assert [Path(f).stat().st_size for f in finished] == [50, 50], "expected each finished file to hold 5 lines (50 bytes)"
    assert lines_of(finished) == [f"line-{i:04d}" for i in range(10)], "expected lines in order, each once"
    # 12 checkpoints happened, yet the third file is still in progress: rows are not rolled per checkpoint.
    assert rel(tmp_path, hidden) == [".part-0-2.inprogress"], f"expected one hidden in-progress file; saw {hidden}"
    assert Path(hidden[0]).read_text().split() == ["line-0010", "line-0011"]


def test_rolls_by_rollover_interval_while_active(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(),
                    rolling_policy=DefaultRollingPolicy(rollover_interval=3, inactivity_interval=100))
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10) as drv:
        inp = drv.input_topic("in", value_serde=serdes.STR)
        for i in range(7):
            inp.pipe_input(f"r{i}")
            drv.advance_wall_clock_time(1000)
        files = finished_part_files(str(tmp_path))
    got = [Path(f).read_text().split() for f in files]
    # Opened at t=0 with r0; at t=3s (the checkpoint after r2's second) it is 3 s old and rolls.
    assert got == [["r0", "r1", "r2"], ["r3", "r4", "r5"]], f"expected files of 3 s each; saw {got}"


def test_rolls_by_inactivity_without_new_records(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(),
                    rolling_policy=DefaultRollingPolicy(rollover_interval=3600, inactivity_interval=5))
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10) as drv:
        inp = drv.input_topic("in", value_serde=serdes.STR)
        for v in ("a", "b", "c"):
            inp.pipe_input(v)
        drv.advance_wall_clock_time(4000)
        assert finished_part_files(str(tmp_path)) == [], "expected nothing finished before 5 s of inactivity"
        drv.advance_wall_clock_time(2000)  # only the processing-time timer can roll it: no records arrive
        files = finished_part_files(str(tmp_path))
        hidden = hidden_part_files(str(tmp_path))
    assert [Path(f).read_text() for f in files] == ["a\nb\nc\n"], f"expected one finished file after inactivity; saw {files}"
    assert hidden == [], f"expected no hidden files left; saw {hidden}"


def test_hour_boundary_opens_a_new_bucket_and_the_old_file_finishes_later(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=DateTimeBucketAssigner(tz="UTC"),
                    rolling_policy=DefaultRollingPolicy(rollover_interval=3600, inactivity_interval=30))
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10 + HOUR - 2000) as drv:  # 10:59:58
        inp = drv.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("late-10h-1")
        inp.pipe_input("late-10h-2")
        drv.advance_wall_clock_time(3000)  # 11:00:01
        inp.pipe_input("early-11h-1")
        hidden_mid = rel(tmp_path, hidden_part_files(str(tmp_path)))
        drv.advance_wall_clock_time(31_000)
        files = rel(tmp_path, finished_part_files(str(tmp_path)))
        contents = {f: (tmp_path / f).read_text().split() for f in files}
    assert hidden_mid == ["2024-03-05--10/.part-0-0.inprogress", "2024-03-05--11/.part-0-1.inprogress"], (
        f"expected one in-progress file per bucket, the 10h one untouched by the new bucket; saw {hidden_mid}")
    assert contents == {"2024-03-05--10/part-0-0": ["late-10h-1", "late-10h-2"],
                        "2024-03-05--11/part-0-1": ["early-11h-1"]}, f"saw {contents}"


def test_on_checkpoint_policy_finishes_a_file_per_checkpoint(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(), rolling_policy=OnCheckpointRollingPolicy(),
                    output_file_config=OutputFileConfig(prefix="prefix", suffix=".txt"))
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10) as drv:
        inp = drv.input_topic("in", value_serde=serdes.STR)
        for v in ("x", "y", "z"):
            inp.pipe_input(v)
        files = finished_part_files(str(tmp_path), prefix="prefix", suffix=".txt")
        store = drv.key_value_store("files-2pc")
    assert rel(tmp_path, files) == ["prefix-0-0.txt", "prefix-0-1.txt", "prefix-0-2.txt"], f"saw {rel(tmp_path, files)}"
    assert [Path(f).read_text() for f in files] == ["x\n", "y\n", "z\n"]
    assert hidden_part_files(str(tmp_path)) == []
    assert b'"counter":3' in store[b"2pc"], f"expected the part counter in the stored committable; saw {store}"


def test_bad_bucket_id_is_a_record_error(tmp_path: Path) -> None:
    s = task_copy(FileSink(str(tmp_path), bucket_assigner=lambda v, ctx: v))
    txn = s.begin_transaction()
    s.write(txn, "ok/nested", None, 0)
    for bad in ("../escape", "/abs"):
        with pytest.raises(ValueError, match="relative path"):
            s.write(txn, bad, None, 0)
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == ["ok/nested/.part-0-0.inprogress"]


# --- encodings -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reading:
    id: str
    temperature: float


class ReadingModel(pydantic.BaseModel):
    id: str
    temperature: float


def test_json_lines_csv_and_custom_encoders(tmp_path: Path) -> None:
    values = [{"id": "s1", "temperature": 20.5}, Reading("s2", 21.0), ReadingModel(id="s3", temperature=22.5)]
    outputs = {}
    for name, fmt in {"jsonl": JsonLinesEncoder(), "csv": CsvEncoder(["id", "temperature"]),
                      "custom": lambda v: f"{getattr(v, 'id', None) or v['id']}|\n"}.items():
        s = task_copy(FileSink(str(tmp_path / name), fmt, bucket_assigner=BasePathBucketAssigner(),
                               rolling_policy=OnCheckpointRollingPolicy()))
        checkpoint(s, values)
        outputs[name] = [Path(f).read_text() for f in finished_part_files(str(tmp_path / name))]
    assert outputs["jsonl"] == ['{"id":"s1","temperature":20.5}\n{"id":"s2","temperature":21.0}\n'
                                '{"id":"s3","temperature":22.5}\n'], outputs["jsonl"]
    assert outputs["csv"] == ["id,temperature\ns1,20.5\ns2,21.0\ns3,22.5\n"], outputs["csv"]
    assert outputs["custom"] == ["s1|\ns2|\ns3|\n"], outputs["custom"]


def test_csv_header_in_every_part_file(tmp_path: Path) -> None:
    s = task_copy(FileSink(str(tmp_path), CsvEncoder(["a", "b"]), bucket_assigner=BasePathBucketAssigner(),
                           rolling_policy=DefaultRollingPolicy(max_part_size=12)))
    checkpoint(s, [{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}])
    finish_all(s)
    got = [Path(f).read_text() for f in finished_part_files(str(tmp_path))]
    assert got == ["a,b\n1,2\n3,4\n", "a,b\n5,6\n"], f"expected a header per file; saw {got}"


def test_parquet_files_are_readable_with_the_right_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    s = task_copy(FileSink.for_bulk_format(str(tmp_path), ParquetFormat(row_group_size=100),
                                           bucket_assigner=BasePathBucketAssigner()))
    checkpoint(s, [{"id": i, "name": f"n{i}"} for i in range(250)], seq=0)
    assert hidden_part_files(str(tmp_path)) == [], "bulk files must roll at every checkpoint"
    checkpoint(s, [ReadingModel(id="m", temperature=1.5), {"id": "n"}], seq=1)  # second file, its own schema
    files = finished_part_files(str(tmp_path))
    assert rel(tmp_path, files) == ["part-0-0", "part-0-1"], rel(tmp_path, files)
    first = pq.ParquetFile(files[0])
    assert first.metadata.num_rows == 250 and first.metadata.num_row_groups == 3, (
        f"expected 250 rows in 3 row groups of <= 100; saw {first.metadata.num_rows} rows, "
        f"{first.metadata.num_row_groups} groups")
    assert pq.read_table(files[0]).to_pylist() == [{"id": i, "name": f"n{i}"} for i in range(250)]
    second = pq.read_table(files[1]).to_pylist()
    assert second == [{"id": "m", "temperature": 1.5}, {"id": "n", "temperature": None}], second


def test_parquet_rows_that_do_not_fit_the_schema(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    s = task_copy(FileSink(str(tmp_path / "explicit"), ParquetFormat(schema=schema), bucket_assigner=BasePathBucketAssigner()))
    txn = s.begin_transaction()
    s.write(txn, {"id": 1, "name": "a"}, None, 0)
    with pytest.raises(ValueError, match="does not fit the Parquet column type int64"):
        s.write(txn, {"id": "x", "name": "b"}, None, 0)  # a record error: dead-letter topic
    s.commit(s.pre_commit(txn))
    got = pq.read_table(finished_part_files(str(tmp_path / "explicit"))[0]).to_pylist()
    assert got == [{"id": 1, "name": "a"}], got
    # Inferred schema: a mixed-type row cannot be refused per record; it is left out, not a poison pill.
    s = task_copy(FileSink(str(tmp_path / "inferred"), ParquetFormat(), bucket_assigner=BasePathBucketAssigner()))
    checkpoint(s, [{"id": 1}, {"id": "x"}, {"id": 3}])
    got = pq.read_table(finished_part_files(str(tmp_path / "inferred"))[0]).to_pylist()
    assert got == [{"id": 1}, {"id": 3}], got



def test_parquet_buffers_rows_per_bucket_until_the_checkpoint(tmp_path: Path) -> None:
    """Rows are buffered per bucket and written at the checkpoint (or per full row group);
    an aborted checkpoint leaves no rows behind; a size policy rolls on the flushed bytes."""
    import pyarrow.parquet as pq

    clock = Clock()
    s = task_copy(FileSink(str(tmp_path), ParquetFormat(row_group_size=1000),
                           bucket_assigner=DateTimeBucketAssigner(tz="UTC")), clock=clock)
    txn = s.begin_transaction()
    s.write(txn, {"id": 0}, None, 0)
    clock.now += HOUR
    s.write(txn, {"id": 1}, None, 0)
    s.abort(txn)  # both buckets' buffered rows are dropped with their in-progress files
    assert hidden_part_files(str(tmp_path)) == [] and finished_part_files(str(tmp_path)) == []
    clock.now = T10
    txn = s.begin_transaction()
    for i in range(3):
        s.write(txn, {"id": i}, None, 0)
    clock.now += HOUR
    s.write(txn, {"id": 3}, None, 0)
    s.commit(s.pre_commit(txn))
    got = {rel(tmp_path, [f])[0]: pq.read_table(f).column("id").to_pylist() for f in finished_part_files(str(tmp_path))}
    assert got == {"2024-03-05--10/part-0-2": [0, 1, 2], "2024-03-05--11/part-0-3": [3]}, got

    sized = task_copy(FileSink(str(tmp_path / "sized"), ParquetFormat(row_group_size=10),
                               bucket_assigner=BasePathBucketAssigner(),
                               rolling_policy=DefaultRollingPolicy(max_part_size=1, rollover_interval=3600,
                                                                   inactivity_interval=3600)))
    txn = sized.begin_transaction()
    for i in range(25):
        sized.write(txn, {"id": i}, None, 0)
    sized.commit(sized.pre_commit(txn))
    files = finished_part_files(str(tmp_path / "sized"))
    assert [pq.read_table(f).num_rows for f in files] == [10, 10, 5], (
        f"expected a roll after each flushed row group of 10; saw {[pq.read_table(f).num_rows for f in files]}")

# --- recovery at each phase ------------------------------------------------------------------------


def row_sink(tmp_path: Path, max_part_size: int = 10_000) -> FileSink:
    return FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(),
                    rolling_policy=DefaultRollingPolicy(max_part_size=max_part_size, rollover_interval=3600,
                                                        inactivity_interval=3600))


def finish_all(s: FileSink) -> None:
    """Roll and finish everything (a time-based roll far in the future)."""
    s.ctx.clock.now += 10 * HOUR  # type: ignore[attr-defined]
    txn = s.begin_transaction()
    s.on_processing_time(txn, s.ctx.clock())
    c = s.pre_commit(txn)
    if c is not None:
        s.commit(c)


def test_crash_after_commit_truncates_in_progress_to_committed_length(tmp_path: Path) -> None:
    template = row_sink(tmp_path)
    s1 = task_copy(template)
    c1 = checkpoint(s1, ["a1", "a2", "a3"])
    txn = s1.begin_transaction()
    for v in ("b1", "b2"):  # written after the checkpoint, then the process dies
        s1.write(txn, v, None, 0)
    s1._parts[""].handle.flush()  # the OS has them; a crash does not unwrite them
    ip = tmp_path / ".part-0-0.inprogress"
    assert ip.read_text() == "a1\na2\na3\nb1\nb2\n"
    s2 = task_copy(template)
    s2.recover(c1)
    assert ip.read_text() == "a1\na2\na3\n", f"expected truncation to the committed length; saw {ip.read_text()!r}"
    checkpoint(s2, ["b1", "b2"], seq=1)  # the replay
    finish_all(s2)
    assert lines_of(finished_part_files(str(tmp_path))) == ["a1", "a2", "a3", "b1", "b2"]
    assert hidden_part_files(str(tmp_path)) == []


def test_crash_after_prepare_unrolls_and_deletes_uncommitted_files(tmp_path: Path) -> None:
    template = row_sink(tmp_path, max_part_size=9)  # 3 lines of 3 bytes per file
    s1 = task_copy(template)
    c1 = checkpoint(s1, ["a1", "a2"])  # in progress: part-0-0 with 2 lines
    txn = s1.begin_transaction()
    for v in ("b1", "b2", "b3", "b4", "b5"):  # part-0-0 rolls, part-0-1 rolls, part-0-2 in progress
        s1.write(txn, v, None, 0)
    c2 = s1.pre_commit(txn)  # ... and the Kafka commit never happens
    assert sorted(c2["pending"]) == [["", 0], ["", 1]], c2
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-0.pending", ".part-0-1.pending", ".part-0-2.inprogress"]
    s2 = task_copy(template)
    s2.recover(c1)
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-0.inprogress"], (
        "expected part-0-0 back in progress and the uncommitted files deleted")
    assert (tmp_path / ".part-0-0.inprogress").read_text() == "a1\na2\n"
    assert s2.stats["unrolled"] == 1 and s2.stats["truncated"] == 1 and s2.stats["deleted"] == 2, s2.stats
    checkpoint(s2, ["b1", "b2", "b3", "b4", "b5"], seq=1)
    finish_all(s2)
    files = finished_part_files(str(tmp_path))
    assert lines_of(files) == ["a1", "a2", "b1", "b2", "b3", "b4", "b5"], lines_of(files)
    assert rel(tmp_path, files)[0] == "part-0-0" and all(f.split("-")[-1] not in ("1", "2") for f in rel(tmp_path, files)[1:]), (
        f"names of deleted leftovers must not be reused; saw {rel(tmp_path, files)}")


@pytest.mark.parametrize("renamed_before_crash", [0, 1])
def test_crash_after_kafka_commit_or_during_rename_finishes_pending(tmp_path: Path, renamed_before_crash: int) -> None:
    template = row_sink(tmp_path, max_part_size=6)
    s1 = task_copy(template)
    txn = s1.begin_transaction()
    for v in ("a1", "a2", "a3", "a4", "a5"):
        s1.write(txn, v, None, 0)
    c = s1.pre_commit(txn)
    assert len(c["pending"]) == 2, c
    if renamed_before_crash:  # the first rename of the commit happened, then the crash
        os.replace(tmp_path / ".part-0-0.pending", tmp_path / "part-0-0")
    s2 = task_copy(template)
    s2.commit(c)  # the runtime commits the stored committable on recovery ...
    s2.commit(c)  # ... and commit must be idempotent (a crash may repeat it)
    s2.recover(c)
    assert rel(tmp_path, finished_part_files(str(tmp_path))) == ["part-0-0", "part-0-1"]
    assert lines_of(finished_part_files(str(tmp_path))) == ["a1", "a2", "a3", "a4"]
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-2.inprogress"]
    assert (tmp_path / ".part-0-2.inprogress").read_text() == "a5\n"


def test_abort_restores_the_last_committed_state(tmp_path: Path) -> None:
    s = task_copy(row_sink(tmp_path, max_part_size=6))
    checkpoint(s, ["a1"])
    txn = s.begin_transaction()
    for v in ("b1", "b2", "b3", "b4"):
        s.write(txn, v, None, 0)
    s.pre_commit(txn)
    s.abort(txn)  # e.g. the Kafka commit failed
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-0.inprogress"]
    assert (tmp_path / ".part-0-0.inprogress").read_text() == "a1\n"
    checkpoint(s, ["b1", "b2", "b3", "b4"], seq=1)
    finish_all(s)
    assert lines_of(finished_part_files(str(tmp_path))) == ["a1", "b1", "b2", "b3", "b4"]


def test_counter_never_reuses_a_finished_name_even_without_state(tmp_path: Path) -> None:
    for name in ("part-0-0", "part-0-7", "part-1-9"):
        (tmp_path / name).write_text("old\n")
    s = task_copy(row_sink(tmp_path))
    s.recover(None)  # e.g. the changelog was deleted
    checkpoint(s, ["new"])
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-8.inprogress"]
    assert (tmp_path / "part-0-0").read_text() == "old\n"


def test_recovery_leaves_other_partitions_alone(tmp_path: Path) -> None:
    template = row_sink(tmp_path)
    p0, p1 = task_copy(template, 0), task_copy(template, 1)
    checkpoint(p1, ["p1-line"])
    txn = p0.begin_transaction()
    p0.write(txn, "p0-uncommitted", None, 0)
    task_copy(template, 0).recover(None)
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-1-0.inprogress"], (
        "partition 0's recovery must delete only its own leftovers")


def test_bulk_in_progress_is_discarded_on_recovery(tmp_path: Path) -> None:
    template = FileSink(str(tmp_path), ParquetFormat(), bucket_assigner=BasePathBucketAssigner())
    s1 = task_copy(template)
    c1 = checkpoint(s1, [{"id": 1}])
    txn = s1.begin_transaction()
    s1.write(txn, {"id": 2}, None, 0)
    assert rel(tmp_path, hidden_part_files(str(tmp_path))) == [".part-0-1.inprogress"]
    task_copy(template).recover(c1)
    assert hidden_part_files(str(tmp_path)) == [], "an unfinished Parquet file cannot be resumed: it must be deleted"
    assert rel(tmp_path, finished_part_files(str(tmp_path))) == ["part-0-0"]


def test_object_store_like_filesystem_rolls_every_checkpoint() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    base = "/ks-unit-files"
    template = FileSink(f"memory://{base}", bucket_assigner=BasePathBucketAssigner(),
                        rolling_policy=DefaultRollingPolicy(rollover_interval=3600, inactivity_interval=3600))
    s = task_copy(template)
    assert not s.resumable, "memory:// cannot append/truncate: expected rolling at every checkpoint"
    checkpoint(s, ["a", "b"])
    checkpoint(s, ["c"], seq=1)
    txn = s.begin_transaction()
    s.write(txn, "lost-in-crash", None, 0)
    task_copy(template).recover(None)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(base))
    assert names == ["part-0-0", "part-0-1"], f"expected two finished files and no leftovers; saw {names}"
    assert fs.cat(f"{base}/part-0-0") == b"a\nb\n" and fs.cat(f"{base}/part-0-1") == b"c\n"
    fs.rm(base, recursive=True)


def test_store_marks_the_committable_committed_in_the_next_checkpoint(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), bucket_assigner=BasePathBucketAssigner(), rolling_policy=OnCheckpointRollingPolicy())
    with TopologyTestDriver(driver_app(sink), wall_clock_ms=T10) as drv:
        drv.input_topic("in", value_serde=serdes.STR).pipe_input("x")
        first = drv.key_value_store("files-2pc")[b"2pc"]
        drv.advance_wall_clock_time(1)  # another checkpoint, nothing written
        second = drv.key_value_store("files-2pc")[b"2pc"]
    assert b'"committed":false' in first and b'"committed":true' in second, (first, second)
