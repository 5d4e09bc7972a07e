"""Loading ``module:attribute`` (an App) the way every command does: ``kstreamlet run``,
``describe`` and the operator tools (kstreamlet/tools). Below both, so neither imports the other."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (attribute defaults to ``app``); SystemExit with one line if it fails."""
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise SystemExit(f"kstreamlet: cannot import {module_name!r}: {e}") from None
    try:
        return getattr(module, attr or "app")
    except AttributeError:
        raise SystemExit(f"kstreamlet: module {module_name!r} has no attribute {attr or 'app'!r}") from None


__all__ = ["load_app"]
