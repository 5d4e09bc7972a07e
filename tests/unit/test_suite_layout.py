"""The test directories have no ``__init__.py`` (pytest's rootdir-relative imports): two test
files with the same basename in ``tests/unit`` and ``tests/integration`` make the whole run stop
at collection ("import file mismatch"). Keep basenames unique."""

from __future__ import annotations

import collections
from pathlib import Path


def test_test_file_basenames_are_unique_across_directories():
    root = Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in root.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
