"""Window scenario: event-time tumbling 10 s (count, sum) per sensor, final results only — kstreamlet vs Quix Streams vs Kafka Streams.

Input (see bench/SCENARIOS.md): N int64 readings of 1,000 sensors (key ``s0000``..``s0999``,
murmur2-partitioned, so no repartition), CreateTime ``T0 + i`` minus up to 500 ms of jitter,
then one ``__flush__`` record per partition 60 s of event time later, which closes every
window. Each system aggregates (count, sum) per (sensor, 10 s window) with 1 s of
out-of-orderness / grace and emits only the final result of each window
(``<sensor>@<window_start>`` → count and sum as two big-endian int64), exactly-once,
commit 1 s, RocksDB state with a changelog.

- kstreamlet: ``stream.keyed().window(TumblingEventTimeWindows.of(10_000)).aggregate(...)``
  with ``WatermarkStrategy.for_bounded_out_of_orderness(1000)`` (its default event-time
  trigger fires once, when the watermark passes the window end);
- Quix Streams: ``sdf.tumbling_window(10_000, grace_ms=1000).agg(count=Count(), sum=Sum())
  .final(closing_strategy="partition")`` on the record timestamps (the default "key" strategy
  closes a key's windows only on that key's next record, so the flush record could not close
  them);
- Kafka Streams: ``groupByKey().windowedBy(TimeWindows.ofSizeAndGrace(10 s, 1 s)).aggregate(...)
  .suppress(untilWindowCloses(...))`` (bench/kstreams, via bench/kafka_streams.py).

Timing as in bench/stateful.py: in the worker, from the first consumed record reaching the
processing code to N + 6 records processed. The output is read back ``read_committed``:
exactly one record per (sensor, window) of the input with the true count and sum, else WRONG.

This module also holds the machinery shared with bench/join.py (:class:`ThroughputSuite`,
:func:`throughput_report`, the worker-side runners).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common

NAME = "window"
PARTITIONS = 6
SYSTEMS = ("kstreamlet", "quix", "kafka_streams")
COMMIT_INTERVAL = 1.0
SENSORS = 1000
T0 = 1_700_000_000_000
WINDOW_MS = 10_000
GRACE_MS = 1_000
JITTER_MS = 500
FLUSH_KEY = b"__flush__"
FLUSH_AFTER_MS = 60_000
DEFAULT_RECORDS = 200_000
WARMUP_RECORDS = 20_000
#: As in bench/stateful.py: both Python consumers keep fetching while their queue drains.
CONSUMER_CONFIG = {"fetch.queue.backoff.ms": 10}
#: ``python -m bench all --quick``.
QUICK_ARGS = ["--records", "20000", "--repeats", "1"]

_PAIR = struct.Struct(">qq")
_I64 = struct.Struct(">q")


def add_arguments(p: argparse.ArgumentParser, default_records: int = DEFAULT_RECORDS, name: str = NAME) -> None:
    p.add_argument("--records", type=int, default=default_records, help=f"input records (default {default_records:,})")
    p.add_argument("--repeats", type=int, default=3, help="runs per system, interleaved (default 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--no-warmup", action="store_true",
                   help=f"skip the unrecorded warm-up run of each system ({WARMUP_RECORDS:,} records)")
    common.add_warmup_records_argument(p)
    common.add_profile_argument(p)
    p.add_argument("--quix-python", default=None,
                   help=f"python of a virtualenv with quixstreams (default {common.DEFAULT_QUIX_VENV}/bin/python, created if missing)")
    common.add_source_argument(p)
    p.add_argument("--out", default=name, help=f"results file stem under bench/results (default '{name}')")


# --- input ------------------------------------------------------------------------------------

def readings(records: int, seed: int) -> Any:
    """``(key, reading, timestamp)`` of the N input records (deterministic for ``seed``)."""
    rng = random.Random(seed)
    randrange, randint = rng.randrange, rng.randint
    for i in range(records):
        yield b"s%04d" % randrange(SENSORS), randrange(-1_000_000, 1_000_001), T0 + i - randint(0, JITTER_MS)


def new_producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    # murmur2: Java-compatible for non-null keys, so Kafka Streams and the Python systems agree
    # on where a key lives (the input is consumed keyed by its record key, without repartition).
    # Idempotence keeps each partition in produce order even when a batch is retried: without
    # it a retried batch can land behind later ones, and its records become late (dropped).
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": 20, "batch.size": 1_000_000,
                     "compression.type": "none", "partitioner": "murmur2",
                     "queue.buffering.max.messages": 500_000})


class OrderCheck:
    """Delivery callback checking that each partition's offsets follow the produce order
    (records produced in order ``seq``): the scenarios' timestamps rely on it."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, int], tuple[int, int]] = {}  # (topic, partition) -> (seq, offset)
        self.errors: list[str] = []
        self.out_of_order = 0

    def callback(self, seq: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
                return
            tp = (msg.topic(), msg.partition())
            prev = self.last.get(tp)
            if prev is not None and (prev[0] < seq) != (prev[1] < msg.offset()):
                self.out_of_order += 1
            if prev is None or seq > prev[0]:
                self.last[tp] = (seq, msg.offset())

        return on_delivery

    def check(self) -> None:
        if self.errors or self.out_of_order:
            raise RuntimeError(f"input not loaded in order: {self.out_of_order} records out of order, "
                               f"delivery errors {self.errors[:3]}")


def produce(p: Any, topic: str, value: bytes, key: bytes, timestamp: int, partition: int = -1,
            on_delivery: Any = None) -> None:
    while True:
        try:
            p.produce(topic, value, key, partition=partition, timestamp=timestamp, on_delivery=on_delivery)
            return
        except BufferError:
            p.poll(0.05)


def load_readings(bootstrap: str, topic: str, records: int, seed: int) -> tuple[float, dict[tuple[bytes, int], list[int]]]:
    """Produce the input (with the flush records); return (seconds, true (count, sum) per (sensor, window start))."""
    p = new_producer(bootstrap)
    order = OrderCheck()
    expected: dict[tuple[bytes, int], list[int]] = {}
    max_ts = 0
    t0 = time.monotonic()
    for i, (key, v, ts) in enumerate(readings(records, seed)):
        produce(p, topic, _I64.pack(v), key, ts, on_delivery=order.callback(i))
        w = (key, ts - ts % WINDOW_MS)
        acc = expected.get(w)
        if acc is None:
            expected[w] = [1, v]
        else:
            acc[0] += 1
            acc[1] += v
        max_ts = max(max_ts, ts)
        if i % 10_000 == 0:
            p.poll(0)
    for part in range(PARTITIONS):
        produce(p, topic, _I64.pack(0), FLUSH_KEY, max_ts + FLUSH_AFTER_MS, partition=part,
                on_delivery=order.callback(records + part))
    if p.flush(120):
        raise RuntimeError("input records not acknowledged")
    order.check()
    return time.monotonic() - t0, expected


def verify_windows(bootstrap: str, topic: str, expected: dict[tuple[bytes, int], list[int]]) -> dict[str, Any]:
    def key_of(k: bytes) -> tuple[bytes, int]:
        sensor, start = k.split(b"@")
        return sensor, int(start)

    return common.verify_exact(
        common.read_topic(bootstrap, topic, PARTITIONS), {w: tuple(e) for w, e in expected.items()}, "windows",
        key_of=key_of, value_of=lambda v: _PAIR.unpack(v) if v is not None and len(v) == 16 else v,
        is_flush=lambda k: k is not None and k.startswith(FLUSH_KEY),
        show=lambda k, got, exp: f"{k.decode()}: got {got!r}, expected {exp}")


# --- worker side (shared with bench/join.py) ------------------------------------------------------

def worker_parser(name: str, systems: tuple[str, ...]) -> argparse.ArgumentParser:
    w = argparse.ArgumentParser(prog=f"bench _worker {name}")
    w.add_argument("--system", choices=systems, required=True)
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--in-topic", required=True)
    w.add_argument("--in-topic2")
    w.add_argument("--out-topic", required=True)
    w.add_argument("--group", required=True)
    w.add_argument("--state-dir", required=True)
    w.add_argument("--target", type=int, required=True)
    w.add_argument("--timeout", type=float, default=600.0)
    common.add_worker_measure_arguments(w)
    return w


def kstreamlet_facts(facts: dict[str, Any]) -> None:
    import kstreamlet

    pkg = Path(kstreamlet.__file__).parent
    facts.update(kstreamlet_dir=str(pkg), kstreamlet_fingerprint=common.source_fingerprint(pkg))


def kstreamlet_app(a: argparse.Namespace) -> Any:
    from kstreamlet import App

    return App(application_id=a.group, bootstrap_servers=a.bootstrap, processing_guarantee="exactly_once",
               commit_interval=COMMIT_INTERVAL, instance_id="bench-0", state_dir=a.state_dir,
               state_backend="rocksdb", kafka_config=dict(CONSUMER_CONFIG))


def run_kstreamlet_to_target(app: Any, probe: common.Probe, target: int, timeout: float,
                             profile_out: str | None = None) -> None:
    """Run ``app`` in a Member with a per-batch probe until ``target`` input records are processed
    (the clock starts after ``probe.warmup`` records; ``profile_out``: cProfile over the timed window)."""
    from kstreamlet.logging import configure_logging
    from bench import hooks

    configure_logging(app.settings.log_level)
    prof = common.WorkerProfiler(profile_out)

    class Probe(hooks.Hooks):
        """One extra call per batch and per commit (as in bench/stateless.py)."""

        def before_batch(self, m: Any, msgs: list[Any]) -> None:
            if probe.t_first is None and not probe.warmup:
                probe.first()
                prof.start()

        def on_batch(self, m: Any, msgs: list[Any], processed: int) -> None:
            if probe.t_first is None:
                probe.progress(m.records_processed)  # --warmup-records: the clock starts after that many
                if probe.t_first is not None:
                    prof.start()
            if m.records_processed >= target and probe.t_last is None:
                prof.stop()
                probe.last(m.records_processed)
                m.stop()

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()

    m = hooks.member(app, Probe())
    timer = threading.Timer(timeout, m.stop)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
    prof.dump()


def quix_application(a: argparse.Namespace, facts: dict[str, Any], **kwargs: Any) -> Any:
    import quixstreams  # type: ignore[import-not-found]
    from quixstreams import Application  # type: ignore[import-not-found]

    facts["quixstreams"] = quixstreams.__version__
    return Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                       commit_interval=COMMIT_INTERVAL, processing_guarantee="exactly-once", state_dir=a.state_dir,
                       consumer_extra_config=dict(CONSUMER_CONFIG), loglevel="INFO", **kwargs)


def worker_main(argv: list[str], name: str, systems: tuple[str, ...],
                runners: dict[str, Callable[[argparse.Namespace, common.Probe, dict[str, Any]], None]]) -> int:
    a = worker_parser(name, systems).parse_args(argv)
    probe = common.Probe(a.target, warmup=a.warmup_records)
    facts: dict[str, Any] = {"system": a.system}
    try:
        runners[a.system](a, probe, facts)
    except BaseException as e:
        common.emit_result(probe.result(error=repr(e), **facts) | {"ok": False})
        raise
    common.emit_result(probe.result(**facts))
    return 0


# --- this scenario's workers ------------------------------------------------------------------------

class _CountSum:
    """(count, sum) as an AggregateFunction."""

    def create_accumulator(self) -> list[int]:
        return [0, 0]

    def add(self, value: int, acc: list[int]) -> list[int]:
        acc[0] += 1
        acc[1] += value
        return acc

    def get_result(self, acc: list[int]) -> list[int]:
        return acc

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], a[1] + b[1]]


def _kstreamlet_window(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    from kstreamlet import serdes
    from kstreamlet.eventtime import WatermarkStrategy
    from kstreamlet.serdes import Serde
    from kstreamlet.windowing import TumblingEventTimeWindows

    kstreamlet_facts(facts)
    app = kstreamlet_app(a)
    pair = Serde("count-sum", lambda acc: _PAIR.pack(*acc), lambda raw: list(_PAIR.unpack(raw)))

    def result(key: bytes, w: Any, acc: list[int], out: Callable[[Any], None]) -> None:
        out((key + b"@" + str(w.start).encode(), _PAIR.pack(*acc)))

    def rekey(v: tuple[bytes, bytes], ctx: Any) -> None:
        ctx.emit(v[1], key=v[0])

    (app.stream(a.in_topic, key_serde=serdes.BYTES, value_serde=serdes.INT64,
                watermarks=WatermarkStrategy.for_bounded_out_of_orderness(GRACE_MS))
        .keyed()
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .aggregate(_CountSum(), accumulator_serde=pair, name="sensor-windows", window_fn=result)
        .process(rekey, name="rekey")
        .to(a.out_topic, key_serde=serdes.BYTES, value_serde=serdes.BYTES))
    run_kstreamlet_to_target(app, probe, a.target, a.timeout, a.profile_out)


def _quix_window(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    from quixstreams.dataframe.windows.aggregations import Count, Sum  # type: ignore[import-not-found]
    from quixstreams.models.serializers import Deserializer, Serializer  # type: ignore[import-not-found]

    class Int64(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> int:
            return _I64.unpack(value)[0]

    class Pair(Serializer):
        """The (key, 16-byte value) pair built below: its value part."""

        def __call__(self, value: tuple[bytes, bytes], ctx: Any) -> bytes:
            return value[1]

    def build(**kw: Any) -> Any:
        app = quix_application(a, facts, **kw)
        in_t = app.topic(a.in_topic, key_deserializer="bytes", value_deserializer=Int64())
        out_t = app.topic(a.out_topic, key_serializer="bytes", value_serializer=Pair())
        sdf = app.dataframe(in_t)
        sdf = (sdf.tumbling_window(WINDOW_MS, grace_ms=GRACE_MS, name="sensor-windows")
               .agg(count=Count(), sum=Sum())
               .final(closing_strategy="partition"))
        sdf = sdf.apply(lambda v, key, ts, headers: (key + b"@" + str(v["start"]).encode(),
                                                     _PAIR.pack(v["count"], v["sum"])), metadata=True)
        sdf.to_topic(out_t, key=lambda v: v[0])
        return app

    common.run_quix_to_target(build, probe, a.target, a.timeout)


def worker(argv: list[str]) -> int:
    return worker_main(argv, NAME, ("kstreamlet", "quix"), {"kstreamlet": _kstreamlet_window, "quix": _quix_window})


# --- parent side (shared with bench/join.py) ---------------------------------------------------------

@dataclass
class Scenario:
    """What a throughput scenario tells :class:`ThroughputSuite`."""

    name: str
    ks_scenario: str                      # Kafka Streams CLI scenario
    in_topics: list[str]
    target: int                           # input records of a full run
    warmup_target: int
    verify: Callable[[str], dict[str, Any]]  # out topic -> verification dict ("ok", "describe", "output_records")
    extra: dict[str, Any] = field(default_factory=dict)


def select_systems(args: argparse.Namespace, known: tuple[str, ...]) -> list[str]:
    systems = [s for s in known if s in set(args.systems.split(","))]
    if not systems:
        raise SystemExit(f"no known system in --systems {args.systems!r}")
    return systems


def prepare_systems(args: argparse.Namespace, systems: list[str], info: dict[str, Any]) -> tuple[list[str], dict[str, str], Any]:
    """Interpreters per Python system, the Kafka Streams module (or None); drops unavailable systems."""
    pythons = {"kstreamlet": sys.executable, "raw": sys.executable}
    ks = None
    if "quix" in systems:
        try:
            pythons["quix"] = common.quix_python(args.quix_python)
            info["quix"] = common.quix_versions(pythons["quix"])
        except (Exception, SystemExit) as e:  # noqa: BLE001 -- any failure: skip the system
            print(f"Quix Streams skipped: not usable ({e!r})", flush=True)
            info["quix_skipped"] = repr(e)
            systems = [s for s in systems if s != "quix"]
    if "kafka_streams" in systems:
        ks, versions, reason = common.kafka_streams_support()
        if ks is None:
            print(f"Kafka Streams skipped: {reason}", flush=True)
            info["kafka_streams_skipped"] = reason
            systems = [s for s in systems if s != "kafka_streams"]
        else:
            info["kafka_streams"] = versions
    return systems, pythons, ks


class ThroughputSuite:
    def __init__(self, args: argparse.Namespace, sc: Scenario, bootstrap: str, log_dir: Path, kstreamlet_dir: Path,
                 pythons: dict[str, str], ks: Any) -> None:
        self.args, self.sc, self.bootstrap = args, sc, bootstrap
        self.log_dir, self.kstreamlet_dir, self.pythons, self.ks = log_dir, kstreamlet_dir, pythons, ks
        self.runs: list[dict[str, Any]] = []
        self.profile_run: dict[str, Any] | None = None

    def _command(self, system: str, out_topic: str, group: str, state_dir: Path, target: int,
                 timeout: float, warmup: int = 0,
                 profile_out: Path | None = None) -> tuple[list[str], dict[str, str] | None, Path]:
        sc = self.sc
        if system == "kafka_streams":
            cmd = self.ks.command(sc.ks_scenario, bootstrap=self.bootstrap, application_id=group,
                                  in_topic=sc.in_topics[0], out_topic=out_topic, state_dir=str(state_dir),
                                  guarantee="exactly_once", commit_interval_ms=int(COMMIT_INTERVAL * 1000),
                                  target=target, timeout_s=int(timeout), warmup_records=warmup,
                                  in_topic2=sc.in_topics[1] if len(sc.in_topics) > 1 else None)
            return [str(c) for c in cmd], None, state_dir
        argv = ["--system", system, "--bootstrap", self.bootstrap, "--in-topic", sc.in_topics[0],
                "--out-topic", out_topic, "--group", group, "--state-dir", str(state_dir),
                "--target", str(target), "--timeout", str(timeout)]
        if len(sc.in_topics) > 1:
            argv += ["--in-topic2", sc.in_topics[1]]
        if warmup:
            argv += ["--warmup-records", str(warmup)]
        if profile_out:
            argv += ["--profile-out", str(profile_out)]
        cmd, env = common.python_worker_command(self.pythons[system], sc.name, argv)
        return cmd, env, self.kstreamlet_dir

    def one_run(self, system: str, rep: int | str, verify: bool = True,
                profile_out: Path | None = None) -> dict[str, Any]:
        sc = self.sc
        target = sc.warmup_target if rep == "warmup" else sc.target
        warm = getattr(self.args, "warmup_records", 0) if rep != "warmup" else 0
        if warm >= target:
            raise SystemExit(f"--warmup-records {warm} must be below the records processed per run ({target:,})")
        tag = f"{system}-r{rep}"
        out_topic = common.unique(f"bench-{sc.name}-out-{tag}")
        group = common.unique(f"bench-{sc.name}-{tag}")
        common.create_topic(self.bootstrap, out_topic, PARTITIONS)
        state_dir = Path(tempfile.mkdtemp(prefix=f"state-{tag}-", dir=self.log_dir))
        timeout = 120 + target / 2_000
        log_path = self.log_dir / f"{tag}.log"
        cmd, env, cwd = self._command(system, out_topic, group, state_dir, target, timeout, warm, profile_out)
        outcome = common.run_command(cmd, timeout + 60, log_path, cwd=cwd, env=env)
        res = dict(outcome.result or {})
        # The worker's own fields first: ours win (the Kafka Streams jar reports "system": "kafka-streams").
        run: dict[str, Any] = {**res, "system": system, "repeat": rep, "target_records": target,
                               "worker_rc": outcome.rc, "worker_wall_seconds": round(outcome.wall_seconds, 2),
                               "log": str(log_path)}
        status = "OK"
        if outcome.timed_out:
            status = "WRONG: worker timed out"
        elif outcome.rc != 0 or not res.get("ok"):
            status = f"WRONG: worker failed (rc={outcome.rc}, {res.get('error', 'no result')})"
        if verify and rep != "warmup":
            ver = sc.verify(out_topic)
            run["verify"] = ver
            if status == "OK" and not ver["ok"]:
                status = ver["describe"]
        run["status"] = status
        line = f"  {tag:<26} "
        if res.get("ok"):
            busy = res.get("machine_busy_pct")
            line += (f"{res['rate']:>9,.0f} rec/s  {res['seconds']:6.2f} s  cpu {res.get('cpu_us_per_record') or 0:6.1f} us/rec  "
                     f"box {busy or 0:3.0f}%  commits {res.get('commits', 0):>3}  wall {outcome.wall_seconds:5.1f} s")
            if res.get("warmup_records"):
                line += f"  (warm: first {res['warmup_records']:,} excluded)"
        line += f"  {status}"
        print(line, flush=True)
        if status != "OK" and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        try:
            common.delete_run_topics(self.bootstrap, group, [out_topic])
        except Exception as e:  # noqa: BLE001 -- best effort
            run["delete_error"] = repr(e)
        return run

    def run_all(self, systems: list[str]) -> None:
        a = self.args
        if not a.no_warmup and a.repeats > 0:
            print("warm-up (not recorded):", flush=True)
            for system in systems:
                self.one_run(system, "warmup", verify=False)
        if a.repeats > 0:
            print("measured runs:", flush=True)
        for rep in range(a.repeats):
            # Rotate the order so no system is always first (or always right after another).
            k = rep % len(systems)
            order = systems[k:] + systems[:k]
            if rep % 2:
                order = list(reversed(order))
            for system in order:
                self.runs.append(self.one_run(system, rep + 1))
        if getattr(a, "profile", False) and "kstreamlet" in systems:
            stats = self.log_dir / f"{self.sc.name}-kstreamlet.prof"
            print("profile: kstreamlet under cProfile (not recorded in the table)", flush=True)
            self.profile_run = self.one_run("kstreamlet", "profile", profile_out=stats)
            common.write_profile(a.out, stats, [
                f"kstreamlet {self.sc.name}, exactly_once, commit {COMMIT_INTERVAL} s, RocksDB + changelog, "
                f"{self.sc.target:,} input records" + (f", first {a.warmup_records:,} not profiled"
                                                        if getattr(a, "warmup_records", 0) else "")],
                self.profile_run)


def measure_flags(args: argparse.Namespace) -> str:
    """``--warmup-records N`` / ``--profile`` of the command line shown in a report."""
    return ((f" --warmup-records {args.warmup_records}" if getattr(args, "warmup_records", 0) else "")
            + (" --profile" if getattr(args, "profile", False) else ""))


def summarize_runs(systems: list[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        good = [r for r in mine if r["status"] == "OK"]
        summary[system] = {
            "rate": common.summarize(r["rate"] for r in good),
            "seconds": common.summarize(r["seconds"] for r in good),
            "seconds_to_final_commit": common.summarize(r["seconds_to_final_commit"] for r in good
                                                        if r.get("seconds_to_final_commit")),
            "cpu_us_per_record": common.summarize(r["cpu_us_per_record"] for r in good if r.get("cpu_us_per_record") is not None),
            "machine_busy_pct": common.summarize(r["machine_busy_pct"] for r in good if r.get("machine_busy_pct") is not None),
            "ok_runs": len(good), "wrong_runs": len(mine) - len(good),
        }
    base = (summary.get("kstreamlet") or {}).get("rate")
    for system in systems:
        r = summary[system]["rate"]
        summary[system]["ratio_vs_kstreamlet"] = r["median"] / base["median"] if r and base and base["median"] else None
    return summary


def version_lines(info: dict[str, Any], systems: list[str]) -> str:
    out = [(f"- kstreamlet: {info['source']} (HEAD {info['git_head']}{', kstreamlet/ has uncommitted changes' if info.get('kstreamlet_dirty') else ''}), "
           f"source fingerprint {', '.join(info.get('kstreamlet_fingerprints') or []) or '—'}"
           f"{' **(changed during the run: results mix code versions)**' if len(info.get('kstreamlet_fingerprints') or []) > 1 else ''}; "
           f"confluent-kafka {info['confluent_kafka']}, librdkafka {info['librdkafka']}")]
    if "quix" in systems:
        q = info.get("quix") or {}
        out.append(f"- Quix Streams {q.get('quixstreams', '—')} (own virtualenv: confluent-kafka {q.get('confluent_kafka', '—')}, "
                   f"librdkafka {q.get('librdkafka', '—')})")
    elif info.get("quix_skipped"):
        out.append(f"- Quix Streams: skipped ({info['quix_skipped']})")
    if "kafka_streams" in systems:
        ks = info.get("kafka_streams") or {}
        out.append("- Kafka Streams: " + (", ".join(f"{k} {v}" for k, v in ks.items()) or "—"))
    elif info.get("kafka_streams_skipped"):
        out.append(f"- Kafka Streams: skipped ({info['kafka_streams_skipped']})")
    return "\n".join(out)


def throughput_report(title: str, cmd: str, description: list[str], systems: list[str], runs: list[dict[str, Any]],
                      info: dict[str, Any], repeats: int, notes: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    summary = summarize_runs(systems, runs)
    fr = lambda x, f="{:.2f}": "—" if x is None else f.format(x)
    rows = []
    for system in systems:
        s = summary[system]
        wrong = s["wrong_runs"]
        rows.append([system, common.cell(s["rate"]) + (f" **{wrong} WRONG**" if wrong else ""),
                     f"**{s['ratio_vs_kstreamlet']:.2f}**" if s["ratio_vs_kstreamlet"] is not None else "—",
                     common.cell(s["seconds"], "{:.2f}"), common.cell(s["seconds_to_final_commit"], "{:.2f}"),
                     common.cell(s["cpu_us_per_record"], "{:.1f}"), common.cell(s["machine_busy_pct"], "{:.0f}%"),
                     f"{s['ok_runs']}/{s['ok_runs'] + wrong}"])
    header = ["system", "records/s median (min–max)", "÷ kstreamlet", "seconds", "s to final commit",
              "CPU µs/record", "box busy", "correct runs"]
    per_run = common.md_table(
        ["system", "repeat", "records/s", "seconds", "s to final commit", "CPU µs/rec", "box busy", "commits",
         "output records", "status"],
        [[r["system"], str(r["repeat"]), common.fmt_rate(r.get("rate")), fr(r.get("seconds")),
          fr(r.get("seconds_to_final_commit")), fr(r.get("cpu_us_per_record"), "{:.1f}"),
          fr(r.get("machine_busy_pct"), "{:.0f}%"), str(r.get("commits", "—")),
          f"{r['verify']['output_records']:,}" if r.get("verify") else "—", r["status"]] for r in runs])
    la = info["loadavg_at_start"]
    lb = info.get("loadavg_at_end") or la
    warm = max((r.get("warmup_records") or 0 for r in runs), default=0)
    if warm:
        description = [*description, f"**warm:** the first {warm:,} input records of each measured run are processed "
                       "but not timed, in the same process / JVM (`--warmup-records`), for every system alike"]
    desc = "\n".join(f"- {d}" for d in description)
    note_text = "\n".join(f"- {n}" for n in (notes or []))
    md = f"""# {title}

`{cmd}`

- date: {info['date']}
- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in la)}, at end {', '.join(f'{x:.2f}' for x in lb)}
{version_lines(info, systems)}
- Kafka {info['kafka_version']} ({info['broker_backend']} broker, same machine), Python {info['python']}
{desc}
- **timing, the same method for every system:** in the worker, from the first consumed record reaching the processing code until the target number of input records is processed; start-up and the group join excluded. kstreamlet: a per-batch listener hook (bench/hooks.py); Quix: its `on_message_processed` callback; Kafka Streams: the jar's own probe (bench/kstreams). "s to final commit" = until the commit that makes the last output visible
- CPU µs/record = the worker process's CPU time (all threads) in the timed window per record; box busy = whole-machine CPU utilisation ({info['nproc']} CPUs, broker included) in that window
- {repeats} repeats per system, order rotated; each run a fresh subprocess, application id / consumer group, state dir and output topic; total wall time {info.get('wall_seconds', 0):.0f} s
{note_text}

{common.md_table(header, rows)}

## All runs

{per_run}
"""
    return md, summary


def finish_info(info: dict[str, Any], runs: list[dict[str, Any]], t_start: float, load_s: float) -> None:
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    info["input_load_seconds"] = round(load_s, 2)
    prints = sorted({r["kstreamlet_fingerprint"] for r in runs if r.get("kstreamlet_fingerprint")})
    info["kstreamlet_fingerprints"] = prints
    if len(prints) > 1:
        print(f"WARNING: kstreamlet's source changed during the benchmark (fingerprints {prints}); "
              "rerun, or pin it with --kstreamlet-ref", flush=True)


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


# --- this scenario's parent ---------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    systems = select_systems(args, SYSTEMS)
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
    systems, pythons, ks = prepare_systems(args, systems, info)
    t_start = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix=f"kstreamlet-bench-{NAME}-"))
    target = args.records + PARTITIONS
    print(f"bench {NAME}: {args.records:,} readings of {SENSORS} sensors, {args.repeats} repeats, systems {systems}; "
          f"kstreamlet from {code['source']} ({ks_dir / 'kstreamlet'}); worker logs in {log_dir}", flush=True)
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        in_topic = common.unique(f"bench-{NAME}-in")
        common.create_topic(bootstrap, in_topic, PARTITIONS)
        load_s, expected = load_readings(bootstrap, in_topic, args.records, args.seed)
        print(f"loaded input {in_topic}: {target:,} records ({len(expected):,} sensor windows) in {load_s:.1f} s", flush=True)
        sc = Scenario(NAME, "window", [in_topic], target, min(target, WARMUP_RECORDS),
                      lambda out: verify_windows(bootstrap, out, expected))
        suite = ThroughputSuite(args, sc, bootstrap, log_dir, ks_dir, pythons, ks)
        suite.run_all(systems)
    finish_info(info, suite.runs, t_start, load_s)
    if args.repeats > 0:
        cmd = f"python -m bench {NAME} --records {args.records} --repeats {args.repeats}"
        if args.systems != ",".join(SYSTEMS):
            cmd += f" --systems {args.systems}"
        if args.kstreamlet_ref:
            cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
        cmd += measure_flags(args)
        description = [
            (f"input: {args.records:,} records, key = sensor id `s0000`..`s{SENSORS - 1:04d}` (murmur2 partitioner, {PARTITIONS} partitions), "
            f"value = int64 reading, CreateTime = T0 + i ms minus a jitter of 0–{JITTER_MS} ms (seed {args.seed}), "
            f"then one `__flush__` record per partition {FLUSH_AFTER_MS // 1000} s of event time later; "
            f"{len(expected):,} (sensor, window) pairs; target = N + {PARTITIONS} records processed"),
            (f"work (all): tumbling {WINDOW_MS // 1000} s event-time windows on the record timestamp, {GRACE_MS} ms out-of-orderness / grace, "
            "(count, sum) per (sensor, window), **final results only**, output `<sensor>@<window_start>` → count and sum as "
            "two big-endian int64; keyed by the record key (no repartition); RocksDB state with a changelog"),
            ("kstreamlet: `stream(..., watermarks=WatermarkStrategy.for_bounded_out_of_orderness(1000)).keyed()"
            ".window(TumblingEventTimeWindows.of(10_000)).aggregate(CountSum, window_fn=...)` (default event-time trigger); "
            "Quix: `tumbling_window(10_000, grace_ms=1000).agg(count=Count(), sum=Sum()).final(closing_strategy=\"partition\")` "
            "(the default `\"key\"` strategy only closes a key's windows on that key's next record); "
            "Kafka Streams: `windowedBy(TimeWindows.ofSizeAndGrace(10 s, 1 s)).aggregate(...).suppress(untilWindowCloses)`"),
            (f"exactly-once, commit interval {COMMIT_INTERVAL} s, one process / one stream thread each; Python consumers "
            "`fetch.queue.backoff.ms=10` (kstreamlet's default; Quix via `consumer_extra_config`)"),
            ("verification: the output read back `read_committed` must hold exactly one record per (sensor, window) of the "
            "input with its true count and sum (outputs of the `__flush__` key ignored); otherwise the run is WRONG and not counted"),
        ]
        md, summary = throughput_report(
            "Window benchmark: tumbling event-time aggregate, final results only, exactly-once", cmd, description,
            systems, suite.runs, info, args.repeats)
        data = {"scenario": NAME, "machine": info, "systems": systems,
                "params": {"records": args.records, "sensors": SENSORS, "window_ms": WINDOW_MS, "grace_ms": GRACE_MS,
                           "jitter_ms": JITTER_MS, "repeats": args.repeats, "partitions": PARTITIONS, "seed": args.seed,
                           "commit_interval": COMMIT_INTERVAL, "consumer_config": CONSUMER_CONFIG, "target": target},
                "summary": summary, "runs": suite.runs, "profile_run": suite.profile_run, "args": plain_args(args)}
        md_path, json_path = common.write_results(args.out, md, data)
        print()
        print(md)
        print(f"written {md_path} and {json_path}")
    failed = sum(1 for r in suite.runs if r["status"] != "OK")
    return 1 if failed else 0
