"""Log records never print an exception's text or traceback above DEBUG (they may quote patient data)."""

from __future__ import annotations

import logging
import sys

from radservice.logs import TypeOnlyTracebacks


def test_an_exception_is_named_by_its_type_only_above_debug() -> None:
    try:
        raise ValueError("SYNTHETIC^PATIENT MRN-000123")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None,
                               exc_info)
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert TypeOnlyTracebacks().filter(record)
        text = logging.Formatter().format(record)
        assert "SYNTHETIC" not in text and "Traceback" not in text and "ValueError" in text
        root.setLevel(logging.DEBUG)  # a debug log keeps the traceback
        kept = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, exc_info)
        assert TypeOnlyTracebacks().filter(kept) and kept.exc_info is not None
    finally:
        root.setLevel(level)
