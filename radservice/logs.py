"""Logging set-up for every entry point: one line per event, no patient data."""

from __future__ import annotations

import logging
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Browsers pass the API token in a WebSocket URL's query; uvicorn logs that URL. Not its token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN_IN_URL.sub(r"\1[redacted]", message), None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Send log records to stderr in one plain format (uvicorn's loggers included)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactTokens())
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces each plugin at INFO on every start; only its warnings matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler logs every run of every duty at INFO; our duties log their own one-line outcome.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # faster-whisper logs every pass (live dictation makes one a second); our flows log outcomes.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
