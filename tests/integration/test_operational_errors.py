"""Operational behaviour on the real broker: readiness of an idle member, outputs the broker rejects."""

from __future__ import annotations

import http.client
import socket
import time
import uuid

import pytest

from tests.integration.members import Feeder, Members, multiset_diff, read_committed

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readyz(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()
    except OSError:
        return None


def _inputs_with_big_records(n: int = 200, big_at: frozenset[int] = frozenset({5, 100, 199})) -> tuple[list[str], set[int]]:
    """``n`` input values ``"0".."n-1"``, those at ``big_at`` replaced by ``"big<i>"`` (the app
    makes a 50 KB output of each): the inputs and the positions of the big ones."""
    values = [f"big{i}" if i in big_at else str(i) for i in range(n)]
    return values, set(big_at)


@pytest.mark.parametrize("group_protocol", ["consumer", "classic"])
def test_a_member_without_partitions_is_ready(kafka_bootstrap, kafka_topic, tmp_path, group_protocol):
    inp, out = kafka_topic(partitions=1, name="in"), kafka_topic(partitions=1, name="out")
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"ready-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_GROUP_PROTOCOL": group_protocol}
    members = Members("tests.apps.stateless:app", env, tmp_path)
    ports = {"m1": _free_port(), "m2": _free_port()}
    try:
        members.start("m1", {"KSTREAMLET_HTTP_PORT": str(ports["m1"])})
        members.wait_event("m1", "partitions assigned", 60)
        members.start("m2", {"KSTREAMLET_HTTP_PORT": str(ports["m2"])})
        deadline = time.monotonic() + 45
        status: dict[str, int | None] = {}
        while time.monotonic() < deadline:
            status = {n: _readyz(p) for n, p in ports.items()}
            if all(s == 200 for s in status.values()):
                break
            time.sleep(0.5)
        assert all(s == 200 for s in status.values()), (
            f"expected both members (one of them without partitions) to answer /readyz 200, saw {status}\n"
            + members.log_tail())
        assert sorted(members.alive()) == ["m1", "m2"], members.log_tail()
    finally:
        codes = members.stop_all()
    assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0, got {codes}"


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_outputs_too_large_for_the_topic_go_to_the_dlq_and_processing_goes_on(kafka_bootstrap, kafka_topic, tmp_path,
                                                                               guarantee):
    inp = kafka_topic(partitions=1, name="in")
    out = kafka_topic(partitions=1, name="out", config={"max.message.bytes": "10000"})
    app_id = f"big-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_PROCESSING_GUARANTEE": guarantee,
           "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    members = Members("tests.apps.big_outputs:app", env, tmp_path)
    values, big_at = _inputs_with_big_records()
    try:
        members.start("m1")
        feeder = Feeder(kafka_bootstrap, inp, values, rate=50_000)
        feeder.start()
        feeder.join(60)
        normal = [f"{v}:out".encode() for v in values if not v.startswith("big")]
        seen = read_committed(kafka_bootstrap, out, expect=len(normal), timeout=60)
        missing, extra = multiset_diff(normal, seen)
        assert not missing and not extra, (
            f"expected each of {len(normal)} normal outputs exactly once; missing {sum(missing.values())} "
            f"(e.g. {list(missing)[:5]}), extra {sum(extra.values())} (e.g. {list(extra)[:5]})\n" + members.log_tail())
        dlq = read_committed(kafka_bootstrap, f"{app_id}-dlq", expect=3, timeout=30, with_headers=True)
        assert sorted(v for v, _ in dlq) == sorted(f"big{i}".encode() for i in big_at), (
            f"expected the 3 big inputs in the DLQ, saw {[v[:20] for v, _ in dlq]}\n" + members.log_tail())
        for _, headers in dlq:
            h = dict(headers)
            assert h["kstreamlet.error.stage"] == b"produce", h
            assert h["kstreamlet.error.output.topic"] == out.encode(), h
            assert h["kstreamlet.error.code"] == b"MSG_SIZE_TOO_LARGE", h
            assert b"10000" in h["kstreamlet.error.message"], h
            assert h["kstreamlet.source.topic"] == inp.encode(), h
        assert members.alive() == ["m1"], "the member must keep running after rejected outputs\n" + members.log_tail()
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}, f"graceful stop must exit 0, got {codes}\n{members.log_tail()}"


def _big_service(kafka_bootstrap, kafka_topic, tmp_path, guarantee, out_config, dlq_config=None):
    inp = kafka_topic(partitions=1, name="in")
    out = kafka_topic(partitions=1, name="out", config=out_config)
    app_id = f"big-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_PROCESSING_GUARANTEE": guarantee,
           "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    if dlq_config is not None:
        env["KSTREAMLET_DLQ_TOPIC"] = kafka_topic(partitions=1, name="dlq", config=dlq_config)
    else:
        env["KSTREAMLET_DLQ_TOPIC"] = f"{app_id}-dlq"
    return Members("tests.apps.big_outputs:app", env, tmp_path), inp, out, env["KSTREAMLET_DLQ_TOPIC"]


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_topic_limit_lowered_while_running_is_caught_on_the_replay(kafka_bootstrap, kafka_topic, kafka_admin,
                                                                     tmp_path, guarantee):
    """The broker rejects outputs that passed the checks (the topic's max.message.bytes was
    lowered after start): the checkpoint aborts, the limits are re-read, the replay sends the
    big inputs to the DLQ, and every normal output is there (exactly once under EOS)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    members, inp, out, dlq_topic = _big_service(kafka_bootstrap, kafka_topic, tmp_path, guarantee,
                                                {"max.message.bytes": "200000"})
    values, big_at = _inputs_with_big_records()
    try:
        members.start("m1")
        members.wait_event("m1", "partitions assigned", 60)
        res = ConfigResource(ConfigResource.Type.TOPIC, out, incremental_configs=[
            ConfigEntry("max.message.bytes", "10000", incremental_operation=AlterConfigOpType.SET)])
        for fut in kafka_admin.incremental_alter_configs([res]).values():
            fut.result(30)
        feeder = Feeder(kafka_bootstrap, inp, values, rate=50_000)
        feeder.start()
        feeder.join(60)
        normal = [f"{v}:out".encode() for v in values if not v.startswith("big")]
        seen = read_committed(kafka_bootstrap, out, expect=len(normal), timeout=90)
        missing, extra = multiset_diff(normal, seen)
        assert not missing, f"missing {sum(missing.values())} normal outputs, e.g. {list(missing)[:5]}\n" + members.log_tail()
        if guarantee == "exactly_once":
            assert not extra, f"duplicated/unexpected {list(extra)[:5]}\n" + members.log_tail()
        else:
            assert set(seen) == set(normal), "only normal outputs may appear (at least once)"
        dlq = read_committed(kafka_bootstrap, dlq_topic, expect=3, timeout=30, with_headers=True)
        assert {v for v, _ in dlq} == {f"big{i}".encode() for i in big_at}, (
            f"expected the 3 big inputs in the DLQ, saw {[v[:20] for v, _ in dlq]}\n" + members.log_tail())
        if guarantee == "exactly_once":
            assert len(dlq) == 3, f"expected each big input once in the DLQ, saw {len(dlq)}"
        for _, headers in dlq:
            h = dict(headers)
            assert h["kstreamlet.error.output.topic"] == out.encode() and h["kstreamlet.error.code"] == b"MSG_SIZE_TOO_LARGE", h
        assert members.alive() == ["m1"], "the member must keep running\n" + members.log_tail()
        assert members.events("m1", "the broker rejected an output record; topic limits are re-read before the replay") \
            or members.events("m1", "checkpoint aborted; replaying from last commit") \
            or members.events("m1", "producer fenced or fatal; rebuilding clients and rejoining"), (
            "expected the broker to have rejected an output (else the test proves nothing)\n" + members.log_tail())
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}, f"graceful stop must exit 0, got {codes}\n{members.log_tail()}"


def test_a_dead_letter_record_too_large_for_the_dlq_is_cut_to_fit_with_a_header(kafka_bootstrap, kafka_topic, tmp_path):
    members, inp, out, dlq_topic = _big_service(kafka_bootstrap, kafka_topic, tmp_path, "exactly_once", None,
                                                dlq_config={"max.message.bytes": "20000"})
    big_failing = "fail" + "y" * 30_000
    try:
        members.start("m1")
        feeder = Feeder(kafka_bootstrap, inp, ["1", big_failing, "2"], rate=1000)
        feeder.start()
        feeder.join(60)
        seen = read_committed(kafka_bootstrap, out, expect=2, timeout=60)
        assert sorted(seen) == [b"1:out", b"2:out"], f"saw {seen}\n" + members.log_tail()
        dlq = read_committed(kafka_bootstrap, dlq_topic, expect=1, timeout=30, with_headers=True)
        assert len(dlq) == 1, f"expected one DLQ record, saw {len(dlq)}\n" + members.log_tail()
        value, headers = dlq[0]
        h = dict(headers)
        assert value and len(value) > 5_000 and big_failing.encode().startswith(value) and len(value) < 20_000, len(value or b"")
        assert b"30004" in h["kstreamlet.dlq.truncated"], h["kstreamlet.dlq.truncated"]
        assert h["kstreamlet.error.message"] == b"failing record", h
        assert members.alive() == ["m1"], members.log_tail()
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}, f"graceful stop must exit 0, got {codes}\n{members.log_tail()}"
