"""Testing kit: :class:`TopologyTestDriver` (broker-free) and pytest fixtures (real broker/DB).

The fixtures live in :mod:`kstreamlet.testing.pytest_plugin`, loaded automatically by
pytest through the ``pytest11`` entry point.
"""

from kstreamlet.testing.driver import TestInputTopic, TestOutputTopic, TestRecord, TopologyTestDriver

__all__ = ["TopologyTestDriver", "TestInputTopic", "TestOutputTopic", "TestRecord"]
