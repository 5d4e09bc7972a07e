"""kstreamlet: Kafka-Streams-style stream processing in Python, with Flink's DataStream semantics.

Public surface (what a service imports)::

    from kstreamlet import App, Settings, Stream, KeyedStream, serdes
    from kstreamlet import KeyedProcessFunction, KeyedContext, RuntimeContext, ValueStateDescriptor
    from kstreamlet import WatermarkStrategy, TumblingEventTimeWindows, CountTrigger
    from kstreamlet import BroadcastProcessFunction, KeyedBroadcastProcessFunction
    from kstreamlet import Source, SourceContext, StartPosition
    from kstreamlet.sinks import FileSink, MySQLSink          # side sinks (two-phase commit)
    from kstreamlet.testing import TopologyTestDriver         # tests
"""

from kstreamlet import serdes
from kstreamlet.app import App
from kstreamlet.config import Settings
from kstreamlet.dsl.broadcast import BroadcastStream
from kstreamlet.dsl.stream import KeyedStream, Stream
from kstreamlet.errors import ConfigError, KStreamletError, ProcessingError, TopologyError
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.api import (
    BroadcastContext,
    BroadcastProcessFunction,
    BroadcastState,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedContext,
    KeyedProcessFunction,
    ProcessorContext,
    RuntimeContext,
)
from kstreamlet.sources.base import Source, SourceContext
from kstreamlet.state.keyed import (
    AggregateFunction,
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from kstreamlet.topology.nodes import StartPosition
from kstreamlet.windowing import (
    BuiltinTrigger,
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountEvictor,
    DeltaEvictor,
    Evictor,
    GlobalWindows,
    NeverTrigger,
    TimeEvictor,
    TimestampedValue,
    TriggerContext,
    TriggerResult,
    CountTrigger,
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    Trigger,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    EventTimeTrigger,
    ProcessingTimeTrigger,
    PurgingTrigger,
)

__all__ = [
    "App", "Settings", "Stream", "KeyedStream", "StartPosition", "Source", "SourceContext", "serdes",
    "ProcessorContext", "KeyedContext", "RuntimeContext", "KeyedProcessFunction",
    "CoProcessFunction", "KeyedCoProcessFunction",
    "BroadcastStream", "BroadcastState", "BroadcastContext", "BroadcastProcessFunction", "KeyedBroadcastProcessFunction",
    "ValueStateDescriptor", "ListStateDescriptor", "MapStateDescriptor", "ReducingStateDescriptor",
    "AggregatingStateDescriptor", "AggregateFunction", "StateTtlConfig",
    "WatermarkStrategy",
    "TumblingEventTimeWindows", "TumblingProcessingTimeWindows", "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows", "EventTimeSessionWindows", "ProcessingTimeSessionWindows", "TimeWindow",
    "Trigger", "CountTrigger", "ContinuousEventTimeTrigger", "EventTimeTrigger", "ProcessingTimeTrigger",
    "PurgingTrigger", "ContinuousProcessingTimeTrigger", "NeverTrigger", "BuiltinTrigger", "TriggerResult",
    "TriggerContext", "GlobalWindows", "Evictor", "TimestampedValue", "CountEvictor", "TimeEvictor", "DeltaEvictor",
    "ConfigError", "KStreamletError", "ProcessingError", "TopologyError",
]
__version__ = "0.1.0"
