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
    values = [str(i) for i in range(200)]
    big_at = {5, 100, 199}
    for i in big_at:
        values[i] = f"big{i}"
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
