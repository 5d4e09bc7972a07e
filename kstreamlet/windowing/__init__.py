"""Windows on keyed streams (Flink's DataStream windows): the public value types, assigners and triggers.

How you ask for a window is :mod:`kstreamlet.dsl.windowed` (``keyed.window(assigner)``); how a
window runs is :mod:`kstreamlet.operators.window`.

    from kstreamlet.windowing import TumblingEventTimeWindows, SlidingEventTimeWindows, EventTimeSessionWindows
"""

from kstreamlet.windowing.assigners import (
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from kstreamlet.windowing.triggers import (
    ContinuousEventTimeTrigger,
    CountTrigger,
    EventTimeTrigger,
    ProcessingTimeTrigger,
    PurgingTrigger,
    Trigger,
)

__all__ = [
    "TumblingEventTimeWindows", "TumblingProcessingTimeWindows", "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows", "EventTimeSessionWindows", "ProcessingTimeSessionWindows", "TimeWindow",
    "Trigger", "CountTrigger", "ContinuousEventTimeTrigger", "EventTimeTrigger", "ProcessingTimeTrigger",
    "PurgingTrigger",
]
