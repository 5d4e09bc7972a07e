"""A test service whose topology changes with ``VERSION`` (issue 16, upgrading a running app).

``IN_TOPIC`` words -> counts per word to ``OUT_TOPIC`` (INT64). Versions:

``1``       the counting pipeline, unnamed (``key_by-0``, ``count-0``)
``2``       a second, unnamed counting pipeline on ``OTHER_TOPIC`` defined *in front*: the
            generated names shift (the new pipeline would take over ``count-0``'s state)
``2-named`` the same with the old pipeline's generated names given explicitly: its state is kept
``3``       version 1 with the count's state serde changed (a user function, JSON -> INT64)
"""

import os

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.state.keyed import ValueStateDescriptor

app = App()
version = os.environ.get("VERSION", "1")


class Count(KeyedProcessFunction):
    def __init__(self, serde):
        self.serde = serde

    def open(self, ctx):
        self.n = ctx.get_state(ValueStateDescriptor("n", self.serde, default=0))

    def process_element(self, value, ctx):
        n = int(self.n.value()) + 1
        self.n.update(n)
        ctx.emit(n)


if version.startswith("2"):
    (app.stream(os.environ["OTHER_TOPIC"], value_serde=serdes.STR)
     .key_by(lambda w: w, key_serde=serdes.STR, name="other" if version == "2-named" else None)
     .process(Count(serdes.JSON), name="other-count" if version == "2-named" else None)
     .to(os.environ["OTHER_OUT_TOPIC"], value_serde=serdes.INT64))

named = version == "2-named"
(app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR)
 .key_by(lambda w: w, key_serde=serdes.STR, name="key_by-0" if named else None)
 .process(Count(serdes.INT64 if version == "3" else serdes.JSON), name="process-0" if named else None)
 .to(os.environ["OUT_TOPIC"], value_serde=serdes.INT64))
