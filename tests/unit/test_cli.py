"""The command line, broker-free: --version, help with examples, the setting flags of `run`,
`describe`, and the dev commands' idempotence and port rules (driven by their state files; the
real broker is started by tests/integration/test_cli_dev.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kstreamlet import App, serdes
from kstreamlet.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for k in [k for k in os.environ if k.upper().startswith("KSTREAMLET_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("KSTREAMLET_CACHE_DIR", str(tmp_path / "cache"))  # dev state files of this test only


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "kstreamlet.cli", *args], env=full, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("kstreamlet 0.") and "librdkafka" in out and "Python" in out, out


def test_version_from_the_console_entry_point():
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("kstreamlet "), p.stdout + p.stderr


@pytest.mark.parametrize("argv, needles", [
    ([], ["run", "describe", "dev", "examples:", "KSTREAMLET_* environment > values in code"]),
    (["run"], ["examples:", "kstreamlet run services.wordcount:app", "--bootstrap-servers", "--instance-id"]),
    (["describe"], ["examples:", "--format mermaid", "--json", "--bootstrap-servers"]),
    (["dev"], ["examples:", 'eval "$(kstreamlet dev kafka up)"', "mysql"]),
    (["dev", "kafka"], ["examples:", "--port", "--json"]),
    (["dev", "mysql"], ["examples:", "--port", "python -m kstreamlet.dev.mysql"]),
])
def test_help_has_examples(capsys, argv, needles):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    for n in needles:
        assert n in out, f"{n!r} missing from `kstreamlet {' '.join(argv)} --help`:\n{out}"


def test_a_command_group_is_one_register_call():
    """Each group is a module with one registering function: the cli's own (register) and the
    operator tools' (add_parser)."""
    from kstreamlet.cli import describe, dev, run
    from kstreamlet.tools import acls, dlq, reset, state, topics

    for module in (run, describe, dev):
        assert callable(module.register)
    for module in (topics, dlq, state, reset, acls):
        assert callable(module.add_parser)
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert set(sub.choices) == {"run", "describe", "dev", "topics", "dlq", "state", "reset", "acls"}


def _app() -> App:
    app = App(application_id="flags", bootstrap_servers="code-broker:9092", commit_interval=0.2)
    app.stream("in", value_serde=serdes.STR).to("out")
    return app


def test_run_flags_beat_env_and_code(monkeypatch):
    from kstreamlet.cli import run as run_cmd

    monkeypatch.setenv("KSTREAMLET_BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("KSTREAMLET_INSTANCE_ID", "env-id")
    app = _app()
    seen: dict[str, object] = {}

    def fake_run(workers: int = 1) -> int:
        seen.update(workers=workers, settings=app.settings)
        return 0

    monkeypatch.setattr(app, "run", fake_run)
    monkeypatch.setattr(run_cmd, "load_app", lambda spec: app)
    assert main(["run", "x:app", "--bootstrap-servers", "flag-broker:9092", "--instance-id", "pod-3", "--workers", "2"]) == 0
    s = seen["settings"]
    assert (s.bootstrap_servers, s.instance_id, s.commit_interval) == ("flag-broker:9092", "pod-3", 0.2)  # type: ignore[attr-defined]
    assert s.sources["bootstrap_servers"] == "flag --bootstrap-servers"  # type: ignore[attr-defined]
    assert s.sources["instance_id"] == "flag --instance-id"  # type: ignore[attr-defined]
    assert seen["workers"] == 2


def test_run_without_flags_leaves_env_in_charge(monkeypatch):
    from kstreamlet.cli import run as run_cmd

    monkeypatch.setenv("KSTREAMLET_BOOTSTRAP_SERVERS", "env-broker:9092")
    app = _app()
    monkeypatch.setattr(app, "run", lambda workers=1: 0)
    monkeypatch.setattr(run_cmd, "load_app", lambda spec: app)
    assert main(["run", "x:app"]) == 0
    assert app.settings.bootstrap_servers == "env-broker:9092"


def test_workers_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "x:app", "--workers", "0"])
    assert e.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err


def test_config_errors_are_one_line_exit_2():
    p = cli("describe", "tests.apps.stateless:app",
            env={"IN_TOPIC": "in", "OUT_TOPIC": "out", "KSTREAMLET_APPLICATION_ID": "a", "KSTREAMLET_COMIT_INTERVAL": "1"})
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip() == ("kstreamlet: invalid kstreamlet configuration: unknown environment variable "
                                "KSTREAMLET_COMIT_INTERVAL; did you mean KSTREAMLET_COMMIT_INTERVAL?"), p.stderr


# --- describe ----------------------------------------------------------------------------------------

STATELESS_ENV = {"IN_TOPIC": "in", "OUT_TOPIC": "out", "KSTREAMLET_APPLICATION_ID": "described"}


def test_describe_prints_the_topology_without_a_broker():
    p = cli("describe", "tests.apps.stateless:app", "--bootstrap-servers", "127.0.0.1:1", env=STATELESS_ENV)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Topologies:\n   Sub-topology: 0\n    Source: "), p.stdout
    assert "(topics: [in])" in p.stdout and "(topic: out)" in p.stdout and "Dead-letter topic: described-dlq" in p.stdout


def test_describe_formats():
    mermaid = cli("describe", "tests.apps.stateless:app", "--format", "mermaid", env=STATELESS_ENV)
    assert mermaid.returncode == 0 and mermaid.stdout.startswith("flowchart LR\n"), mermaid.stdout + mermaid.stderr
    as_json = cli("describe", "tests.apps.stateless:app", "--json", env=STATELESS_ENV)
    assert as_json.returncode == 0, as_json.stderr
    info = json.loads(as_json.stdout)
    assert info["application_id"] == "described"
    assert info["subtopologies"][0]["source_topics"] == ["in"]
    bad = cli("describe", "tests.apps.stateless:app", "--format", "dot", env=STATELESS_ENV)
    assert bad.returncode == 2 and "invalid choice: 'dot'" in bad.stderr


# --- dev commands ------------------------------------------------------------------------------------


def _fake_running(cache: Path, name: str, state: dict[str, object]) -> None:
    """A state file naming a live process (this test's own pid), as `up` leaves it."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / name).write_text(json.dumps({"pid": os.getpid(), "workdir": str(cache / "nothing"), **state}))


def test_dev_kafka_up_reuses_the_running_broker_and_refuses_another_port(tmp_path, capsys):
    _fake_running(tmp_path / "cache", "dev-kafka.json", {"bootstrap_servers": "127.0.0.1:9092", "version": "x"})
    assert main(["dev", "kafka", "up"]) == 0
    out = capsys.readouterr()
    assert out.out == "export KSTREAMLET_BOOTSTRAP_SERVERS=127.0.0.1:9092\n", "stdout is only what eval needs"
    assert "already running at 127.0.0.1:9092" in out.err
    assert main(["dev", "kafka", "up", "--port", "9092", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["bootstrap_servers"] == "127.0.0.1:9092" and state["started"] is False
    assert main(["dev", "kafka", "up", "--port", "9093"]) == 2
    err = capsys.readouterr().err
    assert "already running at 127.0.0.1:9092" in err and "not on port 9093" in err and "dev kafka down" in err, err


def test_dev_kafka_up_on_a_port_in_use_is_a_clear_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["dev", "kafka", "up", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_dev_kafka_up_export_line_works_with_eval(tmp_path):
    _fake_running(tmp_path / "cache", "dev-kafka.json", {"bootstrap_servers": "127.0.0.1:9092"})
    script = f'eval "$({sys.executable} -m kstreamlet.cli dev kafka up)" && echo "got=$KSTREAMLET_BOOTSTRAP_SERVERS"'
    p = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and p.stdout.strip() == "got=127.0.0.1:9092", p.stdout + p.stderr


def test_dev_status_and_down_when_nothing_runs(capsys):
    assert main(["dev", "kafka", "status"]) == 1
    assert main(["dev", "mysql", "status"]) == 1
    assert main(["dev", "kafka", "down"]) == 0
    assert main(["dev", "mysql", "down"]) == 0
    assert capsys.readouterr().out.split("\n")[:4] == ["not running"] * 4


def test_dev_mysql_up_reuses_the_running_server_and_refuses_another_port(tmp_path, capsys):
    url = "mysql://kstreamlet:kstreamlet@127.0.0.1:3307/kstreamlet"
    _fake_running(tmp_path / "cache", "dev-mysql.json", {"url": url, "port": 3307})
    assert main(["dev", "mysql", "up"]) == 0
    assert capsys.readouterr().out == f"export KSTREAMLET_MYSQL_URL={url}\n"
    assert main(["dev", "mysql", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["port"] == 3307
    assert main(["dev", "mysql", "up", "--port", "3308"]) == 2
    assert "already running on port 3307" in capsys.readouterr().err


def test_dev_port_out_of_range(capsys):
    assert main(["dev", "kafka", "up", "--port", "70000"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err
