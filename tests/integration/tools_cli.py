"""Running ``kstreamlet`` operator commands as real processes in the tools' integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.integration.members import ROOT


def cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 120, check: int | None = 0
        ) -> subprocess.CompletedProcess[str]:
    """``python -m kstreamlet.cli ARGS`` in the repository root; asserts the exit code when ``check``."""
    p = subprocess.run([sys.executable, "-m", "kstreamlet.cli", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                       capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert p.returncode == check, f"kstreamlet {' '.join(args)} exited {p.returncode}, expected {check}\n" \
                                      f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    return p


def cli_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return json.loads(cli([*args, "--json"], env, timeout).stdout)


def cli_json_lines(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> list[Any]:
    return [json.loads(line) for line in cli([*args, "--json"], env, timeout).stdout.splitlines() if line.strip()]
