"""Operator commands: ``kstreamlet topics | reset | state | dlq``.

One module per command group; each exposes ``add_parser(subparsers)`` (registers its argparse
sub-commands on ``kstreamlet``'s parser) and plain functions usable from Python:

- :mod:`kstreamlet.tools.topics`: create / list / describe / delete topics, and create the
  topics an app reads and writes (``kstreamlet topics create module:app``).
- :mod:`kstreamlet.tools.reset`: reset an application (input offsets, internal topics, local
  state), like Kafka's ``kafka-streams-application-reset``.
- :mod:`kstreamlet.tools.state`: a store's committed contents, read from its changelog and
  decoded with the store's serdes.
- :mod:`kstreamlet.tools.dlq`: show and replay (exactly once) dead-letter records.

Connection settings are resolved as ``kstreamlet run`` does (:mod:`kstreamlet.tools.common`):
``--bootstrap-servers`` wins over ``KSTREAMLET_BOOTSTRAP_SERVERS`` (and the app's code), and
``KSTREAMLET_KAFKA_CONFIG`` (SASL/SSL) applies to every client. Exit codes: 0 done, 1 not found,
2 refused or invalid (a one-line message on stderr).
"""
