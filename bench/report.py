"""``python -m bench report``: one summary of the latest results of every scenario.

Reads ``bench/results/<scenario>.json`` (the files ``python -m bench <scenario>`` writes; other
stems such as ``window-dev.json`` are ignored unless named with ``--files``) and writes

- ``bench/results/summary.md``: one table of scenario × system (median rate, min–max, ratio to
  kstreamlet and to the raw confluent-kafka loop where measured, WRONG runs marked), plus the
  latency scenario's percentiles;
- ``bench/results/summary.png``: grouped bars of each system's median rate normalised to
  kstreamlet's per scenario (log scale), and the latency percentiles;
- ``docs/performance.md``: the same tables with date, machine, method, chart and how to
  reproduce.

Medians and ranges are recomputed from each JSON's ``runs`` (not its own summary), so every
scenario is summarised the same way: a run counts if its status is ``OK`` (or the stateless
scenario's ``partial (timed)``, marked), anything else is WRONG.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench import common

ORDER = ["stateless", "stateful", "window", "join", "latency", "restore"]
SYSTEM_ORDER = ["raw", "kstreamlet", "kstreamlet_cache", "kstreamlet_2w", "quix", "faust", "kafka_streams", "kafka_streams_nocache",
                "kafka_streams_2t"]
SYSTEM_LABELS = {"raw": "raw confluent-kafka loop", "kstreamlet": "kstreamlet", "quix": "Quix Streams",
                 "faust": "Faust", "kafka_streams": "Kafka Streams", "kafka_streams_2t": "Kafka Streams (2 threads)",
                 "kstreamlet_2w": "kstreamlet (2 worker processes)",
                 "kstreamlet_cache": "kstreamlet (record cache on, 10 MB)",
                 "kafka_streams_nocache": "Kafka Streams (record cache off)"}
VARIANT_KEYS = ("size", "setting", "consumer")
KS_SHORT = {"kafka_streams": "KS cache on", "kafka_streams_nocache": "KS cache off"}
GOOD = ("OK", "partial (timed)")
SUMMARY_MD = common.RESULTS_DIR / "summary.md"
SUMMARY_PNG = common.RESULTS_DIR / "summary.png"
DOCS_MD = common.REPO_ROOT / "docs" / "performance.md"
REPRODUCE = {
    "stateless": "python -m bench stateless",
    "stateful": "python -m bench stateful",
    "window": "python -m bench window",
    "join": "python -m bench join",
    "latency": "python -m bench latency",
    "restore": "python -m bench restore",
}


def _system_key(s: str) -> tuple[int, str]:
    return (SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else len(SYSTEM_ORDER), s)


def load(files: list[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Scenario name -> its results JSON (the latest file per scenario)."""
    out: dict[str, dict[str, Any]] = {}
    if not files:
        from bench.__main__ import SCENARIOS

        names = ORDER + [n for n in SCENARIOS if n not in ORDER]
    paths = files if files else [common.RESULTS_DIR / f"{n}.json" for n in names]
    for path in paths:
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            print(f"report: skipping {path}: {e}")
            continue
        name = data.get("scenario") or path.stem
        data["_file"] = str(path)
        out[name] = data
    return out


def _variants(runs: list[dict[str, Any]]) -> list[str]:
    """The run fields that tell a scenario's variants apart (those with more than one value).

    Systems with their own Kafka client (Faust, Kafka Streams) run under ``consumer`` "own
    client"; with one librdkafka mode besides, they belong to the same group (and ratios)."""
    keys = []
    for k in VARIANT_KEYS:
        values = {str(r.get(k)) for r in runs}
        if k == "consumer":
            values.discard("own client")
        if len(values) > 1:
            keys.append(k)
    return keys


def _label(r: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = r.get(k)
        parts.append(f"{v} B" if k == "size" else str(v))
    return ", ".join(parts)


def throughput_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, variant, system) with the rate statistics and ratios."""
    rows: list[dict[str, Any]] = []
    for name in sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        if name == "latency":
            continue
        data = results[name]
        runs = [r for r in data.get("runs", []) if r.get("repeat") not in ("warmup", "profile")]
        groups: list[tuple[str, str, list[dict[str, Any]]]] = []
        keys = _variants(runs)
        # systems with their own client (Kafka Streams, Faust) join every consumer mode's group
        own = [r for r in runs if r.get("consumer") == "own client"] if "consumer" in keys else []
        rest = [r for r in runs if not any(r is o for o in own)]
        other_keys = [k for k in keys if k != "consumer"]
        for label in dict.fromkeys(_label(r, keys) for r in rest):
            members = [r for r in rest if _label(r, keys) == label]
            sub = _label(members[0], other_keys)
            groups.append((name, label, members + [r for r in own if _label(r, other_keys) == sub]))
        restores = data.get("restores") or []
        if restores:
            groups.append((name, "restore", restores))
        for scen, label, group in groups:
            block = []
            for system in sorted({r["system"] for r in group}, key=_system_key):
                mine = [r for r in group if r["system"] == system]
                good = [r for r in mine if r.get("status") in GOOD and r.get("rate")]
                block.append({"scenario": scen, "variant": label, "system": system,
                              "rate": common.summarize(r["rate"] for r in good),
                              "output_records": common.summarize(r["verify"]["output_records"] for r in good
                                                                 if (r.get("verify") or {}).get("output_records") is not None),
                              "warm": max((r.get("warmup_records") or 0 for r in good), default=0),
                              "broker_pct": common.summarize(r["broker_machine_pct"] for r in good
                                                             if r.get("broker_machine_pct") is not None),
                              "cpu_us_per_record": common.summarize(r["cpu_us_per_record"] for r in good
                                                                    if r.get("cpu_us_per_record") is not None),
                              "ok": len(good), "wrong": len(mine) - len(good),
                              "partial": sum(1 for r in good if r.get("status") != "OK"),
                              "date": data.get("machine", {}).get("date")})
            med = {b["system"]: b["rate"]["median"] for b in block if b["rate"]}
            for b in block:
                m = b["rate"]["median"] if b["rate"] else None
                b["ratio_kstreamlet"] = m / med["kstreamlet"] if m and med.get("kstreamlet") else None
                b["ratio_raw"] = m / med["raw"] if m and med.get("raw") else None
                base = ks_baseline(b["system"], med)
                b["ks_baseline"] = base
                b["ratio_ks"] = m / med[base] if m and base and med.get(base) else None
                b["ks_label"] = (KS_SHORT.get(base or "", base) if "kafka_streams_nocache" in med
                                 else "KS")
            rows.extend(block)
    return rows


def ks_baseline(system: str, medians: dict[str, float]) -> str | None:
    """The Kafka Streams system a row is compared with, on equal work: kstreamlet's record cache is
    off by default, so kstreamlet (1 or 2 processes) against ``kafka_streams_nocache`` where that
    was measured (one output record per update for both), ``kstreamlet_cache`` against
    ``kafka_streams`` (both caches on, 10 MB); else the default Kafka Streams (``kafka_streams``)."""
    if system.startswith("kafka_streams"):
        return "kafka_streams" if system != "kafka_streams" and "kafka_streams" in medians else None
    if system in ("kstreamlet", "kstreamlet_2w", "raw") and "kafka_streams_nocache" in medians:
        return "kafka_streams_nocache"
    return "kafka_streams" if "kafka_streams" in medians else None


def latency_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    data = results.get("latency")
    if not data:
        return []
    rows = []
    runs = data.get("runs", [])
    for system in sorted({r["system"] for r in runs}, key=_system_key):
        mine = [r for r in runs if r["system"] == system]
        good = [r for r in mine if r.get("status") == "OK" and r.get("measured")]
        rows.append({"system": system, "ok": len(good), "wrong": len(mine) - len(good),
                     **{k: common.summarize(r[k] for r in good if r.get(k) is not None)
                        for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}})
    base = next((r["p99_ms"] for r in rows if r["system"] == "kstreamlet" and r["p99_ms"]), None)
    raw = next((r["p99_ms"] for r in rows if r["system"] == "raw" and r["p99_ms"]), None)
    for r in rows:
        r["p99_ratio_kstreamlet"] = r["p99_ms"]["median"] / base["median"] if r["p99_ms"] and base else None
        r["p99_ratio_raw"] = r["p99_ms"]["median"] / raw["median"] if r["p99_ms"] and raw else None
    return rows


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def tables(results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    rows = throughput_rows(results)
    body = []
    for r in rows:
        cell = common.cell(r["rate"])
        if r["wrong"]:
            cell += f" **{r['wrong']} WRONG**"
        if r["partial"]:
            cell += f" ({r['partial']} partial)"
        ks = (f"{_ratio(r['ratio_ks'])} (vs {r['ks_label']})"
              if r["ratio_ks"] is not None else "—")
        body.append([r["scenario"], r["variant"] or "—", SYSTEM_LABELS.get(r["system"], r["system"]), cell,
                     f"**{_ratio(r['ratio_kstreamlet'])}**" if r["ratio_kstreamlet"] is not None else "—",
                     ks, _ratio(r["ratio_raw"]), common.cell(r["cpu_us_per_record"], "{:.1f}"),
                     common.cell(r["output_records"]), f"{r['warm']:,}" if r["warm"] else "cold",
                     common.cell(r["broker_pct"], "{:.0f}%"), f"{r['ok']}/{r['ok'] + r['wrong']}"])
    thr = common.md_table(["scenario", "variant", "system", "records/s median (min–max)", "÷ kstreamlet",
                           "÷ Kafka Streams", "÷ raw", "CPU µs/record", "output records", "untimed first records",
                           "broker CPU (share of box)", "correct runs"], body) if body else "(no throughput results yet)"
    lrows = latency_rows(results)
    lat = common.md_table(
        ["system", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "p99 ÷ kstreamlet", "p99 ÷ raw", "correct runs"],
        [[SYSTEM_LABELS.get(r["system"], r["system"]),
          common.cell(r["p50_ms"], "{:.1f}") + (f" **{r['wrong']} WRONG**" if r["wrong"] else ""),
          common.cell(r["p99_ms"], "{:.1f}"), common.cell(r["p999_ms"], "{:.1f}"), common.cell(r["max_ms"], "{:.1f}"),
          _ratio(r["p99_ratio_kstreamlet"]), _ratio(r["p99_ratio_raw"]), f"{r['ok']}/{r['ok'] + r['wrong']}"]
         for r in lrows]
    ) if lrows else "(no latency results yet)"
    return thr, lat


def chart(results: dict[str, dict[str, Any]], path: Path) -> bool:
    """Grouped bars (rate ÷ kstreamlet per scenario variant, log scale) and latency percentiles."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib not installed (pip install matplotlib, or the 'dev' extra): no chart")
        return False
    rows = throughput_rows(results)
    # Stateless measured with both consumer configurations: chart the tuned one only (the table has both).
    if any(r["scenario"] == "stateless" and "tuned" in r["variant"] for r in rows):
        rows = [r for r in rows if not (r["scenario"] == "stateless" and "defaults" in r["variant"])]
    groups = list(dict.fromkeys((r["scenario"], r["variant"]) for r in rows))
    systems = sorted({r["system"] for r in rows}, key=_system_key)
    lrows = latency_rows(results)
    fig, axes = plt.subplots(1, 2 if lrows else 1, figsize=(max(8.0, 1.1 * len(groups) + 4) + (5 if lrows else 0), 5.2),
                             gridspec_kw={"width_ratios": [max(3, len(groups)), 2]} if lrows else None, squeeze=False)
    ax = axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(systems))
    all_ys: list[float] = []
    for si, system in enumerate(systems):
        xs, ys = [], []
        for gi, g in enumerate(groups):
            r = next((r for r in rows if (r["scenario"], r["variant"]) == g and r["system"] == system), None)
            if r is None:
                continue
            x = gi - 0.4 + width * (si + 0.5)
            if r["ratio_kstreamlet"] is None:
                if r["wrong"]:
                    ax.text(x, 1.0, "WRONG", rotation=90, ha="center", va="bottom", fontsize=7, color="red")
                continue
            xs.append(x)
            ys.append(r["ratio_kstreamlet"])
            ax.text(x, r["ratio_kstreamlet"] * 1.03, f"{r['ratio_kstreamlet']:.2g}", ha="center", va="bottom", fontsize=6)
        ax.bar(xs, ys, width, label=SYSTEM_LABELS.get(system, system), color=colors[si % len(colors)])
        all_ys.extend(ys)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    if all_ys:
        ax.set_ylim(min(all_ys + [1.0]) / 1.6, max(all_ys + [1.0]) * 1.6)
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda y, _: f"{y:g}×")
    ax.yaxis.set_major_formatter(fmt)
    def minor(y: float, _: Any) -> str:
        mant = round(y / 10 ** math.floor(math.log10(y))) if y > 0 else 0
        return f"{y:g}×" if mant in (2, 5) else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{s}\n{v}" if v else s for s, v in groups], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("median records/s ÷ kstreamlet (log)")
    ax.set_title("Throughput relative to kstreamlet (higher is faster)")
    ax.legend(fontsize=7)
    if lrows:
        ax2 = axes[0][1]
        names = [SYSTEM_LABELS.get(r["system"], r["system"]) for r in lrows]
        for k, (key, lab) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"))):
            vals = [r[key]["median"] if r[key] else 0 for r in lrows]
            ax2.bar([i - 0.2 + 0.4 * k for i in range(len(lrows))], vals, 0.4, label=lab)
        ax2.set_xticks(range(len(lrows)))
        ax2.set_xticklabels(names, fontsize=8, rotation=20, ha="right")
        p = (results.get("latency") or {}).get("params", {})
        ax2.set_ylabel("end-to-end latency, ms")
        ax2.set_title(f"Latency at {p.get('rate', '?'):,} rec/s, EOS, commit 100 ms\n(lower is better)", fontsize=9)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _machine_lines(results: dict[str, dict[str, Any]]) -> str:
    latest = max(results.values(), key=lambda d: d.get("machine", {}).get("date", ""))
    m = latest.get("machine", {})
    lines = [(f"- machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_gb')} GB RAM; "
             f"broker Kafka {m.get('kafka_version')} ({m.get('broker_backend', 'local')}) on the same machine; "
             f"Python {m.get('python')}, confluent-kafka {m.get('confluent_kafka')}, librdkafka {m.get('librdkafka')}")]
    versions: dict[str, str] = {}
    for d in results.values():
        mi = d.get("machine", {})
        if isinstance(mi.get("quix"), dict):
            versions["Quix Streams"] = mi["quix"].get("quixstreams", "?")
        if isinstance(mi.get("faust"), dict):
            versions["Faust"] = mi["faust"].get("faust") or mi["faust"].get("faust_streaming") or json.dumps(mi["faust"])
        if isinstance(mi.get("kafka_streams"), dict):
            ks = mi["kafka_streams"]
            versions["Kafka Streams"] = f"{ks.get('kafka_streams', '?')} (Java {ks.get('java', '?')})"
    if versions:
        lines.append("- other systems: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    runs = []
    for name in sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        d = results[name]
        mi = d.get("machine", {})
        la = mi.get("loadavg_at_start") or []
        fp = ", ".join(mi.get("kstreamlet_fingerprints") or [])
        runs.append(f"  - {name}: {mi.get('date', '?')}, kstreamlet {mi.get('source', '?')} (HEAD {mi.get('git_head', '?')}"
                    + (f", kstreamlet/ source fingerprint {fp}" if fp else "") + "), "
                    f"params {json.dumps({k: v for k, v in (d.get('params') or {}).items() if not isinstance(v, dict)})}, "
                    f"load average at start {', '.join(f'{x:.1f}' for x in la[:3])} — `{Path(d['_file']).relative_to(common.REPO_ROOT) if d['_file'].startswith(str(common.REPO_ROOT)) else d['_file']}`")
    lines.append("- when each scenario was measured (each JSON is that scenario's latest run):\n" + "\n".join(runs))
    caveats = []
    busy = [n for n, d in results.items()
            if (d.get("machine", {}).get("loadavg_at_start") or [0])[0] > (d.get("machine", {}).get("nproc") or 1)]
    single = [n for n, d in results.items() if (d.get("params") or {}).get("repeats") == 1]
    if busy:
        caveats.append(f"{', '.join(busy)} started with a load average above the CPU count (other work on the "
                       "machine): those rates are depressed and noisy")
    if single:
        caveats.append(f"{', '.join(single)}: one repeat only (no spread; e.g. `python -m bench all --quick`)")
    if caveats:
        lines.append("- **caveats:** " + "; ".join(caveats))
    return "\n".join(lines)


#: Everything after this line of docs/performance.md is hand-written and kept as it is by the report.
TRAILER_MARKER = "<!-- hand-written sections below: `python -m bench report` keeps everything after this line -->"
#: Results files of earlier invocations kept for what they show (not a scenario's latest run):
#: stem -> heading of their table in docs/performance.md.
HISTORY = {
    "restore-b3ad689": "Restore before and after the bulk-load restore path (kstreamlet b3ad689 = before; "
                       "its restores alternate with the working tree's on one changelog)",
    "stateful-issue18": "Word count, warm, Kafka Streams' cache on and off, 1 and 2 kstreamlet processes "
                        "(one repeat, first measured by hand; superseded by the stateful rows above)",
    "stateless-2026-11-22": "Stateless, 2026-11-22 (cold, with Faust and 1000 B values)",
    "window-2026-11-22": "Window, 2026-11-22 (cold, with Quix)",
    "join-2026-11-22": "Join, 2026-11-22 (cold, with Quix)",
}
PROFILE_TOP = 8


def load_profiles() -> dict[str, dict[str, Any]]:
    """Scenario -> its ``results/<scenario>-profile.json`` (bench.common.write_profile)."""
    out = {}
    for name in ORDER:
        path = common.RESULTS_DIR / f"{name}-profile.json"
        if path.exists():
            try:
                out[name] = json.loads(path.read_text())
            except ValueError as e:
                print(f"report: skipping {path}: {e}")
    return out


def _short(fn: str) -> str:
    return fn.replace("<method ", "").replace("<built-in method ", "").replace(" objects>", "").rstrip(">")


def profile_reading(prof: dict[str, Any]) -> str:
    """One line on where the profiled time goes: the largest areas and the top own-time functions."""
    total = prof.get("total_seconds") or 0
    if not total:
        return prof.get("error", "no profile data")
    areas = prof.get("areas") or {}
    top_areas = ", ".join(f"{a} {100 * t / total:.0f} %" for a, t in list(areas.items())[:4])
    tops = ", ".join(f"`{_short(f['function'])}` {100 * f['tottime'] / total:.0f} %" for f in prof["top_tottime"][:3])
    return f"own time by area: {top_areas}; largest single costs: {tops}."


def profiles_section(profiles: dict[str, dict[str, Any]]) -> str:
    if not profiles:
        return "(no profiles yet: run a scenario with `--profile`)"
    out = []
    for name, prof in profiles.items():
        run = prof.get("run") or {}
        out.append(f"### {name}\n\n" + " ".join(prof.get("header") or []) + f"; profiled {prof.get('date', '?')}, "
                   f"{run.get('rate') or 0:,.0f} records/s under the profiler ({run.get('status')}); full listing "
                   f"`bench/results/{name}-profile.txt`.\n\n**Reading:** {profile_reading(prof)}\n")
        total = prof.get("total_seconds") or 0
        if not total:
            continue
        rows = [[f"`{_short(f['function'])}`", f"{f['ncalls']:,}", f"{f['tottime']:.3f}", f"{100 * f['tottime'] / total:.1f} %",
                 f"{f['cumtime']:.3f}"] for f in prof["top_tottime"][:PROFILE_TOP]]
        out.append("Top functions by own time (total profiled own time "
                   f"{total:.2f} s):\n\n" + common.md_table(["function", "calls", "own s", "own share", "cumulative s"], rows))
        # by cumulative time: skip the run loop's frames that only contain everything else
        cum = [f for f in prof["top_cumtime"] if f["cumtime"] < 0.98 * (prof["top_cumtime"][0]["cumtime"] or 1)]
        rows = [[f"`{_short(f['function'])}`", f"{f['ncalls']:,}", f"{f['cumtime']:.3f}",
                 f"{100 * f['cumtime'] / total:.1f} %"] for f in cum[:PROFILE_TOP]]
        out.append("Top functions by cumulative time (below the outermost loop):\n\n"
                   + common.md_table(["function", "calls", "cumulative s", "of profiled time"], rows) + "\n")
    return "\n\n".join(out)


def _row(rows: list[dict[str, Any]], scenario: str, system: str, variant: str | None = None) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["system"] == system
                 and (variant is None or r["variant"] == variant) and r["rate"]), None)


def _med(r: dict[str, Any] | None) -> float | None:
    return r["rate"]["median"] if r and r["rate"] else None


def targets(results: dict[str, dict[str, Any]]) -> str:
    """Issue 18's targets and where each stands from the latest results."""
    rows = throughput_rows(results)
    # stateless measured with both consumer configurations: the tuned one (as the chart)
    tuned = any(r["scenario"] == "stateless" and "tuned" in r["variant"] for r in rows)
    rows = [r for r in rows if not (tuned and r["scenario"] == "stateless" and "defaults" in r["variant"])]
    out: list[list[str]] = []

    def verdict(x: float | None, goal: float) -> str:
        return "no data" if x is None else ("**met**" if x >= goal else "not met")

    def warm(*rs: dict[str, Any] | None) -> str:
        ws = {r["warm"] for r in rs if r}
        return "warm" if ws and 0 not in ws else "cold"

    for scen in ("stateless", "stateful", "window", "join"):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["scenario"] == scen and r["variant"] != "restore"):
            k = _row(rows, scen, "kstreamlet", variant)
            if not k or not k.get("ks_baseline"):
                continue
            b = _row(rows, scen, k["ks_baseline"], variant)
            x = k["ratio_ks"]
            out.append(["every shared throughput scenario ≥ 1.5× Kafka Streams (1 thread), steady state, equal work",
                        f"{scen}{', ' + variant if variant else ''}: kstreamlet {_med(k) or 0:,.0f} vs "
                        f"{SYSTEM_LABELS.get(k['ks_baseline'], k['ks_baseline'])} {_med(b) or 0:,.0f} rec/s "
                        f"({warm(k, b)}) = **{_ratio(x)}×**", verdict(x, 1.5)])
    for r in rows:
        if r["scenario"] == "stateless" and r["system"] == "kstreamlet" and "eos" in r["variant"]:
            q = _row(rows, "stateless", "quix", r["variant"])
            out.append(["stateless EOS ≥ 0.95× the raw loop", f"{r['variant']}: **{_ratio(r['ratio_raw'])}×** raw",
                        verdict(r["ratio_raw"], 0.95)])
            xq = (_med(r) or 0) / _med(q) if _med(q) else None
            out.append(["stateless EOS ≥ 5× Quix Streams", f"{r['variant']}: **{_ratio(xq)}×** Quix", verdict(xq, 5.0)])
    rk = _row(rows, "restore", "kstreamlet")
    rks = _row(rows, "restore", "kafka_streams")
    n = ((results.get("restore") or {}).get("params") or {}).get("records")
    if rk:
        out.append(["restore ≥ 400k records/s on 1M", f"{n or 0:,}-record changelog: **{_med(rk) or 0:,.0f}** rec/s",
                    "no data (not 1M)" if n != 1_000_000 else verdict(_med(rk), 400_000)])
        x = (_med(rk) or 0) / _med(rks) if _med(rks) else None
        out.append(["restore ≥ Kafka Streams", f"kstreamlet {_med(rk) or 0:,.0f} vs Kafka Streams {_med(rks) or 0:,.0f} "
                    f"rec/s = **{_ratio(x)}×**", verdict(x, 1.0)])
    w2, w1 = _row(rows, "stateful", "kstreamlet_2w", ""), _row(rows, "stateful", "kstreamlet", "")
    if w2 and w1:
        x = (_med(w2) or 0) / (_med(w1) or 1)
        out.append(["`--workers 2` ≥ 1.7× one worker", f"word count ({warm(w1, w2)}): 2 processes {_med(w2) or 0:,.0f} vs "
                    f"1 process {_med(w1) or 0:,.0f} rec/s = **{x:.2f}×**, broker "
                    f"{common.cell(w2['broker_pct'], '{:.0f}%')} of the box", verdict(x, 1.7)])
    lat = next((r for r in latency_rows(results) if r["system"] == "kstreamlet"), None)
    if lat and lat["p99_ms"]:
        p = (results.get("latency") or {}).get("params") or {}
        goal = 1000 * float(p.get("commit_interval", 0.1)) + 20
        x = lat["p99_ms"]["median"]
        raw = next((r for r in latency_rows(results) if r["system"] == "raw" and r["p99_ms"]), None)
        out.append([f"p99 at {p.get('rate', 5000):,} rec/s ≤ commit interval + 20 ms ({goal:.0f} ms)",
                    f"kstreamlet p99 **{x:.1f} ms** (median of {lat['ok']} runs)"
                    + (f"; the raw loop on the same broker: {raw['p99_ms']['median']:.1f} ms" if raw else ""),
                    "**met**" if x <= goal else "not met"])
    for i in range(len(out) - 1, 0, -1):  # the target's text once per group of rows
        if out[i][0] == out[i - 1][0]:
            out[i][0] = "″"
    return common.md_table(["target", "measured", "status"], out) if out else "(no results yet)"


def commands(results: dict[str, dict[str, Any]]) -> str:
    """The command line of each scenario's latest results (the first backticked line of its .md)."""
    out = []
    for name in sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        md = Path(results[name]["_file"]).with_suffix(".md")
        cmd = None
        if md.exists():
            cmd = next((ln.strip("`") for ln in md.read_text().splitlines() if ln.startswith("`python -m bench")), None)
        out.append(f"- {name}: `{cmd or REPRODUCE.get(name, '?')}` — {results[name].get('machine', {}).get('date', '?')}")
    return "\n".join(out)


def history_section() -> str:
    out = []
    for stem, title in HISTORY.items():
        path = common.RESULTS_DIR / f"{stem}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        data["_file"] = str(path)
        name = data.get("scenario", stem)
        rows = throughput_rows({name: data})
        md = path.with_suffix(".md")
        cmd = next((ln for ln in md.read_text().splitlines() if ln.startswith("`python")), "") if md.exists() else ""
        mi = data.get("machine", {})
        la = mi.get("loadavg_at_start") or []
        body = [[r["variant"] or "—", SYSTEM_LABELS.get(r["system"], r["system"]), common.cell(r["rate"]), _ratio(r["ratio_kstreamlet"]),
                 common.cell(r["cpu_us_per_record"], "{:.1f}"), common.cell(r["output_records"]),
                 f"{r['warm']:,}" if r["warm"] else "cold", common.cell(r["broker_pct"], "{:.0f}%"),
                 f"{r['ok']}/{r['ok'] + r['wrong']}"] for r in rows]
        out.append(f"### {title}\n\n{cmd} — {mi.get('date', '?')}, load average at start "
                   f"{', '.join(f'{x:.1f}' for x in la[:3])} (`bench/results/{stem}.md`)\n\n"
                   + common.md_table(["variant", "system", "records/s median (min–max)", "÷ kstreamlet", "CPU µs/record",
                                      "output records", "untimed first records", "broker CPU (share of box)",
                                      "correct runs"], body))
    return "\n\n".join(out) if out else "(none)"


def trailer(path: Path) -> str:
    """The hand-written part of the existing page: everything after :data:`TRAILER_MARKER`."""
    if not path.exists():
        return ""
    text = path.read_text()
    i = text.find(TRAILER_MARKER)
    return text[i + len(TRAILER_MARKER):].lstrip("\n") if i >= 0 else ""


METHOD = """- every system does the same work on the same input (fixed seed) with the same guarantee (exactly-once unless
  stated) and commit interval; see `bench/SCENARIOS.md` for the contract of each scenario
- each measured run is its own subprocess with a fresh consumer group / application id, state dir and output
  topic, reading the whole input from the beginning; the clock runs in the worker from the first consumed record
  to the last target record processed (start-up and group join excluded)
- every run's output is read back `read_committed` and checked against the true result; a run with wrong or
  missing output is WRONG and excluded from the rates
- systems interleaved, medians with min–max over the repeats; ratios are of medians
  (÷ kstreamlet > 1: faster than kstreamlet); the broker shares the machine's CPUs with the workers"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", nargs="*", type=Path, help="results JSON files to use (default bench/results/<scenario>.json)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/performance.md")
    a = p.parse_args(argv)
    results = load(a.files)
    if not results:
        print(f"report: no results in {common.RESULTS_DIR} (run python -m bench <scenario> first)")
        return 1
    thr, lat = tables(results)
    has_png = chart(results, SUMMARY_PNG)
    date = max(d.get("machine", {}).get("date", "") for d in results.values())
    machine = _machine_lines(results)
    summary = f"""# Benchmark summary

Written by `python -m bench report` on the results of {', '.join(results)} (latest run {date}).

{machine}

## Throughput

{thr}

## Latency

{lat}
{chr(10) + '![summary](summary.png)' + chr(10) if has_png else ''}"""
    SUMMARY_MD.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_MD.write_text(summary)
    written = [SUMMARY_MD] + ([SUMMARY_PNG] if has_png else [])
    if not a.no_docs:
        kept = trailer(DOCS_MD)
        reproduce = "\n".join(f"python -m bench {n:<10} # {common.RESULTS_DIR.relative_to(common.REPO_ROOT)}/{n}.md"
                              for n in ORDER)
        docs = f"""# Performance

kstreamlet measured against a hand-written confluent-kafka loop ("raw", the floor of what Python can do with
the same client), Quix Streams, Faust and Kafka Streams (Java) on a real Kafka broker. Generated by
`python -m bench report` from the latest results in `bench/results/` (per-scenario reports with every run:
`bench/results/<scenario>.md`).

- date of the latest run: {date}
{machine}

## Method

{METHOD}

## Throughput

Median records/s over the repeats (min–max); "÷ kstreamlet", "÷ Kafka Streams" and "÷ raw" are ratios of medians.
"÷ Kafka Streams" is against Kafka Streams with one stream thread on equal work: in `stateful`, kstreamlet (record
cache off, its default; 1 or 2 processes) against Kafka Streams with `statestore.cache.max.bytes=0` ("KS cache off"),
kstreamlet with its record cache on at 10 MB against Kafka Streams' default 10 MB cache ("KS cache on"); elsewhere
against Kafka Streams' defaults (the window emits final results only, so a cache does not change its output; a
stream-stream join and a stateless map have none). "output records" = records in the output topic (a record cache
folds updates: far fewer); "untimed first records" = `--warmup-records` (processed in the same process / JVM before
the clock starts; "cold" = timed from the first record); broker CPU = the broker JVM's share of the whole machine in
the timed window.

{thr}

## Latency

End-to-end latency (producer → system → `read_committed` consumer) of the stateless job at a fixed rate,
exactly-once with a 100 ms commit interval (the commit makes the output visible, so it bounds the latency
from below).

{lat}

## Targets (issue 18)

Each target against the latest results (generated: "no data" where the scenario was not measured that way).

{targets(results)}

## Chart

{'![rate normalised to kstreamlet per scenario; latency percentiles](../bench/results/summary.png)' if has_png else '(matplotlib was not installed when this was written)'}

## Profiles

kstreamlet's worker once more per scenario under cProfile (`--profile`), over the timed window only (start-up,
group join and the warm-up records excluded; restore: the restore window); own time = in the function itself,
cumulative = with what it calls; the profiler slows everything down, so read shares, not rates.

{profiles_section(load_profiles())}

## Earlier measurements kept for comparison

{history_section()}

## Commands of the latest results

{commands(results)}

## How to reproduce

```
pip install -e '.[dev]'          # kstreamlet + matplotlib; Quix/Faust get their own venvs under ~/.cache/kstreamlet-bench
python -m bench all --quick      # every scenario with small counts, one repeat, then this report (~15 min)
python -m bench all              # every scenario with its default counts and repeats (hours on 2 cores)
{reproduce}
python -m bench report           # rewrite bench/results/summary.md, summary.png and this page
```

Kafka Streams needs a JDK and Maven (the worker jar is built once into `~/.cache/kstreamlet-bench/`); without
them it is skipped with a message. See `bench/README.md` for the options of each scenario.

{TRAILER_MARKER}

{kept}"""
        DOCS_MD.parent.mkdir(parents=True, exist_ok=True)
        DOCS_MD.write_text(docs)
        written.append(DOCS_MD)
    print(summary)
    print("written " + ", ".join(str(x) for x in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
