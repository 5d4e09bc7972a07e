"""A stateless test service: input value ``"<n>"`` -> output ``"<n>:out"``; ``"poison"`` fails.

Topics and settings come from the environment so test processes can be killed and restarted:
``IN_TOPIC``, ``OUT_TOPIC``, ``KSTREAMLET_*``.
"""

import os

from kstreamlet import App, serdes

app = App()


def transform(v: str) -> str:
    if v == "poison":
        raise ValueError("poison record")
    return f"{v}:out"


app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR).map(transform).to(os.environ["OUT_TOPIC"])
