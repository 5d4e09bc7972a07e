"""Sink-level benchmark: what one task's two-phase-commit sink costs per record and per checkpoint.

Drives each sink through the protocol the runtime uses (begin → write × N → pre_commit →
commit, ``--per-checkpoint`` records per checkpoint) on real local files and a real MariaDB
(``kstreamlet.dev.mysql``), without Kafka, so the numbers isolate the sink from the broker:

* ``files-text``     FileSink, one line per record, in-progress file kept across checkpoints
                     (fsync at every checkpoint; ``--no-fsync`` to compare)
* ``files-parquet``  FileSink + ParquetFormat (a file per checkpoint)
* ``mysql-xa``       MySQLSink exactly-once: XA START … executemany … XA PREPARE / XA COMMIT
* ``mysql-idem``     MySQLSink idempotent upserts (local commit per checkpoint)

Run: ``python -m bench.sinks [--records 200000] [--per-checkpoint 5000] [--only files-text,...]``.
Prints a table; ``--json`` prints one JSON object per case instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from typing import Any, Callable

from kstreamlet.sinks.base import RecordMetadata, SinkContext, TwoPhaseCommitSink


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


def bench_files_parquet(n: int, per: int) -> dict[str, Any]:
    from kstreamlet.sinks.files import BasePathBucketAssigner, FileSink, ParquetFormat

    d = tempfile.mkdtemp(prefix="ks-bench-parquet-")
    try:
        sink = FileSink(d, ParquetFormat(), bucket_assigner=BasePathBucketAssigner())
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


def bench_parquet_pyarrow(n: int, per: int) -> dict[str, Any]:
    """Baseline: the same rows written with pyarrow directly, one Parquet file per checkpoint."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tempfile.mkdtemp(prefix="ks-bench-pyarrow-")
    values = [{"id": f"sensor_{i % 100}", "ts": i, "temperature": 20.0 + i % 7} for i in range(n)]
    try:
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, n, per)):
            pq.write_table(pa.Table.from_pylist(values[start:start + per]), f"{d}/part-{k}.parquet")
        elapsed = time.perf_counter() - t0
        return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed),
                "checkpoints": (n + per - 1) // per, "checkpoint_ms_p50": "-", "checkpoint_ms_p99": "-"}
    finally:
        shutil.rmtree(d, ignore_errors=True)


CASES = ("files-text", "files-text-nofsync", "files-parquet", "parquet-pyarrow", "mysql-xa", "mysql-idem",
         "mysql-plain")
#: (case, its baseline): printed as ratios (issue target: >= 0.7)
RATIOS = (("mysql-xa", "mysql-plain"), ("mysql-idem", "mysql-plain"), ("files-parquet", "parquet-pyarrow"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--per-checkpoint", type=int, default=5_000,
                    help="records per checkpoint (at 50k records/s and the default 100 ms interval: 5000)")
    ap.add_argument("--only", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    wanted = [c for c in args.only.split(",") if c]
    unknown = set(wanted) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {CASES}")
    results: list[tuple[str, dict[str, Any]]] = []
    n, per = args.records, args.per_checkpoint
    if "files-text" in wanted:
        results.append(("files-text", bench_files_text(n, per, fsync=True)))
    if "files-text-nofsync" in wanted:
        results.append(("files-text-nofsync", bench_files_text(n, per, fsync=False)))
    if "files-parquet" in wanted:
        results.append(("files-parquet", bench_files_parquet(n, per)))
    if "parquet-pyarrow" in wanted:
        results.append(("parquet-pyarrow", bench_parquet_pyarrow(n, per)))
    if any(c.startswith("mysql") for c in wanted):
        from kstreamlet.dev.mysql import mysql_server

        with mysql_server() as ep:
            if "mysql-xa" in wanted:
                results.append(("mysql-xa", bench_mysql(n, per, "exactly_once", ep)))
            if "mysql-idem" in wanted:
                results.append(("mysql-idem", bench_mysql(n, per, "idempotent", ep)))
            if "mysql-plain" in wanted:
                results.append(("mysql-plain", bench_mysql_plain(n, per, ep)))
    if args.json:
        for name, r in results:
            print(json.dumps({"case": name, **r}))
        return 0
    cols = ["records", "seconds", "records_per_s", "checkpoints", "checkpoint_ms_p50", "checkpoint_ms_p99"]
    print(f"{'case':<20}" + "".join(f"{c:>19}" for c in cols))
    for name, r in results:
        print(f"{name:<20}" + "".join(f"{r[c]:>19}" for c in cols))
    got = dict(results)
    for case, base in RATIOS:
        if case in got and base in got:
            print(f"{case} / {base} = {got[case]['records_per_s'] / got[base]['records_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
