"""Inspecting a :class:`~kstreamlet.sinks.files.FileSink`'s output in tests and tools (local paths)."""

from __future__ import annotations

import os
import re

def finished_part_files(base_path: str, prefix: str = "part", suffix: str = "") -> list[str]:
    """Every finished part file under a local ``base_path`` (any partition), sorted."""
    rx = re.compile(rf"^{re.escape(prefix)}-\d+-\d+{re.escape(suffix)}$")
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(base_path):
        out.extend(os.path.join(dirpath, f) for f in files if rx.match(f))
    return sorted(out)


def hidden_part_files(base_path: str) -> list[str]:
    """In-progress and pending part files under a local ``base_path`` (sorted)."""
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(base_path):
        out.extend(os.path.join(dirpath, f) for f in files
                   if f.startswith(".") and (f.endswith(".inprogress") or f.endswith(".pending")))
    return sorted(out)


__all__ = ["finished_part_files", "hidden_part_files"]
