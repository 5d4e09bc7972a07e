"""Reading a service's own environment variables with errors that name the variable.

The ``KSTREAMLET_*`` settings are validated by :mod:`kstreamlet.config`; these are the
services' own (topics, URLs, window sizes). A missing or malformed one stops the service
at import with ``services.<name>: ...``, before it joins the group.
"""

from __future__ import annotations

import os
import sys


def _service() -> str:
    # The calling service module's name, for the message (``services.orders``).
    return sys._getframe(2).f_globals.get("__name__", "services")


def required(name: str) -> str:
    """The value of ``name``; exits naming it when unset or empty."""
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"{_service()}: set {name} (see the module docstring)")
    return v


def integer(name: str, default: int) -> int:
    """``name`` as an integer (``default`` when unset); exits naming it when malformed."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{_service()}: {name} must be an integer, not {raw!r}") from None
