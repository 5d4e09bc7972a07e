"""The README's main job: the ``wordcount`` service end-to-end on a local Kafka broker.

Starts a real broker (``kstreamlet.dev.kafka``: ``KSTREAMLET_BOOTSTRAP_SERVERS``,
Testcontainers, or Apache Kafka's jars run locally), creates the topics, starts
``services.wordcount`` as a real service process (exactly-once, RocksDB state with a
changelog), feeds it generated sentences for ``--seconds``, shows the counts a
``read_committed`` consumer sees while it runs, and at the end checks them against the
true counts of what was sent (every line counted exactly once), stops the service with
SIGTERM and exits non-zero if anything is off.

    python -m services.demo [--seconds 20] [--rate 200]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from kstreamlet.dev.kafka import kafka_broker
from kstreamlet.runtime.topics import create_topics

SENTENCES = [
    "to be or not to be that is the question",
    "the quick brown fox jumps over the lazy dog",
    "exactly once is a property of the whole pipeline",
    "streams and tables are two sides of the same coin",
    "a watermark is a promise about time",
]


class LineFeeder(threading.Thread):
    """Produces random sentences at ``rate`` lines/s until stopped; keeps the true word counts."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
        self.topic, self.rate = topic, rate
        self.truth: collections.Counter[str] = collections.Counter()
        self.lines = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        rnd = random.Random(7)
        t0 = time.monotonic()
        while not self.stopping.is_set():
            line = rnd.choice(SENTENCES)
            self.producer.produce(self.topic, line.encode())
            self.truth.update(line.split())
            self.lines += 1
            self.producer.poll(0)
            delay = t0 + self.lines / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        unsent = self.producer.flush(30)
        self.producer = None  # type: ignore[assignment]  # closed before the broker goes away
        if unsent:
            raise RuntimeError("demo: input lines not acknowledged by the broker")


def _table(counts: dict[str, int], n: int = 8) -> str:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return "  ".join(f"{w}={c}" for w, c in top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to feed input (default 20)")
    ap.add_argument("--rate", type=float, default=200.0, help="input lines per second (default 200)")
    args = ap.parse_args(argv)
    with kafka_broker() as broker:
        bs = broker.bootstrap_servers
        run_id = uuid.uuid4().hex[:6]
        lines_topic, counts_topic = f"lines-{run_id}", f"word-counts-{run_id}"
        create_topics(AdminClient({"bootstrap.servers": bs}), {lines_topic: 3, counts_topic: 3})
        env = {**os.environ, "KSTREAMLET_BOOTSTRAP_SERVERS": bs, "KSTREAMLET_APPLICATION_ID": f"wordcount-{run_id}",
               "KSTREAMLET_INSTANCE_ID": "demo-0", "IN_TOPIC": lines_topic, "OUT_TOPIC": counts_topic}
        print(f"demo: services.wordcount on {bs} ({broker.backend} broker): {args.rate:.0f} lines/s into "
              f"{lines_topic} for {args.seconds:.0f}s; word counts from {counts_topic} (read_committed)", flush=True)
        log_path = os.path.join(tempfile.gettempdir(), f"kstreamlet-demo-{run_id}.log")
        log = open(log_path, "wb")
        print(f"demo: service logs (JSON) in {log_path}", flush=True)
        service = subprocess.Popen([sys.executable, "-m", "kstreamlet.cli", "run", "services.wordcount:app"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        consumer = Consumer({"bootstrap.servers": bs, "group.id": f"demo-reader-{run_id}",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        consumer.subscribe([counts_topic])
        feeder = LineFeeder(bs, lines_topic, args.rate)
        counts: dict[str, int] = {}
        updates = 0
        rc: int | None = None
        try:
            feeder.start()
            t0 = time.monotonic()
            next_show = t0 + 2
            settle_deadline = None
            while service.poll() is None:
                for m in consumer.consume(500, 0.2):
                    if m.error():
                        continue
                    counts[(m.key() or b"").decode()] = struct.unpack(">q", m.value())[0]
                    updates += 1
                now = time.monotonic()
                if now >= next_show:
                    print(f"  t={now - t0:4.0f}s  lines sent {feeder.lines:>6}  count updates {updates:>7}  "
                          f"top: {_table(counts)}", flush=True)
                    next_show = now + 2
                if settle_deadline is None and now - t0 >= args.seconds:
                    feeder.stopping.set()
                    feeder.join(60)
                    settle_deadline = now + 30  # the last checkpoint makes the last counts visible
                if settle_deadline is not None and (counts == dict(feeder.truth) or now > settle_deadline):
                    break
        finally:
            feeder.stopping.set()
            consumer.close()
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
            rc = service.wait(60)
            log.close()
        truth = dict(feeder.truth)
        exact = counts == truth
        print(f"demo: {feeder.lines} lines sent, {sum(truth.values())} words; final counts "
              f"{'match the input exactly' if exact else 'DIFFER from the input'}; top: {_table(counts)}")
        if not exact:
            diff = {w: (counts.get(w), truth.get(w)) for w in set(counts) | set(truth) if counts.get(w) != truth.get(w)}
            print(f"demo: (seen, true) for differing words: {dict(list(diff.items())[:10])}")
        print(f"demo: service exit code {rc} after SIGTERM")
        if rc != 0 or not exact:
            with open(log_path, errors="replace") as f:
                print("demo: service log tail:\n" + "".join(f.readlines()[-20:]))
        return 0 if rc == 0 and exact and feeder.lines > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
