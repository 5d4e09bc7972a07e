"""Sink benchmarks: the sinks alone (no Kafka), and end to end from a real broker.

**Direct** (``--skip-direct`` to leave out): drives each sink through the protocol the
runtime uses (begin → write × N → pre_commit → commit, ``--per-checkpoint`` records per
checkpoint) on real local files and a real MariaDB (``kstreamlet.dev.mysql``), without
Kafka, so the numbers isolate the sink from the broker:

* ``files-text``       FileSink, one line per record, in-progress file kept across checkpoints
                       (fsync at every checkpoint; ``files-text-nofsync`` without)
* ``files-parquet``    FileSink + ParquetFormat (a file per checkpoint, fsynced before it
                       becomes pending; ``files-parquet-nofsync`` without)
* ``parquet-pyarrow``  baseline: ``pq.write_table(pa.Table.from_pylist(rows))`` per checkpoint
                       (``parquet-pyarrow-fsync``: each file fsynced, FileSink's default durability)
* ``mysql-xa``         MySQLSink exactly-once: XA START … executemany … XA PREPARE / XA COMMIT
* ``mysql-idem``       MySQLSink idempotent upserts (local commit per checkpoint)
* ``mysql-plain``      baseline: executemany + COMMIT per checkpoint

**End to end** (``--skip-e2e`` to leave out): a real broker (``kstreamlet.dev.kafka``, a free
loopback port) and a real MariaDB. ``--e2e-records`` JSON records ``{"id": i, "value":
"<40 letters>"}`` (key = 8-byte id) are loaded once into a ``--partitions`` topic; every
run is its own subprocess with a fresh consumer group and reads all of it from the beginning:

* ``ks-mysql``         kstreamlet app ``stream(JSON).sink(MySQLSink(mode="exactly_once"))``
                       (XA), commit interval ``--mysql-commit-interval`` (default 0.1 s, the
                       app default), ``batch_size`` ``--batch-size``
* ``ks-mysql-1s``      the same with a 1 s commit interval (``--mysql-long-commit-interval``)
* ``raw-mysql``        baseline: confluent-kafka consumer, ``consume(batch_size)``, one PyMySQL
                       ``executemany`` of plain INSERTs per consumed batch, COMMIT, then the
                       offsets (asynchronous commit) — commit per batch, at-least-once
* ``raw-mysql-interval`` the same loop committing (DB, then offsets) once per
                       ``--mysql-commit-interval`` instead of per batch (same cadence as kstreamlet)
* ``ks-parquet``       kstreamlet app ``stream(JSON).sink(FileSink(ParquetFormat()))`` into one
                       directory, checkpoint every ``--files-commit-interval`` (1 s): a Parquet
                       file per partition per second (fsync'ed, renamed to finished)
* ``raw-parquet``      baseline: consumer + ``pq.write_table(pa.Table.from_pylist(rows))`` of each
                       partition's rows every second (one file per partition per second), then
                       a synchronous offset commit

Both sides use the same consumer settings (``read_committed``, KIP-848 group protocol,
``fetch.queue.backoff.ms`` 10). A run is timed from the first consumed batch to the final
commit that makes the last row visible (``rate`` = rows / that time), and verified: MySQL
``SELECT COUNT(*), COUNT(DISTINCT id)``, Parquet: every finished file read back with pyarrow
(rows and distinct ids; no hidden in-progress/pending file left). A run whose output is not
exactly the N ids is WRONG and not counted.

Run: ``python -m bench.sinks [--e2e-records 200000] [--repeats 3] [--profile]``; results go
to ``bench/results/<--out>.md`` and ``.json`` (``--profile``: ``<--out>-profile.txt``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kstreamlet.sinks import RecordMetadata, SinkContext, TwoPhaseCommitSink

if TYPE_CHECKING:
    from bench import common

NAME = "sinks"


def _ctx(name: str, record: Callable[[], RecordMetadata | None] = lambda: None) -> SinkContext:
    return SinkContext(0, f"bench-{int(time.time())}", name, "0_0", "exactly_once", lambda: int(time.time() * 1000),
                       _record=record)


def drive(sink: TwoPhaseCommitSink[Any], values: list[Any], per_checkpoint: int,
          ctx: SinkContext, on_write: Callable[[int], None] | None = None) -> dict[str, float]:
    """Run the protocol over ``values``; returns throughput and per-checkpoint latency."""
    s = copy.copy(sink)
    s.open(ctx)
    s.recover(None)
    ckpt_times: list[float] = []
    t0 = time.perf_counter()
    seq = 0
    for start in range(0, len(values), per_checkpoint):
        ctx.checkpoint_id = seq
        seq += 1
        txn = s.begin_transaction()
        for i in range(start, min(start + per_checkpoint, len(values))):
            if on_write is not None:
                on_write(i)
            s.write(txn, values[i], None, 0)
        c0 = time.perf_counter()
        c = s.pre_commit(txn)
        if c is not None:
            s.commit(c)
        ckpt_times.append(time.perf_counter() - c0)
    elapsed = time.perf_counter() - t0
    s.close()
    ckpt_times.sort()
    return {
        "records": len(values), "seconds": round(elapsed, 3), "records_per_s": round(len(values) / elapsed),
        "checkpoints": len(ckpt_times),
        "checkpoint_ms_p50": round(1000 * ckpt_times[len(ckpt_times) // 2], 2),
        "checkpoint_ms_p99": round(1000 * ckpt_times[min(len(ckpt_times) - 1, int(len(ckpt_times) * 0.99))], 2),
    }


def bench_files_text(n: int, per: int, fsync: bool) -> dict[str, Any]:
    from kstreamlet.sinks.files import BasePathBucketAssigner, DefaultRollingPolicy, FileSink

    d = tempfile.mkdtemp(prefix="ks-bench-files-")
    try:
        sink = FileSink(d, bucket_assigner=BasePathBucketAssigner(), fsync=fsync,
                        rolling_policy=DefaultRollingPolicy(max_part_size=64 * 1024 * 1024))
        return drive(sink, [f"sensor_{i % 100},{i},{20.0 + i % 7}" for i in range(n)], per, _ctx("files"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_files_parquet(n: int, per: int, fsync: bool = True) -> dict[str, Any]:
    from kstreamlet.sinks.files import BasePathBucketAssigner, FileSink, ParquetFormat

    d = tempfile.mkdtemp(prefix="ks-bench-parquet-")
    try:
        sink = FileSink(d, ParquetFormat(), bucket_assigner=BasePathBucketAssigner(), fsync=fsync)
        values = [{"id": f"sensor_{i % 100}", "ts": i, "temperature": 20.0 + i % 7} for i in range(n)]
        return drive(sink, values, per, _ctx("parquet"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_mysql(n: int, per: int, mode: str, endpoint: Any) -> dict[str, Any]:
    from kstreamlet.sinks.mysql import MySQLSink

    table = f"bench_{mode}_{int(time.time())}"
    conn = endpoint.connect(autocommit=True)
    extra = ", kafka_topic VARCHAR(100), kafka_partition INT, kafka_offset BIGINT, kafka_index INT, " \
            "UNIQUE KEY rec (kafka_topic, kafka_partition, kafka_offset, kafka_index)" if mode == "idempotent" else ""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, value VARCHAR(255), "
                    f"temperature DOUBLE{extra}) ENGINE=InnoDB")
    meta: list[RecordMetadata] = [RecordMetadata("in", 0, 0)]
    try:
        sink = MySQLSink(endpoint.url, table, ["value", "temperature"], mode=mode, batch_size=500)  # type: ignore[arg-type]
        values = [{"value": f"v{i}", "temperature": 20.0 + i % 7} for i in range(n)]

        def on_write(i: int) -> None:
            meta[0] = RecordMetadata("in", 0, i)

        result = drive(sink, values, per, _ctx("mysql", lambda: meta[0]), on_write)
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            result["rows_in_table"] = cur.fetchone()[0]
        return result
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def bench_mysql_plain(n: int, per: int, endpoint: Any) -> dict[str, Any]:
    """Baseline: the same rows with a plain batched executemany loop, one local COMMIT per checkpoint."""
    table = f"bench_plain_{int(time.time())}"
    conn = endpoint.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, value VARCHAR(255), "
                    f"temperature DOUBLE) ENGINE=InnoDB")
    conn.commit()
    rows = [(f"v{i}", 20.0 + i % 7) for i in range(n)]
    try:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, n, per):
                chunk = rows[start:start + per]
                for b in range(0, len(chunk), 500):
                    cur.executemany(f"INSERT INTO {table} (value, temperature) VALUES (%s, %s)", chunk[b:b + 500])
                conn.commit()
        elapsed = time.perf_counter() - t0
        return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed),
                "checkpoints": (n + per - 1) // per, "checkpoint_ms_p50": "-", "checkpoint_ms_p99": "-"}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.commit()
        conn.close()


def bench_parquet_pyarrow(n: int, per: int, fsync: bool = False) -> dict[str, Any]:
    """Baseline: the same rows written with pyarrow directly, one Parquet file per checkpoint
    (``fsync``: each file fsynced before the next, the durability FileSink gives by default)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tempfile.mkdtemp(prefix="ks-bench-pyarrow-")
    values = [{"id": f"sensor_{i % 100}", "ts": i, "temperature": 20.0 + i % 7} for i in range(n)]
    try:
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, n, per)):
            table = pa.Table.from_pylist(values[start:start + per])
            if fsync:
                with open(f"{d}/part-{k}.parquet", "wb") as f:
                    pq.write_table(table, f)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                pq.write_table(table, f"{d}/part-{k}.parquet")
        elapsed = time.perf_counter() - t0
        return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed),
                "checkpoints": (n + per - 1) // per, "checkpoint_ms_p50": "-", "checkpoint_ms_p99": "-"}
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- end to end: Kafka -> sink ------------------------------------------------------------------

E2E_SYSTEMS = ("ks-mysql", "ks-mysql-1s", "raw-mysql", "raw-mysql-interval", "ks-parquet", "raw-parquet")
#: (case, its baseline): the ratios printed (issue target: >= 0.7)
E2E_RATIOS = (("ks-mysql", "raw-mysql"), ("ks-mysql", "raw-mysql-interval"), ("ks-mysql-1s", "raw-mysql"),
              ("ks-parquet", "raw-parquet"))
#: Consumer settings of both sides (kstreamlet through ``kafka_config``): see bench/stateless.py
#: for why the fetch queue backoff is lowered (librdkafka's 1 s default caps catch-up reads).
CONSUMER_CONFIG: dict[str, Any] = {"fetch.queue.backoff.ms": 10}
VALUE_LETTERS = 40


def load_json_input(bootstrap: str, topic: str, records: int, seed: int = 42) -> float:
    """Produce ``{"id": i, "value": <40 lowercase letters>}`` with key = 8-byte big-endian ``i``."""
    import random

    import orjson
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "none", "partitioner": "murmur2_random",
                  "queue.buffering.max.messages": 500_000})
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    t0 = time.monotonic()
    for i in range(records):
        v = orjson.dumps({"id": i, "value": "".join(rng.choices(letters, k=VALUE_LETTERS))})
        while True:
            try:
                p.produce(topic, v, i.to_bytes(8, "big"))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("input records not acknowledged")
    return time.monotonic() - t0


def _e2e_worker_parser() -> argparse.ArgumentParser:
    w = argparse.ArgumentParser(prog="bench.sinks _worker")
    w.add_argument("--system", choices=E2E_SYSTEMS, required=True)
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--topic", required=True)
    w.add_argument("--group", required=True)
    w.add_argument("--target", type=int, required=True)
    w.add_argument("--batch-size", type=int, default=500)
    w.add_argument("--commit-interval", type=float, required=True)
    w.add_argument("--mysql-url")
    w.add_argument("--table")
    w.add_argument("--out-dir")
    w.add_argument("--state-dir")
    w.add_argument("--profile-out")
    return w


def worker(argv: list[str]) -> int:
    """The measured subprocess of one end-to-end run: prints one ``BENCH_RESULT`` line."""
    from bench import common

    a = _e2e_worker_parser().parse_args(argv)
    probe = common.Probe(a.target)
    facts: dict[str, Any] = {"system": a.system}
    try:
        if a.system.startswith("ks-"):
            _ks_member(a, probe, facts)
        elif a.system.startswith("raw-mysql"):
            _raw_mysql(a, probe, per_batch=a.system == "raw-mysql")
        else:
            _raw_parquet(a, probe)
    except BaseException as e:
        common.emit_result(probe.result(error=repr(e), **facts) | {"ok": False})
        raise
    common.emit_result(probe.result(**facts))
    return 0


def _raw_consumer(a: argparse.Namespace) -> Any:
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group, "group.protocol": "consumer",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "isolation.level": "read_committed",
        "auto.offset.reset": "earliest", "enable.partition.eof": False, **CONSUMER_CONFIG,
    })
    c.subscribe([a.topic])
    return c


def _raw_mysql(a: argparse.Namespace, probe: Any, per_batch: bool) -> None:
    """Baseline: consume(batch) → executemany plain INSERTs → COMMIT → offsets, per batch
    (or per commit interval with ``per_batch=False``)."""
    import orjson
    from confluent_kafka import KafkaException

    from kstreamlet.sinks.mysql import parse_mysql_url

    consumer = _raw_consumer(a)
    conn = parse_mysql_url(a.mysql_url).connect(autocommit=False)
    sql = f"INSERT INTO `{a.table}` (id, value) VALUES (%s, %s)"
    loads = orjson.loads
    batch = a.batch_size
    n = 0
    dirty = False
    next_commit = time.monotonic() + a.commit_interval

    def commit() -> None:
        nonlocal dirty
        conn.commit()
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=True)
        dirty = False
        probe.committed()

    with conn.cursor() as cur:
        while True:
            msgs = consumer.consume(batch, 0.05)
            if msgs:
                probe.first()
                rows = []
                for m in msgs:
                    if m.error() is not None:
                        raise KafkaException(m.error())
                    d = loads(m.value())
                    rows.append((d["id"], d["value"]))
                cur.executemany(sql, rows)
                n += len(rows)
                dirty = True
                if n >= a.target:
                    probe.last(n)
                if per_batch:
                    commit()
                if n >= a.target:
                    break
            if not per_batch and time.monotonic() >= next_commit:
                if dirty:
                    commit()
                next_commit = time.monotonic() + a.commit_interval
    if dirty:
        commit()
    offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
    if offsets:
        consumer.commit(offsets=offsets, asynchronous=False)
    consumer.close()
    conn.close()


def _raw_parquet(a: argparse.Namespace, probe: Any) -> None:
    """Baseline: buffer each partition's decoded rows; every commit interval write one Parquet
    file per partition with pyarrow, then commit the offsets."""
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq
    from confluent_kafka import KafkaException

    consumer = _raw_consumer(a)
    os.makedirs(a.out_dir, exist_ok=True)
    loads = orjson.loads
    buffers: dict[int, list[Any]] = {}
    files = 0
    n = 0

    def commit() -> None:
        nonlocal files
        for p, rows in buffers.items():
            if rows:
                pq.write_table(pa.Table.from_pylist(rows), os.path.join(a.out_dir, f"p{p}-{files}.parquet"))
                files += 1
        buffers.clear()
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
        probe.committed()

    next_commit = time.monotonic() + a.commit_interval
    while True:
        msgs = consumer.consume(1000, 0.05)
        if msgs:
            probe.first()
            cur_p, rows = -1, None
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                p = m.partition()
                if p != cur_p:
                    cur_p = p
                    rows = buffers.get(p)
                    if rows is None:
                        rows = buffers[p] = []
                rows.append(loads(m.value()))  # type: ignore[union-attr]
            n += len(msgs)
            if n >= a.target:
                probe.last(n)
                break
        if time.monotonic() >= next_commit:
            commit()
            next_commit = time.monotonic() + a.commit_interval
    commit()
    consumer.close()


def _ks_member(a: argparse.Namespace, probe: Any, facts: dict[str, Any]) -> None:
    import kstreamlet
    from bench import common
    from kstreamlet import App, serdes
    from kstreamlet.logging import configure_logging
    from bench import hooks

    pkg = Path(kstreamlet.__file__).parent
    facts.update(kstreamlet_dir=str(pkg), kstreamlet_fingerprint=common.source_fingerprint(pkg))
    app = App(application_id=a.group, bootstrap_servers=a.bootstrap, processing_guarantee="exactly_once",
              commit_interval=a.commit_interval, instance_id="bench-0", kafka_config=dict(CONSUMER_CONFIG),
              state_dir=a.state_dir)
    stream = app.stream(a.topic, value_serde=serdes.JSON)
    if a.system.startswith("ks-mysql"):
        from kstreamlet.sinks.mysql import MySQLSink

        stream.sink(MySQLSink(a.mysql_url, a.table, ["id", "value"], mode="exactly_once", batch_size=a.batch_size),
                    name="mysql")
    else:
        from kstreamlet.sinks.files import BasePathBucketAssigner, FileSink, ParquetFormat

        stream.sink(FileSink(a.out_dir, ParquetFormat(), bucket_assigner=BasePathBucketAssigner()), name="parquet")
    configure_logging(app.settings.log_level)
    target = a.target
    prof = None
    if a.profile_out:
        import cProfile

        prof = cProfile.Profile()

    class Probe(hooks.Hooks):
        """A timing probe (one call per batch and per commit). With ``--profile-out``
        cProfile covers the timed window: first batch to the final commit."""

        def before_batch(self, m: Any, msgs: list[Any]) -> None:
            if probe.t_first is None:
                probe.first()
                if prof is not None:
                    prof.enable()

        def on_batch(self, m: Any, msgs: list[Any], processed: int) -> None:
            if m.records_processed >= target and probe.t_last is None:
                probe.last(m.records_processed)
                m.stop()  # the loop ends; the shutdown makes the final commit

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()
            if prof is not None and probe.t_last is not None:
                prof.disable()

    hooks.member(app, Probe()).run()
    if prof is not None:
        prof.disable()
        prof.dump_stats(a.profile_out)


def _run_worker(argv: list[str], timeout: float, log_path: Path, cwd: Path | None = None) -> common.WorkerOutcome:
    """``python -m bench.sinks _worker ...`` in a fresh process.
    Its cwd (first on ``sys.path``) decides which ``kstreamlet`` it imports; ``bench`` comes from PYTHONPATH."""
    from bench import common

    return common.run_command([sys.executable, "-m", "bench.sinks", "_worker", *argv], timeout, log_path,
                              cwd=cwd or common.REPO_ROOT, env=common.worker_env())


def _verify_mysql(ep: Any, table: str, expected: int) -> tuple[dict[str, Any], bool]:
    conn = ep.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM `{table}`")
            count, distinct, lo, hi = cur.fetchone()
            cur.execute("XA RECOVER")
            prepared = len(cur.fetchall())
    finally:
        conn.close()
    v = {"count": int(count), "distinct": int(distinct), "min_id": lo, "max_id": hi, "xa_prepared_left": prepared}
    ok = count == expected and distinct == expected and lo == 0 and hi == expected - 1 and prepared == 0
    return v, ok


def _verify_parquet(out_dir: str, expected: int, kstreamlet_files: bool) -> tuple[dict[str, Any], bool]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from kstreamlet.testing.files import finished_part_files, hidden_part_files

    if kstreamlet_files:
        files = finished_part_files(out_dir)
        hidden = hidden_part_files(out_dir)
    else:
        files = sorted(str(f) for f in Path(out_dir).glob("*.parquet"))
        hidden = []
    count = 0
    ids: list[Any] = []
    for f in files:
        t = pq.read_table(f, columns=["id"])
        count += t.num_rows
        ids.append(t.column("id"))
    distinct = 0
    lo = hi = None
    if ids:
        import pyarrow as pa

        col = pa.chunked_array([c for ch in ids for c in ch.chunks])
        distinct = pc.count_distinct(col).as_py()
        mm = pc.min_max(col).as_py()
        lo, hi = mm["min"], mm["max"]
    v = {"files": len(files), "hidden_left": len(hidden), "count": count, "distinct": distinct, "min_id": lo, "max_id": hi}
    ok = count == expected and distinct == expected and lo == 0 and hi == expected - 1 and not hidden
    return v, ok


def _e2e_one(system: str, rep: int | str, a: argparse.Namespace, bootstrap: str, topic: str, ep: Any,
             log_dir: Path, profile_out: Path | None = None) -> dict[str, Any]:
    from bench import common

    tag = f"{system}-r{rep}"
    group = common.unique(f"bench-sinks-{tag}")
    mysql = "mysql" in system
    interval = (a.mysql_long_commit_interval if system == "ks-mysql-1s" else a.mysql_commit_interval) if mysql \
        else a.files_commit_interval
    argv = ["--system", system, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--target", str(a.e2e_records), "--batch-size", str(a.batch_size), "--commit-interval", str(interval)]
    work = Path(tempfile.mkdtemp(prefix=f"ks-bench-{tag}-"))
    table = f"bench_{system.replace('-', '_')}_{group.rsplit('-', 1)[-1]}"
    out_dir = work / "out"
    if mysql:
        conn = ep.connect(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE `{table}` (pk BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT NOT NULL, "
                        f"value VARCHAR(64) NOT NULL) ENGINE=InnoDB")
        conn.close()
        argv += ["--mysql-url", ep.url, "--table", table]
    else:
        argv += ["--out-dir", str(out_dir)]
    argv += ["--state-dir", str(work / "state")]
    if profile_out is not None:
        argv += ["--profile-out", str(profile_out)]
    outcome = _run_worker(argv, timeout=120 + a.e2e_records / 2_000, log_path=log_dir / f"{tag}.log",
                          cwd=a.kstreamlet_dir)
    rc, wall, tail, timed_out = outcome.rc, outcome.wall_seconds, outcome.log_tail, outcome.timed_out
    res = dict(outcome.result or {})
    run: dict[str, Any] = {"kind": "e2e", "system": system, "case": system, "repeat": rep, "records": a.e2e_records,
                           "commit_interval": interval, "worker_rc": rc, "worker_wall_seconds": round(wall, 2),
                           "log": str(log_dir / f"{tag}.log"), **res}
    # The rate that counts for a sink: rows until the final commit made the last one visible.
    if res.get("ok"):
        visible = res.get("seconds_to_final_commit")
        run["processing_rate"] = res.get("rate")
        run["rate"] = a.e2e_records / visible if visible else None
    status = "OK"
    if timed_out:
        status = "WRONG: worker timed out"
    elif rc != 0 or not res.get("ok") or run.get("rate") is None:
        status = f"WRONG: worker failed (rc={rc}, {res.get('error', 'no result / no final commit')})"
    try:
        if mysql:
            v, ok = _verify_mysql(ep, table, a.e2e_records)
        else:
            v, ok = _verify_parquet(str(out_dir), a.e2e_records, system.startswith("ks-"))
        run["verify"] = v
        if status == "OK" and not ok:
            status = f"WRONG: output {v}"
    except Exception as e:
        status = f"WRONG: verification failed: {e!r}"
    run["status"] = status
    if mysql:
        try:
            conn = ep.connect(autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            conn.close()
        except Exception as e:
            run["drop_error"] = repr(e)
    shutil.rmtree(work, ignore_errors=True)
    line = f"  {tag:<26}"
    if run.get("rate"):
        line += (f"{run['rate']:>10,.0f} rows/s visible  ({res['rate']:>9,.0f} processed/s)  "
                 f"cpu {res['cpu_us_per_record']:5.1f} us/rec  box {res.get('machine_busy_pct') or 0:3.0f}%  "
                 f"commits {res['commits']:>4}  wall {wall:5.1f} s")
    print(f"{line}  {status}", flush=True)
    if status != "OK" and tail:
        print("    worker log tail:\n    " + tail.replace("\n", "\n    "), flush=True)
    return run


def run_e2e(a: argparse.Namespace, systems: list[str], info: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from bench import common
    from kstreamlet.dev.kafka import kafka_broker
    from kstreamlet.dev.mysql import mysql_server

    log_dir = Path(tempfile.mkdtemp(prefix="kstreamlet-bench-sinks-"))
    runs: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    with kafka_broker() as broker, mysql_server() as ep:
        bootstrap = broker.bootstrap_servers
        if bootstrap.rsplit(":", 1)[-1] == "9092":
            raise SystemExit("bench.sinks: refusing to use port 9092; unset KSTREAMLET_BOOTSTRAP_SERVERS")
        info["broker_backend"] = broker.backend
        topic = common.unique("bench-sinks-in")
        common.create_topic(bootstrap, topic, a.partitions)
        load_s = load_json_input(bootstrap, topic, a.e2e_records, seed=a.seed)
        info["input_load_seconds"] = round(load_s, 2)
        print(f"e2e: loaded {topic}: {a.e2e_records:,} JSON records into {a.partitions} partitions in {load_s:.1f} s; "
              f"worker logs in {log_dir}", flush=True)
        if not a.no_warmup:
            print("  warm-up (not recorded):", flush=True)
            for system in systems:
                _e2e_one(system, "warmup", a, bootstrap, topic, ep, log_dir)
        for rep in range(1, a.repeats + 1):
            order = systems if rep % 2 else list(reversed(systems))
            for system in order:
                runs.append(_e2e_one(system, rep, a, bootstrap, topic, ep, log_dir))
        if a.profile:
            profile = {}
            for system in [s for s in systems if s.startswith("ks-")]:
                stats = log_dir / f"{system}.prof"
                run = _e2e_one(system, "profile", a, bootstrap, topic, ep, log_dir, profile_out=stats)
                profile[system] = {"run": run, "stats": str(stats)}
    return runs, profile


def _profile_text(a: argparse.Namespace, profile: dict[str, Any]) -> str:
    import io
    import pstats

    parts = []
    for system, p in profile.items():
        buf = io.StringIO()
        if Path(p["stats"]).exists():
            st = pstats.Stats(p["stats"], stream=buf)
            st.strip_dirs().sort_stats("tottime").print_stats(30)
            buf.write("\n--- by cumulative time ---\n")
            st.sort_stats("cumulative").print_stats(30)
        run = p["run"]
        parts.append(f"=== {system}: {a.e2e_records:,} records, {a.partitions} partitions, commit interval "
                     f"{run.get('commit_interval')} s, under cProfile (rates lowered by profiling)\n"
                     f"run: {run.get('rate') or 0:,.0f} rows/s visible, status {run['status']}\n"
                     "profiled window: first consumed batch to the final commit (main thread)\n\n" + buf.getvalue())
    return "\n\n".join(parts)


# --- the command --------------------------------------------------------------------------------

CASES = ("files-text", "files-text-nofsync", "files-parquet", "files-parquet-nofsync", "parquet-pyarrow",
         "parquet-pyarrow-fsync", "mysql-xa", "mysql-idem", "mysql-plain")
#: (case, its baseline): printed as ratios (issue target: >= 0.7)
RATIOS = (("mysql-xa", "mysql-plain"), ("mysql-idem", "mysql-plain"), ("files-parquet", "parquet-pyarrow"),
          ("files-parquet-nofsync", "parquet-pyarrow"), ("files-parquet", "parquet-pyarrow-fsync"))
TARGET = 0.7


def run_direct(a: argparse.Namespace, wanted: list[str]) -> list[dict[str, Any]]:
    n, per = a.records, a.per_checkpoint
    runs: list[dict[str, Any]] = []

    def record(case: str, rep: int, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            r = fn()
            status = "OK"
            if "rows_in_table" in r and r["rows_in_table"] != n:
                status = f"WRONG: {r['rows_in_table']} rows in the table, expected {n}"
        except Exception as e:  # keep the other cases
            r, status = {"error": repr(e)}, f"WRONG: {e!r}"
        run = {"kind": "direct", "system": case, "case": case, "repeat": rep, "status": status,
               "rate": r.get("records_per_s"), **r}
        runs.append(run)
        print(f"  {case:<22} r{rep}  {r.get('records_per_s') or 0:>12,} rec/s  checkpoint p50 "
              f"{r.get('checkpoint_ms_p50', '-')} ms  {status}", flush=True)

    print(f"direct (no Kafka): {n:,} records, {per:,} per checkpoint, {a.repeats} repeats", flush=True)
    ep_cm = None
    ep = None
    if any(c.startswith("mysql") for c in wanted):
        from kstreamlet.dev.mysql import mysql_server

        ep_cm = mysql_server()
        ep = ep_cm.__enter__()
    try:
        for rep in range(1, a.repeats + 1):
            for case in wanted:
                fns: dict[str, Callable[[], dict[str, Any]]] = {
                    "files-text": lambda: bench_files_text(n, per, fsync=True),
                    "files-text-nofsync": lambda: bench_files_text(n, per, fsync=False),
                    "files-parquet": lambda: bench_files_parquet(n, per, fsync=True),
                    "files-parquet-nofsync": lambda: bench_files_parquet(n, per, fsync=False),
                    "parquet-pyarrow": lambda: bench_parquet_pyarrow(n, per),
                    "parquet-pyarrow-fsync": lambda: bench_parquet_pyarrow(n, per, fsync=True),
                    "mysql-xa": lambda: bench_mysql(n, per, "exactly_once", ep),
                    "mysql-idem": lambda: bench_mysql(n, per, "idempotent", ep),
                    "mysql-plain": lambda: bench_mysql_plain(n, per, ep),
                }
                record(case, rep, fns[case])
                if case.startswith("mysql"):
                    time.sleep(1.1)  # table names carry the second
    finally:
        if ep_cm is not None:
            ep_cm.__exit__(None, None, None)
    return runs


def _summary(runs: list[dict[str, Any]], kind: str, ratios: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    from bench import common

    def rate_of(case: str) -> dict[str, Any] | None:
        return common.summarize(r["rate"] for r in runs if r["kind"] == kind and r["case"] == case
                                and r["status"] == "OK" and r.get("rate"))

    out = []
    for case in dict.fromkeys(r["case"] for r in runs if r["kind"] == kind):
        mine = [r for r in runs if r["kind"] == kind and r["case"] == case]
        entry: dict[str, Any] = {"kind": kind, "case": case, "rate": rate_of(case),
                                 "ok_runs": sum(r["status"] == "OK" for r in mine),
                                 "wrong_runs": sum(r["status"] != "OK" for r in mine)}
        cpu = common.summarize(r["cpu_us_per_record"] for r in mine if r["status"] == "OK" and r.get("cpu_us_per_record"))
        if cpu:
            entry["cpu_us_per_record"] = cpu
        out.append(entry)
    for case, base in ratios:
        c, b = rate_of(case), rate_of(base)
        if c and b:
            r = c["median"] / b["median"]
            out.append({"kind": kind, "case": case, "baseline": base, "ratio": r,
                        "ratio_min_max": [c["min"] / b["max"], c["max"] / b["min"]], "target": TARGET,
                        "meets_target": r >= TARGET})
    return out


def _report(a: argparse.Namespace, info: dict[str, Any], runs: list[dict[str, Any]],
            summary: list[dict[str, Any]]) -> str:
    from bench import common

    def rate_cell(e: dict[str, Any]) -> str:
        r = e["rate"]
        cell = f"{common.fmt_rate(r['median'])} ({common.fmt_rate(r['min'])}–{common.fmt_rate(r['max'])})" if r else "—"
        return cell + (f" **{e['wrong_runs']} WRONG**" if e["wrong_runs"] else "")

    sections = []
    for kind, title in (("direct", "Direct: the sink alone (no Kafka)"), ("e2e", "End to end: Kafka → sink")):
        rates = [e for e in summary if e["kind"] == kind and "baseline" not in e]
        if not rates:
            continue
        ratios = [e for e in summary if e["kind"] == kind and "baseline" in e]
        t1 = common.md_table(["case", "rows/s median (min–max)", "CPU µs/row (median)", "OK runs"],
                             [[e["case"], rate_cell(e),
                               f"{e['cpu_us_per_record']['median']:.1f}" if e.get("cpu_us_per_record") else "—",
                               str(e["ok_runs"])] for e in rates])
        t2 = common.md_table(["case / baseline", "ratio of medians", "range (min/max … max/min)", f"≥ {TARGET}"],
                             [[f"{e['case']} / {e['baseline']}", f"**{e['ratio']:.2f}**",
                               f"{e['ratio_min_max'][0]:.2f} … {e['ratio_min_max'][1]:.2f}",
                               "yes" if e["meets_target"] else "**no**"] for e in ratios])
        sections.append(f"## {title}\n\n{t1}\n\n{t2}\n")
    per_run = common.md_table(
        ["kind", "case", "repeat", "rows/s", "CPU µs/row", "commits", "verification", "status"],
        [[r["kind"], r["case"], str(r["repeat"]), common.fmt_rate(r.get("rate")),
          f"{r['cpu_us_per_record']:.1f}" if r.get("cpu_us_per_record") else "—", str(r.get("commits", r.get("checkpoints", "—"))),
          ", ".join(f"{k}={v}" for k, v in (r.get("verify") or {}).items()) or
          (f"rows_in_table={r['rows_in_table']}" if "rows_in_table" in r else "—"), r["status"]] for r in runs])
    la = info.get("loadavg_at_start", [0, 0, 0])
    le = info.get("loadavg_at_end", [0, 0, 0])
    return f"""# Sink benchmark: exactly-once sinks vs plain baselines

`python -m bench.sinks {' '.join(a.argv)}`

- date: {info['date']}; machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in la)}, at end {', '.join(f'{x:.2f}' for x in le)}
- kstreamlet: {info.get('source', 'working tree')} (HEAD {info.get('git_head', '?')}{', kstreamlet/ has uncommitted changes' if info.get('kstreamlet_dirty') else ''}); Kafka {info['kafka_version']} ({info.get('broker_backend', '—')} broker, same machine), confluent-kafka {info['confluent_kafka']}, librdkafka {info['librdkafka']}, Python {info['python']}; MariaDB local (`kstreamlet.dev.mysql`)
- direct: {a.records:,} records, {a.per_checkpoint:,} per checkpoint, the sink driven in-process through the two-phase-commit protocol; the baselines do the same writes without a sink (`mysql-plain`: executemany + COMMIT per checkpoint; `parquet-pyarrow`: `pq.write_table(pa.Table.from_pylist(rows))` per checkpoint, no fsync; `parquet-pyarrow-fsync`: the same, each file fsynced)
- end to end: {a.e2e_records:,} JSON records `{{"id": i, "value": <{VALUE_LETTERS} letters>}}` in {a.partitions} partitions, loaded once; each run a fresh subprocess and consumer group reading from the beginning; consumer config of both sides {CONSUMER_CONFIG}, `read_committed`
  - `ks-mysql`: kstreamlet, `MySQLSink(mode="exactly_once")` (XA), commit interval {a.mysql_commit_interval} s, batch_size {a.batch_size}; `ks-mysql-1s`: the same with commit interval {a.mysql_long_commit_interval} s
  - `raw-mysql`: confluent-kafka consumer, `consume({a.batch_size})` → one `executemany` of plain INSERTs → COMMIT → async offset commit, per batch
  - `raw-mysql-interval`: the same, committing once per {a.mysql_commit_interval} s (kstreamlet's cadence)
  - `ks-parquet`: kstreamlet, `FileSink(ParquetFormat())` in one directory (fsync before pending, rename at commit), checkpoint every {a.files_commit_interval} s
  - `raw-parquet`: consumer + `pq.write_table(pa.Table.from_pylist(rows))` per partition every {a.files_commit_interval} s, then a synchronous offset commit
  - rows/s = rows / (first consumed batch → final commit that made the last row visible); verification: MySQL `COUNT(*)`, `COUNT(DISTINCT id)`, min/max id and no XA transaction left prepared; Parquet: every finished file read back (rows, distinct ids, min/max), no hidden part file left
- {a.repeats} repeats, systems interleaved (order reversed every other repeat), warm-up runs {'skipped' if a.no_warmup else 'not recorded'}; the broker, MariaDB and the worker share the machine's CPUs, so rates vary between repeats (see min–max)

{chr(10).join(sections)}
## All runs

{per_run}
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return worker(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="direct: records per case (default 200,000)")
    ap.add_argument("--per-checkpoint", type=int, default=5_000,
                    help="direct: records per checkpoint (at 50k records/s and the default 100 ms interval: 5000)")
    ap.add_argument("--only", default=",".join(CASES), help=f"direct: comma-separated subset of {CASES}")
    ap.add_argument("--e2e-records", type=int, default=200_000, help="end to end: input records (default 200,000)")
    ap.add_argument("--e2e-systems", default=",".join(E2E_SYSTEMS), help=f"comma-separated subset of {E2E_SYSTEMS}")
    ap.add_argument("--partitions", type=int, default=3, help="end to end: input partitions (default 3)")
    ap.add_argument("--batch-size", type=int, default=500, help="MySQL rows per executemany, both sides (default 500)")
    ap.add_argument("--mysql-commit-interval", type=float, default=0.1, help="kstreamlet MySQL app (default 0.1 s)")
    ap.add_argument("--mysql-long-commit-interval", type=float, default=1.0,
                    help="kstreamlet MySQL app of ks-mysql-1s (default 1 s)")
    ap.add_argument("--files-commit-interval", type=float, default=1.0, help="Parquet: checkpoint/file interval (1 s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-warmup", action="store_true", help="end to end: skip the unrecorded warm-up run of each system")
    ap.add_argument("--skip-direct", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also run each kstreamlet e2e system once under cProfile -> results/<out>-profile.txt")
    ap.add_argument("--kstreamlet-ref", metavar="GIT_REF",
                    help="end to end: run the kstreamlet workers on this git revision's kstreamlet/ (exported to a "
                         "temp dir), e.g. HEAD to measure before/after; the direct cases always use the working tree")
    ap.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'sinks')")
    ap.add_argument("--json", action="store_true", help="also print every run as one JSON line")
    a = ap.parse_args(argv)
    a.argv = argv
    wanted = [c for c in a.only.split(",") if c]
    systems = [s for s in a.e2e_systems.split(",") if s]
    unknown = (set(wanted) - set(CASES)) | (set(systems) - set(E2E_SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {CASES} and {E2E_SYSTEMS}")
    from bench import common

    info = common.machine_info()
    a.kstreamlet_dir, facts = common.kstreamlet_root(a.kstreamlet_ref)
    info.update(facts)
    t0 = time.monotonic()
    runs: list[dict[str, Any]] = []
    if not a.skip_direct:
        runs += run_direct(a, wanted)
    profile = None
    if not a.skip_e2e:
        e2e, profile = run_e2e(a, systems, info)
        runs += e2e
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t0, 1)
    prints = sorted({r["kstreamlet_fingerprint"] for r in runs if r.get("kstreamlet_fingerprint")})
    info["kstreamlet_fingerprints"] = prints
    summary = _summary(runs, "direct", RATIOS) + _summary(runs, "e2e", E2E_RATIOS)
    md = _report(a, info, runs, summary)
    params = {k: v for k, v in vars(a).items() if isinstance(v, (str, int, float, bool, type(None)))}
    params["consumer_config"] = CONSUMER_CONFIG
    params["argv"] = argv
    data = {"scenario": NAME, "machine": info, "params": params, "summary": summary, "runs": runs}
    if profile:
        text = _profile_text(a, profile)
        path = common.RESULTS_DIR / f"{a.out}-profile.txt"
        common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        data["profile"] = {k: {"rate": v["run"].get("rate"), "status": v["run"]["status"], "file": str(path)}
                           for k, v in profile.items()}
        print(f"written {path}")
    md_path, json_path = common.write_results(a.out, md, data)
    if a.json:
        for r in runs:
            print(json.dumps(r, default=str))
    print()
    print(md)
    print(f"written {md_path} and {json_path}")
    return 1 if any(r["status"] != "OK" for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
