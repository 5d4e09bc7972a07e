"""Kafka → part files exactly-once (``services.file_archiver``) on a real broker and real files,
with the member crashed after pre-commit, after the Kafka commit, in the middle of the
pending → finished renames, and killed with SIGKILL.

Every test feeds distinct lines and reads back every *finished* part file (what a reader
that skips dot files sees): each line must appear exactly once, no in-progress or pending
file may be left once the input is done, and part files must respect the size limit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from kstreamlet.testing.files import finished_part_files, hidden_part_files
from tests.integration.members import Feeder, Members

# Each test normally takes 15-25 s; the bound keeps a hung run from stalling the suite.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(90)]

MAX_PART = 600  # bytes: small, so files roll several times per checkpoint (needed for during_rename)
LINE = "line-{:06d}"


@contextlib.contextmanager
def archiver(kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path, partitions: int = 3,
             **extra: str) -> Iterator[tuple[Members, str, Path]]:
    inp = kafka_topic(partitions=partitions, name="lines")
    out = tmp_path / "archive"
    env = {
        "IN_TOPIC": inp, "ARCHIVE_PATH": str(out),
        "KSTREAMLET_APPLICATION_ID": f"archiver-{uuid.uuid4().hex[:8]}",
        "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
        "KSTREAMLET_STATE_DIR": str(tmp_path / "state"),
        "ARCHIVE_MAX_PART_BYTES": str(MAX_PART), "ARCHIVE_ROLLOVER_SECONDS": "30",
        "ARCHIVE_INACTIVITY_SECONDS": "1", "ARCHIVE_TZ": "UTC", **extra,
    }
    members = Members("services.file_archiver:app", env, tmp_path)
    try:
        yield members, inp, out
    finally:
        members.stop_all()


def read_lines(out: Path) -> list[str]:
    lines: list[str] = []
    for f in finished_part_files(str(out)):
        lines.extend(Path(f).read_text().splitlines())
    return lines


def wait_all_finished(out: Path, n: int, members: Members, timeout: float, settle: float = 2.0) -> list[str]:
    """Wait until the finished files hold ``n`` lines, nothing is hidden (in progress/pending),
    and nothing changes for ``settle`` seconds; return the lines."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] = (-1, -1)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = (len(read_lines(out)), len(hidden_part_files(str(out))))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now[0] >= n and now[1] == 0 and time.monotonic() - stable_since >= settle:
            return read_lines(out)
        time.sleep(0.3)
    raise AssertionError(
        f"expected {n} lines in finished part files and no hidden files within {timeout}s; saw {last[0]} lines, "
        f"hidden {hidden_part_files(str(out))[:5]}\n{members.log_tail()}")


def assert_exactly_once(lines: list[str], n: int, members: Members) -> None:
    seen = collections.Counter(lines)
    expected = {LINE.format(i) for i in range(n)}
    missing = sorted(expected - set(seen))
    dup = {k: c for k, c in seen.items() if c > 1}
    unexpected = sorted(set(seen) - expected)
    assert not missing and not dup and not unexpected, (
        f"expected each of the {n} lines exactly once across finished part files; missing {len(missing)} "
        f"(e.g. {missing[:5]}), duplicated {len(dup)} (e.g. {dict(list(dup.items())[:5])}), "
        f"unexpected {unexpected[:5]}\n{members.log_tail()}")


def assert_part_files_well_formed(out: Path) -> None:
    files = finished_part_files(str(out))
    names = re.compile(r"^part-\d+-\d+$")
    bad_names = [f for f in files if not names.match(os.path.basename(f))]
    assert not bad_names, f"expected part-<partition>-<counter> names; saw {bad_names[:5]}"
    line = len(LINE.format(0)) + 1
    too_big = [(f, os.path.getsize(f)) for f in files if os.path.getsize(f) > MAX_PART + line]
    assert not too_big, f"expected part files to roll at {MAX_PART} bytes (+ one line); saw {too_big[:5]}"
    buckets = {os.path.basename(os.path.dirname(f)) for f in files}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d--\d\d", b) for b in buckets), f"expected hourly buckets; saw {buckets}"


RESTORED = "file sink restored part files to the committed checkpoint"
COMMITTED_ON_RECOVERY = "sink committed a checkpoint left uncommitted by the previous owner"


@pytest.mark.parametrize("point", ["after_prepare", "after_kafka_commit", "during_rename"])
def test_crash_at_phase_boundary_then_restart(point, kafka_bootstrap, kafka_topic, tmp_path):
    """``after_prepare``: files rolled to pending and in-progress lengths recorded, Kafka not
    committed — recovery must un-roll/truncate/delete. ``after_kafka_commit``: committed in
    Kafka, nothing renamed — recovery must finish the pending files. ``during_rename``: some
    renamed, some not — recovery must finish the rest (and not duplicate the first)."""
    n = 6000
    with archiver(kafka_bootstrap, kafka_topic, tmp_path) as (members, inp, out):
        members.start("m1", {"KSTREAMLET_TEST_CRASH_AT": point, "KSTREAMLET_TEST_CRASH_AFTER": "4"})
        members.wait_event("m1", "sink recovered", 40)
        feeder = Feeder(kafka_bootstrap, inp, (LINE.format(i) for i in range(n)), rate=2000)
        feeder.start()
        code = members.wait_exit("m1", 60)
        assert code == 137, f"expected the injected crash (exit 137) at {point}; saw {code}\n{members.log_tail()}"
        hidden_at_crash = hidden_part_files(str(out))
        pending_at_crash = [f for f in hidden_at_crash if f.endswith(".pending")]
        finished_at_crash = len(read_lines(out))
        assert pending_at_crash, f"expected pending part files at the crash at {point}; hidden files: {hidden_at_crash}"
        members.start("m1")
        feeder.join(60)
        lines = wait_all_finished(out, n, members, timeout=60)
        assert_exactly_once(lines, n, members)
        assert_part_files_well_formed(out)
        restored = members.events("m1", RESTORED)
        if point == "after_prepare":
            fixed = sum(e.get("truncated", 0) + e.get("deleted", 0) + e.get("unrolled", 0) for e in restored)
            assert fixed > 0, f"expected recovery to truncate/delete/un-roll uncommitted files; saw {restored}"
        else:
            assert members.events("m1", COMMITTED_ON_RECOVERY), (
                f"expected the restarted member to finish the committed checkpoint's pending files\n{members.log_tail()}")
        codes = members.stop_all()
        assert codes == {"m1": 0}, f"graceful stop must exit 0; saw {codes}"
        print(f"\n{point}: at the crash {len(pending_at_crash)} pending / {len(hidden_at_crash)} hidden files, "
              f"{finished_at_crash} finished lines; after restart {n} lines exactly once in "
              f"{len(finished_part_files(str(out)))} files; recovery {restored}")


def test_kill9_member_mid_run(kafka_bootstrap, kafka_topic, tmp_path):
    """Two members on 4 partitions; one is SIGKILLed twice mid-stream, wherever it happens to be."""
    n = 12_000
    with archiver(kafka_bootstrap, kafka_topic, tmp_path, partitions=4) as (members, inp, out):
        members.start("m1")
        members.start("m2")
        members.wait_event("m2", "sink recovered", 40)
        feeder = Feeder(kafka_bootstrap, inp, (LINE.format(i) for i in range(n)), rate=1500)
        feeder.start()
        for _ in range(2):
            time.sleep(2.5)
            assert feeder.is_alive(), "the input finished before the kill: the test would prove nothing"
            members.kill9("m2")
            time.sleep(0.5)
            members.start("m2")
        feeder.join(60)
        lines = wait_all_finished(out, n, members, timeout=75)
        assert_exactly_once(lines, n, members)
        assert_part_files_well_formed(out)


def test_parquet_archive_survives_crash_after_prepare(kafka_bootstrap, kafka_topic, tmp_path):
    """Bulk format: in-progress Parquet files of the crashed checkpoint are discarded and
    replayed; every finished file is a complete Parquet file with each row once."""
    import pyarrow.parquet as pq

    n = 3000
    with archiver(kafka_bootstrap, kafka_topic, tmp_path, ARCHIVE_FORMAT="parquet") as (members, inp, out):
        members.start("m1", {"KSTREAMLET_TEST_CRASH_AT": "after_prepare", "KSTREAMLET_TEST_CRASH_AFTER": "4"})
        members.wait_event("m1", "sink recovered", 40)
        values = (f'{{"id": {i}, "name": "{LINE.format(i)}"}}' for i in range(n))
        feeder = Feeder(kafka_bootstrap, inp, values, rate=1500)
        feeder.start()
        code = members.wait_exit("m1", 60)
        assert code == 137, f"expected the injected crash (exit 137); saw {code}\n{members.log_tail()}"
        members.start("m1")
        feeder.join(60)
        deadline = time.monotonic() + 60
        ids: list[int] = []
        while time.monotonic() < deadline:
            files = finished_part_files(str(out))
            ids = [i for f in files for i in pq.read_table(f).column("id").to_pylist()]
            if len(ids) >= n and not hidden_part_files(str(out)):
                break
            time.sleep(0.5)
        time.sleep(1.5)
        files = finished_part_files(str(out))
        tables = [pq.read_table(f) for f in files]  # raises if any finished file is not complete Parquet
        ids = [i for t in tables for i in t.column("id").to_pylist()]
        names = {r["id"]: r["name"] for t in tables for r in t.to_pylist()}
        dup = {i: c for i, c in collections.Counter(ids).items() if c > 1}
        assert sorted(set(ids)) == list(range(n)) and not dup, (
            f"expected ids 0..{n - 1} exactly once across {len(files)} Parquet files; "
            f"{n - len(set(ids))} missing, duplicated {dict(list(dup.items())[:5])}\n{members.log_tail()}")
        assert all(names[i] == LINE.format(i) for i in range(n)), "expected each row's name to match its id"
        assert tables[0].schema.names == ["id", "name"], f"unexpected schema {tables[0].schema}"
        print(f"\nparquet: {n} rows exactly once in {len(files)} files after a crash after pre-commit")
