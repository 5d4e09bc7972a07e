"""Windows on keyed streams (Flink's DataStream windows): the public value types, assigners and triggers.

How you ask for a window is :mod:`kstreamlet.dsl.windowed` (``keyed.window(assigner)``); how a
window runs is :mod:`kstreamlet.operators.window`.

    from kstreamlet.windowing import TumblingEventTimeWindows, SlidingEventTimeWindows, EventTimeSessionWindows
    from kstreamlet.windowing import GlobalWindows, Trigger, TriggerResult, CountEvictor
"""

from kstreamlet.windowing.assigners import (
    GLOBAL_WINDOW,
    EventTimeSessionWindows,
    GlobalWindow,
    GlobalWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from kstreamlet.windowing.evictors import (
    CountEvictor,
    DeltaEvictor,
    Evictor,
    EvictorContext,
    TimeEvictor,
    TimestampedValue,
)
from kstreamlet.windowing.triggers import (
    BuiltinTrigger,
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountTrigger,
    EventTimeTrigger,
    NeverTrigger,
    OnMergeContext,
    ProcessingTimeTrigger,
    PurgingTrigger,
    Trigger,
    TriggerContext,
    TriggerResult,
)

__all__ = [
    "TumblingEventTimeWindows", "TumblingProcessingTimeWindows", "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows", "EventTimeSessionWindows", "ProcessingTimeSessionWindows", "TimeWindow",
    "Trigger", "CountTrigger", "ContinuousEventTimeTrigger", "EventTimeTrigger", "ProcessingTimeTrigger",
    "PurgingTrigger", "ContinuousProcessingTimeTrigger", "NeverTrigger", "BuiltinTrigger", "TriggerResult",
    "TriggerContext", "OnMergeContext", "GlobalWindows", "GlobalWindow", "GLOBAL_WINDOW",
    "Evictor", "EvictorContext", "TimestampedValue", "CountEvictor", "TimeEvictor", "DeltaEvictor",
]
