"""Calls into librdkafka that must return within a deadline, whatever the library does.

librdkafka's transactional calls take a timeout but do not always honour it: after a broker
or coordinator restart, ``send_offsets_to_transaction`` and ``commit_transaction`` have been
seen blocking for hundreds of seconds (librdkafka issues #5456, #5511), and a consumer's
``close()`` waits for a coordinator that is gone. While the main thread is inside such a call
it runs no Python code at all: no signal handler, no heartbeat, no shutdown timer.

:func:`call_with_deadline` runs the call on a short-lived daemon thread (confluent-kafka
releases the GIL inside every blocking call) and waits for it on the calling thread. When the
deadline passes, the call is *abandoned*: :class:`CallTimedOut` is raised and the thread is
left to return (or not) on its own. The caller must then treat the client as broken and
never use it again — the runtime replaces it (a new producer fences the old one through
``init_transactions``; see ``runtime/member.py:_rebuild``).
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")

#: Clients whose calls were abandoned (count per process); the runner exits without
#: destroying them, since librdkafka's destructor would wait for the stuck call.
abandoned_calls = 0


class CallTimedOut(Exception):
    """A client call did not return within its deadline; the client must not be used again."""


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()``, or :class:`CallTimedOut` if it has not returned after ``timeout`` seconds.

    The thread costs ~50 µs, so this is for calls made once per checkpoint or rebalance,
    never per record. Example::

        call_with_deadline(lambda: producer.commit_transaction(10), 15, "commit_transaction")
    """
    global abandoned_calls
    result: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # handed to the caller
            error.append(e)
        finally:
            done.set()

    t = threading.Thread(target=run, name=f"kstreamlet-call-{what}", daemon=True)
    t.start()
    # Event.wait is interruptible: signal handlers of the main thread run while it waits.
    if not done.wait(timeout):
        abandoned_calls += 1
        raise CallTimedOut(f"{what} did not return within {timeout:.0f}s")
    if error:
        raise error[0]
    return result[0]
