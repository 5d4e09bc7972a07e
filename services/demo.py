"""The README's main job: a kstreamlet service end-to-end on a local Kafka broker.

Starts a real broker (``kstreamlet.dev.kafka``: external, Testcontainers or local jars),
creates the topics, runs the ``sentences`` service (a generating source of sentences →
words → repartitioned by word → ``words`` topic, exactly-once) as a real member process,
and prints what a ``read_committed`` consumer sees, then stops everything.

    python -m services.demo [--seconds 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from kstreamlet.dev.kafka import kafka_broker
from kstreamlet.dev.topics import create_topics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    args = ap.parse_args(argv)
    with kafka_broker() as broker:
        bs = broker.bootstrap_servers
        run_id = uuid.uuid4().hex[:6]
        words_topic = f"words-{run_id}"
        create_topics(AdminClient({"bootstrap.servers": bs}), {words_topic: 3})
        env = {**os.environ, "KSTREAMLET_BOOTSTRAP_SERVERS": bs, "KSTREAMLET_APPLICATION_ID": f"sentences-{run_id}",
               "KSTREAMLET_INSTANCE_ID": "demo-0", "WORDS_TOPIC": words_topic}
        print(f"demo: running services.sentences:app against {bs} ({broker.backend} broker) for {args.seconds:.0f}s",
              flush=True)
        service = subprocess.Popen([sys.executable, "-m", "kstreamlet.cli", "run", "services.sentences:app"], env=env)
        consumer = Consumer({"bootstrap.servers": bs, "group.id": f"demo-reader-{run_id}",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        consumer.subscribe([words_topic])
        counts: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + args.seconds
        shown = 0
        try:
            while time.monotonic() < deadline and service.poll() is None:
                for m in consumer.consume(500, 0.5):
                    if m.error():
                        continue
                    word = (m.key() or b"").decode()
                    counts[word] += 1
                    if shown < 15:
                        print(f"  {words_topic}[{m.partition()}] key={word!r} value={m.value().decode()!r}", flush=True)
                        shown += 1
        finally:
            consumer.close()
            service.send_signal(signal.SIGTERM)
            rc = service.wait(60)
        total = sum(counts.values())
        print(f"demo: {total} committed words read; top words: {counts.most_common(5)}; service exit code {rc}")
        return 0 if rc == 0 and total > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
