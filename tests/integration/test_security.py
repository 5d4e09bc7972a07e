"""Security on a real secured broker (``kafka_secure``: SASL_SSL with SCRAM-SHA-512 over a throwaway
CA, StandardAuthorizer on, the plaintext listener a super user for the test's own setup):

- the exactly-once word count over SASL_SSL with only the ACLs ``kstreamlet acls --apply`` grants,
  one member with an mTLS client certificate, a member ``kill -9``'d and restarted: every word's
  committed updates are exactly 1..N, and the password is in no log line and no metric;
- a wrong password, an unknown user and an untrusted CA: ``kstreamlet run`` exits 2 within a bound
  with one line naming the setting;
- a missing ACL at start (READ on the input) and at run time (WRITE on the output removed while
  running): fatal, exit 2, one line naming the topic and the operation;
- the secured 3-node cluster: a SCRAM client produces and reads back over SASL_SSL.
"""

from __future__ import annotations

import collections
import http.client
import os
import random
import socket
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                   ResourceType)

from kstreamlet import serdes
from kstreamlet.runtime.topics import create_topics
from tests.integration.members import ROOT, Feeder, Members, read_committed

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _topics(kafka_secure, *names: str, partitions: int = 1) -> list[str]:
    out = [f"{n}-{uuid.uuid4().hex[:8]}" for n in names]
    create_topics(kafka_secure.admin, {t: partitions for t in out})
    return out


def _kstreamlet(args: list[str], env: dict[str, str], timeout: float = 90) -> tuple[int, str, str, float]:
    """Run ``kstreamlet <args>`` (a subprocess stopped by its pid); ``(exit code, stdout, stderr, seconds)``."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kstreamlet.cli", *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(10)
        raise AssertionError(f"kstreamlet {' '.join(args)} did not exit within {timeout}s\n{out}\n{err}") from None
    return proc.returncode, out, err, time.monotonic() - t0


def _apply_acls(kafka_secure, app_spec: str, principal: str, env: dict[str, str]) -> None:
    """``kstreamlet acls <app> --principal ... --apply`` through the plaintext (super-user) listener."""
    rc, out, err, _ = _kstreamlet(["acls", app_spec, "--principal", principal, "--apply",
                                   "--bootstrap-servers", kafka_secure.bootstrap_servers], env)
    assert rc == 0, f"acls --apply failed ({rc}): {out}\n{err}"
    assert "applied" in out, out


def _delete_acl(kafka_secure, principal: str, restype: ResourceType, name: str, op: AclOperation) -> None:
    flt = AclBindingFilter(restype, name, ResourcePatternType.LITERAL, principal, "*", op, AclPermissionType.ALLOW)
    for fut in kafka_secure.admin.delete_acls([flt], request_timeout=30).values():
        assert fut.result(30), f"no ACL {op.name} on {name} for {principal} to delete"


def _add_acl(kafka_secure, principal: str, restype: ResourceType, name: str, op: AclOperation,
             pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> None:
    b = AclBinding(restype, name, pattern, principal, "*", op, AclPermissionType.ALLOW)
    for fut in kafka_secure.admin.create_acls([b], request_timeout=30).values():
        fut.result(30)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("kstreamlet: ")]
    assert len(lines) == 1, f"expected one 'kstreamlet: ...' line, got:\n{err}"
    return lines[0]


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _metrics(port: int) -> str:
    return _get(port, "/metrics")[1]


def _updates(bootstrap: str, topic: str, expect: int, timeout: float = 120) -> list[tuple[str, int]]:
    """``(word, count)`` of every committed update, read until ``expect`` arrived and 4 s went quiet."""
    return [(k.decode(), serdes.INT64.deserialize(v))
            for k, v in read_committed(bootstrap, topic, expect, timeout, settle=4, with_keys=True)]


# --- exactly once over SASL_SSL with only the app's ACLs ---------------------------------------------------

@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_eos_wordcount_over_sasl_ssl_with_only_its_acls_kill9_counted_exactly_once(kafka_secure, tmp_path):
    parts = 4
    inp, out = _topics(kafka_secure, "lines", "counts", partitions=parts)
    user = kafka_secure.new_user("wordcount")
    app_id = f"wc-sec-{uuid.uuid4().hex[:8]}"
    base = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id}
    _apply_acls(kafka_secure, "services.wordcount:app", user.principal, base)
    http_port = _free_port()
    env = {**base, **user.env(), "KSTREAMLET_COMMIT_INTERVAL": "0.2", "KSTREAMLET_LOG_LEVEL": "debug"}
    members = Members("services.wordcount:app", env, tmp_path)
    # m1 also presents a client certificate signed by the broker's CA (mTLS; SASL names the principal).
    mtls = {"KSTREAMLET_SSL_CERTIFICATE_LOCATION": str(kafka_secure.client_cert_file),
            "KSTREAMLET_SSL_KEY_LOCATION": str(kafka_secure.client_key_file)}

    def start(name: str, extra: dict[str, str] | None = None) -> None:
        members.start(name, {"KSTREAMLET_STATE_DIR": str(tmp_path / f"state-{name}"), **(extra or {})})

    rnd = random.Random(17)
    vocab = [f"w{i}" for i in range(200)]
    lines = [" ".join(rnd.choice(vocab) for _ in range(4)) for _ in range(12_000)]
    truth = collections.Counter(w for line in lines for w in line.split())
    metrics_text = metadata_text = ""
    token = f"query-token-{uuid.uuid4().hex}"
    try:
        start("m1", {**mtls, "KSTREAMLET_HTTP_PORT": str(http_port), "KSTREAMLET_HTTP_AUTH_TOKEN": token})
        start("m2")
        members.wait_event("m1", "member started", 90)
        # Input goes in through the plaintext listener (the test's own super user).
        feeder = Feeder(kafka_secure.bootstrap_servers, inp, lines, rate=1_000)
        feeder.start()
        members.wait_event("m2", "first record processed", 90)
        time.sleep(3)
        members.kill9("m2")
        time.sleep(2)
        start("m2")
        feeder.join(120)
        updates = _updates(kafka_secure.bootstrap_servers, out, expect=sum(truth.values()))
        metrics_text = _metrics(http_port)
        # Queries need the bearer token; /metadata (instances, tasks, stores) shows no secret.
        assert _get(http_port, "/metadata")[0] == 401
        status, metadata_text = _get(http_port, "/metadata", {"Authorization": f"Bearer {token}"})
        assert status == 200, metadata_text
        status, one = _get(http_port, f"/stores/counts/{lines[0].split()[0]}", {"Authorization": f"Bearer {token}"})
        assert status in (200, 503), one  # 503: the word lives on m2, which serves no HTTP port
    finally:
        codes = members.stop_all()
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for word, n in updates:
        seqs[word].append(n)
    wrong = {w: (len(seqs[w]), truth[w]) for w in truth if seqs[w] != list(range(1, truth[w] + 1))}
    assert not wrong, (f"{len(wrong)} words whose committed updates are not exactly 1..N (#updates, true count): "
                       f"{dict(list(wrong.items())[:5])}\n{members.log_tail()}")
    assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0: {codes}\n{members.log_tail()}"
    assert members.starts["m2"] == 2 and members.events("m2", "first record processed"), "m2 ran, was killed, came back"
    print(f"\n{len(updates)} committed updates of {len(truth)} words, each exactly 1..N, across m2's kill -9")
    # The password is in no log line (debug level included) and no metric; the start-up log masks it.
    assert members.grep(user.password) == "", "the SASL password appeared in a log"
    assert user.password not in metrics_text
    assert user.password not in metadata_text and token not in metadata_text
    assert members.grep(token) == "", "the query token appeared in a log"
    reported = members.events("m1", "effective settings")[0]["settings"]
    assert reported["sasl_password"]["value"] == "***"
    assert reported["sasl_username"]["value"] == user.name


# --- bad credentials and certificates: one line, exit 2, fast --------------------------------------------

@pytest.mark.parametrize("case", ["wrong_password", "unknown_user", "untrusted_ca"])
@pytest.mark.timeout(120)
def test_bad_credentials_fail_fast_with_one_line_naming_the_setting(kafka_secure, case):
    inp, out = _topics(kafka_secure, "in", "out")
    user = kafka_secure.new_user("bad")
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"bad-{uuid.uuid4().hex[:8]}",
           **user.env()}
    if case == "wrong_password":
        env["KSTREAMLET_SASL_PASSWORD"] = "not-" + user.password
        expect = ["sasl_password", "KSTREAMLET_SASL_PASSWORD", repr(user.name)]
    elif case == "unknown_user":
        env["KSTREAMLET_SASL_USERNAME"] = f"nobody-{uuid.uuid4().hex[:6]}"
        expect = ["sasl_username", "unknown user"]
    else:
        env["KSTREAMLET_SSL_CA_LOCATION"] = str(kafka_secure.untrusted_ca_file)
        expect = ["ssl_ca_location", str(kafka_secure.untrusted_ca_file), "not signed by a trusted CA"]
    rc, _, err, seconds = _kstreamlet(["run", "tests.apps.stateless:app"], env)
    line = _one_error_line(err)
    print(f"\n{case} ({seconds:.1f}s): {line}")
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert seconds < 30, f"took {seconds:.1f}s to fail"
    for needle in expect:
        assert needle in line, f"{needle!r} not in: {line}"
    assert "not-" + user.password not in err and user.password not in err, "a password appeared in the output"


# --- missing ACLs: at start and at run time -------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_missing_read_acl_on_the_input_fails_at_start_naming_topic_and_operation(kafka_secure):
    inp, out = _topics(kafka_secure, "in", "out")
    user = kafka_secure.new_user("noread")
    base = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"noread-{uuid.uuid4().hex[:8]}"}
    _apply_acls(kafka_secure, "tests.apps.stateless:app", user.principal, base)
    _delete_acl(kafka_secure, user.principal, ResourceType.TOPIC, inp, AclOperation.READ)
    rc, _, err, seconds = _kstreamlet(["run", "tests.apps.stateless:app"], {**base, **user.env()})
    line = _one_error_line(err)
    print(f"\nmissing READ at start ({seconds:.1f}s): {line}")
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert seconds < 30
    assert f"READ on topic {inp!r}" in line and user.principal in line, line
    assert f"--operation Read --topic {inp}" in line, line


@pytest.mark.timeout(180)
def test_write_acl_removed_while_running_is_fatal_naming_topic_and_operation(kafka_secure, tmp_path):
    inp, out = _topics(kafka_secure, "in", "out")
    user = kafka_secure.new_user("nowrite")
    base = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"nowrite-{uuid.uuid4().hex[:8]}"}
    _apply_acls(kafka_secure, "tests.apps.stateless:app", user.principal, base)
    members = Members("tests.apps.stateless:app", {**base, **user.env(), "KSTREAMLET_COMMIT_INTERVAL": "0.2"},
                      tmp_path)
    p = Producer({"bootstrap.servers": kafka_secure.bootstrap_servers})
    try:
        members.start("m1")
        for i in range(20):
            p.produce(inp, str(i).encode(), str(i).encode())
        p.flush(10)
        got = read_committed(kafka_secure.bootstrap_servers, out, expect=20, timeout=60, settle=1)
        assert len(got) == 20, members.log_tail()
        _delete_acl(kafka_secure, user.principal, ResourceType.TOPIC, out, AclOperation.WRITE)
        time.sleep(1)
        t0 = time.monotonic()
        for i in range(20, 40):
            p.produce(inp, str(i).encode(), str(i).encode())
        p.flush(10)
        rc = members.wait_exit("m1", 60)
        seconds = time.monotonic() - t0
    finally:
        members.stop_all()
    log = (tmp_path / "m1-1.log").read_text(errors="replace")
    lines = [ln for ln in log.splitlines() if ln.startswith("kstreamlet: ")]
    print(f"\nWRITE removed while running ({seconds:.1f}s to exit): {lines}")
    assert rc == 2, f"exit {rc}\n{log[-3000:]}"
    assert len(lines) == 1, log[-3000:]
    assert f"WRITE on topic {out!r}" in lines[0] and user.principal in lines[0], lines[0]
    assert seconds < 60
    # Nothing after the removal was committed to the output.
    assert len(read_committed(kafka_secure.bootstrap_servers, out, expect=20, timeout=20, settle=2)) == 20


@pytest.mark.timeout(120)
def test_acls_check_reports_what_is_missing(kafka_secure):
    inp, out = _topics(kafka_secure, "in", "out")
    user = kafka_secure.new_user("check")
    base = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"check-{uuid.uuid4().hex[:8]}"}
    args = ["acls", "tests.apps.stateless:app", "--principal", user.principal, "--check",
            "--bootstrap-servers", kafka_secure.bootstrap_servers]
    rc, out_text, err, _ = _kstreamlet(args, base)
    assert rc == 1 and f"READ on topic {inp!r}" in out_text, (rc, out_text, err)
    _apply_acls(kafka_secure, "tests.apps.stateless:app", user.principal, base)
    rc, out_text, err, _ = _kstreamlet(args, base)
    assert rc == 0 and out_text.startswith("ok"), (rc, out_text, err)


# --- the secured N-broker cluster ---------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_secured_cluster_serves_scram_clients_over_tls(kafka_secure_cluster):
    topic = f"sec-cluster-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_secure_cluster.admin, {topic: 3})
    user = kafka_secure_cluster.new_user("cl")
    _add_acl(kafka_secure_cluster, user.principal, ResourceType.TOPIC, topic, AclOperation.ALL)
    _add_acl(kafka_secure_cluster, user.principal, ResourceType.GROUP, "g-", AclOperation.READ,
             ResourcePatternType.PREFIXED)
    assert kafka_secure_cluster.sasl_bootstrap_servers.count(",") == 2
    p = Producer(user.client_config(acks="all"))
    for i in range(30):
        p.produce(topic, str(i).encode())
    assert p.flush(60) == 0
    c = Consumer(user.client_config(**{"group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < 30 and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(100, 0.5) if m.error() is None]
    finally:
        c.close()
    assert sorted(int(v) for v in got) == list(range(30))
