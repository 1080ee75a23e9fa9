"""Job handlers for queue tests: each run appends a line to a log file, so a test can count runs.

Loaded by real worker processes: ``radservice worker --handlers tests.job_handlers:handlers``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radservice.config import Settings
from radservice.jobs.worker import Handler, JobContext, PermanentJobError


def _note(ctx: JobContext, event: str) -> None:
    with Path(ctx.job.payload["log"]).open("a") as fh:  # O_APPEND: one whole line per write
        fh.write(f"{event} {ctx.job.id} {os.getpid()}\n")


def record(ctx: JobContext) -> dict[str, Any]:
    _note(ctx, "run")
    return {"pid": os.getpid()}


def slow(ctx: JobContext) -> dict[str, Any]:
    _note(ctx, "start")
    deadline = time.monotonic() + float(ctx.job.payload.get("seconds", 1))
    while time.monotonic() < deadline:
        ctx.report_progress(0.5)
        time.sleep(0.05)
    _note(ctx, "end")
    return {"pid": os.getpid()}


def flaky(ctx: JobContext) -> dict[str, Any]:
    _note(ctx, "run")
    if ctx.job.attempts < int(ctx.job.payload.get("succeed_on", 99)):
        raise RuntimeError(f"attempt {ctx.job.attempts} failed")
    return {"attempt": ctx.job.attempts}


def refuse(ctx: JobContext) -> dict[str, Any]:
    raise PermanentJobError("bad input, no retry")


def handlers(settings: Settings) -> Mapping[str, Handler]:
    return {"record": record, "slow": slow, "flaky": flaky, "refuse": refuse}
