"""Operational endpoints of a kstreamlet process: ``/healthz``, ``/readyz``, ``/metrics``.

Started by the runtime when ``Settings.http_port`` is set (env ``KSTREAMLET_HTTP_PORT``);
the Helm chart points the pod's liveness/readiness probes and Prometheus scraping at it.
"""

from kstreamlet.observability.health import Heartbeat, worker_http_port
from kstreamlet.observability.http import ObservabilityServer, start_http_server

__all__ = ["Heartbeat", "ObservabilityServer", "start_http_server", "worker_http_port"]
