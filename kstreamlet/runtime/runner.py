"""Runs an app in this process, or as ``--workers N`` forked members in one pod."""

from __future__ import annotations

import os
import signal
import sys

import structlog

from kstreamlet.config import WORKER_INDEX_ENV
from kstreamlet.logging import configure_logging
from kstreamlet.runtime import deadline
from kstreamlet.runtime.member import AppLike, Member

log = structlog.get_logger("kstreamlet.runner")


def run_app(app: AppLike, workers: int = 1) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    configure_logging(app.settings.log_level)
    # Once per start (before --workers forks): every effective setting and where it came from.
    log.info("effective settings", **app.settings.report())
    app.topology()  # fail fast on topology errors, before forking
    if workers <= 1:
        Member(app, app.settings.effective_instance_id).run()
        if deadline.abandoned_calls:
            # A client call abandoned during an outage may still hold its client: destroying
            # that client at interpreter exit would wait for the call. Leave without it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0
    return _run_workers(app, workers)


def _run_workers(app: AppLike, workers: int) -> int:
    # Fork before any Kafka client exists (librdkafka threads do not survive fork).
    base_id = app.settings.instance_id or app.settings.effective_instance_id
    children: dict[int, int] = {}
    for i in range(workers):
        pid = os.fork()
        if pid == 0:
            os.environ[WORKER_INDEX_ENV] = str(i)
            code = 0
            try:
                Member(app, f"{base_id}-w{i}").run()
            except BaseException as e:  # report, then exit non-zero so the parent notices
                log.error("worker failed", worker=i, error=repr(e))
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = i

    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0 and not stopping:
            # A worker died: take the pod down so the orchestrator restarts it cleanly.
            log.error("worker exited; stopping the others", worker=index, exit_code=rc)
            code = rc if rc > 0 else 1
            forward(signal.SIGTERM, None)
        elif rc != 0:
            code = code or (rc if rc > 0 else 1)
    return code


__all__ = ["run_app"]
