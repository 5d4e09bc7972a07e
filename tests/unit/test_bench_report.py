"""bench/report.py and the profile writer of bench/common.py, on synthetic results (no broker)."""

from __future__ import annotations

import cProfile
import json
from pathlib import Path
from typing import Any

import pytest

from bench import common, report


def _run(system: str, rate: float, rep: int, **extra: Any) -> dict[str, Any]:
    return {"system": system, "rate": rate, "repeat": rep, "status": "OK", "cpu_us_per_record": 10.0, **extra}


def _results() -> dict[str, dict[str, Any]]:
    stateful = [_run("kstreamlet", 100_000, 1, warmup_records=1000, verify={"output_records": 500}),
                _run("kstreamlet_2w", 180_000, 1, warmup_records=1000, broker_machine_pct=20.0),
                _run("kafka_streams", 150_000, 1, warmup_records=1000, verify={"output_records": 5}),
                _run("kafka_streams_nocache", 50_000, 1, warmup_records=1000, verify={"output_records": 500})]
    restore = [_run("kstreamlet", 450_000, 1), _run("kafka_streams", 400_000, 1)]
    latency = [{"system": "kstreamlet", "status": "OK", "measured": 1, "p50_ms": 60.0, "p99_ms": 115.0,
                "p999_ms": 130.0, "max_ms": 140.0, "mean_ms": 62.0}]
    return {"stateful": {"runs": stateful, "_file": "stateful.json"},
            "restore": {"runs": restore, "params": {"records": 1_000_000}, "_file": "restore.json"},
            "latency": {"runs": latency, "params": {"rate": 5000, "commit_interval": 0.1}, "_file": "latency.json"}}


def test_stateful_compares_kstreamlet_with_kafka_streams_on_equal_work() -> None:
    rows = {r["system"]: r for r in report.throughput_rows(_results()) if r["scenario"] == "stateful"}
    assert rows["kstreamlet"]["ks_baseline"] == "kafka_streams_nocache"  # both one output per update
    assert rows["kstreamlet"]["ratio_ks"] == pytest.approx(2.0)
    assert rows["kstreamlet"]["warm"] == 1000
    assert rows["kstreamlet"]["output_records"]["median"] == 500
    assert rows["kstreamlet_2w"]["broker_pct"]["median"] == 20.0


def test_targets_state_where_each_stands() -> None:
    table = report.targets(_results())
    lines = {ln.split("|")[1].strip(): ln for ln in table.splitlines()[2:]}
    assert "**2.00×**" in lines["every shared throughput scenario ≥ 1.5× Kafka Streams (1 thread), steady state, equal work"]
    assert "(warm)" in table and "**met**" in lines["restore ≥ 400k records/s on 1M"]
    assert "**1.80×**" in lines["`--workers 2` ≥ 1.7× one worker"] and "**met**" in lines["`--workers 2` ≥ 1.7× one worker"]
    assert "115.0 ms" in lines["p99 at 5,000 rec/s ≤ commit interval + 20 ms (120 ms)"]
    slow = _results()
    slow["restore"]["runs"][0]["rate"] = 300_000
    lines = {ln.split("|")[1].strip(): ln for ln in report.targets(slow).splitlines()[2:]}
    assert "not met" in lines["restore ≥ 400k records/s on 1M"] and "not met" in lines["restore ≥ Kafka Streams"]


def test_trailer_after_the_marker_is_kept(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    assert report.trailer(page) == ""
    page.write_text("# generated\n\nold tables\n\n" + report.TRAILER_MARKER + "\n\n## Fused stateless chains\n\nby hand\n")
    assert report.trailer(page) == "## Fused stateless chains\n\nby hand\n"
    page.write_text("# generated, no marker\n")
    assert report.trailer(page) == ""


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_write_profile_renders_top_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(report.common, "RESULTS_DIR", tmp_path)
    prof = common.WorkerProfiler(str(tmp_path / "x.prof"))
    prof.start()
    _busy(200_000)
    prof.dump()
    common.write_profile("window", tmp_path / "x.prof", ["kstreamlet window, test"], {"rate": 1.0, "status": "OK"})
    data = json.loads((tmp_path / "window-profile.json").read_text())
    assert any("_busy" in f["function"] for f in data["top_cumtime"])
    assert data["total_seconds"] > 0 and data["areas"]
    assert (tmp_path / "window-profile.txt").read_text().startswith("kstreamlet window, test")
    text = report.profiles_section(report.load_profiles())
    assert "### window" in text and "**Reading:** own time by area:" in text and "_busy" in text


def test_profile_areas() -> None:
    assert common.profile_area("<method 'produce' of 'cimpl.Producer' objects>") == "Kafka client (librdkafka calls)"
    assert common.profile_area("kstreamlet/runtime/member.py:733(_process)") == "kstreamlet runtime"
    assert common.profile_area("kstreamlet/nodes.py:1(push)") == "kstreamlet nodes"
