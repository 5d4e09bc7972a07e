"""The settings rule (flags/configure() > KSTREAMLET_* env > code > defaults), the sources the
start-up log reports, "did you mean" for unknown keywords and variables, and the
KSTREAMLET_KAFKA_CONFIG / librdkafka property checks. Broker-free."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstreamlet import App, serdes
from kstreamlet.config import NON_SETTING_ENV, Settings, load_settings, resolve_settings
from kstreamlet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in [k for k in os.environ if k.upper().startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)


def readme_app() -> App:
    """The README's first example, verbatim: every setting it cares about is in code."""
    app = App(application_id="upper", processing_guarantee="exactly_once", commit_interval=0.1)
    app.stream("lines", value_serde=serdes.STR).map(str.upper).to("upper-lines")
    return app


# --- precedence -------------------------------------------------------------------------------------


def test_environment_beats_code_so_a_deployment_configures_an_app_that_sets_values_in_code(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_APPLICATION_ID", "words")
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "0.5")
    monkeypatch.setenv("KSTREAMLET_PROCESSING_GUARANTEE", "at_least_once")
    app = readme_app()
    s = app.settings
    assert (s.application_id, s.commit_interval, s.processing_guarantee) == ("words", 0.5, "at_least_once")
    assert app.builder.application_id == "words", "internal topics are named after the effective application id"
    assert s.sources["commit_interval"] == "env KSTREAMLET_COMMIT_INTERVAL"


def test_code_beats_defaults_and_unset_or_empty_env_leaves_code_alone(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "")  # as a chart's null/"" value: not set
    s = readme_app().settings
    assert s.commit_interval == 0.1 and s.sources["commit_interval"] == "code"
    assert s.error_policy == "dlq" and s.sources["error_policy"] == "default"


def test_configure_and_cli_flags_beat_the_environment(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "0.5")
    app = readme_app()
    app.configure(commit_interval=2.0)
    app.configure(_source="flag --bootstrap-servers", bootstrap_servers="flag-broker:9092")
    s = app.settings
    assert (s.bootstrap_servers, s.commit_interval) == ("flag-broker:9092", 2.0)
    assert s.sources["bootstrap_servers"] == "flag --bootstrap-servers"
    assert s.sources["commit_interval"] == "configure()"
    app.configure(instance_id=None)  # None leaves settings alone, earlier overrides stay
    assert app.settings.commit_interval == 2.0 and app.settings.bootstrap_servers == "flag-broker:9092"


def test_settings_used_directly_follow_the_same_rule(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "0.5")
    assert Settings(application_id="a", commit_interval=0.1).commit_interval == 0.5


def test_report_names_every_source_and_the_code_value_an_override_shadows(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "0.5")
    s = resolve_settings({"application_id": "a", "commit_interval": 0.1, "poll_batch_size": 10},
                         {"bootstrap_servers": ("h:1", "flag --bootstrap-servers")})
    report = s.report()["settings"]
    assert set(report) == set(Settings.model_fields), "every setting is reported"
    assert report["commit_interval"] == {"value": 0.5, "source": "env KSTREAMLET_COMMIT_INTERVAL", "overrides_code": 0.1}
    assert report["poll_batch_size"] == {"value": 10, "source": "code"}
    assert report["bootstrap_servers"] == {"value": "h:1", "source": "flag --bootstrap-servers"}
    assert report["log_level"] == {"value": "info", "source": "default"}
    json.dumps(s.report())  # it goes into a JSON log line


def test_secrets_in_kafka_config_are_masked_in_the_report(monkeypatch):
    cfg = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "svc",
           "sasl.password": "hunter2", "ssl.key.password": "k3y", "ssl.ca.location": "/etc/ca.crt",
           "sasl.oauthbearer.client.secret": "oidc-s3cret"}
    monkeypatch.setenv("KSTREAMLET_KAFKA_CONFIG", json.dumps(cfg))
    s = load_settings(application_id="a")
    assert s.kafka_config == cfg, "the clients get the real values"
    shown = s.report()["settings"]["kafka_config"]["value"]
    assert shown["sasl.username"] == "svc" and shown["ssl.ca.location"] == "/etc/ca.crt"
    assert shown["sasl.password"] == shown["ssl.key.password"] == shown["sasl.oauthbearer.client.secret"] == "***"
    assert not re.search("hunter2|k3y|oidc-s3cret", json.dumps(s.report()))


def test_kafka_config_is_merged_per_property_so_code_tuning_survives_the_deployments_credentials(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_KAFKA_CONFIG", json.dumps({"sasl.username": "svc", "client.id": "from-env"}))
    s = load_settings(application_id="a", kafka_config={"compression.type": "lz4", "client.id": "from-code"})
    assert s.kafka_config == {"compression.type": "lz4", "client.id": "from-env", "sasl.username": "svc"}
    entry = s.report()["settings"]["kafka_config"]
    assert entry["source"] == "code + env KSTREAMLET_KAFKA_CONFIG"
    assert entry["overrides_code"] == {"compression.type": "lz4", "client.id": "from-code"}, "client.id was replaced"
    s = load_settings(application_id="a", kafka_config={"compression.type": "lz4"})
    assert "overrides_code" not in s.report()["settings"]["kafka_config"], "nothing of the code's was replaced"


def _busy_port_cli(env: dict[str, str]) -> tuple[int, str]:
    """Run `kstreamlet run` so that it stops right after the start-up log (its HTTP port is taken)."""
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        full = {k: v for k, v in os.environ.items() if not k.startswith("KSTREAMLET_")}
        full.update({"IN_TOPIC": "in", "OUT_TOPIC": "out", "KSTREAMLET_APPLICATION_ID": "settings-log",
                     "KSTREAMLET_HTTP_PORT": str(busy.getsockname()[1]), "KSTREAMLET_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                     **env})
        p = subprocess.run([sys.executable, "-m", "kstreamlet.cli", "run", "tests.apps.stateless:app",
                            "--instance-id", "pod-7"], env=full, cwd=ROOT, capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def test_the_runner_logs_the_effective_settings_once_with_sources_and_masked_secrets():
    rc, out = _busy_port_cli({"KSTREAMLET_KAFKA_CONFIG": json.dumps({"sasl.username": "u", "sasl.password": "pw-xyz"}),
                              "KSTREAMLET_COMMIT_INTERVAL": "0.3"})
    assert rc != 0, out
    lines = [json.loads(ln) for ln in out.splitlines() if '"effective settings"' in ln]
    assert len(lines) == 1, f"expected the settings logged once:\n{out}"
    settings = lines[0]["settings"]
    assert settings["commit_interval"] == {"value": 0.3, "source": "env KSTREAMLET_COMMIT_INTERVAL"}
    assert settings["instance_id"] == {"value": "pod-7", "source": "flag --instance-id"}
    assert settings["kafka_config"]["value"] == {"sasl.username": "u", "sasl.password": "***"}
    assert settings["state_backend"]["source"] == "default"
    assert "pw-xyz" not in out


# --- did you mean -------------------------------------------------------------------------------------


def test_unknown_app_keyword_says_did_you_mean():
    with pytest.raises(ConfigError) as e:
        App(application_id="a", comit_interval=0.5)
    msg = str(e.value)
    assert "comit_interval" in msg and "did you mean 'commit_interval'?" in msg, msg
    assert "Extra inputs are not permitted" not in msg


def test_unknown_keyword_far_from_any_setting_lists_the_settings():
    with pytest.raises(ConfigError, match=r"unknown setting 'frobnicate'.*settings are: application_id, "):
        App(application_id="a", frobnicate=1)


def test_unknown_configure_keyword_says_did_you_mean():
    app = App(application_id="a")
    with pytest.raises(ConfigError, match=r"'bootstrap_server'.*did you mean 'bootstrap_servers'"):
        app.configure(bootstrap_server="h:1")
    assert app.settings.bootstrap_servers == "127.0.0.1:9092", "a failed configure() changes nothing"


@pytest.mark.parametrize("var, meant", [
    ("KSTREAMLET_COMIT_INTERVAL", "KSTREAMLET_COMMIT_INTERVAL"),
    ("KSTREAMLET_BOOTSTRAP_SERVER", "KSTREAMLET_BOOTSTRAP_SERVERS"),
    ("KSTREAMLET_HTTPPORT", "KSTREAMLET_HTTP_PORT"),
    ("KSTREAMLET_KAFKA_CONFIGS", "KSTREAMLET_KAFKA_CONFIG"),
])
def test_misspelt_setting_variable_is_a_config_error_with_did_you_mean(monkeypatch, var, meant):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError) as e:
        App(application_id="a")
    assert f"unknown environment variable {var}; did you mean {meant}?" in str(e.value)


def test_unknown_variable_far_from_any_setting_is_one_warning_not_an_error(monkeypatch, caplog):
    monkeypatch.setenv("KSTREAMLET_SOMETHING_ELSE_ENTIRELY", "1")
    with caplog.at_level(logging.WARNING, logger="kstreamlet.config"):
        s = App(application_id="a").settings
        App(application_id="b")
    warnings = [r.getMessage() for r in caplog.records if "KSTREAMLET_SOMETHING_ELSE_ENTIRELY" in r.getMessage()]
    assert warnings == ["kstreamlet: ignoring KSTREAMLET_SOMETHING_ELSE_ENTIRELY: not a kstreamlet setting"], warnings
    assert s.report()["ignored_env"] == ["KSTREAMLET_SOMETHING_ELSE_ENTIRELY"]


def test_the_projects_own_variables_are_never_warned_about(monkeypatch, caplog):
    for var in NON_SETTING_ENV:
        monkeypatch.setenv(var, "1")
    with caplog.at_level(logging.WARNING, logger="kstreamlet.config"):
        s = App(application_id="a").settings
    assert not caplog.records and "ignored_env" not in s.report()


def test_every_kstreamlet_variable_the_repository_uses_is_a_setting_or_allow_listed():
    """A new KSTREAMLET_* variable in code, scripts, the chart or CI must be added to
    config.NON_SETTING_ENV (or be a setting), or every app would warn about it."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    code = [f for f in files if not f.endswith(".md") and Path(f).name not in ("test_settings.py", "test_cli.py")
            and not f.startswith("bench/results/")]
    used: set[str] = set()
    for f in code:
        try:
            used.update(re.findall(r"KSTREAMLET_[A-Z0-9_]*[A-Z0-9]", (ROOT / f).read_text(errors="ignore")))
        except (OSError, IsADirectoryError):
            continue
    settings = {f"KSTREAMLET_{f.upper()}" for f in Settings.model_fields}
    unknown = sorted(used - settings - set(NON_SETTING_ENV))
    assert not unknown, f"KSTREAMLET_* variables used in the repository but neither settings nor allow-listed: {unknown}"
    assert "KSTREAMLET_FULL_CHAOS" in used and "KSTREAMLET_WORKER_INDEX" in used, "the scan finds them"


# --- bad values name the field, its variable and where the value came from ---------------------------


def test_a_bad_value_names_field_variable_and_source(monkeypatch):
    with pytest.raises(ConfigError, match=r"commit_interval \(env KSTREAMLET_COMMIT_INTERVAL\): .*greater than 0 "
                                          r"\(got 0 from code\)"):
        App(application_id="a", commit_interval=0)
    monkeypatch.setenv("KSTREAMLET_POLL_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"poll_batch_size \(env KSTREAMLET_POLL_BATCH_SIZE\): .*"
                                          r"\(got 'lots' from env KSTREAMLET_POLL_BATCH_SIZE\)"):
        App(application_id="a")


# --- KSTREAMLET_KAFKA_CONFIG and librdkafka properties ------------------------------------------------


@pytest.mark.parametrize("raw, needle", [
    ('{"security.protocol": "SASL_SSL",', "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    ("security.protocol=SASL_SSL", "not valid JSON"),
    ('["security.protocol", "SASL_SSL"]', "expected a JSON object of librdkafka properties, got a JSON list"),
])
def test_malformed_kafka_config_env_is_a_config_error_naming_the_variable(monkeypatch, raw, needle):
    monkeypatch.setenv("KSTREAMLET_KAFKA_CONFIG", raw)
    with pytest.raises(ConfigError) as e:
        App(application_id="a")
    msg = str(e.value)
    assert "kafka_config (env KSTREAMLET_KAFKA_CONFIG)" in msg and needle in msg, msg


def test_malformed_kafka_config_is_one_line_from_the_cli_without_a_traceback():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTREAMLET_")}
    env.update({"IN_TOPIC": "in", "OUT_TOPIC": "out", "KSTREAMLET_APPLICATION_ID": "a",
                "KSTREAMLET_KAFKA_CONFIG": '{"sasl.password": "pw-secret",'})
    p = subprocess.run([sys.executable, "-m", "kstreamlet.cli", "run", "tests.apps.stateless:app"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert "KSTREAMLET_KAFKA_CONFIG" in out and "not valid JSON" in out and "pw-secret" not in out, out


def test_unknown_librdkafka_property_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as e:
        App(application_id="a", kafka_config={"security.protocol": "SASL_SSL", "sasl.pasword": "x"})
    msg = str(e.value)
    assert "kafka_config (env KSTREAMLET_KAFKA_CONFIG): unknown librdkafka property 'sasl.pasword'" in msg, msg
    assert "did you mean 'sasl.password'?" in msg, msg


def test_a_value_librdkafka_refuses_names_the_key_as_written_and_masks_secrets():
    with pytest.raises(ConfigError, match=r"librdkafka refuses acks='maybe'"):
        App(application_id="a", kafka_config={"acks": "maybe"})
    with pytest.raises(ConfigError, match=r"security.protocol' must be one of \['PLAINTEXT', 'SASL_PLAINTEXT', "
                                          r"'SASL_SSL', 'SSL'\], got 'SASL_TLS'"):
        App(application_id="a", kafka_config={"security.protocol": "SASL_TLS"})
    with pytest.raises(ConfigError, match="needs a string, number or boolean"):
        App(application_id="a", kafka_config={"sasl.username": ["u"]})


def test_valid_security_settings_pass_without_connecting_or_reading_files():
    cfg = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "u",
           "sasl.password": "p", "ssl.ca.location": "/does/not/exist/ca.crt", "client.id": "x", "linger.ms": 5,
           "enable.ssl.certificate.verification": False}
    t0 = time.monotonic()
    s = App(application_id="a", kafka_config=cfg).settings
    assert time.monotonic() - t0 < 2, "the check builds no connection"
    assert s.kafka_config == cfg


def test_reserved_kafka_keys_are_still_refused():
    with pytest.raises(ConfigError, match=r"\['group.id'\] are managed by kstreamlet"):
        App(application_id="a", kafka_config={"group.id": "g"})
