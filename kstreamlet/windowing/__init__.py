"""Windows on keyed streams (Flink's DataStream windows): assigners, triggers, window functions.

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
from kstreamlet.windowing.operator import ContinuousEventTimeTrigger, CountTrigger, Trigger

__all__ = [
    "TumblingEventTimeWindows", "TumblingProcessingTimeWindows", "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows", "EventTimeSessionWindows", "ProcessingTimeSessionWindows", "TimeWindow",
    "Trigger", "CountTrigger", "ContinuousEventTimeTrigger",
]
