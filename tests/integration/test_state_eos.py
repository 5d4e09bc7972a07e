"""Keyed state with changelogs on the real broker: exactly-once word count under kill -9,
wiped state dirs, and restoration of a large changelog."""

from __future__ import annotations

import collections
import random
import shutil
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from kstreamlet.runtime.topics import create_topics
from kstreamlet.state.codec import key_prefix
from tests.integration.members import Feeder, Members

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def read_counts(bootstrap: str, topic: str, expect: int, timeout: float = 180, settle: float = 3,
                final: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """Committed updates until at least ``expect`` came (and, with ``final``, each word's latest is
    its final count) and then ``settle`` seconds passed without one."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe([topic])
    out: list[tuple[str, int]] = []
    latest: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    quiet = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = [m for m in c.consume(5000, 0.5) if m.error() is None]
            if got:
                quiet = time.monotonic()
                out.extend((m.key().decode(), struct.unpack(">q", m.value())[0]) for m in got)
                latest.update(out[-len(got):])
            elif (len(out) >= expect and time.monotonic() - quiet >= settle
                  and (final is None or latest == final)):
                break
    finally:
        c.close()
    return out


def _owns_state_task(members: Members, name: str) -> bool:
    """Whether the latest incarnation of ``name`` logged an assignment with a counting task (``1_*``)."""
    return any(t.startswith("1_") for e in _latest_events(members, name, "partitions assigned") for t in e["tasks"])


def _latest_events(members: Members, name: str, event: str) -> list[dict]:
    """The ``event`` log records of the latest incarnation of ``name``."""
    return members.events(name, event, incarnation=-1)


def _wait_for_state_task(members: Members, name: str, timeout: float, required: bool = True) -> bool:
    """Until the latest incarnation of ``name`` owns a counting task; False (or an error when
    ``required``) if it got none within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _owns_state_task(members, name):
            return True
        time.sleep(0.2)
    if required:
        raise AssertionError(f"{name} got no counting task within {timeout}s\n{members.log_tail()}")
    return False


def test_word_count_exactly_once_with_kill9_and_wiped_state(kafka_bootstrap, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=6, name="lines")
    out = kafka_topic(partitions=6, name="counts")
    # With the record cache on (state/cache.py; off by default): the cache's flush is part of each
    # checkpoint, and kill -9 / abort must lose or repeat nothing it held.
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"wc-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_RECORD_CACHE_MAX_BYTES": str(10 * 1024 * 1024)}
    members = Members("services.wordcount:app", env, tmp_path)
    state = {n: tmp_path / f"state-{n}" for n in ("m1", "m2", "m3")}
    start = lambda n: members.start(n, {"KSTREAMLET_STATE_DIR": str(state[n])})  # noqa: E731
    rnd = random.Random(7)
    vocab = [f"w{i}" for i in range(400)]
    lines = [" ".join(rnd.choice(vocab) for _ in range(5)) for _ in range(45_000)]
    truth = collections.Counter(w for line in lines for w in line.split())
    try:
        for n in ("m1", "m2", "m3"):
            start(n)
        feeder = Feeder(kafka_bootstrap, inp, lines, rate=2_500)
        feeder.start()
        time.sleep(4)
        assert feeder.is_alive(), "input finished before the first kill"
        members.kill9("m2")
        time.sleep(1)
        start("m2")
        time.sleep(4)
        # The second kill must hit state m2 has committed: wait until this incarnation owns a
        # counting task (sub-topology 1, the state), then a little longer than a commit interval.
        _wait_for_state_task(members, "m2", timeout=30)
        time.sleep(1)
        assert feeder.is_alive(), "input finished before the second kill"
        members.kill9("m2")
        shutil.rmtree(state["m2"], ignore_errors=True)  # a new pod: state restored from the changelog
        time.sleep(1)
        start("m2")
        # The group's assignor decides whether the wiped incarnation gets a counting task back (it
        # may get only splitter partitions); only then is a restore from the changelog required.
        wiped_owns_state = _wait_for_state_task(members, "m2", timeout=20, required=False)
        feeder.join(120)
        updates = read_counts(kafka_bootstrap, out, expect=len(truth), final=dict(truth))
        # A counting task the wiped member got late (when the killed incarnation's session
        # expired) may hold no input left to process, so the counts above can be complete while
        # its restore still runs: let a restore that started finish before the stop.
        wiped_owns_state = wiped_owns_state or _owns_state_task(members, "m2")
        deadline = time.monotonic() + 60
        while (wiped_owns_state and time.monotonic() < deadline
               and len(_latest_events(members, "m2", "store restored")) < len(_latest_events(members, "m2", "restoring store"))):
            time.sleep(0.3)
    finally:
        codes = members.stop_all()
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for word, n in updates:
        seqs[word].append(n)
    # The cache forwards the last count per word per checkpoint: each word's committed updates rise
    # strictly (a repeated or lost-and-redone update would not) and end at its true count (a record
    # counted twice or lost would not).
    wrong = {w: (seqs[w][:3], seqs[w][-3:], len(seqs[w]), truth[w]) for w in truth
             if not seqs[w] or seqs[w][-1] != truth[w] or any(a >= b for a, b in zip(seqs[w], seqs[w][1:]))}
    assert not wrong, (
        f"{len(wrong)} words whose committed count updates do not rise strictly to N "
        f"(first/last updates, #updates, true count): {dict(list(wrong.items())[:5])}\n{members.log_tail()}"
    )
    assert len(updates) < sum(truth.values()) // 2, (
        f"the record cache folded nothing: {len(updates)} updates for {sum(truth.values())} words")
    assert set(seqs) == set(truth), f"unexpected words in output: {set(seqs) - set(truth)}"
    assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0: {codes}"
    # A counting task the wiped incarnation got is restored when its changelog holds anything (the
    # assignment lists it under "restoring"; with the state dir wiped the restore starts at 0). One
    # nobody had committed to yet (it was assigned to the killed incarnation all along) has an empty
    # changelog and nothing to restore; then the counts above are what proves the state right.
    to_restore = sorted({t for e in _latest_events(members, "m2", "partitions assigned")
                         for t in e.get("restoring", []) if t.startswith("1_")})
    started = _latest_events(members, "m2", "restoring store")
    restored = _latest_events(members, "m2", "store restored")
    if to_restore:
        assert started and len(restored) >= len(started), (
            f"the wiped member got counting tasks {to_restore} to restore from the changelog: restores "
            f"started {started}, finished {restored}\n{members.log_tail()}")
    print(f"\nwiped member: counting task {wiped_owns_state}, to restore {to_restore}, "
          f"records restored {[e['records'] for e in restored]}")


def test_restores_a_million_changelog_records(kafka_bootstrap, kafka_admin, kafka_topic, tmp_path):
    """Seed the changelog with 1M committed records, start a member with no local state,
    check restoration rate and that counting continues from the restored values."""
    inp = kafka_topic(partitions=1, name="lines")
    out = kafka_topic(partitions=1, name="counts")
    app_id = f"restore-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-counts-value-changelog"
    words_topic = f"{app_id}-words-repartition"
    create_topics(kafka_admin, {changelog: 1, words_topic: 1}, config=None)
    n_keys, rounds = 200_000, 5
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"seed-{app_id}", "linger.ms": 50,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
    p.init_transactions(30)
    p.begin_transaction()
    for r in range(1, rounds + 1):
        for i in range(n_keys):
            while True:
                try:
                    p.produce(changelog, struct.pack(">q", r), key_prefix(f"k{i}".encode()), partition=0)
                    break
                except BufferError:
                    p.poll(0.05)
    p.commit_transaction(120)
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_STATE_DIR": str(tmp_path / "state")}
    members = Members("services.wordcount:app", env, tmp_path)
    try:
        members.start("r1")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not members.events("r1", "store restored"):
            time.sleep(0.5)
        done = members.events("r1", "store restored")
        assert done, f"restoration did not finish in time\n{members.log_tail()}"
        ev = [e for e in done if e["store"] == "counts-value"][0]
        print(f"\nrestored {ev['records']} changelog records in {ev['seconds']}s = {ev['records_per_second']} records/s")
        assert ev["records"] == n_keys * rounds, ev
        seed = Producer({"bootstrap.servers": kafka_bootstrap})
        seed.produce(inp, b"k0 k199999 k0")
        seed.flush(10)
        got = read_counts(kafka_bootstrap, out, expect=3, timeout=60, settle=1)
    finally:
        members.stop_all()
    assert got == [("k0", rounds + 1), ("k199999", rounds + 1), ("k0", rounds + 2)], got
