"""Report text as it may be stored: the one place where text enters a report (an edit, an
addendum, a dictation) cleans it, so that nothing downstream (HL7 OBX-5, the SR's TextValue,
the page) meets a control character.

Word's soft line break (VT, ``\\x0b``), form feed and the Unicode line and paragraph separators
become line breaks; CR LF and CR become LF; other C0 and C1 control characters and DEL are
removed (they carry no text and break receivers: a VT restarts MLLP framing in some, and DICOM
forbids them in UT). Tabs stay.
"""

from __future__ import annotations

import re

_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Text with line breaks as LF and no control characters other than LF and TAB."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub("\n", text))


def clean_line(text: str) -> str:
    """One line of text (a name, a title): every control character, line breaks too, removed or a space."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text)).replace("\n", " ").replace("\t", " ")
