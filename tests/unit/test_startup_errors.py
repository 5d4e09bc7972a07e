"""Start-up errors a person can fix from one line: wrong bootstrap address, inconsistent
timeouts, a taken HTTP port. Each runs the real CLI as a process (no broker needed: the
bootstrap address points at a closed port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstreamlet.config import load_settings
from kstreamlet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cli(env: dict[str, str], timeout: float = 30) -> tuple[int, str, float]:
    full = {**os.environ, "IN_TOPIC": "in", "OUT_TOPIC": "out", "KSTREAMLET_APPLICATION_ID": "startup-errors",
            "PYTHONUNBUFFERED": "1", **env}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "kstreamlet.cli", "run", "tests.apps.stateless:app"], env=full,
                       cwd=ROOT, capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace"), time.monotonic() - t0


def test_wrong_bootstrap_address_is_one_clear_error_within_seconds():
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    rc, out, seconds = _run_cli({"KSTREAMLET_BOOTSTRAP_SERVERS": address})
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert rc != 0, f"expected a non-zero exit, got {rc}:\n{out}"
    assert seconds < 15, f"expected to give up within 15 s, took {seconds:.1f}s"
    assert address in out and "KSTREAMLET_BOOTSTRAP_SERVERS" in out and "bootstrap_servers" in out, out
    assert "Traceback" not in out, f"expected no traceback:\n{out}"
    assert not [ln for ln in lines if ln.startswith("%")], f"expected no raw librdkafka lines:\n{out}"
    assert len(lines) < 10, f"expected a few lines, got {len(lines)}:\n{out}"


def test_transaction_timeout_at_or_below_commit_interval_is_rejected():
    with pytest.raises(ConfigError) as e:
        load_settings(application_id="a", transaction_timeout=1, commit_interval=5)
    msg = str(e.value)
    for needle in ("transaction_timeout", "KSTREAMLET_TRANSACTION_TIMEOUT", "commit_interval", "KSTREAMLET_COMMIT_INTERVAL"):
        assert needle in msg, f"expected {needle!r} in {msg!r}"
    with pytest.raises(ConfigError):
        load_settings(application_id="a", transaction_timeout=5, commit_interval=5)
    assert load_settings(application_id="a", transaction_timeout=10, commit_interval=5).transaction_timeout == 10
    # At-least-once opens no transactions: the timeout is irrelevant there.
    load_settings(application_id="a", transaction_timeout=1, commit_interval=5, processing_guarantee="at_least_once")


def test_transaction_timeout_rule_applies_to_env_settings():
    rc, out, _ = _run_cli({"KSTREAMLET_TRANSACTION_TIMEOUT": "1", "KSTREAMLET_COMMIT_INTERVAL": "5",
                           "KSTREAMLET_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}"})
    assert rc == 2, f"expected exit 2 (configuration error), got {rc}:\n{out}"
    assert "KSTREAMLET_TRANSACTION_TIMEOUT" in out and "KSTREAMLET_COMMIT_INTERVAL" in out, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out


def test_http_port_in_use_is_one_line_naming_port_and_setting():
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, out, seconds = _run_cli({"KSTREAMLET_HTTP_PORT": str(port),
                                     "KSTREAMLET_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}"})
    lines = [ln for ln in out.splitlines() if ln.strip()]
    # The start-up log of the effective settings comes first (once); the error is one line.
    settings_lines = [ln for ln in lines if '"effective settings"' in ln]
    errors = [ln for ln in lines if ln not in settings_lines]
    assert rc != 0, f"expected a non-zero exit, got {rc}:\n{out}"
    assert str(port) in out and "http_port" in out and "KSTREAMLET_HTTP_PORT" in out, out
    assert len(settings_lines) == 1 and '"source": "env KSTREAMLET_HTTP_PORT"' in settings_lines[0], out
    assert "Traceback" not in out and len(errors) == 1, f"expected one error line:\n{out}"
    assert seconds < 10, f"a taken port must fail at once, took {seconds:.1f}s"
