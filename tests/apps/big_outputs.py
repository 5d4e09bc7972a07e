"""A stateless test service whose output for inputs starting with ``big`` is 50 KB.

Input ``"<n>"`` -> ``"<n>:out"``; ``"big<n>"`` -> 50 000 bytes, more than the output topic
accepts in the test (``max.message.bytes=10000``); ``"fail..."`` raises (its input goes to the
DLQ). ``IN_TOPIC``, ``OUT_TOPIC``, ``KSTREAMLET_*``.
"""

import os

from kstreamlet import App, serdes

app = App()


def transform(v: str) -> str:
    if v.startswith("fail"):
        raise ValueError("failing record")
    if v.startswith("big"):
        return "x" * 50_000
    return f"{v}:out"


app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR).map(transform).to(os.environ["OUT_TOPIC"], value_serde=serdes.STR)
