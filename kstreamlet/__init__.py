"""kstreamlet: Kafka-Streams-style stream processing in Python, with Flink's DataStream semantics.

Public surface::

    from kstreamlet import App, Stream, StartPosition, Source, serdes
    from kstreamlet.testing import TopologyTestDriver
"""

from kstreamlet import serdes
from kstreamlet.app import App
from kstreamlet.dsl.stream import Stream
from kstreamlet.errors import ConfigError, KStreamletError, ProcessingError, TopologyError
from kstreamlet.runtime.context import ProcessorContext
from kstreamlet.sources.base import Source, SourceContext
from kstreamlet.topology.nodes import StartPosition

__all__ = [
    "App", "Stream", "StartPosition", "Source", "SourceContext", "ProcessorContext", "serdes",
    "ConfigError", "KStreamletError", "ProcessingError", "TopologyError",
]
__version__ = "0.1.0"
