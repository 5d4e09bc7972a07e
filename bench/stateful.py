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
SYSTEMS = ("kstreamlet", "quix", "faust", "kafka_streams", "kafka_streams_2t")
#: Python workers (``python -m bench _worker stateful --system ...``, each with its own python)
WORKER_SYSTEMS = ("kstreamlet", "quix", "faust")
KAFKA_STREAMS_THREADS = {"kafka_streams": 1, "kafka_streams_2t": 2}
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
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--no-restore", action="store_true", help="skip the restore runs")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the unrecorded warm-up run of each system (20k lines) before measuring")
    p.add_argument("--profile", action="store_true",
                   help="also run kstreamlet once under cProfile -> results/<out>.profile.txt")
    p.add_argument("--quix-python", default=None,
                   help=f"python of a virtualenv with quixstreams (default {DEFAULT_QUIX_VENV}/bin/python, created if missing)")
    faust_worker.add_timeout_argument(p)
    common.add_source_argument(p)
    p.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'stateful')")


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


def load_lines(bootstrap: str, topic: str, records: int, seed: int) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "none", "partitioner": "murmur2_random",
                  "queue.buffering.max.messages": 500_000})
    t0 = time.monotonic()
    for i, line in enumerate(lines(records, seed)):
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
    return w


def worker(argv: list[str]) -> int:
    a = _worker_parser().parse_args(argv)
    probe = common.Probe(a.target)
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
              commit_interval=COMMIT_INTERVAL, instance_id="bench-0", state_dir=a.state_dir, state_backend="rocksdb")
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
            if probe.t_first is None:
                probe.first()
                if prof is not None:
                    prof.enable()

        def on_batch(self, m: Any, msgs: list[Any], processed: int) -> None:
            control["n"] += sum(1 for r in msgs if r.value() is None)
            data = m.records_processed - control["n"]
            if data >= target and probe.t_last is None:
                if prof is not None:
                    prof.disable()
                probe.last(data)
                m.stop()

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()

    m = hooks.member(app, Probe())
    timer = threading.Timer(a.timeout, m.stop)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
    facts["control_records"] = control["n"]
    if prof is not None:
        prof.dump_stats(a.profile_out)


def _kstreamlet_restore(a: argparse.Namespace, facts: dict[str, Any]) -> dict[str, Any]:
    from bench import hooks

    app = _kstreamlet_app(a, facts)
    t: dict[str, float] = {}

    class Probe(hooks.Hooks):
        def on_assigned(self, m: Any, partitions: list[Any], restoring: list[str]) -> None:
            if "start" not in t:
                t["start"] = time.monotonic()
                t["cpu_start"] = common.cpu_seconds()
            if m.restorer is not None and not m.restorer.active and "end" not in t:
                t["end"] = time.monotonic()  # nothing to restore
                m.stop()

        def on_task_restored(self, m: Any, task_id: str) -> None:
            if m.restorer is not None and not m.restorer.active and "start" in t and "end" not in t:
                t["end"] = time.monotonic()
                t["cpu_end"] = common.cpu_seconds()
                m.stop()

    m = hooks.member(app, Probe())
    timer = threading.Timer(a.timeout, m.stop)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
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
                 log_dir: Path, kstreamlet_dir: Path, pythons: dict[str, str]) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.in_topic = in_topic
        self.expected = expected
        self.log_dir = log_dir
        self.kstreamlet_dir = kstreamlet_dir
        self.pythons = pythons
        self.runs: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []

    def one_run(self, system: str, rep: int | str, restore: bool, verify: bool = True,
                profile_out: Path | None = None) -> dict[str, Any]:
        a = self.args
        lines_n = a.records if rep != "warmup" else min(a.records, 2_000 if system == "faust" else 20_000)
        target = lines_n * (1 + WORDS_PER_LINE)
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
            outcome = self._kafka_streams(system, "run", group, out_topic, state_dir, target, timeout, log_path)
        else:
            argv = ["--system", system, "--bootstrap", self.bootstrap, "--in-topic", self.in_topic,
                    "--out-topic", out_topic, "--group", group, "--state-dir", str(state_dir),
                    "--target", str(target), "--timeout", str(timeout), "--commit-interval", str(COMMIT_INTERVAL)]
            if profile_out:
                argv += ["--profile-out", str(profile_out)]
            outcome = common.run_worker_with(self.pythons[system], NAME, argv, timeout + 120, log_path,
                                             self.kstreamlet_dir)
        res = dict(outcome.result or {})
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
            line += (f"{res['rate']:>9,.0f} rec/s ({res['rate'] / (1 + WORDS_PER_LINE):>7,.0f} lines/s)  "
                     f"{res['seconds']:6.2f} s  cpu {res.get('cpu_us_per_record') or 0:5.1f} us/rec  "
                     f"box {res.get('machine_busy_pct') or 0:3.0f}%  commits {res.get('commits', 0):>3}  wall {outcome.wall_seconds:5.1f} s")
            if partial:
                line += f"  ({res['processed']:,} of {target:,} in the time limit)"
        line += f"  {status}"
        print(line, flush=True)
        if status not in ("OK", PARTIAL) and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        if restore and res.get("ok") and status in ("OK", PARTIAL):
            self.restores.append(self.restore_run(system, rep, group, out_topic, state_dir))
        shutil.rmtree(state_dir, ignore_errors=True)
        try:
            common.delete_run_topics(self.bootstrap, group, [out_topic])
        except Exception as e:  # noqa: BLE001 -- best effort; the broker's temp dir goes away anyway
            run["delete_error"] = repr(e)
        return run

    def _kafka_streams(self, system: str, mode: str, group: str, out_topic: str, state_dir: Path, target: int,
                       timeout: float, log_path: Path) -> common.WorkerOutcome:
        from bench import kafka_streams  # type: ignore[attr-defined]

        cmd = kafka_streams.command("wordcount", bootstrap=self.bootstrap, application_id=group, in_topic=self.in_topic,
                                    out_topic=out_topic, state_dir=str(state_dir), guarantee="exactly_once",
                                    commit_interval_ms=int(COMMIT_INTERVAL * 1000), target=target,
                                    timeout_s=int(timeout), threads=KAFKA_STREAMS_THREADS[system], mode=mode)
        return common.run_command(cmd, timeout + 60, log_path, cwd=state_dir.parent)

    def restore_run(self, system: str, rep: int | str, group: str, out_topic: str, state_dir: Path) -> dict[str, Any]:
        shutil.rmtree(state_dir, ignore_errors=True)  # the state is wiped: everything comes from the changelog
        state_dir.mkdir(parents=True)
        tag = f"{system}-r{rep}-restore"
        log_path = self.log_dir / f"{tag}.log"
        if system in KAFKA_STREAMS_THREADS:
            outcome = self._kafka_streams(system, "restore", group, out_topic, state_dir, 0, 300, log_path)
        else:
            argv = ["--system", system, "--mode", "restore", "--bootstrap", self.bootstrap, "--in-topic", self.in_topic,
                    "--out-topic", out_topic, "--group", group, "--state-dir", str(state_dir),
                    "--target", "0", "--timeout", "300", "--commit-interval", str(COMMIT_INTERVAL)]
            outcome = common.run_worker_with(self.pythons[system], NAME, argv, 420, log_path, self.kstreamlet_dir)
        res = {k: v for k, v in (outcome.result or {}).items() if k != "system"}
        status = "OK"
        if outcome.timed_out:
            status = "FAILED: worker timed out"
        elif outcome.rc != 0 or not res.get("ok"):
            status = f"FAILED: rc={outcome.rc}, {res.get('error', 'no result')}"
        r = {**res, "system": system, "repeat": rep, "worker_rc": outcome.rc,
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
    systems = [s for s in SYSTEMS if s in set(args.systems.split(","))]
    if not systems:
        raise SystemExit(f"no known system in --systems {args.systems!r}")
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
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
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        in_topic = common.unique("bench-stateful-in")
        common.create_topic(bootstrap, in_topic, PARTITIONS)
        load_s = load_lines(bootstrap, in_topic, args.records, args.seed)
        print(f"loaded input {in_topic}: {args.records:,} lines in {load_s:.1f} s", flush=True)
        suite = Suite(args, bootstrap, in_topic, expected, log_dir, ks_dir, pythons)
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


def _profile(suite: Suite, args: argparse.Namespace) -> dict[str, Any]:
    import io
    import pstats

    stats_path = suite.log_dir / "stateful-kstreamlet.prof"
    print("profile: kstreamlet under cProfile (not recorded in the table)", flush=True)
    run = suite.one_run("kstreamlet", "profile", restore=False, profile_out=stats_path)
    buf = io.StringIO()
    if stats_path.exists():
        st = pstats.Stats(str(stats_path), stream=buf)
        st.strip_dirs().sort_stats("tottime").print_stats(30)
        buf.write("\n--- by cumulative time ---\n")
        st.sort_stats("cumulative").print_stats(40)
    text = (f"kstreamlet stateful word count, exactly_once, commit {COMMIT_INTERVAL} s, RocksDB + changelog, "
            f"{args.records:,} lines x {WORDS_PER_LINE} words ({args.records * (1 + WORDS_PER_LINE):,} records processed)\n"
            "under cProfile (rates are lowered by profiling overhead)\n"
            f"run: {run.get('rate', 0):,.0f} rec/s, {run.get('seconds', 0):.2f} s, status {run['status']}\n"
            "profiled over the timed window only (first consumed batch to last processed record):\n\n"
            + buf.getvalue())
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = common.RESULTS_DIR / f"{args.out}.profile.txt"
    path.write_text(text)
    print("\n".join(text.splitlines()[:45]))
    print(f"written {path}")
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
        summary[system] = {"rate": rate, "lines_per_second": lines_rate, "seconds": secs, "seconds_to_final_commit": fin,
                           "cpu_us_per_record": cpu, "machine_busy_pct": busy, "ok_runs": len(good) - partial,
                           "partial_runs": partial, "wrong_runs": len(mine) - len(good), "restore_rate": rrate, "restore_seconds": rsecs,
                           "restore_records": rrecs, "restore_ok": len(rgood), "restore_failed": len(rs) - len(rgood)}
        wrong = len(mine) - len(good)
        rows.append([system, _cell(rate) + (f" ({partial} partial)" if partial else "") + (f" **{wrong} WRONG**" if wrong else ""),
                     "", _cell(lines_rate),
                     _cell(secs, "{:.2f}"), _cell(fin, "{:.2f}"), _cell(cpu, "{:.1f}"), _cell(busy, "{:.0f}%"),
                     f"{len(good)}/{len(mine)}",
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
              "box busy", "correct runs", "restore records/s", "changelog records restored", "restore seconds"]
    fr = lambda x, f="{:.2f}": "—" if x is None else f.format(x)
    per_run = common.md_table(
        ["system", "repeat", "records/s", "seconds", "s to final commit", "CPU µs/rec", "box busy", "commits",
         "output records", "status"],
        [[r["system"], str(r["repeat"]), common.fmt_rate(r.get("rate")), fr(r.get("seconds")),
          fr(r.get("seconds_to_final_commit")), fr(r.get("cpu_us_per_record"), "{:.1f}"),
          fr(r.get("machine_busy_pct"), "{:.0f}%"), str(r.get("commits", "—")),
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
    prof_line = (f"- a kstreamlet run under cProfile: `bench/results/{args.out}.profile.txt` "
                 f"({profile_run.get('rate', 0):,.0f} records/s under the profiler, {profile_run['status']})"
                 if profile_run else "")
    cmd = f"python -m bench stateful --records {args.records} --repeats {args.repeats}"
    if args.kstreamlet_ref:
        cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
    if args.no_restore:
        cmd += " --no-restore"
    if args.profile:
        cmd += " --profile"
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
{ratio_lines}
{prof_line}

{common.md_table(header, rows)}

## All runs

{per_run}

## Restore runs

{per_restore}
"""
    return md, summary
