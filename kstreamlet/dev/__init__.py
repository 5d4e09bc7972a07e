"""Real infrastructure on demand for development, tests and benchmarks.

- :mod:`kstreamlet.dev.kafka` — a real Apache Kafka broker (external, Testcontainers, or local jars).
- :mod:`kstreamlet.dev.security` — throwaway TLS material and SCRAM users for a secured local broker.
- :mod:`kstreamlet.dev.mysql` — a real MySQL/MariaDB server (external, Testcontainers, or a private MariaDB).
"""
