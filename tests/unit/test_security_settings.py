"""Security settings (mapping onto every client, coherence checks, secrets never shown), the ACL list
of ``kstreamlet acls`` and the one-line AccessErrors (runtime/acls.py). No broker: see
tests/integration/test_security.py for the real secured broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from kstreamlet import App, serdes
from kstreamlet.cli import main
from kstreamlet.config import Settings, resolve_settings
from kstreamlet.errors import AccessError, ConfigError
from kstreamlet.runtime.acls import Acl, access_error, authorization_kind, required_acls
from kstreamlet.runtime.clients import client_config, consumer_config, producer_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca(tmp_path: Path) -> str:
    p = tmp_path / "ca.pem"
    p.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(p)


def _sasl(ca: str, **more: object) -> dict[str, object]:
    return {"application_id": "wc", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc", "sasl_password": "hunter2", "ssl_ca_location": ca, **more}


# --- mapping -----------------------------------------------------------------------------------------

def test_security_settings_map_onto_every_client(ca, tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_text("x")
    key.write_text("x")
    s = resolve_settings(_sasl(ca, ssl_certificate_location=str(cert), ssl_key_location=str(key),
                               ssl_key_password="k3y", kafka_config={"linger.ms": 7}))
    expected = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "svc",
                "sasl.password": "hunter2", "ssl.ca.location": ca, "ssl.certificate.location": str(cert),
                "ssl.key.location": str(key), "ssl.key.password": "k3y"}
    assert s.security_config() == expected
    base = client_config(s)
    assert base["linger.ms"] == 7 and base["bootstrap.servers"] == s.bootstrap_servers
    app = App(application_id="wc")
    app.stream("in", value_serde=serdes.STR).to("out")
    cc = consumer_config(s, app.topology(), base, "i", lambda e: None)
    pc = producer_config(s, base, "i", lambda e: None, None, lambda e, m: None)
    for conf in (base, cc, pc):
        assert expected.items() <= conf.items()


def test_every_member_client_is_built_on_client_config():
    """The member's consumer, producer, admin, restore, broadcast, topology-check and source clients
    all start from Member._kafka_config (= client_config), so none misses the security settings."""
    src = (ROOT / "kstreamlet/runtime/member.py").read_text()
    assert "client_config(self.settings" in src
    for needle in ("consumer_config(s, self.topology, base", "producer_config(s, base", "Restorer({**base",
                   "BroadcastReader(self.clients.consumer, self._kafka_config()",
                   "check_topology(self.topology, self.settings, self.topics.client, self._kafka_config()",
                   "self.clients.admin({**self._kafka_config()"):
        assert needle in src, needle
    tools = (ROOT / "kstreamlet/tools/common.py").read_text()
    assert "from kstreamlet.runtime.clients import client_config as base" in tools


def test_security_settings_come_from_the_environment(monkeypatch, ca):
    monkeypatch.setenv("KSTREAMLET_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KSTREAMLET_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KSTREAMLET_SASL_USERNAME", "u")
    monkeypatch.setenv("KSTREAMLET_SASL_PASSWORD", "from-a-secret")
    monkeypatch.setenv("KSTREAMLET_SSL_CA_LOCATION", ca)
    s = resolve_settings({"application_id": "a"})
    assert s.security_config()["sasl.password"] == "from-a-secret"
    assert s.sources["sasl_password"] == "env KSTREAMLET_SASL_PASSWORD"
    assert s.principal == "User:u"


# --- secrets -------------------------------------------------------------------------------------------

def test_passwords_are_masked_in_the_report_repr_and_errors(ca):
    s = resolve_settings(_sasl(ca, ssl_key_password="k3y", kafka_config={"sasl.oauthbearer.client.secret": "oidc"}))
    report = json.dumps(s.report())
    assert "hunter2" not in report and "k3y" not in report and "oidc" not in report
    assert s.report()["settings"]["sasl_password"] == {"value": "***", "source": "code"}
    assert s.report()["settings"]["ssl_key_password"]["value"] == "***"
    assert s.report()["settings"]["sasl_username"]["value"] == "svc"
    for text in (repr(s), str(s)):
        assert "hunter2" not in text and "k3y" not in text and "oidc" not in text
    with pytest.raises(ConfigError) as e:
        resolve_settings({**_sasl(ca), "sasl_password": 12345678, "commit_interval": 0})
    assert "12345678" not in str(e.value)


def test_a_shadowed_code_password_is_masked_too(monkeypatch, ca):
    monkeypatch.setenv("KSTREAMLET_SASL_PASSWORD", "env-secret")
    s = resolve_settings(_sasl(ca))
    entry = s.report()["settings"]["sasl_password"]
    assert entry == {"value": "***", "source": "env KSTREAMLET_SASL_PASSWORD", "overrides_code": "***"}


def test_the_effective_settings_log_masks_sasl_password(tmp_path, ca):
    """The runner's start-up event (a real `kstreamlet run` that fails on a busy HTTP port)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {"IN_TOPIC": "i", "OUT_TOPIC": "o", "KSTREAMLET_APPLICATION_ID": "masked",
               "KSTREAMLET_HTTP_PORT": str(busy.getsockname()[1]), "KSTREAMLET_SECURITY_PROTOCOL": "SASL_SSL",
               "KSTREAMLET_SASL_MECHANISM": "SCRAM-SHA-512", "KSTREAMLET_SASL_USERNAME": "svc",
               "KSTREAMLET_SASL_PASSWORD": "pw-never-shown", "KSTREAMLET_SSL_CA_LOCATION": ca,
               "KSTREAMLET_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PATH": "/usr/bin:/bin"}
        p = subprocess.run([sys.executable, "-m", "kstreamlet.cli", "run", "tests.apps.stateless:app"], env=env,
                           cwd=ROOT, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 2, out
    lines = [json.loads(ln) for ln in out.splitlines() if '"effective settings"' in ln]
    assert len(lines) == 1, out
    assert lines[0]["settings"]["sasl_password"]["value"] == "***"
    assert lines[0]["settings"]["sasl_username"]["value"] == "svc"
    assert "pw-never-shown" not in out


# --- coherence: refused at start, naming the settings ------------------------------------------------------

@pytest.mark.parametrize("changes, needle", [
    ({"security_protocol": None}, "sasl_mechanism, sasl_username, sasl_password set but security_protocol"),
    ({"sasl_username": None}, "needs sasl_username (env KSTREAMLET_SASL_USERNAME)"),
    ({"sasl_password": None}, "needs sasl_password (env KSTREAMLET_SASL_PASSWORD)"),
    ({"ssl_ca_location": "/no/such/ca.pem"}, "ssl_ca_location (env KSTREAMLET_SSL_CA_LOCATION): no readable file"),
    ({"ssl_certificate_location": "__CA__"}, "mTLS needs both ssl_certificate_location"),
    ({"security_protocol": "SASL_PLAINTEXT"}, "ssl_ca_location set but security_protocol"),
    ({"kafka_config": {"sasl.username": "other"}}, "sasl_username (env KSTREAMLET_SASL_USERNAME) and kafka_config"),
    ({"security_protocol": "TLS"}, "security_protocol (env KSTREAMLET_SECURITY_PROTOCOL)"),
])
def test_incoherent_security_settings_are_refused_naming_them(ca, changes, needle):
    changes = {k: (ca if v == "__CA__" else v) for k, v in changes.items()}
    with pytest.raises(ConfigError) as e:
        resolve_settings({**_sasl(ca), **changes})
    assert needle in str(e.value)
    assert "hunter2" not in str(e.value)


def test_kafka_config_security_still_works_and_agreeing_duplicates_are_fine(ca):
    s = resolve_settings({"application_id": "a", "kafka_config": {"security.protocol": "SASL_SSL",
                          "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p"},
                          "sasl_username": "u"})
    assert client_config(s)["sasl.password"] == "p"
    assert s.principal == "User:u"


def test_plaintext_default_adds_nothing():
    s = Settings(application_id="a")
    assert s.security_config() == {}
    assert set(client_config(s)) == {"bootstrap.servers"}


# --- ACLs ---------------------------------------------------------------------------------------------

def _wordcount(**settings: object) -> tuple[object, Settings]:
    app = App(application_id="wc", **settings)  # type: ignore[arg-type]
    (app.stream("lines", value_serde=serdes.STR).flat_map(str.split)
     .key_by(lambda w: w, key_serde=serdes.STR, name="words").count(name="counts")
     .to("word-counts", value_serde=serdes.INT64))
    return app.topology(), app.settings


def test_required_acls_of_an_eos_app():
    topology, s = _wordcount()
    acls = {(a.resource_type, a.name, a.pattern, a.operation) for a in required_acls(topology, s)}  # type: ignore[arg-type]
    assert acls == {
        ("TOPIC", "lines", "LITERAL", "READ"),
        ("TOPIC", "word-counts", "LITERAL", "WRITE"),
        ("TOPIC", "word-counts", "LITERAL", "DESCRIBE_CONFIGS"),
        ("TOPIC", "wc-", "PREFIXED", "ALL"),
        ("GROUP", "wc", "LITERAL", "READ"),
        ("GROUP", "wc-", "PREFIXED", "READ"),
        ("TRANSACTIONAL_ID", "wc-", "PREFIXED", "WRITE"),
        ("TRANSACTIONAL_ID", "wc-", "PREFIXED", "DESCRIBE"),
        ("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"),
    }


def test_at_least_once_needs_no_transactional_id_and_an_outside_dlq_is_listed():
    topology, s = _wordcount(processing_guarantee="at_least_once", dlq_topic="shared-dlq")
    acls = required_acls(topology, s)  # type: ignore[arg-type]
    assert not [a for a in acls if a.resource_type == "TRANSACTIONAL_ID"]
    assert {a.operation for a in acls if a.name == "shared-dlq"} == {"CREATE", "WRITE", "DESCRIBE_CONFIGS"}


def test_kafka_acls_lines_and_bindings():
    acl = Acl("TOPIC", "wc-", "PREFIXED", "ALL")
    assert acl.kafka_acls_line("User:svc", "k:9092") == ("kafka-acls.sh --bootstrap-server k:9092 --add "
                                                         "--allow-principal User:svc --operation All --topic wc- "
                                                         "--resource-pattern-type prefixed")
    assert Acl("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE").kafka_acls_line("User:a").endswith(
        "--operation IdempotentWrite --cluster")
    b = acl.binding("User:svc")
    assert (b.name, b.principal, b.operation.name, b.resource_pattern_type.name) == ("wc-", "User:svc", "ALL",
                                                                                     "PREFIXED")
    assert acl.covers("TOPIC", "wc-counts-changelog", "WRITE") and not acl.covers("TOPIC", "other", "WRITE")
    assert Acl("TOPIC", "t", "LITERAL", "WRITE").covers("TOPIC", "t", "DESCRIBE")


def test_kstreamlet_acls_prints_one_kafka_acls_line_per_acl(capsys, monkeypatch):
    monkeypatch.setenv("IN_TOPIC", "lines")
    monkeypatch.setenv("OUT_TOPIC", "counts")
    monkeypatch.setenv("KSTREAMLET_APPLICATION_ID", "acl-app")
    assert main(["acls", "tests.apps.stateless:app", "--principal", "User:svc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "--operation Read --topic lines" in lines[0] and "--operation Write --topic counts" in lines[1]
    assert any("--transactional-id acl-app- --resource-pattern-type prefixed" in ln for ln in lines)
    assert all(ln.startswith("kafka-acls.sh --bootstrap-server ") for ln in lines)
    assert main(["acls", "tests.apps.stateless:app", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["principal"] == "User:<sasl_username>" and len(doc["acls"]) == len(lines)
    assert main(["acls", "tests.apps.stateless:app", "--apply"]) == 2
    assert "--principal" in capsys.readouterr().err


# --- one-line access errors -----------------------------------------------------------------------------

def test_access_errors_name_the_setting_or_the_acl(ca):
    s = resolve_settings(_sasl(ca))
    auth = KafkaError(KafkaError._AUTHENTICATION, "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: "
                      "Authentication failed during authentication due to invalid credentials with SASL mechanism "
                      "SCRAM-SHA-512")
    e = access_error(s, auth)
    assert isinstance(e, AccessError) and isinstance(e, ConfigError)
    assert "sasl_username / sasl_password" in str(e) and "'svc'" in str(e) and "hunter2" not in str(e)
    assert "\n" not in str(e)
    tls = KafkaError(KafkaError._SSL, "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed:"
                     " broker certificate could not be verified")
    assert f"ssl_ca_location (env KSTREAMLET_SSL_CA_LOCATION) = {ca}" in str(access_error(s, tls))
    topology, ws = _wordcount(**{k: v for k, v in _sasl(ca).items() if k != "application_id"})
    group = access_error(ws, KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)), None, topology)  # type: ignore[arg-type]
    assert group is not None and "User:svc needs READ on group 'wc'" in str(group)
    assert "--operation Read --group wc" in str(group)
    txn = access_error(ws, KafkaException(KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)), None, topology)  # type: ignore[arg-type]
    assert txn is not None and "transactional ids prefixed 'wc-'" in str(txn)
    assert access_error(s, KafkaError(KafkaError._TRANSPORT, "Connection refused")) is None
    # Wrapped in a string (AbortCheckpoint / FatalClientError carry the text): still recognised.
    assert authorization_kind(RuntimeError("commit failed: Broker: Topic authorization failed")) == "TOPIC"


class _Future:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self, timeout=None):
        if self.error is not None:
            raise self.error
        return self.value


class _Desc:
    def __init__(self, ops):
        from confluent_kafka.admin import AclOperation

        self.authorized_operations = [AclOperation[o] for o in ops]


class _Admin:
    """Answers describe_topics(include_authorized_operations=True) like a broker with ACLs."""

    def __init__(self, ops: dict[str, list[str]]):
        self.ops = ops

    def describe_topics(self, topics, **kw):
        assert kw.get("include_authorized_operations") is True
        out = {}
        for name in topics.topic_names:
            if name in self.ops:
                out[name] = _Future(_Desc(self.ops[name]))
            else:
                out[name] = _Future(error=KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
        return out


def test_a_topic_authorization_failure_is_narrowed_to_topic_and_operation(ca):
    topology, s = _wordcount(**{k: v for k, v in _sasl(ca).items() if k != "application_id"})
    admin = _Admin({"lines": ["READ", "DESCRIBE"], "word-counts": ["DESCRIBE_CONFIGS"],
                    "wc-counts-changelog": ["READ", "WRITE", "CREATE", "DESCRIBE_CONFIGS", "DESCRIBE"]})
    err = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed"))
    e = access_error(s, err, admin, topology, ["lines", "word-counts", "wc-counts-changelog"])  # type: ignore[arg-type]
    assert e is not None
    assert "User:svc needs WRITE on topic 'word-counts'" in str(e)
    assert "--operation Write --topic word-counts" in str(e)
    assert "READ on topic 'lines'" not in str(e)
