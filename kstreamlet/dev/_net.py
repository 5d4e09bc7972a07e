"""Local-network helpers shared by the dev servers (:mod:`kstreamlet.dev.kafka`, :mod:`kstreamlet.dev.mysql`)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` on ``host`` cannot be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def docker_available(timeout: float = 2.0) -> bool:
    """True only when a Docker engine answers a ping (the client binary alone is not enough)."""
    try:
        import docker  # type: ignore[import-untyped]

        # (mypy: without stubs it would take the repository's docker/ directory for this module)
        client = docker.from_env(timeout=timeout)  # type: ignore[attr-defined,unused-ignore]
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


__all__ = ["free_port", "port_in_use", "docker_available"]
