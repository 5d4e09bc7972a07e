"""An async enrichment service for the tests: each input value ``"<n>"`` is sent to the HTTP
service at ``ENRICH_URL`` (``GET ?v=<n>``) and its answer (``"<n>:ok"``) written to ``OUT_TOPIC``.

``map_async`` with ``ASYNC_CONCURRENCY`` calls in flight per task, results in input order
(``ASYNC_ORDERED=0``: as they complete), a 2 s timeout and retries with backoff for the
service's injected failures. Topics and settings come from the environment (``IN_TOPIC``,
``OUT_TOPIC``, ``KSTREAMLET_*``) so test processes can be killed and restarted.
"""

import asyncio
import os
import weakref

import aiohttp

from kstreamlet import App, serdes

app = App()
URL = os.environ["ENRICH_URL"]
_sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = weakref.WeakKeyDictionary()


def session() -> aiohttp.ClientSession:
    """One client session per event loop (the member's loop; a rebuilt member gets a new one)."""
    loop = asyncio.get_running_loop()
    s = _sessions.get(loop)
    if s is None or s.closed:
        s = _sessions[loop] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    return s


async def enrich(v: str) -> str:
    async with session().get(URL, params={"v": v}) as resp:
        resp.raise_for_status()
        return await resp.text()


(app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR)
    .map_async(enrich, concurrency=int(os.environ.get("ASYNC_CONCURRENCY", "16")), timeout=2.0,
               ordered=os.environ.get("ASYNC_ORDERED", "1") == "1", retries=8, retry_backoff=0.01)
    .to(os.environ["OUT_TOPIC"], value_serde=serdes.STR))
