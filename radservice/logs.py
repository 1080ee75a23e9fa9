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


class TypeOnlyTracebacks(logging.Filter):
    """Above DEBUG, a record's exception is named by its type, never printed: an exception's text
    and a traceback's locals may quote patient names, IDs or report text (uvicorn's "Exception in
    ASGI application" included). Run at DEBUG to see tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "exception"
            record.msg, record.args = f"{record.getMessage()} [{kind}; traceback at debug level]", None
            record.exc_info, record.exc_text = None, None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Send log records to stderr in one plain format (uvicorn's loggers included)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactTokens())
    handler.addFilter(TypeOnlyTracebacks())
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
