"""Stateless scenario: consume -> ``value.upper()`` -> produce; a hand-written loop, kstreamlet, Quix Streams, Faust, Kafka Streams.

For each processing setting (EOS with 100 ms and 1 s commits, at-least-once with 1 s
commits) and value size (100 B, 1 KB) every system reads the same N-record, 6-partition
input topic from the beginning into a fresh 6-partition output topic, each run in its own
subprocess and consumer group. Timed from the first consumed record to the last processed
record (group join excluded); every run's output is read back ``read_committed`` and must
be exactly the N input ids, upper-cased, or the run is WRONG.

The raw loop is the fastest straightforward confluent-kafka code for the same output
(same key, upper-cased value, input timestamp kept, same partitioner and linger): one
consumer (``read_committed``, ``consume(1000)``), offsets taken from ``consumer.position``
at commit time, delivery reports only on error, ``poll(0)`` once per batch; EOS: one
transaction per commit interval (``send_offsets_to_transaction`` + ``commit_transaction``);
ALO: idempotent producer, ``flush`` then a synchronous offset commit per interval.

Quix Streams (``sdf.apply(bytes.upper).to_topic``) and Faust (an agent sending
``value.upper()``) run from their own virtualenvs (see ``bench.common.quix_python`` and
``bench.faust_worker``); Kafka Streams (``mapValues``, 1 or 2 stream threads) is the Java
worker of ``bench/kafka_streams.py``. The librdkafka systems (raw, kstreamlet, Quix) run
with each consumer configuration of ``--consumer``; Faust (aiokafka) and Kafka Streams
(Java client) have their own clients and run once per setting, compared with the others'
last consumer configuration. Faust runs are bounded by ``--faust-timeout``: a run stopped
by it reports the rate over what it processed and is marked "partial (timed)" when its
committed output is a correct prefix of the input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common, faust_worker

NAME = "stateless"
PARTITIONS = 6
SYSTEMS = ("raw", "kstreamlet", "quix", "faust", "kafka_streams", "kafka_streams_2t")
#: systems on librdkafka: they take the consumer configurations of CONSUMER_MODES
LIBRDKAFKA_SYSTEMS = ("raw", "kstreamlet", "quix")
#: Python workers (``python -m bench _worker stateless --system ...``)
WORKER_SYSTEMS = ("raw", "kstreamlet", "quix", "faust")
KAFKA_STREAMS_THREADS = {"kafka_streams": 1, "kafka_streams_2t": 2}
SIZES = (100, 1000)
PARTIAL = "partial (timed)"
OWN_CLIENT = "own client"


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    guarantee: str
    commit_interval: float


SETTINGS = [
    Setting("eos-100ms", "exactly_once, commit 100 ms", "exactly_once", 0.1),
    Setting("eos-1s", "exactly_once, commit 1 s", "exactly_once", 1.0),
    Setting("alo-1s", "at_least_once, commit 1 s", "at_least_once", 1.0),
]
PROFILE_SETTING = SETTINGS[0]

#: Consumer configurations the librdkafka systems run with (kstreamlet through
#: ``kafka_config``, Quix through ``consumer_extra_config``).
#: librdkafka stops fetching a partition once ``queued.min.messages`` (100,000) or
#: ``queued.max.messages.kbytes`` (64 MB) are queued locally and then waits
#: ``fetch.queue.backoff.ms`` (default 1,000 ms) before fetching again, although a Python
#: loop drains that queue much sooner: with client defaults a catch-up read is capped by
#: this timer, not by the processing code. ``tuned`` lowers the backoff to 10 ms.
CONSUMER_MODES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tuned": {"fetch.queue.backoff.ms": 10},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=int, default=1_000_000, help="input records (default 1,000,000)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help=f"comma-separated value sizes in bytes, each its own input and rows (default {','.join(map(str, SIZES))})")
    p.add_argument("--size", "--value-size", type=int, choices=SIZES, default=None,
                   help="one value size only (overrides --sizes)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per (system, setting), interleaved (default 3; 0 = none, e.g. with --profile)")
    p.add_argument("--batch", type=int, default=1000, help="records per consume() call (default 1000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--settings", default=",".join(s.key for s in SETTINGS),
                   help=f"comma-separated subset of {[s.key for s in SETTINGS]}")
    p.add_argument("--consumer", choices=[*CONSUMER_MODES, "both"], default="both",
                   help="consumer config for the librdkafka systems: librdkafka defaults, 'tuned' "
                        "(fetch.queue.backoff.ms=10), or both (default)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the unrecorded warm-up runs (100k records of each system; Faust 10k) before measuring")
    p.add_argument("--profile", action="store_true",
                   help="also run kstreamlet once under cProfile (see --profile-setting) -> results/<out>-profile.txt")
    p.add_argument("--profile-setting", choices=[s.key for s in SETTINGS], default=PROFILE_SETTING.key,
                   help=f"setting of the profiled run (default {PROFILE_SETTING.key})")
    p.add_argument("--rebuild-report", action="store_true",
                   help="only rewrite results/<out>.md from results/<out>.json (no broker, no runs)")
    p.add_argument("--quix-python", default=None,
                   help=f"python of a virtualenv with quixstreams (default {common.DEFAULT_QUIX_VENV}/bin/python, created if missing)")
    faust_worker.add_timeout_argument(p)
    common.add_source_argument(p)
    p.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'stateless')")
    common.add_warmup_records_argument(p)  # Faust ignores it (its report row says cold)


def sizes_of(args: argparse.Namespace) -> list[int]:
    if getattr(args, "size", None):
        return [args.size]
    sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        raise SystemExit(f"--sizes: each of {list(SIZES)} (got {args.sizes!r})")
    return sizes


# --- worker side (runs in the measured subprocess) ----------------------------------------------

def _worker_parser() -> argparse.ArgumentParser:
    w = argparse.ArgumentParser(prog="bench _worker stateless")
    w.add_argument("--system", choices=WORKER_SYSTEMS, required=True)
    w.add_argument("--bootstrap", required=True)
    w.add_argument("--in-topic", required=True)
    w.add_argument("--out-topic", required=True)
    w.add_argument("--group", required=True)
    w.add_argument("--guarantee", choices=["exactly_once", "at_least_once"], required=True)
    w.add_argument("--commit-interval", type=float, required=True)
    w.add_argument("--target", type=int, required=True)
    w.add_argument("--batch", type=int, default=1000)
    w.add_argument("--consumer-config", default="{}", help="JSON of extra consumer properties")
    w.add_argument("--state-dir", default=None, help="the run's own temp dir (Quix state dir, Faust data dir)")
    w.add_argument("--timeout", type=float, default=600.0,
                   help="Faust: stop this many seconds after the first record (a partial run); others: give up")
    w.add_argument("--profile-out")
    w.add_argument("--warmup-records", type=int, default=0,
                   help="records processed before the clock starts (JIT / cache warm-up excluded)")
    return w


def worker(argv: list[str]) -> int:
    a = _worker_parser().parse_args(argv)
    probe = common.Probe(a.target, warmup=a.warmup_records if a.system != "faust" else 0)
    facts: dict[str, Any] = {"system": a.system}
    try:
        if a.system == "raw":
            _raw_loop(a, probe)
        elif a.system == "kstreamlet":
            _kstreamlet_member(a, probe, facts)
        elif a.system == "quix":
            _quix_app(a, probe, facts)
        else:
            faust_worker.stateless(a, probe, facts)
    except BaseException as e:
        common.emit_result(probe.result(error=repr(e), **facts) | {"ok": False})
        raise
    common.emit_result(probe.result(**facts))
    return 0


def _raw_loop(a: argparse.Namespace, probe: common.Probe) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer

    eos = a.guarantee == "exactly_once"
    consumer = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "group.protocol": "consumer",  # as kstreamlet's default
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **json.loads(a.consumer_config),
    })
    delivery_errors: list[Any] = []
    pconf: dict[str, Any] = {
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "delivery.report.only.error": True,
        "on_delivery": lambda err, msg: delivery_errors.append(err),
    }
    if eos:
        pconf["transactional.id"] = f"{a.group}-raw"
        pconf["transaction.timeout.ms"] = 10_000
    producer = Producer(pconf)
    if eos:
        producer.init_transactions(30)
    consumer.subscribe([a.in_topic])

    out = a.out_topic
    produce = producer.produce
    poll = producer.poll
    consume = consumer.consume
    batch = a.batch
    target = a.target
    interval = a.commit_interval
    in_txn = False
    dirty = False

    def commit() -> None:
        nonlocal in_txn, dirty
        if not dirty:
            return
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if eos:
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            in_txn = False
        else:
            if producer.flush(30) or delivery_errors:
                raise RuntimeError(f"outputs not acknowledged: {delivery_errors[:3]}")
            consumer.commit(offsets=offsets, asynchronous=False)
        dirty = False
        probe.committed()

    n = 0
    next_commit = time.monotonic() + interval
    while True:
        msgs = consume(batch, 0.05)
        if msgs:
            if probe.t_first is None:
                if probe.warmup:
                    probe.progress(n)  # the clock starts once the warm-up records are processed
                else:
                    probe.first()
            if eos and not in_txn:
                producer.begin_transaction()
                in_txn = True
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                v = m.value().upper()
                k = m.key()
                ts = m.timestamp()[1]
                try:
                    produce(out, v, k, timestamp=ts)
                except BufferError:
                    while True:
                        poll(0.05)
                        try:
                            produce(out, v, k, timestamp=ts)
                            break
                        except BufferError:
                            continue
            poll(0)
            n += len(msgs)
            dirty = True
            if n >= target:
                probe.last(n)
                break
        now = time.monotonic()
        if now >= next_commit:
            commit()
            next_commit = now + interval
    commit()
    consumer.close()
    producer.flush(30)


def _kstreamlet_member(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    import kstreamlet
    from kstreamlet import App
    from kstreamlet.logging import configure_logging
    from bench import hooks

    # Which code was imported (fingerprinted right after import: the tree may be edited meanwhile).
    pkg = Path(kstreamlet.__file__).parent
    facts.update(kstreamlet_dir=str(pkg), kstreamlet_fingerprint=common.source_fingerprint(pkg))

    app = App(application_id=a.group, bootstrap_servers=a.bootstrap, processing_guarantee=a.guarantee,
              commit_interval=a.commit_interval, poll_batch_size=a.batch, instance_id="bench-0",
              kafka_config=json.loads(a.consumer_config))
    app.stream(a.in_topic).map(lambda v: v.upper()).to(a.out_topic)
    configure_logging(app.settings.log_level)  # as `kstreamlet run` does (structlog -> stderr)
    target = a.target
    prof = None
    if a.profile_out:
        import cProfile

        prof = cProfile.Profile()

    class Probe(hooks.Hooks):
        """One extra call per batch and per commit, nothing per record. With ``--profile-out``
        cProfile covers the same window as the timing (steady state)."""

        def before_batch(self, m: Any, msgs: list[Any]) -> None:
            if probe.t_first is None:
                if probe.warmup:
                    probe.progress(m.records_processed)  # the clock starts after the warm-up records
                else:
                    probe.first()
                if prof is not None and probe.t_first is not None:
                    prof.enable()

        def on_batch(self, m: Any, msgs: list[Any], processed: int) -> None:
            if m.records_processed >= target and probe.t_last is None:
                if prof is not None:
                    prof.disable()
                probe.last(m.records_processed)
                m.stop()

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()

    hooks.member(app, Probe()).run()
    if prof is not None:
        prof.dump_stats(a.profile_out)




def _quix_app(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any]) -> None:
    """Quix Streams: ``sdf.apply(bytes.upper).to_topic(out)`` (key and timestamp kept by ``to_topic``).
    Timed by its ``on_message_processed`` callback (one call per consumed message)."""
    import quixstreams  # type: ignore[import-not-found]
    from quixstreams import Application  # type: ignore[import-not-found]

    facts["quixstreams"] = quixstreams.__version__

    def build(on_message_processed: Any) -> Any:
        app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                          commit_interval=a.commit_interval,
                          processing_guarantee="exactly-once" if a.guarantee == "exactly_once" else "at-least-once",
                          state_dir=a.state_dir or tempfile.mkdtemp(prefix="quix-state-"),
                          consumer_extra_config=json.loads(a.consumer_config), loglevel="WARNING",
                          on_message_processed=on_message_processed)
        in_t = app.topic(a.in_topic, key_deserializer="bytes", value_deserializer="bytes")
        out_t = app.topic(a.out_topic, key_serializer="bytes", value_serializer="bytes")
        app.dataframe(in_t).apply(bytes.upper).to_topic(out_t)
        return app

    common.run_quix_to_target(build, probe, a.target, a.timeout)


# --- parent side ----------------------------------------------------------------------------------

def _value_checker(size: int) -> Any:
    def ok(v: bytes | None) -> bool:
        return v is not None and len(v) == size and v.isupper()

    return ok


def kafka_streams_module() -> Any:
    """``bench.kafka_streams`` (written separately; absent until then)."""
    from bench import kafka_streams  # type: ignore[attr-defined]

    return kafka_streams


class Suite:
    def __init__(self, args: argparse.Namespace, bootstrap: str, in_topics: dict[int, str], log_dir: Path,
                 kstreamlet_dir: Path, pythons: dict[str, str]) -> None:
        self.args = args
        self.kstreamlet_dir = kstreamlet_dir
        self.bootstrap = bootstrap
        self.in_topics = in_topics
        self.log_dir = log_dir
        self.pythons = pythons
        self.layouts: dict[int, list[list[int]]] = {}
        self.runs: list[dict[str, Any]] = []

    def layout(self, size: int) -> list[list[int]]:
        if size not in self.layouts:
            self.layouts[size] = common.input_layout(self.bootstrap, self.in_topics[size], PARTITIONS)
        return self.layouts[size]

    def one_run(self, system: str, setting: Setting, mode: str, rep: int | str, size: int, target: int | None = None,
                verify: bool = True, profile_out: Path | None = None) -> dict[str, Any]:
        a = self.args
        target = target or a.records
        warm = getattr(a, "warmup_records", 0) if rep not in ("warmup", "profile") and system != "faust" else 0
        if warm >= target:
            raise SystemExit(f"--warmup-records {warm} must be below the records per run ({target:,})")
        consumer = mode if system in LIBRDKAFKA_SYSTEMS else OWN_CLIENT
        tag = f"{system}-{size}B-{setting.key}-{mode if system in LIBRDKAFKA_SYSTEMS else 'own'}-r{rep}"
        in_topic = self.in_topics[size]
        out_topic = common.unique(f"bench-out-{tag}")
        group = common.unique(f"bench-{tag}")
        common.create_topic(self.bootstrap, out_topic, PARTITIONS)
        state_dir = Path(tempfile.mkdtemp(prefix=f"state-{tag}-", dir=self.log_dir))
        log_path = self.log_dir / f"{tag}.log"
        if system in KAFKA_STREAMS_THREADS:
            timeout_s = 120 + target / 5_000
            cmd = kafka_streams_module().command(
                "stateless", bootstrap=self.bootstrap, application_id=group, in_topic=in_topic, out_topic=out_topic,
                state_dir=str(state_dir), guarantee=setting.guarantee,
                commit_interval_ms=int(setting.commit_interval * 1000), target=target, timeout_s=int(timeout_s),
                threads=KAFKA_STREAMS_THREADS[system], warmup_records=warm)
            outcome = common.run_command(cmd, timeout_s + 60, log_path, cwd=state_dir)
        else:
            worker_timeout = a.faust_timeout if system == "faust" else 90 + target / 10_000
            argv = ["--system", system, "--bootstrap", self.bootstrap, "--in-topic", in_topic,
                    "--out-topic", out_topic, "--group", group, "--guarantee", setting.guarantee,
                    "--commit-interval", str(setting.commit_interval), "--target", str(target), "--batch", str(a.batch),
                    "--consumer-config", json.dumps(CONSUMER_MODES[mode] if system in LIBRDKAFKA_SYSTEMS else {}),
                    "--state-dir", str(state_dir), "--timeout", str(worker_timeout)]
            if profile_out:
                argv += ["--profile-out", str(profile_out)]
            if warm:
                argv += ["--warmup-records", str(warm)]
            outcome = common.run_worker_with(self.pythons[system], NAME, argv, timeout=worker_timeout + 120,
                                             log_path=log_path, kstreamlet_dir=self.kstreamlet_dir)
        res = dict(outcome.result or {})
        run: dict[str, Any] = {**{k: v for k, v in res.items() if k != "system"},  # the Java worker's own name
                               "system": system, "setting": setting.key, "consumer": consumer, "size": size,
                               "repeat": rep, "records": target, "worker_rc": outcome.rc,
                               "worker_wall_seconds": round(outcome.wall_seconds, 2), "log": str(log_path)}
        partial = bool(res.get("partial"))
        status = "OK"
        if outcome.timed_out:
            status = "WRONG: worker timed out"
        elif outcome.rc != 0 or not res.get("ok"):
            status = f"WRONG: worker failed (rc={outcome.rc}, {res.get('error', 'no result')})"
        if verify:
            ver = common.verify_output(self.bootstrap, out_topic, target, PARTITIONS, _value_checker(size),
                                       keep_seen=partial)
            run["verify"] = {"count": ver.count, "distinct": ver.distinct, "duplicates": ver.duplicates,
                             "unknown_keys": ver.unknown_keys, "bad_values": ver.bad_values,
                             "complete": ver.complete, "seconds": round(ver.seconds, 2)}
            if status == "OK" and partial:
                status = self._check_partial(run, ver, res, size, target)
            elif status == "OK" and not ver.ok(target):
                status = ver.describe(target)
        elif status == "OK" and partial:
            status = PARTIAL
        run["status"] = status
        shutil.rmtree(state_dir, ignore_errors=True)
        try:
            common.delete_run_topics(self.bootstrap, group, [out_topic])  # + Faust's / Kafka Streams' own
        except Exception as e:  # noqa: BLE001 -- best effort; the broker's temp dir goes away anyway
            run["delete_error"] = repr(e)
        line = f"  {tag:<46} "
        if res.get("ok"):
            line += (f"{res['rate']:>10,.0f} rec/s  {res['seconds']:6.2f} s  cpu {res.get('cpu_us_per_record') or 0:5.1f} us/rec  "
                     f"box {res.get('machine_busy_pct') or 0:3.0f}%  commits {res.get('commits', 0):>3}  wall {outcome.wall_seconds:5.1f} s")
            if partial:
                line += f"  ({res['processed']:,} of {target:,} in the time limit)"
        line += f"  {status}"
        print(line, flush=True)
        if status not in ("OK", PARTIAL) and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        return run

    def _check_partial(self, run: dict[str, Any], ver: common.Verification, res: dict[str, Any], size: int,
                       target: int) -> str:
        """A run stopped by the time limit: its committed output must be correct as far as it goes
        (no duplicates, no foreign ids, upper-cased values of the right size, a prefix of every input
        partition) and hold at least what it had processed when the clock stopped."""
        assert ver.seen is not None
        gaps = common.prefix_gaps(self.layout(size), ver.seen) if target == self.args.records else 0
        total = res.get("processed_total") or res.get("processed") or 0
        run["verify"].update(prefix_gaps=gaps, processed_at_stop=res.get("processed"), processed_total=total)
        problems = []
        if not ver.complete:
            problems.append("incomplete read")
        if ver.duplicates or ver.unknown_keys or ver.bad_values:
            problems.append(f"duplicates={ver.duplicates}, unknown_keys={ver.unknown_keys}, bad_values={ver.bad_values}")
        if gaps:
            problems.append(f"not a prefix of the input partitions ({gaps} records after a missing one)")
        if ver.count < (res.get("processed") or 0):
            problems.append(f"output {ver.count:,} < {res.get('processed'):,} processed when the clock stopped")
        if ver.count > total:
            problems.append(f"output {ver.count:,} > {total:,} processed in all")
        return "WRONG (partial run): " + "; ".join(problems) if problems else PARTIAL


def _available_systems(wanted: list[str], info: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The systems that can run here, with the python of each Python worker; notes in ``info``."""
    import sys

    pythons = {"raw": sys.executable, "kstreamlet": sys.executable}
    systems = []
    for s in wanted:
        if s == "quix":
            pythons["quix"] = common.quix_python(args.quix_python)
            info["quix"] = common.quix_versions(pythons["quix"])
        elif s == "faust":
            pythons["faust"] = faust_worker.faust_python(args.faust_python)
            info["faust"] = faust_worker.faust_versions(pythons["faust"])
        elif s in KAFKA_STREAMS_THREADS and "kafka_streams" not in info:
            try:
                ks = kafka_streams_module()
                ks.ensure_jar()
                info["kafka_streams"] = ks.versions()
            except Exception as e:  # noqa: BLE001 -- reported, the others still run
                info["kafka_streams"] = {"error": repr(e)}
        if s in KAFKA_STREAMS_THREADS and "error" in info["kafka_streams"]:
            print(f"SKIPPING {s}: Kafka Streams worker not available: {info['kafka_streams']['error']}", flush=True)
            info.setdefault("skipped_systems", []).append(s)
            continue
        systems.append(s)
    return systems, pythons


def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    if args.rebuild_report:
        return _rebuild_report(args.out)
    for k, v in (("sizes", ",".join(map(str, SIZES))), ("systems", ",".join(SYSTEMS)), ("quix_python", None),
                 ("faust_python", None), ("faust_timeout", faust_worker.DEFAULT_FAUST_TIMEOUT)):
        if not hasattr(args, k):  # e.g. `python -m bench all` with another scenario's options
            setattr(args, k, v)
    settings = [s for s in SETTINGS if s.key in set(args.settings.split(","))]
    if not settings:
        raise SystemExit(f"no known setting in --settings {args.settings!r}")
    wanted = [s for s in SYSTEMS if s in set(args.systems.split(","))]
    if not wanted:
        raise SystemExit(f"no known system in --systems {args.systems!r}")
    sizes = sizes_of(args)
    modes = list(CONSUMER_MODES) if args.consumer == "both" else [args.consumer]
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
    systems, pythons = _available_systems(wanted, info, args)
    t_start = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="kstreamlet-bench-"))
    print(f"bench stateless: {args.records:,} records x {sizes} B, {args.repeats} repeats, systems {systems}, "
          f"settings {[s.key for s in settings]}, consumer {modes}; kstreamlet from {code['source']} "
          f"({ks_dir / 'kstreamlet'}); worker logs in {log_dir}", flush=True)
    load_s: dict[int, float] = {}
    with kafka_broker() as broker:
        bootstrap = broker.bootstrap_servers
        info["broker_backend"] = broker.backend
        in_topics: dict[int, str] = {}
        for size in sizes:
            in_topics[size] = common.unique(f"bench-stateless-in-{size}B")
            common.create_topic(bootstrap, in_topics[size], PARTITIONS)
            load_s[size] = common.load_input(bootstrap, in_topics[size], args.records, size, seed=args.seed)
            print(f"loaded input {in_topics[size]}: {args.records:,} records x {size} B in {load_s[size]:.1f} s "
                  f"({args.records / load_s[size]:,.0f} rec/s)", flush=True)
        suite = Suite(args, bootstrap, in_topics, log_dir, ks_dir, pythons)
        if not args.no_warmup and args.repeats > 0:
            print("warm-up (not recorded):", flush=True)
            for system in systems:
                n = min(args.records, 10_000 if system == "faust" else 100_000)
                suite.one_run(system, settings[0], modes[-1], "warmup", sizes[0], target=n, verify=False)
        if args.repeats > 0:
            print("measured runs:", flush=True)
        for rep in range(args.repeats):
            i = 0
            for size in sizes:
                for mode in modes:
                    for setting in settings:
                        # own-client systems once per setting, with the last consumer mode's round
                        here = [s for s in systems if s in LIBRDKAFKA_SYSTEMS or mode == modes[-1]]
                        order = here if (rep + i) % 2 == 0 else list(reversed(here))
                        i += 1
                        for system in order:
                            suite.runs.append(suite.one_run(system, setting, mode, rep + 1, size))
            if rep == 0 and args.repeats > 1:
                per_round = time.monotonic() - t_start
                print(f"  (first round done after {per_round:.0f} s; ~{per_round * (args.repeats - 1):.0f} s to go)", flush=True)
        profile_run = None
        if args.profile:
            profile_run = _profile(suite, args, modes[-1], sizes[0])
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    info["input_load_seconds"] = {str(k): round(v, 2) for k, v in load_s.items()}
    prints = sorted({r["kstreamlet_fingerprint"] for r in suite.runs if r.get("kstreamlet_fingerprint")})
    info["kstreamlet_fingerprints"] = prints
    if len(prints) > 1:
        print(f"WARNING: kstreamlet's source changed during the benchmark (fingerprints {prints}); "
              "rerun, or pin it with --kstreamlet-ref", flush=True)
    if args.repeats > 0:
        params = {"records": args.records, "size": sizes[0], "sizes": sizes, "repeats": args.repeats,
                  "batch": args.batch, "partitions": PARTITIONS, "seed": args.seed, "systems": systems,
                  "faust_timeout": args.faust_timeout, "consumer_modes": {m: CONSUMER_MODES[m] for m in modes}}
        md, summary = _report(params, args, settings, modes, systems, suite.runs, info)
        data = {"scenario": NAME, "machine": info, "params": params,
                "settings": [s.__dict__ for s in settings], "summary": summary, "runs": suite.runs,
                "profile_run": profile_run,
                "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}}
        md_path, json_path = common.write_results(args.out, md, data)
        print()
        print(md)
        print(f"written {md_path} and {json_path}")
    failed = sum(1 for r in suite.runs if r["status"] not in ("OK", PARTIAL))
    return 1 if failed else 0


def _profile(suite: Suite, args: argparse.Namespace, mode: str, size: int) -> dict[str, Any]:
    setting = next(s for s in SETTINGS if s.key == args.profile_setting)
    stats_path = suite.log_dir / "stateless-kstreamlet.prof"
    print(f"profile: kstreamlet {setting.key}, consumer {mode}, {size} B, under cProfile", flush=True)
    run = suite.one_run("kstreamlet", setting, mode, "profile", size, profile_out=stats_path)
    common.write_profile(args.out, stats_path, [
        f"kstreamlet stateless, {setting.label}, {args.records:,} records x {size} B, "
        f"poll_batch_size {args.batch}, consumer {mode} {CONSUMER_MODES[mode]}"], run)
    return run


def _rebuild_report(out: str) -> int:
    path = common.RESULTS_DIR / f"{out}.json"
    data = json.loads(path.read_text())
    info = data["machine"]
    params = dict(data["params"])
    params.setdefault("sizes", [params["size"]])
    for r in data["runs"]:  # files from before the size / other-system columns
        r.setdefault("size", params["size"])
    params.setdefault("systems", [s for s in SYSTEMS if any(r["system"] == s for r in data["runs"])])
    modes = list(params.get("consumer_modes") or CONSUMER_MODES)
    saved = data.get("args") or {}
    ref = saved.get("kstreamlet_ref")
    if "args" not in data and str(info.get("source", "")).startswith("git "):
        ref = info["source"].split()[1]
    args = argparse.Namespace(records=params["records"], repeats=params["repeats"], batch=params["batch"], seed=params["seed"], consumer=saved.get("consumer") or (modes[0] if len(modes) == 1 else "both"), kstreamlet_ref=ref, faust_timeout=params.get("faust_timeout", faust_worker.DEFAULT_FAUST_TIMEOUT))
    settings = [s for s in SETTINGS if s.key in {d["key"] for d in data["settings"]}]
    md, summary = _report(params, args, settings, modes, params["systems"], data["runs"], info)
    data["summary"] = summary
    md_path, json_path = common.write_results(out, md, data)
    print(md)
    print(f"rewritten {md_path} and {json_path}")
    return 0


def _cell(s: dict[str, float] | None, fmt: str = "{:,.0f}") -> str:
    if not s:
        return "—"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def _report(params: dict[str, Any], args: argparse.Namespace, settings: list[Setting], modes: list[str],
            systems: list[str], runs: list[dict[str, Any]], info: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """One row per (size, consumer, setting, system); ratios against raw and kstreamlet of the same
    size, setting and consumer configuration (own-client systems: against the last configuration)."""
    summary = []
    sections = []
    for size in params["sizes"]:
        rows = []
        for mode in modes:
            for s in settings:
                entry: dict[str, Any] = {"size": size, "setting": s.key, "consumer": mode}
                here = [sy for sy in systems if sy in LIBRDKAFKA_SYSTEMS or mode == modes[-1]]
                for system in here:
                    cons = mode if system in LIBRDKAFKA_SYSTEMS else OWN_CLIENT
                    mine = [r for r in runs if r["setting"] == s.key and r["consumer"] == cons
                            and r["system"] == system and r.get("size", size) == size]
                    good = [r for r in mine if r["status"] in ("OK", PARTIAL)]
                    partial = sum(1 for r in good if r["status"] == PARTIAL)
                    entry[system] = {
                        "consumer": cons,
                        "rate": common.summarize(r["rate"] for r in good),
                        "cpu_us_per_record": common.summarize(r["cpu_us_per_record"] for r in good
                                                              if r.get("cpu_us_per_record") is not None),
                        "machine_busy_pct": common.summarize(r["machine_busy_pct"] for r in good
                                                             if r.get("machine_busy_pct") is not None),
                        "ok_runs": len(good) - partial, "partial_runs": partial, "wrong_runs": len(mine) - len(good)}

                def med(system: str, key: str = "rate", entry: dict[str, Any] = entry) -> float | None:
                    d = entry.get(system, {}).get(key)
                    return d["median"] if d else None

                entry["ratio_kstreamlet_over_raw"] = (med("kstreamlet") / med("raw")
                                                      if med("raw") and med("kstreamlet") else None)
                entry["cpu_ratio_kstreamlet_over_raw"] = (med("kstreamlet", "cpu_us_per_record") / med("raw", "cpu_us_per_record")
                                                          if med("raw", "cpu_us_per_record") and med("kstreamlet", "cpu_us_per_record") else None)
                entry["ratios_over_raw"] = {sy: (med(sy) / med("raw") if med(sy) and med("raw") else None) for sy in here}
                entry["ratios_over_kstreamlet"] = {sy: (med(sy) / med("kstreamlet") if med(sy) and med("kstreamlet") else None)
                                                   for sy in here}
                summary.append(entry)
                for system in here:
                    e = entry[system]
                    cell = _cell(e["rate"])
                    if e["partial_runs"]:
                        cell += f" ({e['partial_runs']} partial)"
                    if e["wrong_runs"]:
                        cell += f" **{e['wrong_runs']} WRONG**"
                    rr, rk = entry["ratios_over_raw"][system], entry["ratios_over_kstreamlet"][system]
                    rows.append([e["consumer"], s.label, system, cell, _cell(e["cpu_us_per_record"], "{:.1f}"),
                                 _cell(e["machine_busy_pct"], "{:.0f}%"),
                                 "—" if rr is None else (f"**{rr:.2f}**" if system == "kstreamlet" else f"{rr:.2f}"),
                                 "—" if rk is None else f"{rk:.2f}"])
        header = ["consumer", "setting", "system", "rec/s median (min–max)", "CPU µs/rec", "box busy",
                  "÷ raw rec/s", "÷ kstreamlet rec/s"]
        sections.append(f"## {size}-byte values\n\n{common.md_table(header, rows)}")
    fr = lambda x, f="{:.2f}": "—" if x is None else f.format(x)
    per_run = common.md_table(
        ["system", "size", "consumer", "setting", "repeat", "records processed", "rec/s", "seconds", "CPU µs/rec",
         "box busy", "s to final commit", "commits", "status"],
        [[r["system"], str(r.get("size", params["size"])), r["consumer"], r["setting"], str(r["repeat"]),
          f"{r['processed']:,}" if r.get("processed") else "—", common.fmt_rate(r.get("rate")), fr(r.get("seconds")),
          fr(r.get("cpu_us_per_record"), "{:.1f}"), fr(r.get("machine_busy_pct"), "{:.0f}%"),
          fr(r.get("seconds_to_final_commit")), str(r.get("commits", "—")), r["status"]] for r in runs])
    mode_lines = "\n".join(f"  - `{m}`: {CONSUMER_MODES[m] or 'librdkafka defaults'}" for m in modes)
    q, f, ks = info.get("quix") or {}, info.get("faust") or {}, info.get("kafka_streams") or {}
    versions = []
    if q:
        versions.append(f"Quix Streams {q.get('quixstreams')} (own virtualenv: confluent-kafka {q.get('confluent_kafka')}, "
                        f"librdkafka {q.get('librdkafka')})")
    if f:
        versions.append(f"Faust (faust-streaming) {f.get('faust_streaming')} (own virtualenv: aiokafka {f.get('aiokafka')})")
    if ks:
        versions.append(f"Kafka Streams {ks.get('kafka_streams')} (Java {ks.get('java')}, {ks.get('jvm_options', '')})"
                        if "error" not in ks else f"Kafka Streams not run: {ks['error']}")
    cmd = (f"python -m bench stateless --records {args.records} --sizes {','.join(map(str, params['sizes']))} "
           f"--repeats {args.repeats} --consumer {args.consumer} --systems {','.join(systems)}"
           + (f" --faust-timeout {args.faust_timeout:g}" if "faust" in systems else "")
           + (f" --warmup-records {args.warmup_records}" if getattr(args, "warmup_records", 0) else "")
           + (f" --kstreamlet-ref {args.kstreamlet_ref}" if args.kstreamlet_ref else ""))
    load = info.get("input_load_seconds")
    md = f"""# Stateless benchmark: consume → upper-case → produce

`{cmd}`

- date: {info['date']}
- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}, at end {', '.join(f'{x:.2f}' for x in info['loadavg_at_end'])}
- kstreamlet: {info['source']} (HEAD {info['git_head']}{', kstreamlet/ has uncommitted changes' if info.get('kstreamlet_dirty') else ''}), source fingerprint {', '.join(info['kstreamlet_fingerprints']) or '—'}{' **(changed during the run: results mix code versions)**' if len(info['kstreamlet_fingerprints']) > 1 else ''}
- Kafka {info['kafka_version']} ({info['broker_backend']} broker, same machine), confluent-kafka {info['confluent_kafka']}, librdkafka {info['librdkafka']}, Python {info['python']}
- other systems: {'; '.join(versions) or '—'}{'; skipped: ' + ', '.join(info['skipped_systems']) if info.get('skipped_systems') else ''}
- input: {args.records:,} records per value size ({', '.join(f'{s} B' for s in params['sizes'])}), 8-byte keys, {PARTITIONS} partitions, loaded once per size (seed {args.seed}{'; load seconds ' + json.dumps(load) if load else ''}); every run reads all of it from the beginning into a fresh {PARTITIONS}-partition output topic
- each run: its own subprocess and consumer group / application id, map `value.upper()` (key and timestamp kept); timed from the first consumed record reaching the processing code to the last processed record (start-up and group join excluded). raw and kstreamlet `consume({args.batch})`; Quix `sdf.apply(bytes.upper).to_topic(...)`, timed by `on_message_processed`; Faust an agent `async for event in stream.events(): await out.send(key, value.upper(), timestamp)`, counted in the agent loop, commit on the timer only (`broker_commit_interval` = the setting's interval), web server off; Kafka Streams `mapValues` with 1 (`kafka_streams`) or 2 (`kafka_streams_2t`) stream threads
- verification: the output, read `read_committed`, must hold every input id exactly once with an upper-cased value; otherwise the run is WRONG and not counted
- Faust is bounded by time: a run still going {args.faust_timeout:g} s after its first record is stopped there (gracefully: the final commit makes its output visible), its rate is what it processed by then ÷ that time, and it is **partial (timed)** if its committed output is correct as far as it goes (no duplicate or foreign id, every value upper-cased, a prefix of every input partition, at least what it had processed when the clock stopped); partial runs count in the medians, marked
- CPU µs/rec = the worker process's CPU time (all threads) in the timed window per record; box busy = whole-machine CPU utilisation (all {info['nproc']} CPUs, broker included) in that window
- consumer configurations of the librdkafka systems (raw, kstreamlet, Quix; kstreamlet via `kafka_config`, Quix via `consumer_extra_config`); Faust (aiokafka) and Kafka Streams (Java client) use their own clients' defaults (`{OWN_CLIENT}`), run once per setting and are compared with raw / kstreamlet under `{modes[-1]}`:
{mode_lines}
  With librdkafka defaults a consumer stops fetching a partition once 100,000 records (or 64 MB) are queued locally and only fetches again after `fetch.queue.backoff.ms` = 1 s, so a catch-up read like this one is capped by that timer (box mostly idle), not by the processing code; `tuned` shows what the processing code itself costs.
- {args.repeats} repeats per (size, consumer, setting, system), systems interleaved; total wall time {info['wall_seconds']:.0f} s
- the broker shares the machine's CPUs with the workers, so when the box is near 100% busy (other load included: see the load averages) rec/s varies a lot between repeats (see min–max); CPU µs/rec is the steadier measure of what each system's code costs

{chr(10).join(s + chr(10) for s in sections)}
## All runs

{per_run}
"""
    return md, summary
