"""Latency scenario: end-to-end latency of the stateless upper-case job at a fixed input rate, exactly-once, commit 100 ms.

The parent produces records at a fixed rate (default 5,000/s: far below every system's
saturation) whose value starts with the send time (µs since the epoch, 16 ASCII digits),
padded with lowercase letters to 100 bytes; the system under test (a raw confluent-kafka loop, kstreamlet, Quix Streams,
Kafka Streams; each in its own subprocess, fresh input/output topics and group) upper-cases
the value exactly-once with a 100 ms commit interval, and a ``read_committed`` consumer in
the parent takes ``receive time − send time`` of every output record. Under exactly-once a
record becomes visible only with the commit of its transaction, so the commit interval
bounds the latency from below (on average about half of it).

A run: start the worker; send one probe record every 100 ms until the first output arrives
(the worker has joined and is processing: start-up excluded); then ``--warmup-seconds`` at
the rate (not measured), then ``--seconds`` at the rate (measured); wait until every input
record has arrived; SIGTERM the worker. Reported: p50 / p99 / p99.9 / max / mean latency of
the measured records, and whether every record of the run (probes and warm-up included)
arrived exactly once with its value upper-cased (else the run is WRONG).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import common
from bench import window as w

NAME = "latency"
PARTITIONS = 6
SYSTEMS = ("raw", "kstreamlet", "quix", "kafka_streams")
COMMIT_INTERVAL = 0.1
VALUE_SIZE = 100
DEFAULT_RATE = 5_000
DEFAULT_SECONDS = 30.0
DEFAULT_WARMUP = 5.0
QUICK_ARGS = ["--seconds", "10", "--warmup-seconds", "3", "--repeats", "1"]
PROBE_INTERVAL = 0.1
STARTUP_TIMEOUT = 180.0
DRAIN_TIMEOUT = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=int, default=DEFAULT_RATE, help=f"input records per second (default {DEFAULT_RATE:,})")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help=f"measured seconds per run (default {DEFAULT_SECONDS:g})")
    p.add_argument("--warmup-seconds", type=float, default=DEFAULT_WARMUP,
                   help=f"seconds at the rate before measuring, in every run (default {DEFAULT_WARMUP:g})")
    p.add_argument("--no-warmup", action="store_true", help="same as --warmup-seconds 0")
    p.add_argument("--repeats", type=int, default=1, help="runs per system, interleaved (default 1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {list(SYSTEMS)}")
    p.add_argument("--quix-python", default=None,
                   help=f"python of a virtualenv with quixstreams (default {common.DEFAULT_QUIX_VENV}/bin/python, created if missing)")
    common.add_source_argument(p)
    p.add_argument("--out", default=NAME, help="results file stem under bench/results (default 'latency')")


# --- worker side ------------------------------------------------------------------------------------

def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench _worker latency")
    p.add_argument("--system", choices=("raw", "kstreamlet", "quix"), required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--in-topic", required=True)
    p.add_argument("--out-topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--timeout", type=float, default=600.0)
    return p


def worker(argv: list[str]) -> int:
    """Runs until SIGTERM (or ``--timeout``); prints processed count and CPU since the first record."""
    a = _worker_parser().parse_args(argv)
    probe = common.Probe(0)
    facts: dict[str, Any] = {"system": a.system}
    stopped = {"by": "signal"}
    try:
        n = {"raw": _raw, "kstreamlet": _kstreamlet, "quix": _quix}[a.system](a, probe, facts, stopped)
    except BaseException as e:
        common.emit_result(probe.result(error=repr(e), **facts) | {"ok": False})
        raise
    probe.last(n)
    res = probe.result(**facts)
    res["stopped_by"] = stopped["by"]
    if res.get("ok"):
        res["cpu_pct"] = 100.0 * res["cpu_seconds"] / res["seconds"]
    common.emit_result(res)
    return 0


def _raw(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any], stopped: dict[str, str]) -> int:
    """Reference: a hand-written confluent-kafka loop doing the same work, one transaction per
    commit interval (offsets from ``consumer.position``), until SIGTERM."""
    import signal

    from confluent_kafka import Consumer, KafkaException, Producer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timer = threading.Timer(a.timeout, lambda: (stopped.update(by="timeout"), stop.set()))
    timer.daemon = True
    timer.start()
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group, "group.protocol": "consumer",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", **w.CONSUMER_CONFIG})
    producer = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": f"{a.group}-raw",
                         "transaction.timeout.ms": 10_000, "linger.ms": 5, "partitioner": "murmur2_random"})
    producer.init_transactions(30)
    consumer.subscribe([a.in_topic])
    n = 0
    in_txn = False
    next_commit = time.monotonic() + COMMIT_INTERVAL

    def commit() -> None:
        nonlocal in_txn
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
        in_txn = False
        probe.committed()

    while not stop.is_set():
        msgs = consumer.consume(1000, 0.05)
        if msgs:
            if probe.t_first is None:
                probe.first()
            if not in_txn:
                producer.begin_transaction()
                in_txn = True
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                producer.produce(a.out_topic, m.value().upper(), m.key(), timestamp=m.timestamp()[1])
            producer.poll(0)
            n += len(msgs)
        if in_txn and time.monotonic() >= next_commit:
            commit()
            next_commit = time.monotonic() + COMMIT_INTERVAL
    if in_txn:
        commit()
    consumer.close()
    return n


def _kstreamlet(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any], stopped: dict[str, str]) -> int:
    from kstreamlet import App
    from kstreamlet.logging import configure_logging
    from bench import hooks

    w.kstreamlet_facts(facts)
    app = App(application_id=a.group, bootstrap_servers=a.bootstrap, processing_guarantee="exactly_once",
              commit_interval=COMMIT_INTERVAL, instance_id="bench-0", state_dir=a.state_dir)
    app.stream(a.in_topic).map(lambda v: v.upper()).to(a.out_topic)
    configure_logging(app.settings.log_level)

    class Probe(hooks.Hooks):
        def before_batch(self, m: Any, msgs: list[Any]) -> None:
            if probe.t_first is None:
                probe.first()

        def on_commit(self, m: Any, seconds: float) -> None:
            probe.committed()

    m = hooks.member(app, Probe(), install_signal_handlers=True)  # SIGTERM: finish the checkpoint, leave

    def expire() -> None:
        stopped["by"] = "timeout"
        m.stop()

    timer = threading.Timer(a.timeout, expire)
    timer.daemon = True
    timer.start()
    m.run()
    timer.cancel()
    return m.records_processed


def _quix(a: argparse.Namespace, probe: common.Probe, facts: dict[str, Any], stopped: dict[str, str]) -> int:
    import quixstreams  # type: ignore[import-not-found]
    from quixstreams import Application  # type: ignore[import-not-found]
    from quixstreams.checkpointing.checkpoint import Checkpoint  # type: ignore[import-not-found]

    facts["quixstreams"] = quixstreams.__version__
    count = {"n": 0}
    orig_commit = Checkpoint.commit

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        r = orig_commit(self, *args, **kwargs)
        if probe.t_first is not None:
            probe.committed()
        return r

    Checkpoint.commit = commit  # type: ignore[method-assign]

    def on_processed(topic: str, partition: int, offset: int) -> None:
        if count["n"] == 0:
            probe.first()
        count["n"] += 1

    # Application.run() handles SIGTERM itself (a graceful stop with a final commit).
    app = Application(broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
                      commit_interval=COMMIT_INTERVAL, processing_guarantee="exactly-once", state_dir=a.state_dir,
                      consumer_extra_config=dict(w.CONSUMER_CONFIG), loglevel="INFO",
                      on_message_processed=on_processed)
    in_t = app.topic(a.in_topic, key_deserializer="bytes", value_deserializer="bytes")
    out_t = app.topic(a.out_topic, key_serializer="bytes", value_serializer="bytes")
    app.dataframe(in_t).apply(bytes.upper).to_topic(out_t)

    def expire() -> None:
        stopped["by"] = "timeout"
        app.stop()

    timer = threading.Timer(a.timeout, expire)
    timer.daemon = True
    timer.start()
    app.run()
    timer.cancel()
    return count["n"]


# --- parent: producer at a fixed rate, collector of latencies -------------------------------------------

_LOWER = bytes(ord("a") + b % 26 for b in range(256))


class Collector(threading.Thread):
    """``read_committed`` reader of the output topic: latency per id, duplicates, bad values."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": common.unique("bench-latency-reader"),
                           "isolation.level": "read_committed", "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.latency_us: dict[int, int] = {}
        self.duplicates = 0
        self.bad = 0
        self.unknown = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        consume = self.c.consume
        lat = self.latency_us
        try:
            while not self._stop_event.is_set():
                msgs = consume(1000, 0.05)
                now = time.time_ns() // 1000
                for m in msgs:
                    if m.error() is not None:
                        if len(self.errors) < 5:
                            self.errors.append(str(m.error()))
                        continue
                    k, v = m.key(), m.value()
                    if k is None or len(k) != 8:
                        self.unknown += 1
                        continue
                    i = int.from_bytes(k, "big")
                    if v is None or len(v) != VALUE_SIZE or not v[:16].isdigit() or not v[16:].isupper():
                        self.bad += 1
                        continue
                    if i in lat:
                        self.duplicates += 1
                        continue
                    lat[i] = now - int(v[:16])
        finally:
            self.c.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


class RateProducer:
    def __init__(self, bootstrap: str, topic: str, seed: int) -> None:
        from confluent_kafka import Producer

        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1,
                           "partitioner": "murmur2_random", "compression.type": "none"})
        self.topic = topic
        self.sent = 0
        self.errors: list[str] = []
        self.pad = random.Random(seed).randbytes(VALUE_SIZE * 1024).translate(_LOWER)

    def _delivery(self, err: Any, msg: Any) -> None:
        if err is not None and len(self.errors) < 5:
            self.errors.append(str(err))

    def send(self) -> None:
        i = self.sent
        off = (i % 1024) * VALUE_SIZE
        v = b"%016d" % (time.time_ns() // 1000) + self.pad[off + 16:off + VALUE_SIZE]
        while True:
            try:
                self.p.produce(self.topic, v, i.to_bytes(8, "big"), on_delivery=self._delivery)
                break
            except BufferError:
                self.p.poll(0.01)
        self.sent += 1

    def at_rate(self, rate: int, seconds: float) -> tuple[int, int, float]:
        """Send at ``rate``/s for ``seconds``: (first id, end id, seconds taken)."""
        first = self.sent
        t0 = time.monotonic()
        n = int(rate * seconds)
        while self.sent - first < n:
            due = min(n, int((time.monotonic() - t0) * rate) + 1)
            while self.sent - first < due:
                self.send()
            self.p.poll(0)
            nxt = t0 + (self.sent - first) / rate
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.002))
        return first, self.sent, time.monotonic() - t0


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return float(sorted_vals[k])


class LatencySuite:
    def __init__(self, args: argparse.Namespace, bootstrap: str, log_dir: Path, kstreamlet_dir: Path,
                 pythons: dict[str, str], ks: Any) -> None:
        self.args, self.bootstrap, self.log_dir = args, bootstrap, log_dir
        self.kstreamlet_dir, self.pythons, self.ks = kstreamlet_dir, pythons, ks
        self.runs: list[dict[str, Any]] = []

    def one_run(self, system: str, rep: int) -> dict[str, Any]:
        a = self.args
        tag = f"{system}-r{rep}"
        in_topic = common.unique(f"bench-latency-in-{tag}")
        out_topic = common.unique(f"bench-latency-out-{tag}")
        group = common.unique(f"bench-latency-{tag}")
        for t in (in_topic, out_topic):
            common.create_topic(self.bootstrap, t, PARTITIONS)
        state_dir = Path(tempfile.mkdtemp(prefix=f"state-{tag}-", dir=self.log_dir))
        log_path = self.log_dir / f"{tag}.log"
        worker_timeout = STARTUP_TIMEOUT + a.warmup_seconds + a.seconds + DRAIN_TIMEOUT + 60
        if system == "kafka_streams":
            cmd = [str(c) for c in self.ks.command(
                "latency", bootstrap=self.bootstrap, application_id=group, in_topic=in_topic, out_topic=out_topic,
                state_dir=str(state_dir), guarantee="exactly_once", commit_interval_ms=int(COMMIT_INTERVAL * 1000),
                target=0, timeout_s=int(worker_timeout))]
            env, cwd = None, state_dir
        else:
            cmd, env = common.python_worker_command(self.pythons[system], NAME, [
                "--system", system, "--bootstrap", self.bootstrap, "--in-topic", in_topic, "--out-topic", out_topic,
                "--group", group, "--state-dir", str(state_dir), "--timeout", str(worker_timeout)])
            cwd = self.kstreamlet_dir
        collector = Collector(self.bootstrap, out_topic)
        collector.start()
        producer = RateProducer(self.bootstrap, in_topic, a.seed + rep)
        t_start = time.monotonic()
        proc = common.start_command(cmd, log_path, cwd=cwd, env=env)
        run: dict[str, Any] = {"system": system, "repeat": rep, "log": str(log_path), "rate_target": a.rate}
        problem = ""
        try:
            # 1. readiness: probes until the first output (the worker has joined and processes)
            while not collector.latency_us:
                if proc.poll() is not None:
                    problem = f"worker exited during start-up (rc={proc.returncode})"
                    break
                if time.monotonic() - t_start > STARTUP_TIMEOUT:
                    problem = f"no output within {STARTUP_TIMEOUT:.0f} s of start"
                    break
                producer.send()
                producer.p.poll(0)
                time.sleep(PROBE_INTERVAL)
            run["startup_seconds"] = round(time.monotonic() - t_start, 2)
            run["probes"] = producer.sent
            if not problem:
                # 2. warm-up and measured phase at the rate
                if a.warmup_seconds > 0:
                    producer.at_rate(a.rate, a.warmup_seconds)
                m0, m1, secs = producer.at_rate(a.rate, a.seconds)
                run.update(measured_first_id=m0, measured_end_id=m1, send_seconds=round(secs, 3),
                           send_rate=(m1 - m0) / secs if secs else None)
                if producer.p.flush(30):
                    problem = "input not acknowledged"
                # 3. drain: every input record must arrive
                last_n, last_change = -1, time.monotonic()
                while len(collector.latency_us) < producer.sent and time.monotonic() - last_change < DRAIN_TIMEOUT:
                    n = len(collector.latency_us)
                    if n != last_n:
                        last_n, last_change = n, time.monotonic()
                    time.sleep(0.1)
        finally:
            outcome = common.stop_command(proc, log_path)
            collector.stop()
        res = dict(outcome.result or {})
        if res.get("cpu_pct") is None and res.get("cpu_seconds") is not None and res.get("seconds"):
            res["cpu_pct"] = 100.0 * res["cpu_seconds"] / res["seconds"]
        run.update({"worker_rc": outcome.rc, "worker_wall_seconds": round(outcome.wall_seconds, 2),
                    "worker": res, "sent": producer.sent, "received": len(collector.latency_us),
                    "duplicates": collector.duplicates, "bad_values": collector.bad, "unknown_keys": collector.unknown,
                    "producer_errors": producer.errors, "consumer_errors": collector.errors})
        if "measured_first_id" in run:
            lats = sorted(collector.latency_us[i] for i in range(run["measured_first_id"], run["measured_end_id"])
                          if i in collector.latency_us)
            ms = [x / 1000 for x in lats]
            run.update(measured=len(ms), p50_ms=_percentile(ms, 0.50), p99_ms=_percentile(ms, 0.99),
                       p999_ms=_percentile(ms, 0.999), max_ms=ms[-1] if ms else None,
                       mean_ms=statistics.fmean(ms) if ms else None)
        missing = producer.sent - len(collector.latency_us)
        status = "OK"
        if problem:
            status = f"WRONG: {problem}"
        elif missing or collector.duplicates or collector.bad or collector.unknown or producer.errors:
            status = (f"WRONG: sent {producer.sent:,}, received {len(collector.latency_us):,} distinct "
                      f"(missing {missing:,}), duplicates {collector.duplicates}, bad values {collector.bad}, "
                      f"unknown keys {collector.unknown}" + (f", producer errors {producer.errors[:2]}" if producer.errors else ""))
        elif system != "kafka_streams" and not res.get("ok"):
            status = f"WRONG: worker failed (rc={outcome.rc}, {res.get('error', 'no result')})"
        run["status"] = status
        line = f"  {tag:<22} "
        if run.get("measured"):
            line += (f"p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  max {run['max_ms']:7.1f} ms  "
                     f"({run['measured']:,} measured at {run.get('send_rate') or 0:,.0f}/s; start-up {run['startup_seconds']:.1f} s)")
        print(line + f"  {status}", flush=True)
        if status != "OK" and outcome.log_tail:
            print("    worker log tail:\n    " + outcome.log_tail.replace("\n", "\n    "), flush=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        try:
            common.delete_run_topics(self.bootstrap, group, [in_topic, out_topic])
        except Exception as e:  # noqa: BLE001 -- best effort
            run["delete_error"] = repr(e)
        return run


def _summary(systems: list[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        good = [r for r in mine if r["status"] == "OK" and r.get("measured")]
        out[system] = {k: common.summarize(r[k] for r in good) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}
        out[system]["cpu_pct"] = common.summarize(r["worker"]["cpu_pct"] for r in good if (r.get("worker") or {}).get("cpu_pct") is not None)
        out[system]["measured"] = sum(r["measured"] for r in good)
        out[system]["ok_runs"] = len(good)
        out[system]["wrong_runs"] = len(mine) - len(good)
    base = (out.get("kstreamlet") or {}).get("p99_ms")
    for system in systems:
        p99 = out[system]["p99_ms"]
        out[system]["p99_ratio_vs_kstreamlet"] = p99["median"] / base["median"] if p99 and base and base["median"] else None
    return out


def _report(args: argparse.Namespace, systems: list[str], runs: list[dict[str, Any]], info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    summary = _summary(systems, runs)
    fr = lambda x, f="{:.1f}": "—" if x is None else f.format(x)
    rows = []
    for system in systems:
        s = summary[system]
        wrong = s["wrong_runs"]
        rows.append([system, common.cell(s["p50_ms"], "{:.1f}") + (f" **{wrong} WRONG**" if wrong else ""),
                     common.cell(s["p99_ms"], "{:.1f}"), common.cell(s["p999_ms"], "{:.1f}"),
                     common.cell(s["max_ms"], "{:.1f}"), common.cell(s["mean_ms"], "{:.1f}"),
                     f"{s['p99_ratio_vs_kstreamlet']:.2f}" if s["p99_ratio_vs_kstreamlet"] is not None else "—",
                     common.cell(s["cpu_pct"], "{:.0f}%"), f"{s['measured']:,}", f"{s['ok_runs']}/{s['ok_runs'] + wrong}"])
    header = ["system", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "mean ms", "p99 ÷ kstreamlet",
              "worker CPU", "records measured", "correct runs"]
    per_run = common.md_table(
        ["system", "repeat", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "mean ms", "send rate", "start-up s",
         "sent", "received", "worker CPU", "status"],
        [[r["system"], str(r["repeat"]), fr(r.get("p50_ms")), fr(r.get("p99_ms")), fr(r.get("p999_ms")),
          fr(r.get("max_ms")), fr(r.get("mean_ms")), fr(r.get("send_rate"), "{:,.0f}"), fr(r.get("startup_seconds")),
          f"{r.get('sent', 0):,}", f"{r.get('received', 0):,}", fr((r.get("worker") or {}).get("cpu_pct"), "{:.0f}%"),
          r["status"]] for r in runs])
    cmd = f"python -m bench {NAME} --rate {args.rate} --seconds {args.seconds:g} --warmup-seconds {args.warmup_seconds:g} --repeats {args.repeats}"
    if args.systems != ",".join(SYSTEMS):
        cmd += f" --systems {args.systems}"
    if args.kstreamlet_ref:
        cmd += f" --kstreamlet-ref {args.kstreamlet_ref}"
    la, lb = info["loadavg_at_start"], info.get("loadavg_at_end") or info["loadavg_at_start"]
    md = f"""# Latency benchmark: upper-case at {args.rate:,} records/s, exactly-once, commit {COMMIT_INTERVAL * 1000:.0f} ms

`{cmd}`

- date: {info['date']}
- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB RAM; load average at start {', '.join(f'{x:.2f}' for x in la)}, at end {', '.join(f'{x:.2f}' for x in lb)}
{w.version_lines(info, systems)}
- Kafka {info['kafka_version']} ({info['broker_backend']} broker, same machine), Python {info['python']}
- input: produced by the benchmark process at {args.rate:,} records/s (idempotent producer, `linger.ms=1`, murmur2-random partitioner, {PARTITIONS} partitions): key = 8-byte id, value = send time in µs since the epoch as 16 ASCII digits + lowercase letters to {VALUE_SIZE} bytes
- work (all): value → upper case, key and timestamp kept (raw: a hand-written confluent-kafka consume → produce loop with one transaction per commit interval and `consume(1000, 0.05)`, as reference; kstreamlet `map(v.upper())`, Quix `apply(bytes.upper)`, Kafka Streams `mapValues`), exactly-once, commit interval {COMMIT_INTERVAL * 1000:.0f} ms, one process / one stream thread, otherwise each system's defaults
- latency = time a `read_committed` consumer in the benchmark process (`fetch.wait.max.ms=50`) receives the output record − its send time (same clock); it includes the producer, the broker, the system, the commit that makes the record visible (≤ {COMMIT_INTERVAL * 1000:.0f} ms + commit time) and the read
- each run: fresh topics and group; probes every {PROBE_INTERVAL * 1000:.0f} ms until the first output arrives (start-up excluded), {args.warmup_seconds:g} s warm-up at the rate (not measured), {args.seconds:g} s measured; then every record of the run must arrive exactly once, upper-cased, within {DRAIN_TIMEOUT:.0f} s of the last send (else WRONG); the worker is stopped with SIGTERM
- worker CPU = the worker process's CPU time ÷ wall time from its first record to its stop (Kafka Streams: the JVM's, JIT and GC included), i.e. % of one core
- {args.repeats} run(s) per system, order rotated; cells with several runs are median (min–max); total wall time {info.get('wall_seconds', 0):.0f} s

{common.md_table(header, rows)}

## All runs

{per_run}
"""
    return md, summary


def run(args: argparse.Namespace) -> int:
    from kstreamlet.dev.kafka import kafka_broker

    if args.no_warmup:
        args.warmup_seconds = 0.0
    systems = w.select_systems(args, SYSTEMS)
    info = common.machine_info()
    ks_dir, code = common.kstreamlet_root(args.kstreamlet_ref)
    info.update(code)
    systems, pythons, ks = w.prepare_systems(args, systems, info)
    t_start = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix=f"kstreamlet-bench-{NAME}-"))
    print(f"bench {NAME}: {args.rate:,} records/s, {args.warmup_seconds:g} s warm-up + {args.seconds:g} s measured, "
          f"{args.repeats} repeats, systems {systems}; kstreamlet from {code['source']} ({ks_dir / 'kstreamlet'}); "
          f"worker logs in {log_dir}", flush=True)
    runs: list[dict[str, Any]] = []
    with kafka_broker() as broker:
        info["broker_backend"] = broker.backend
        suite = LatencySuite(args, broker.bootstrap_servers, log_dir, ks_dir, pythons, ks)
        for rep in range(args.repeats):
            k = rep % len(systems)
            order = systems[k:] + systems[:k]
            for system in order:
                runs.append(suite.one_run(system, rep + 1))
    info["loadavg_at_end"] = list(os.getloadavg())
    info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    info["kstreamlet_fingerprints"] = sorted({r["worker"]["kstreamlet_fingerprint"] for r in runs
                                              if (r.get("worker") or {}).get("kstreamlet_fingerprint")})
    if args.repeats > 0:
        md, summary = _report(args, systems, runs, info)
        data = {"scenario": NAME, "machine": info, "systems": systems,
                "params": {"rate": args.rate, "seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
                           "repeats": args.repeats, "partitions": PARTITIONS, "value_size": VALUE_SIZE,
                           "commit_interval": COMMIT_INTERVAL},
                "summary": summary, "runs": runs, "args": w.plain_args(args)}
        md_path, json_path = common.write_results(args.out, md, data)
        print()
        print(md)
        print(f"written {md_path} and {json_path}")
    return 1 if any(r["status"] != "OK" for r in runs) else 0
