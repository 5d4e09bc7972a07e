"""Stateful scenario: exactly-once word count with RocksDB + changelog, kstreamlet vs Quix Streams.

Both systems read the same N-line, 6-partition input topic (each line 5 words of a
1000-word vocabulary, fixed seed) from the beginning, split lines into words, repartition
by word (kstreamlet ``key_by``, Quix ``group_by``: both through a repartition topic read
back ``read_committed``), count per word in RocksDB-backed state with a changelog, and
produce (word -> running count, 8-byte big-endian) to a fresh 6-partition output topic.
Exactly-once, commit interval 1 s, one process each, the same local broker.

Timing (the same method for both, in the worker process): the clock starts when the first
consumed record reaches the processing code and stops when the worker has processed
``6 N`` records (N lines + 5 N repartitioned words); start-up, topic creation and the group
join are excluded. kstreamlet: a per-batch listener hook (bench/hooks.py); Quix: its
``on_message_processed`` callback (one call per consumed message). Every run's output is
read back ``read_committed``; the last value per word must equal the true count of every
word, else the run is WRONG.

Restore: after each measured run, the same system starts again on the same
application id / consumer group with an empty state dir and restores its stores from the
changelog; timed from partition assignment (kstreamlet: ``_on_assign``; Quix: the start of
``do_recovery``) until every store is restored.

Quix Streams pins ``confluent-kafka<2.13``, so it runs from its own virtualenv
(``--quix-python``; by default ``~/.cache/kstreamlet-bench/quix-venv``, created on first use
with ``pip install quixstreams==QUIX_VERSION``), never in the project's environment.

Faust (faust-streaming, its own virtualenv: see ``bench.faust_worker``): an agent splits
lines and sends each word keyed by itself to a repartition topic (Faust's ``group_by`` is
one-in-one-out), a second agent counts in a ``Table`` (RocksDB via rocksdict, changelog) and
sends (word, int64). Its runs are bounded by ``--faust-timeout``; a run stopped there reports
the rate over what it processed and is "partial (timed)" if its committed output is
consistent (every word's outputs are exactly 1, 2, ..., k with k <= its true count).
Restore: timed from Faust's ``Recovery.on_rebalance`` to ``on_recovery_completed``.

Kafka Streams (``kafka_streams``: 1 stream thread, ``kafka_streams_2t``: 2): the Java worker
of ``bench/kafka_streams.py`` (``flatMapValues`` → ``groupBy`` → ``count()`` on RocksDB with
a changelog), run and restore modes per SCENARIOS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import common, faust_worker

NAME = "stateful"
PARTITIONS = 6
SYSTEMS = ("kstreamlet", "kstreamlet_cache", "kstreamlet_2w", "quix", "faust", "kafka_streams", "kafka_streams_nocache", "kafka_streams_2t")
#: Run by default (``kstreamlet_2w``, kstreamlet as two worker processes, only with ``--workers 2``)
DEFAULT_SYSTEMS = ("kstreamlet", "quix", "faust", "kafka_streams", "kafka_streams_nocache", "kafka_streams_2t")
#: Python workers (``python -m bench _worker stateful --system ...``, each with its own python)
WORKER_SYSTEMS = ("kstreamlet", "quix", "faust")
KAFKA_STREAMS_THREADS = {"kafka_streams": 1, "kafka_streams_nocache": 1, "kafka_streams_2t": 2}
#: kstreamlet's record cache setting (branch issue18-cache); its env variable is ENV_PREFIX + the name upper-cased
RECORD_CACHE_SETTING = "record_cache_max_bytes"
#: Kafka Streams' ``statestore.cache.max.bytes`` per system (None: its default, 10 MB)
KAFKA_STREAMS_CACHE = {"kafka_streams_nocache": 0}
#: ``kstreamlet_cache``: kstreamlet with its record cache on at Kafka Streams' default size (10 MB), so one
#: invocation measures kstreamlet cache on and off against Kafka Streams cache on and off
CACHE_ON_BYTES = 10 * 1024 * 1024
PARTIAL = "partial (timed)"
WORDS_PER_LINE = 5
VOCABULARY = 1000
COMMIT_INTERVAL = 1.0
QUIX_VERSION = common.QUIX_VERSION
DEFAULT_QUIX_VENV = common.DEFAULT_QUIX_VENV
#: Both consumers keep fetching while their local queue drains (kstreamlet's default; Quix
#: gets it through ``consumer_extra_config``): see CONSUMER_MODES in bench/stateless.py.
CONSUMER_CONFIG = {"fetch.queue.backoff.ms": 10}
DEFAULT_RECORDS = 200_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=int, default=DEFAULT_RECORDS, help=f"input lines (default {DEFAULT_RECORDS:,})")
    p.add_argument("--repeats", type=int, default=3, help="runs per system, interleaved (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--no-restore", action="store_true", help="skip the restore runs")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the unrecorded warm-up run of each system (20k lines) before measuring")
    common.add_profile_argument(p)
    p.add_argument("--quix-python", default=None,
                   help=f"python of a virtualenv with quixstreams (default {DEFAULT_QUIX_VENV}/bin/python, created if missing)")
    faust_worker.add_timeout_argument(p)
    common.add_source_argument(p)
    add_fairness_arguments(p)
    p.add_argument("--workers", type=int, default=1,
                   help="also run kstreamlet as this many worker processes in one group (system kstreamlet_2w "
                        "for 2), interleaved with the 1-process runs; every run reports the broker's CPU share")
    p.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'stateful')")


def add_fairness_arguments(p: argparse.ArgumentParser) -> None:
    common.add_warmup_records_argument(p)  # Faust ignores it; the report says 'warm: first N excluded'
    p.add_argument("--kstreamlet-record-cache-bytes", type=int, default=None, metavar="B",
                   help="kstreamlet's record cache size for its workers (the env variable of the setting "
                        "record_cache_max_bytes; 0 = off); only set when the measured kstreamlet has the setting record_cache_max_bytes")


# --- input ------------------------------------------------------------------------------------

def vocabulary(seed: int) -> list[str]:
    rng = random.Random(seed * 7919 + 1)
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))))
    return sorted(words)


def lines(records: int, seed: int) -> Any:
    """The N input lines (generator; deterministic for ``seed``)."""
    vocab = vocabulary(seed)
    rng = random.Random(seed)
    for _ in range(records):
        yield " ".join(rng.choices(vocab, k=WORDS_PER_LINE))


def true_counts(records: int, seed: int) -> Counter[str]:
    c: Counter[str] = Counter()
    for line in lines(records, seed):
        c.update(line.split())
    return c


def load_lines(bootstrap: str, topic: str, records: int, seed: int, source: Any = None) -> float:
    """Produce the ``records`` lines of :func:`lines` (or of the iterable ``source``) to ``topic``."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "none", "partitioner": "murmur2_random",
                  "queue.buffering.max.messages": 500_000})
    t0 = time.monotonic()
    for i, line in enumerate(lines(records, seed) if source is None else source):
        v = line.encode()
        k = i.to_bytes(8, "big")
        while True:
            try:
                p.produce(topic, v, k)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("input records not acknowledged")
    return time.monotonic() - t0


# --- worker side (runs in the measured subprocess) ----------------------------------------------

def _worker_parser() -> argparse.ArgumentParser:
    w = argparse.ArgumentParser(prog="bench _worker stateful")
    w.add_argument("--system", choices=WORKER_SYSTEMS, required=True)
    w.add_argument("--mode", choices=["process", "restore"], default="process")
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--in-topic", required=True)
    w.add_argument("--out-topic", required=True)
    w.add_argument("--group", required=True)
    w.add_argument("--state-dir", required=True)
    w.add_argument("--target", type=int, required=True)
    w.add_argument("--timeout", type=float, default=600.0,
                   help="Faust: stop this many seconds after the first record (a partial run); others: give up")
    w.add_argument("--commit-interval", type=float, default=COMMIT_INTERVAL)
    w.add_argument("--profile-out")
    w.add_argument("--warmup-records", type=int, default=0,
                   help="start the clock only after this many records are processed (steady state)")
    w.add_argument("--instance-id", default="bench-0")
    w.add_argument("--shared-count-dir",
                   help="several workers in one group (--workers): each writes its processed count here and "
                        "stops once the sum reaches --target and it has been idle for --idle-stop s")
    w.add_argument("--idle-stop", type=float, default=3.0)
    return w


def worker(argv: list[str]) -> int:
    a = _worker_parser().parse_args(argv)
    probe = common.Probe(a.target, warmup=a.warmup_records)
    facts: dict[str, Any] = {"system": a.system, "mode": a.mode}
    try:
        if a.mode == "restore":
            restore = {"kstreamlet": _kstreamlet_restore, "quix": _quix_restore,
                       "faust": faust_worker.wordcount_restore}[a.system]
            common.emit_result(restore(a, facts))
            return 0
        if a.system == "kstreamlet":
            _kstreamlet_member(a, probe, facts)
        elif a.system == "quix":
            _quix_app(a, probe, facts)
        else:
            faust_worker.wordcount(a, probe, facts)
    except BaseException as e:
        common.emit_result(probe.result(error=repr(e), **facts) | {"ok": False})
        raise
    common.emit_result(probe.result(**facts))
    return 0


def _kstreamlet_app(a: argparse.Namespace, facts: dict[str, Any]) -> Any:
    import kstreamlet
    from kstreamlet import App, serdes
    from kstreamlet.logging import configure_logging

    pkg = Path(kstreamlet.__file__).parent
    facts.update(kstreamlet_dir=str(pkg), kstreamlet_fingerprint=common.source_fingerprint(pkg))
    app = App(application_id=a.group, bootstrap_servers=a.bootstrap, processing_guarantee="exactly_once",
              commit_interval=COMMIT_INTERVAL, instance_id=a.instance_id, state_dir=a.state_dir,
              state_backend="rocksdb")
    cache = getattr(app.settings, "record_cache_max_bytes", None)
    if cache is not None:
        facts["record_cache_max_bytes"] = cache
    # As tests/apps/wordcount.py.
    (
        app.stream(a.in_topic, value_serde=serdes.STR)
        .flat_map(str.split)
        .key_by(lambda w: w, key_serde=serdes.STR, name="words")
        .count(name="counts")
        .to(a.out_topic, value_serde=serdes.INT64)
    )
    configure_logging(app.settings.log_level)
    return app


def _kstreamlet_member(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    from bench import hooks

    app = _kstreamlet_app(a, facts)
    target = a.target
    prof = None
    if a.profile_out:
        import cProfile

        prof = cProfile.Profile()

    control = {"n": 0}

    class Probe(hooks.Hooks):
        """One extra call per batch and per commit.

        ``count()`` is a keyed-process operator, so kstreamlet forwards watermark records
        (null value, key ``kstreamlet.watermark``) through the repartition topic at commits;
        ``records_processed`` counts them, so they are subtracted (one ``value() is None``
        test per record) to stop exactly after the last data record."""

        def before_batch(self, m: Any, msgs: list[Any]) -> None:
            if probe.t_first is None and not probe.warmup:
                probe.first()
                if prof is not None:
                    prof.enable()

        def on_batch(self, m: Any, msgs: list[Any], processed: int) -> None:
            control["n"] += sum(1 for r in msgs if r.value() is None)
            data = m.records_processed - control["n"]
            if probe.t_first is None:
                probe.progress(data)  # with --warmup-records: the clock starts after that many
                if probe.t_first is not None and prof is not None:
                    prof.enable()
            if shared is not None:
                shared.batch(data)
            elif data >= target and probe.t_last is None:
                if prof is not None:
                    prof.disable()
                probe.last(data)
                m.stop()

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()

    m = hooks.member(app, Probe(), instance_id=a.instance_id)
    shared = _SharedCount(a, probe, m.stop) if a.shared_count_dir else None
    timer = threading.Timer(a.timeout, m.stop)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
    facts["control_records"] = control["n"]
    if shared is not None:
        shared.finish(facts)
    if prof is not None:
        prof.dump_stats(a.profile_out)


class _SharedCount:
    """Several workers of one group (``--workers N``): none knows when the input is done, so each
    publishes its processed count (a file per instance, every 0.2 s) and stops once the sum of all
    workers' counts reaches the target and it has processed nothing for ``--idle-stop`` s. Its clock
    stops at its last batch with data (the idle wait is not timed); the parent combines the workers'
    windows (``t_first_mono``/``t_last_mono``: CLOCK_MONOTONIC, one clock for every process)."""

    def __init__(self, a: argparse.Namespace, probe: common.Probe, stop: Any) -> None:
        self.dir = Path(a.shared_count_dir)
        self.mine = self.dir / f"{a.instance_id}.count"
        self.target, self.idle, self.probe, self.stop = a.target, a.idle_stop, probe, stop
        self.n = 0
        self.t_data = 0.0
        self.cpu_data = 0.0
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="bench-shared-count").start()

    def batch(self, data: int) -> None:
        if data > self.n:
            self.n = data
            self.t_data = time.monotonic()
            self.cpu_data = common.cpu_seconds()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            tmp = self.mine.with_suffix(".tmp")
            tmp.write_text(str(self.n))
            os.replace(tmp, self.mine)
            total = 0
            for f in self.dir.glob("*.count"):
                try:
                    total += int(f.read_text() or 0)
                except (OSError, ValueError):
                    pass
            if total >= self.target and self.n and time.monotonic() - self.t_data >= self.idle:
                p = self.probe
                if p.t_first is not None and p.t_last is None:
                    p.last(self.n)
                    p.t_last, p.cpu_last = self.t_data, self.cpu_data
                self.done.set()
                self.stop()

    def finish(self, facts: dict[str, Any]) -> None:
        self.done.set()
        facts.update(t_first_mono=self.probe.t_first, t_last_mono=self.probe.t_last, instance=self.mine.stem)


def _kstreamlet_restore(a: argparse.Namespace, facts: dict[str, Any]) -> dict[str, Any]:
    from bench import hooks

    app = _kstreamlet_app(a, facts)
    t: dict[str, float] = {}
    prof = common.WorkerProfiler(a.profile_out)  # --profile of bench/restore.py: the restore window only

    class Probe(hooks.Hooks):
        def on_assigned(self, m: Any, partitions: list[Any], restoring: list[str]) -> None:
            if "start" not in t:
                t["start"] = time.monotonic()
                t["cpu_start"] = common.cpu_seconds()
                prof.start()
            if m.restorer is not None and not m.restorer.active and "end" not in t:
                t["end"] = time.monotonic()  # nothing to restore
                m.stop()

        def on_task_restored(self, m: Any, task_id: str) -> None:
            if m.restorer is not None and not m.restorer.active and "start" in t and "end" not in t:
                prof.stop()
                t["end"] = time.monotonic()
                t["cpu_end"] = common.cpu_seconds()
                m.stop()

    m = hooks.member(app, Probe())
    timer = threading.Timer(a.timeout, m.stop)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
    prof.dump()
    records = m.restorer.total_restored if m.restorer is not None else 0
    return _restore_result(t, records, facts)


def _restore_result(t: dict[str, float], records: int, facts: dict[str, Any]) -> dict[str, Any]:
    if "start" not in t or "end" not in t:
        return {"ok": False, "error": "restore did not finish", "records": records, **facts}
    if not records:
        return {"ok": False, "error": "nothing was restored", "records": 0, **facts}
    secs = max(t["end"] - t["start"], 1e-9)
    cpu = t.get("cpu_end", 0.0) - t.get("cpu_start", 0.0)
    return {"ok": True, "records": records, "seconds": secs, "rate": records / secs, "cpu_seconds": cpu,
            "cpu_us_per_record": cpu / records * 1e6, **facts}


def _quix_topology(a: argparse.Namespace, facts: dict[str, Any], **app_kwargs: Any) -> Any:
    import quixstreams  # type: ignore[import-not-found]
    from quixstreams import Application  # type: ignore[import-not-found]
    from quixstreams.models.serializers import Serializer  # type: ignore[import-not-found]

    facts["quixstreams"] = quixstreams.__version__

    class Int64(Serializer):
        """8-byte big-endian, as kstreamlet's serdes.INT64."""

        def __call__(self, value: int, ctx: Any) -> bytes:
            return struct.pack(">q", value)

    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      commit_interval=COMMIT_INTERVAL, processing_guarantee="exactly-once", state_dir=a.state_dir,
                      consumer_extra_config=dict(CONSUMER_CONFIG), loglevel="INFO", **app_kwargs)
    in_t = app.topic(a.in_topic, key_deserializer="bytes", value_deserializer="str")
    out_t = app.topic(a.out_topic, key_serializer="str", value_serializer=Int64())

    def count(word: str, state: Any) -> int:
        n = state.get("n", 0) + 1
        state.set("n", n)
        return n

    sdf = app.dataframe(in_t)
    sdf = sdf.apply(str.split, expand=True)
    sdf = sdf.group_by(lambda w: w, name="words")
    sdf = sdf.apply(count, stateful=True)
    sdf.to_topic(out_t)
    return app


def _quix_app(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    common.run_quix_to_target(lambda **kw: _quix_topology(a, facts, **kw), probe, a.target, a.timeout)


def _quix_restore(a: argparse.Namespace, facts: dict[str, Any]) -> dict[str, Any]:
    from quixstreams.state.recovery import RecoveryManager, RecoveryPartition  # type: ignore[import-not-found]

    t: dict[str, float] = {}
    count = {"n": 0}
    holder: dict[str, Any] = {}
    orig_recover = RecoveryPartition.recover_from_changelog_message
    orig_do = RecoveryManager.do_recovery

    def recover(self: Any, changelog_message: Any) -> Any:
        count["n"] += 1
        return orig_recover(self, changelog_message)

    def do_recovery(self: Any) -> Any:
        if "start" not in t:
            t["start"] = time.monotonic()
            t["cpu_start"] = common.cpu_seconds()
        r = orig_do(self)
        if not self.recovering and "end" not in t:
            t["end"] = time.monotonic()
            t["cpu_end"] = common.cpu_seconds()
            holder["app"].stop()
        return r

    RecoveryPartition.recover_from_changelog_message = recover  # type: ignore[method-assign]
    RecoveryManager.do_recovery = do_recovery  # type: ignore[method-assign]
    app = _quix_topology(a, facts)
    holder["app"] = app
    timer = threading.Timer(a.timeout, app.stop)
    timer.daemon = True
    timer.start()
    app.run()
    timer.cancel()
    return _restore_result(t, count["n"], facts)


# --- parent side ----------------------------------------------------------------------------------

def verify_counts(bootstrap: str, topic: str, expected: Counter[str], idle_timeout: float = 15.0,
                  partial: bool = False) -> dict[str, Any]:
    """Read ``topic`` ``read_committed`` to its end; the last value per word must be its true count.

    ``partial`` (a run stopped by its time limit): instead, every word's outputs must be exactly
    1, 2, ..., k in order (no gap, no repeat: each count emitted once) with k <= its true count."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    t0 = time.monotonic()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": common.unique("bench-verify"),
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    last: dict[Any, Any] = {}
    where: dict[Any, Any] = {}
    count = 0
    problems: list[str] = []
    split_keys = 0
    out_of_sequence = 0
    seq_samples: list[str] = []
    try:
        high: dict[Any, int] = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(PARTITIONS)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        done: set[Any] = {p for p, h in high.items() if h == 0}
        last_progress = time.monotonic()
        while len(done) < PARTITIONS and time.monotonic() - last_progress < idle_timeout:
            msgs = c.consume(10_000, 0.5)
            if msgs:
                last_progress = time.monotonic()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (m.offset() or 0) >= high[m.partition()]:
                            done.add(m.partition())
                        continue
                    problems.append(f"consumer error {err}")
                    continue
                count += 1
                k = m.key()
                p = where.setdefault(k, m.partition())
                if p != m.partition():
                    split_keys += 1
                v = m.value()
                if partial:
                    prev = last.get(k)
                    want = (struct.unpack(">q", prev)[0] if prev is not None and len(prev) == 8 else 0) + 1
                    if v is None or len(v) != 8 or struct.unpack(">q", v)[0] != want:
                        out_of_sequence += 1
                        if len(seq_samples) < 5:
                            seq_samples.append(f"{k!r}: {v!r} after {want - 1}")
                last[k] = v
        complete = len(done) == PARTITIONS
    finally:
        c.close()
    exp = {w.encode(): n for w, n in expected.items()}
    missing = sum(1 for k in exp if k not in last)
    unknown = sum(1 for k in last if k not in exp)
    wrong = 0
    samples: list[str] = []
    for k, n in exp.items():
        v = last.get(k)
        if v is not None and (len(v) != 8 or struct.unpack(">q", v)[0] != n):
            wrong += 1
            if len(samples) < 5:
                got = struct.unpack(">q", v)[0] if len(v) == 8 else v
                samples.append(f"{k.decode()}: {got!r} != {n}")
    if partial:
        over = 0
        for k, v in last.items():
            if k in exp and v is not None and len(v) == 8 and struct.unpack(">q", v)[0] > exp[k]:
                over += 1
        counted = sum(struct.unpack(">q", v)[0] for v in last.values() if v is not None and len(v) == 8)
        ok = complete and not unknown and not split_keys and not problems and not out_of_sequence and not over
        desc = (f"{PARTIAL}: consistent ({len(last)} words, {counted:,} words counted, {count:,} output records)" if ok
                else "WRONG (partial run): " + ", ".join(
                    [f"out_of_sequence={out_of_sequence}", f"over_true_count={over}", f"unknown_keys={unknown}"]
                    + ([f"keys_in_several_partitions={split_keys}"] if split_keys else [])
                    + ([] if complete else ["incomplete read"]) + problems[:3]
                    + ([f"e.g. {'; '.join(seq_samples)}"] if seq_samples else [])))
        return {"ok": ok, "partial": True, "describe": desc, "output_records": count, "words": len(last),
                "words_counted": counted, "out_of_sequence": out_of_sequence, "over_true_count": over,
                "unknown_keys": unknown, "complete": complete, "seconds": round(time.monotonic() - t0, 2)}
    ok = complete and not missing and not unknown and not wrong and not split_keys and not problems
    desc = f"OK ({len(exp)} words, {count:,} output records)" if ok else "WRONG: " + ", ".join(
        [f"missing={missing}", f"wrong_counts={wrong}", f"unknown_keys={unknown}"]
        + ([f"keys_in_several_partitions={split_keys}"] if split_keys else [])
        + ([] if complete else ["incomplete read"]) + problems[:3]
        + ([f"e.g. {'; '.join(samples)}"] if samples else []))
    return {"ok": ok, "describe": desc, "output_records": count, "words": len(last), "missing": missing,
            "wrong_counts": wrong, "wrong_samples": samples, "unknown_keys": unknown, "complete": complete,
            "seconds": round(time.monotonic() - t0, 2)}


class Suite:
    def __init__(self, args: argparse.Namespace, bootstrap: str, in_topic: str, expected: Counter[str],
                 log_dir: Path, kstreamlet_dir: Path, pythons: dict[str, str],
                 sampler: common.CpuSampler | None = None, kstreamlet_env: dict[str, str] | None = None) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.in_topic = in_topic
        self.expected = expected
        self.log_dir = log_dir
        self.kstreamlet_dir = kstreamlet_dir
        self.pythons = pythons
        self.sampler = sampler
        #: extra environment of kstreamlet's workers (the record cache setting)
        self.kstreamlet_env = dict(kstreamlet_env or {})
        #: words per input line (the restore scenario: 1, each line a distinct word)
        self.words_per_line = WORDS_PER_LINE
        #: restore runs after each measured run: (label, kstreamlet dir) per repeat, per system
        #: (the restore scenario alternates the working tree and --kstreamlet-ref on one changelog)
        self.restore_variants: dict[str, list[tuple[str, Path]]] = {}
        self.runs: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []
        #: bench/restore.py --profile: one more kstreamlet restore under cProfile, stats to this file
        self.profile_restore: Path | None = None
        self.profile_run: dict[str, Any] | None = None

    def _python_worker(self, system: str, argv: list[str], timeout: float, log_path: Path,
                       kstreamlet_dir: Path | None = None) -> common.WorkerOutcome:
        cmd, env = common.python_worker_command(self.pythons["kstreamlet" if system.startswith("kstreamlet") else system], NAME, argv)
        if system == "kstreamlet":
            env.update(self.kstreamlet_env)
        elif system == "kstreamlet_cache":
            from kstreamlet.config import ENV_PREFIX

            env[ENV_PREFIX + RECORD_CACHE_SETTING.upper()] = str(CACHE_ON_BYTES)
        return common.run_command(cmd, timeout, log_path, cwd=kstreamlet_dir or self.kstreamlet_dir, env=env)

    def _kstreamlet_workers(self, n: int, argv: list[str], target: int, timeout: float, log_path: Path,
                            state_dir: Path) -> common.WorkerOutcome:
        """``n`` kstreamlet worker processes in one group, started together, each with its own
        state dir and instance id; they stop when their summed count reaches ``target`` (see
        :class:`_SharedCount`). One combined result: the window from the first worker's first
        record to the last worker's last record, ``target`` records in it."""
        from concurrent.futures import ThreadPoolExecutor

        counts = Path(tempfile.mkdtemp(prefix="counts-", dir=self.log_dir))

        def one(i: int) -> common.WorkerOutcome:
            wdir = state_dir / f"w{i}"
            wdir.mkdir(parents=True, exist_ok=True)
            a = list(argv)
            a[a.index("--state-dir") + 1] = str(wdir)
            a += ["--instance-id", f"bench-{i}", "--shared-count-dir", str(counts)]
            return self._python_worker("kstreamlet", a, timeout, log_path.with_suffix(f".w{i}.log"))

        with ThreadPoolExecutor(n) as ex:
            outs = list(ex.map(one, range(n)))
        shutil.rmtree(counts, ignore_errors=True)
        res = [o.result or {} for o in outs]
        rc = next((o.rc for o in outs if o.rc != 0), 0)
        wall = max(o.wall_seconds for o in outs)
        if not all(r.get("ok") for r in res):
            bad = next(r for r in res if not r.get("ok"))
            return common.WorkerOutcome(rc, {**bad, "ok": False, "workers": n}, wall,
                                        "\n".join(o.log_tail for o in outs), any(o.timed_out for o in outs))
        t0 = min(r["t_first_mono"] for r in res)
        t1 = max(r["t_last_mono"] for r in res)
        secs = max(t1 - t0, 1e-9)
        cpu = sum(r["cpu_seconds"] for r in res)
        warm = sum(r.get("warmup_records") or 0 for r in res)
        measured = sum(r["processed"] for r in res) if warm else target  # each worker's records after its warm-up
        combined = {"ok": True, "processed": measured, "warmup_records": warm, "seconds": secs,
                    "rate": measured / secs, "cpu_seconds": cpu,
                    "cpu_us_per_record": cpu / measured * 1e6, "machine_busy_pct": None,
                    "seconds_to_final_commit": None, "commits": sum(r.get("commits", 0) for r in res),
                    "t_first_mono": t0, "t_last_mono": t1, "workers": n,
                    "per_worker": [{k: r.get(k) for k in ("processed", "seconds", "rate", "cpu_us_per_record")}
                                   for r in res],
                    **{k: v for k, v in res[0].items() if k.startswith("kstreamlet_") or k == "record_cache_max_bytes"}}
        return common.WorkerOutcome(rc, combined, wall, "", False)

    def one_run(self, system: str, rep: int | str, restore: bool, verify: bool = True,
                profile_out: Path | None = None) -> dict[str, Any]:
        a = self.args
        lines_n = a.records if rep != "warmup" else min(a.records, 2_000 if system == "faust" else 20_000)
        target = lines_n * (1 + self.words_per_line)
        warm = getattr(a, "warmup_records", 0) if rep != "warmup" and system != "faust" else 0
        if warm >= target:
            raise SystemExit(f"--warmup-records {warm} must be below the records processed per run ({target:,})")
        tag = f"{system}-r{rep}"
        out_topic = common.unique(f"bench-wc-out-{tag}")
        group = common.unique(f"bench-wc-{tag}")
        common.create_topic(self.bootstrap, out_topic, PARTITIONS)
        state_dir = Path(tempfile.mkdtemp(prefix=f"state-{tag}-", dir=self.log_dir))
        timeout = a.faust_timeout if system == "faust" else 120 + target / 5_000
        log_path = self.log_dir / f"{tag}.log"
        if system == "faust":
            common.create_topic(self.bootstrap, faust_worker.repartition_topic(group), PARTITIONS)
        if system in KAFKA_STREAMS_THREADS:
            outcome = self._kafka_streams(system, "run", group, out_topic, state_dir, target, timeout, log_path, warm)
        else:
            py_system = "kstreamlet" if system in ("kstreamlet_2w", "kstreamlet_cache") else system
            argv = ["--system", py_system, "--bootstrap", self.bootstrap, "--in-topic", self.in_topic,
                    "--out-topic", out_topic, "--group", group, "--state-dir", str(state_dir),
                    "--target", str(target), "--timeout", str(timeout), "--commit-interval", str(COMMIT_INTERVAL)]
            if warm:
                # --workers N: each worker's clock starts after its own share of the warm-up
                argv += ["--warmup-records", str(warm // 2 if system == "kstreamlet_2w" else warm)]
            if profile_out:
                argv += ["--profile-out", str(profile_out)]
            if system == "kstreamlet_2w":
                outcome = self._kstreamlet_workers(2, argv, target, timeout + 120, log_path, state_dir)
            else:
                outcome = self._python_worker(system, argv, timeout + 120, log_path)
        res = dict(outcome.result or {})
        if system == "kstreamlet_cache" and res.get("ok") and res.get("record_cache_max_bytes") != CACHE_ON_BYTES:
            res = {**res, "ok": False, "error": "the measured kstreamlet has no setting record_cache_max_bytes"}
        if self.sampler is not None and res.get("ok"):
            cpu = self.sampler.window(res.get("t_first_mono"), res.get("t_last_mono"))
            res.update({k: v for k, v in cpu.items() if k != "machine_busy_pct"})
            if res.get("machine_busy_pct") is None and "machine_busy_pct" in cpu:
                res["machine_busy_pct"] = cpu["machine_busy_pct"]
        run: dict[str, Any] = {**{k: v for k, v in res.items() if k != "system"},  # the Java worker's own name
                               "system": system, "repeat": rep, "lines": lines_n, "target_records": target,
                               "worker_rc": outcome.rc, "worker_wall_seconds": round(outcome.wall_seconds, 2),
                               "log": str(log_path)}
        partial = bool(res.get("partial"))
        status = "OK"
        if outcome.timed_out:
            status = "WRONG: worker timed out"
        elif outcome.rc != 0 or not res.get("ok"):
            status = f"WRONG: worker failed (rc={outcome.rc}, {res.get('error', 'no result')})"
        if verify and rep != "warmup":
            ver = verify_counts(self.bootstrap, out_topic, self.expected, partial=partial)
            run["verify"] = ver
            if status == "OK" and not ver["ok"]:
                status = ver["describe"]
            elif status == "OK" and partial:
                status = PARTIAL
        elif status == "OK" and partial:
            status = PARTIAL
        run["status"] = status
        line = f"  {tag:<22} "
        if res.get("ok"):
            line += (f"{res['rate']:>9,.0f} rec/s ({res['rate'] / (1 + self.words_per_line):>7,.0f} lines/s)  "
                     f"{res['seconds']:6.2f} s  cpu {res.get('cpu_us_per_record') or 0:5.1f} us/rec  "
                     f"box {res.get('machine_busy_pct') or 0:3.0f}%  commits {res.get('commits', 0):>3}  wall {outcome.wall_seconds:5.1f} s")
            if res.get("broker_machine_pct") is not None:
                line += f"  broker {res['broker_machine_pct']:3.0f}% of the box"
            if res.get("warmup_records"):
                line += f"  (warm: first {res['warmup_records']:,} excluded)"
            if run.get("verify"):
                line += f"  out {run['verify']['output_records']:,}"
            if partial:
                line += f"  ({res['processed']:,} of {target:,} in the time limit)"
        line += f"  {status}"
        print(line, flush=True)
        if status not in ("OK", PARTIAL) and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        if restore and res.get("ok") and status in ("OK", PARTIAL) and system != "kstreamlet_2w":
            variants = self.restore_variants.get(system) or [(system, self.kstreamlet_dir)]
            for label, kdir in variants:
                self.restores.append(self.restore_run(system, rep, group, out_topic, state_dir, label, kdir))
            if self.profile_restore is not None and system == "kstreamlet":
                self.profile_run = self.restore_run(system, rep, group, out_topic, state_dir, "kstreamlet-profile",
                                                    profile_out=self.profile_restore)
        shutil.rmtree(state_dir, ignore_errors=True)
        try:
            common.delete_run_topics(self.bootstrap, group, [out_topic])
        except Exception as e:  # noqa: BLE001 -- best effort; the broker's temp dir goes away anyway
            run["delete_error"] = repr(e)
        return run

    def _kafka_streams(self, system: str, mode: str, group: str, out_topic: str, state_dir: Path, target: int,
                       timeout: float, log_path: Path, warmup: int = 0) -> common.WorkerOutcome:
        from bench import kafka_streams  # type: ignore[attr-defined]

        cmd = kafka_streams.command("wordcount", bootstrap=self.bootstrap, application_id=group, in_topic=self.in_topic,
                                    out_topic=out_topic, state_dir=str(state_dir), guarantee="exactly_once",
                                    commit_interval_ms=int(COMMIT_INTERVAL * 1000), target=target,
                                    timeout_s=int(timeout), threads=KAFKA_STREAMS_THREADS[system], mode=mode,
                                    warmup_records=warmup, cache_max_bytes=KAFKA_STREAMS_CACHE.get(system))
        return common.run_command(cmd, timeout + 60, log_path, cwd=state_dir.parent)

    def restore_run(self, system: str, rep: int | str, group: str, out_topic: str, state_dir: Path,
                    label: str | None = None, kstreamlet_dir: Path | None = None,
                    profile_out: Path | None = None) -> dict[str, Any]:
        label = label or system
        shutil.rmtree(state_dir, ignore_errors=True)  # the state is wiped: everything comes from the changelog
        state_dir.mkdir(parents=True)
        tag = f"{label}-r{rep}-restore"
        log_path = self.log_dir / f"{tag}.log"
        timeout = getattr(self.args, "restore_timeout", 300)
        if system in KAFKA_STREAMS_THREADS:
            outcome = self._kafka_streams(system, "restore", group, out_topic, state_dir, 0, timeout, log_path)
        else:
            argv = ["--system", "kstreamlet" if system == "kstreamlet_cache" else system, "--mode", "restore", "--bootstrap", self.bootstrap, "--in-topic", self.in_topic,
                    "--out-topic", out_topic, "--group", group, "--state-dir", str(state_dir),
                    "--target", "0", "--timeout", str(timeout), "--commit-interval", str(COMMIT_INTERVAL)]
            if profile_out:
                argv += ["--profile-out", str(profile_out)]
            outcome = self._python_worker(system, argv, timeout + 120, log_path, kstreamlet_dir)
        res = {k: v for k, v in (outcome.result or {}).items() if k != "system"}
        status = "OK"
        if outcome.timed_out:
            status = "FAILED: worker timed out"
        elif outcome.rc != 0 or not res.get("ok"):
            status = f"FAILED: rc={outcome.rc}, {res.get('error', 'no result')}"
        r = {**res, "system": label, "repeat": rep, "worker_rc": outcome.rc,
             "worker_wall_seconds": round(outcome.wall_seconds, 2), "log": str(log_path), "status": status}
        if system == "kstreamlet":
            r["stores_logged"] = _restored_stores(log_path)
        line = f"  {tag:<22} "
        if res.get("ok"):
            line += (f"{res['rate']:>9,.0f} rec/s  {res['records']:>7,} changelog records in {res['seconds']:6.2f} s  "
                     f"cpu {res.get('cpu_us_per_record') or 0:5.1f} us/rec")
        print(line + f"  {status}", flush=True)
        if status != "OK" and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        return r


def _restored_stores(log_path: Path) -> list[dict[str, Any]]:
    """kstreamlet's own ``"event": "store restored"`` log lines (records, seconds per store partition)."""
    out = []
    try:
        for line in log_path.read_text(errors="replace").splitlines():
            if '"store restored"' in line:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                out.append({k: d.get(k) for k in ("store", "partition", "records", "seconds", "records_per_second")})
    except OSError:
        pass
    return out


def _args_under_all(args: argparse.Namespace) -> argparse.Namespace:
    """``python -m bench all`` parses the stateless options: keep what applies, default the rest."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    mine = p.parse_args([])
    for k in ("repeats", "seed", "kstreamlet_ref", "no_warmup", "profile", "quix_python", "faust_python", "faust_timeout"):
        if hasattr(args, k):
            setattr(mine, k, getattr(args, k))
    if getattr(args, "records", 1_000_000) != 1_000_000:  # stateless default: not asked for
        mine.records = args.records
    mine.out = NAME
    return mine


def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    if getattr(args, "scenario", NAME) != NAME:
        args = _args_under_all(args)
    wanted = set(args.systems.split(","))
    if getattr(args, "workers", 1) == 2 and "kstreamlet" in wanted:
        wanted.add("kstreamlet_2w")
    elif getattr(args, "workers", 1) not in (1, 2):
        raise SystemExit("--workers: 1 or 2")
    systems = [s for s in SYSTEMS if s in wanted]
    if not systems:
        raise SystemExit(f"no known system in --systems {args.systems!r}")
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
    ks_env = kstreamlet_cache_env(ks_dir, getattr(args, "kstreamlet_record_cache_bytes", None), info)
    pythons = {"kstreamlet": sys.executable}
    if "quix" in systems:
        pythons["quix"] = common.quix_python(args.quix_python)
        info["quix"] = common.quix_versions(pythons["quix"])
    if "faust" in systems:
        pythons["faust"] = faust_worker.faust_python(args.faust_python)
        info["faust"] = faust_worker.faust_versions(pythons["faust"])
    if any(s in KAFKA_STREAMS_THREADS for s in systems):
        try:
            from bench import kafka_streams  # type: ignore[attr-defined]

            kafka_streams.ensure_jar()
            info["kafka_streams"] = kafka_streams.versions()
        except Exception as e:  # noqa: BLE001 -- reported, the others still run
            info["kafka_streams"] = {"error": repr(e)}
            skipped = [s for s in systems if s in KAFKA_STREAMS_THREADS]
            print(f"SKIPPING {skipped}: Kafka Streams worker not available: {e!r}", flush=True)
            info["skipped_systems"] = skipped
            systems = [s for s in systems if s not in KAFKA_STREAMS_THREADS]
    t_start = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="kstreamlet-bench-stateful-"))
    print(f"bench stateful: {args.records:,} lines x {WORDS_PER_LINE} words, {args.repeats} repeats, systems {systems}; "
          f"kstreamlet from {code['source']} ({ks_dir / 'kstreamlet'}); quix {info.get('quix')}; worker logs in {log_dir}",
          flush=True)
    expected = true_counts(args.records, args.seed)
    with kafka_broker() as broker, common.CpuSampler(broker_pid(broker)) as sampler:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        info["broker_pid_sampled"] = sampler.pid is not None
        in_topic = common.unique("bench-stateful-in")
        common.create_topic(bootstrap, in_topic, PARTITIONS)
        load_s = load_lines(bootstrap, in_topic, args.records, args.seed)
        print(f"loaded input {in_topic}: {args.records:,} lines in {load_s:.1f} s", flush=True)
        suite = Suite(args, bootstrap, in_topic, expected, log_dir, ks_dir, pythons, sampler, ks_env)
        if not args.no_warmup and args.repeats > 0:
            print("warm-up (not recorded):", flush=True)
            for system in systems:
                suite.one_run(system, "warmup", restore=False, verify=False)
        if args.repeats > 0:
            print("measured runs (each followed by its restore run):", flush=True)
        for rep in range(args.repeats):
            order = systems if rep % 2 == 0 else list(reversed(systems))
            for system in order:
                suite.runs.append(suite.one_run(system, rep + 1, restore=not args.no_restore))
        profile_run = _profile(suite, args) if args.profile else None
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    info["input_load_seconds"] = round(load_s, 2)
    prints = sorted({r["kstreamlet_fingerprint"] for r in suite.runs if r.get("kstreamlet_fingerprint")})
    info["kstreamlet_fingerprints"] = prints
    if len(prints) > 1:
        print(f"WARNING: kstreamlet's source changed during the benchmark (fingerprints {prints}); "
              "rerun, or pin it with --kstreamlet-ref", flush=True)
    if args.repeats > 0:
        md, summary = _report(args, systems, suite.runs, suite.restores, info, profile_run)
        data = {"scenario": NAME, "machine": info,
                "params": {"records": args.records, "words_per_line": WORDS_PER_LINE, "vocabulary": VOCABULARY,
                           "repeats": args.repeats, "partitions": PARTITIONS, "seed": args.seed,
                           "commit_interval": COMMIT_INTERVAL, "consumer_config": CONSUMER_CONFIG},
                "summary": summary, "runs": suite.runs, "restores": suite.restores, "profile_run": profile_run,
                "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}}
        md_path, json_path = common.write_results(args.out, md, data)
        print()
        print(md)
        print(f"written {md_path} and {json_path}")
    failed = sum(1 for r in suite.runs if r["status"] != "OK")
    return 1 if failed else 0


def broker_pid(broker: Any) -> int | None:
    """The local broker's JVM pid (its CPU is sampled), None for an external broker."""
    proc = getattr(broker, "proc", None)
    return getattr(proc, "pid", None)


def kstreamlet_cache_env(ks_dir: Path, cache_bytes: int | None, info: dict[str, Any]) -> dict[str, str]:
    """The record cache setting's variable (``KSTREAMLET_`` + ``RECORD_CACHE_MAX_BYTES``) for
    kstreamlet's workers when asked for and the measured
    kstreamlet (``ks_dir``, maybe ``--kstreamlet-ref``) has the setting ``record_cache_max_bytes``:
    kstreamlet refuses a ``KSTREAMLET_*`` variable close to a setting's name, so it is not set otherwise."""
    if cache_bytes is None:
        return {}
    if cache_bytes < 0:
        raise SystemExit("--kstreamlet-record-cache-bytes must be >= 0 (0 = off)")
    probe = subprocess.run([sys.executable, "-c", "from kstreamlet.config import Settings; "
                            f"print({RECORD_CACHE_SETTING!r} in Settings.model_fields)"],
                           cwd=ks_dir, capture_output=True, text=True, timeout=60, check=False)
    if probe.stdout.strip() != "True":
        print(f"NOTE: --kstreamlet-record-cache-bytes {cache_bytes} not applied: the measured kstreamlet has no "
              "setting record_cache_max_bytes", flush=True)
        info["kstreamlet_record_cache"] = "setting not available"
        return {}
    info["kstreamlet_record_cache"] = f"record_cache_max_bytes={cache_bytes}"
    from kstreamlet.config import ENV_PREFIX

    return {ENV_PREFIX + RECORD_CACHE_SETTING.upper(): str(cache_bytes)}


def _profile(suite: Suite, args: argparse.Namespace) -> dict[str, Any]:
    stats_path = suite.log_dir / "stateful-kstreamlet.prof"
    print("profile: kstreamlet under cProfile (not recorded in the table)", flush=True)
    run = suite.one_run("kstreamlet", "profile", restore=False, profile_out=stats_path)
    warm = getattr(args, "warmup_records", 0)
    common.write_profile(args.out, stats_path, [
        f"kstreamlet stateful word count, exactly_once, commit {COMMIT_INTERVAL} s, RocksDB + changelog, record cache "
        f"off, {args.records:,} lines x {WORDS_PER_LINE} words ({args.records * (1 + WORDS_PER_LINE):,} records processed)"
        + (f", first {warm:,} not profiled" if warm else "")], run)
    return run


def _cell(s: dict[str, float] | None, fmt: str = "{:,.0f}") -> str:
    if not s:
        return "—"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _report(args: argparse.Namespace, systems: list[str], runs: list[dict[str, Any]], restores: list[dict[str, Any]],
            info: dict[str, Any], profile_run: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    summary: dict[str, Any] = {}
    rows = []
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        good = [r for r in mine if r["status"] in ("OK", PARTIAL)]
        partial = sum(1 for r in good if r["status"] == PARTIAL)
        rate = common.summarize(r["rate"] for r in good)
        lines_rate = common.summarize(r["rate"] / (1 + WORDS_PER_LINE) for r in good)
        secs = common.summarize(r["seconds"] for r in good)
        fin = common.summarize(r["seconds_to_final_commit"] for r in good if r.get("seconds_to_final_commit"))
        cpu = common.summarize(r["cpu_us_per_record"] for r in good)
        busy = common.summarize(r["machine_busy_pct"] for r in good if r.get("machine_busy_pct") is not None)
        rs = [r for r in restores if r["system"] == system]
        rgood = [r for r in rs if r["status"] == "OK"]
        rrate = common.summarize(r["rate"] for r in rgood)
        rsecs = common.summarize(r["seconds"] for r in rgood)
        rrecs = common.summarize(r["records"] for r in rgood)
        outs = common.summarize(r["verify"]["output_records"] for r in good if r.get("verify"))
        broker = common.summarize(r["broker_machine_pct"] for r in good if r.get("broker_machine_pct") is not None)
        summary[system] = {"output_records": outs, "broker_machine_pct": broker, "rate": rate, "lines_per_second": lines_rate, "seconds": secs, "seconds_to_final_commit": fin,
                           "cpu_us_per_record": cpu, "machine_busy_pct": busy, "ok_runs": len(good) - partial,
                           "partial_runs": partial, "wrong_runs": len(mine) - len(good), "restore_rate": rrate, "restore_seconds": rsecs,
                           "restore_records": rrecs, "restore_ok": len(rgood), "restore_failed": len(rs) - len(rgood)}
        wrong = len(mine) - len(good)
        rows.append([system, _cell(rate) + (f" ({partial} partial)" if partial else "") + (f" **{wrong} WRONG**" if wrong else ""),
                     "", _cell(lines_rate),
                     _cell(secs, "{:.2f}"), _cell(fin, "{:.2f}"), _cell(cpu, "{:.1f}"), _cell(busy, "{:.0f}%"),
                     _cell(outs), _cell(broker, "{:.0f}%"), f"{len(good)}/{len(mine)}",
                     _cell(rrate) + (f" ({len(rs) - len(rgood)} failed)" if len(rs) > len(rgood) else ""),
                     _cell(rrecs), _cell(rsecs, "{:.2f}")])

    def ratio(key: str) -> float | None:
        k, q = summary.get("kstreamlet", {}).get(key), summary.get("quix", {}).get(key)
        return k["median"] / q["median"] if k and q and q["median"] else None

    ratios = {"rate": ratio("rate"), "cpu_us_per_record": ratio("cpu_us_per_record"),
              "restore_rate": ratio("restore_rate"), "restore_seconds": ratio("restore_seconds")}
    summary["ratios_kstreamlet_over_quix"] = ratios
    k_rate = (summary.get("kstreamlet") or {}).get("rate")
    over_k = {sy: (summary[sy]["rate"]["median"] / k_rate["median"] if k_rate and summary[sy]["rate"] else None)
              for sy in systems}
    summary["ratios_over_kstreamlet"] = over_k
    for row, sy in zip(rows, systems):
        row[2] = "—" if over_k[sy] is None else f"{over_k[sy]:.2f}"
    header = ["system", "records/s median (min–max)", "÷ kstreamlet", "lines/s", "seconds", "s to final commit", "CPU µs/record",
              "box busy", "output records", "broker CPU (share of box)", "correct runs", "restore records/s", "changelog records restored", "restore seconds"]
    fr = lambda x, f="{:.2f}": "—" if x is None else f.format(x)
    per_run = common.md_table(
        ["system", "repeat", "records/s", "seconds", "s to final commit", "CPU µs/rec", "box busy", "broker CPU",
         "commits", "warm", "output records", "status"],
        [[r["system"], str(r["repeat"]), common.fmt_rate(r.get("rate")), fr(r.get("seconds")),
          fr(r.get("seconds_to_final_commit")), fr(r.get("cpu_us_per_record"), "{:.1f}"),
          fr(r.get("machine_busy_pct"), "{:.0f}%"), fr(r.get("broker_machine_pct"), "{:.0f}%"), str(r.get("commits", "—")),
          f"first {r['warmup_records']:,} excluded" if r.get("warmup_records") else "cold (from record 1)",
          f"{r['verify']['output_records']:,}" if r.get("verify") else "—", r["status"]] for r in runs])
    def stores(r: dict[str, Any]) -> str:
        logged = r.get("stores_logged")
        if not logged:
            return "—"
        return ", ".join(f"{d['records']}/{d['seconds']}" for d in sorted(logged, key=lambda d: d.get("partition") or 0))

    per_restore = common.md_table(
        ["system", "repeat", "changelog records", "seconds", "records/s", "CPU µs/rec",
         "kstreamlet's log per store partition (records/seconds)", "status"],
        [[r["system"], str(r["repeat"]), f"{r['records']:,}" if r.get("records") is not None else "—", fr(r.get("seconds")),
          common.fmt_rate(r.get("rate")), fr(r.get("cpu_us_per_record"), "{:.1f}"), stores(r), r["status"]]
         for r in restores]
    ) if restores else "(no restore runs)"
    q = info.get("quix") or {}
    f, ks = info.get("faust") or {}, info.get("kafka_streams") or {}
    other = []
    if f:
        other.append(f"- Faust (faust-streaming) {f.get('faust_streaming')} (own virtualenv: aiokafka {f.get('aiokafka')}, "
                     f"rocksdict {f.get('rocksdict') or 'not installed: memory store'}): agent `split` sends each word keyed "
                     "by itself to a repartition topic (`<app id>-words-repartition`), agent `count` updates a `Table` "
                     "(RocksDB store, changelog) and sends (word, int64 count); commit on the timer only "
                     f"(`broker_commit_interval` {COMMIT_INTERVAL} s); counted in the agent loops. Bounded by time: a run still "
                     f"going {getattr(args, 'faust_timeout', 0):g} s after its first record is stopped there (gracefully), its rate "
                     "is what it processed by then ÷ that time, and it is **partial (timed)** if its committed output is "
                     "consistent (every word's outputs exactly 1, 2, …, k in order, k ≤ its true count); partial runs count in "
                     "the medians, marked. Restore timed from `Recovery.on_rebalance` to `on_recovery_completed`")
    if ks:
        other.append(f"- Kafka Streams {ks.get('kafka_streams')} (Java {ks.get('java')}, {ks.get('jvm_options', '')}): "
                     "`flatMapValues` → `groupBy` → `count()` (RocksDB, changelog), `kafka_streams` 1 stream thread, "
                     "`kafka_streams_2t` 2; its own timing and restore hooks (see bench/kstreams)"
                     if "error" not in ks else f"- Kafka Streams not run: {ks['error']}")
    other_lines = "\n".join(other)
    ratio_lines = (
        f"- **kstreamlet / Quix: throughput {fr(ratios['rate'])}×, CPU per record {fr(ratios['cpu_us_per_record'])}×, "
        f"restore records/s {fr(ratios['restore_rate'])}×, restore seconds {fr(ratios['restore_seconds'])}×** (medians)"
        if "quix" in summary and "kstreamlet" in summary else "")
    prof_line = (f"- a kstreamlet run under cProfile: `bench/results/{args.out}-profile.txt` "
                 f"({profile_run.get('rate', 0):,.0f} records/s under the profiler, {profile_run['status']})"
                 if profile_run else "")
    cmd = f"python -m bench stateful --records {args.records} --repeats {args.repeats}"
    if args.kstreamlet_ref:
        cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
    if args.no_restore:
        cmd += " --no-restore"
    if args.profile:
        cmd += " --profile"
    if getattr(args, "warmup_records", 0):
        cmd += f" --warmup-records {args.warmup_records}"
    if getattr(args, "workers", 1) != 1:
        cmd += f" --workers {args.workers}"
    if getattr(args, "kstreamlet_record_cache_bytes", None) is not None:
        cmd += f" --kstreamlet-record-cache-bytes {args.kstreamlet_record_cache_bytes}"
    if args.systems != ",".join(DEFAULT_SYSTEMS):
        cmd += f" --systems {args.systems}"
    warm = getattr(args, "warmup_records", 0)
    fair = [
        f"- **warm: first {warm:,} records of every measured run excluded** (kstreamlet, Quix, Kafka Streams: the clock "
        f"starts once {warm:,} records are processed, in the same process/JVM as the measured part)" if warm else
        "- cold: each measured run is timed from its first record (a fresh process / JVM; only the unrecorded warm-up "
        "run before it warmed the OS caches and the broker, not the JIT); use `--warmup-records N` for steady state",
        "- output records: what each system wrote to the output topic for the same input (Kafka Streams' record cache "
        "(default 10 MB) emits only the latest count per word per commit; `kafka_streams_nocache` runs with "
        "`statestore.cache.max.bytes=0`, one update per input word as kstreamlet)",
        f"- kstreamlet record cache: {info.get('kstreamlet_record_cache', 'not set (the default of the measured kstreamlet)')}",
        "- broker CPU: the broker JVM's utime+stime (/proc/<pid>/stat, sampled every 0.1 s) in the run's timed window, "
        f"as a share of all {info['nproc']} CPUs' time (the broker and the workers share them)",
    ]
    if "kstreamlet_2w" in systems:
        fair.append("- `kstreamlet_2w`: kstreamlet as 2 worker processes in one group, started together (each its own "
                    "state dir); window from the first worker's first record to the last worker's last record, the "
                    "group's initial rebalance included; CPU µs/record = both workers' CPU ÷ 6 N")
    fair_lines = "\n".join(fair)
    md = f"""# Stateful benchmark: word count, exactly-once, RocksDB + changelog — {' vs '.join(systems)}

`{cmd}`

- date: {info['date']}
- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}, at end {', '.join(f'{x:.2f}' for x in info['loadavg_at_end'])}
- kstreamlet: {info['source']} (HEAD {info['git_head']}{', kstreamlet/ has uncommitted changes' if info.get('kstreamlet_dirty') else ''}), source fingerprint {', '.join(info['kstreamlet_fingerprints']) or '—'}{' **(changed during the run: results mix code versions)**' if len(info['kstreamlet_fingerprints']) > 1 else ''}; confluent-kafka {info['confluent_kafka']}, librdkafka {info['librdkafka']}
- Quix Streams {q.get('quixstreams', '—')} (own virtualenv: confluent-kafka {q.get('confluent_kafka', '—')}, librdkafka {q.get('librdkafka', '—')})
{other_lines}
- Kafka {info['kafka_version']} ({info['broker_backend']} broker, same machine), Python {info['python']}
- input: {args.records:,} lines, each {WORDS_PER_LINE} words drawn uniformly from a {VOCABULARY}-word vocabulary (seed {args.seed}), {PARTITIONS} partitions, loaded once; both systems read all of it from the beginning
- topology (both): split lines into words → repartition by word through an internal topic (kstreamlet `key_by(..., name="words")`, Quix `group_by(..., name="words")`) → per-word count in RocksDB state with a changelog topic (kstreamlet `count()`, Quix `apply(count, stateful=True)` with `State.get/set`) → (word → running count, 8-byte big-endian) to a fresh {PARTITIONS}-partition output topic
- exactly-once (kstreamlet `processing_guarantee="exactly_once"`, Quix `"exactly-once"`), commit interval {COMMIT_INTERVAL} s, one process, fresh consumer group / application id and fresh temp state dir per run; consumer `fetch.queue.backoff.ms=10` for both (kstreamlet's default; Quix via `consumer_extra_config`)
- **timing, the same method for both:** in the worker, from the first consumed record reaching the processing code to the moment the worker has processed {1 + WORDS_PER_LINE} × N records (N input lines + {WORDS_PER_LINE} N repartitioned words; under exactly-once the words are only readable after the commit that wrote them, so commits are on the critical path); start-up and group join excluded. kstreamlet: a per-batch listener hook (bench/hooks.py); Quix: its `on_message_processed` callback. records/s counts both kinds of records; lines/s = records/s ÷ {1 + WORDS_PER_LINE}. "s to final commit" = until the commit that makes the last output visible
- verification: the output topic read back `read_committed`; the last value of every word must equal its true count (all {VOCABULARY} words); otherwise the run is WRONG and not counted
- restore: after each measured run the same system is started again on the same application id / consumer group with the state dir wiped, and restores its store from the changelog; timed from partition assignment (kstreamlet `_on_assign`; Quix the start of `do_recovery`) until every store partition is restored. The changelog holds one record per word updated per commit (both systems write the changelog once per key per checkpoint), so its size depends on how many commits the run took
- CPU µs/record = the worker process's CPU time (all threads) in the timed window per record; box busy = whole-machine CPU utilisation ({info['nproc']} CPUs, broker included) in that window
- {args.repeats} repeats per system, order alternating; total wall time {info['wall_seconds']:.0f} s
{fair_lines}
{ratio_lines}
{prof_line}

{common.md_table(header, rows)}

## All runs

{per_run}

## Restore runs

{per_restore}
"""
    return md, summary
