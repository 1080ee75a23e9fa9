"""HL7 v2 messages as text: character sets, parsing into segments and fields, escaping.

A small parser on purpose: hl7apy costs about 7.6 ms a message here and python-hl7 0.32 ms
(both measured on one ORM^O01, see docs/performance.md); splitting on the message's own
delimiters costs a few hundredths of that, and decoding escapes is ours anyway (python-hl7's
``unescape`` drops ``\\.br\\``, hl7apy has none).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# MSH-18 values (HL7 table 0211) and the Python codec each one means.
CHARSETS = {
    "": None,  # not declared: UTF-8 when the bytes are valid UTF-8, else ISO 8859-1
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
}

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")


class MessageError(Exception):
    """A message that cannot be read or applied, with what the ACK must say.

    Parameters
    ----------
    ack_code
        ``AR`` (rejected: unreadable, unsupported) or ``AE`` (understood, not applicable).
    error_code
        HL7 table 0357 code (101 required field missing, 200 unsupported message type, ...).
    text
        A short message for the sender, naming the field; never patient data.
    location
        ``(segment, field)`` the error is about, when there is one.
    """

    def __init__(self, ack_code: str, error_code: int, text: str, location: tuple[str, int] | None = None) -> None:
        super().__init__(text)
        self.ack_code = ack_code
        self.error_code = error_code
        self.text = text
        self.location = location


@dataclass(frozen=True)
class Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    #: The Python codec of the declared character set (MSH-18): what ``\Xhh\`` bytes are decoded in.
    codec: str = "latin-1"


DEFAULT_ENCODING = Encoding()


def charset_of(payload: bytes) -> str:
    """MSH-18 as sent ('' when absent), read from the raw bytes before decoding."""
    if not payload.startswith(b"MSH") or len(payload) < 4:
        return ""
    sep = payload[3:4]
    first = re.split(rb"[\r\n]", payload, maxsplit=1)[0]
    fields = first.split(sep)
    if len(fields) < 18:
        return ""
    # MSH-18 may repeat (by MSH-2's repetition character); the first repetition is the default.
    encoding_chars = fields[1] if len(fields) > 1 else b""
    repetition = encoding_chars[1:2] or b"~"
    value = fields[17].split(repetition)[0].strip()
    return value.decode("ascii") if value.isascii() else "(not ASCII)"


def decode(payload: bytes) -> tuple[str, str]:
    """Decode a message's bytes by its MSH-18; return ``(text, python_codec)``.

    Raises
    ------
    MessageError
        AR when MSH-18 names an unsupported character set or the bytes are not valid in it.
    """
    declared = charset_of(payload)
    key = declared.upper()
    if key not in CHARSETS:
        raise MessageError("AR", 102, f"unsupported character set in MSH-18: {declared!r}"[:80], ("MSH", 18))
    codec = CHARSETS[key]
    if codec is None:
        try:
            return payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return payload.decode("latin-1"), "latin-1"
    try:
        return payload.decode(codec), codec
    except UnicodeDecodeError:
        raise MessageError("AR", 102, f"bytes not valid in the declared character set {declared}",
                           ("MSH", 18)) from None


class Segment:
    """One segment; ``field(n)`` uses HL7 numbering (MSH-1 is the field separator)."""

    __slots__ = ("name", "fields", "enc")

    def __init__(self, fields: list[str], enc: Encoding) -> None:
        self.name = fields[0]
        self.fields = fields
        self.enc = enc

    def field(self, n: int) -> str:
        """The raw text of field ``n`` (all repetitions), '' when absent."""
        return self.fields[n] if n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.field(n)
        return raw.split(self.enc.repetition) if raw else []

    def get(self, n: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """The unescaped value at ``n.component.subcomponent`` of one repetition ('' when absent).

        HL7's explicit null (``""``) reads as ''.
        """
        if self.name == "MSH" and n <= 2:
            return self.field(n)
        reps = self.repetitions(n)
        if repetition > len(reps):
            return ""
        comps = reps[repetition - 1].split(self.enc.component)
        if component > len(comps):
            return ""
        subs = comps[component - 1].split(self.enc.subcomponent)
        if subcomponent > len(subs):
            return ""
        value = subs[subcomponent - 1]
        if value == '""':
            return ""
        return unescape(value, self.enc) if self.enc.escape in value else value

    def __repr__(self) -> str:
        return f"<Segment {self.name} ({len(self.fields) - 1} fields)>"


class Message:
    """A parsed message: segments in order, and its delimiters."""

    def __init__(self, segments: list[Segment], enc: Encoding, text: str, charset: str) -> None:
        self.segments = segments
        self.enc = enc
        self.text = text
        self.charset = charset

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def version(self) -> str:
        return self.msh.get(12)

    @property
    def message_type(self) -> tuple[str, str]:
        """MSH-9 code and trigger event, e.g. ``("ORM", "O01")``."""
        return self.msh.get(9, 1).upper(), self.msh.get(9, 2).upper()


def content_key(msg: Message) -> str:
    """What tells a resend from new content under a reused control ID (SHA-256, hex).

    MSH-7 (the message's time), MSH-9 and everything after MSH-10 count, then every other
    segment; line endings and trailing empty fields do not. The same bytes resent give the same
    key; a RIS whose counter was reset sends other content under an old control ID and gets
    another key.
    """
    sep = msg.enc.field
    msh = msg.msh.fields
    parts = [msg.msh.field(7), msg.msh.field(9), sep.join(msh[11:]).rstrip(sep)]
    parts += [sep.join(seg.fields).rstrip(sep) for seg in msg.segments[1:]]
    return hashlib.sha256("\r".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def parse(text: str, charset: str = "utf-8") -> Message:
    """Split a message into segments and fields with its declared delimiters.

    Segments may end in CR (the standard), CRLF or LF (seen from real senders).

    Raises
    ------
    MessageError
        AR when there is no MSH first, its delimiters are unusable, or a segment is malformed.
    """
    # NUL is no text in any character set and PostgreSQL cannot store it: it is dropped.
    body = text.strip("\r\n\x00 ").replace("\x00", "")
    if not body.startswith("MSH") or len(body) < 8:
        raise MessageError("AR", 100, "message does not start with an MSH segment", ("MSH", 1))
    field_sep = body[3]
    enc_chars = body[4:].split(field_sep, 1)[0]
    delimiters = field_sep + enc_chars[:4]
    if (
        len(enc_chars) < 4
        or len(set(delimiters)) != len(delimiters)
        or any(ch.isalnum() or ch in "\r\n " for ch in delimiters)
    ):
        raise MessageError("AR", 102, "MSH-1/MSH-2 do not declare five distinct delimiters", ("MSH", 2))
    enc = Encoding(field_sep, enc_chars[0], enc_chars[1], enc_chars[2], enc_chars[3], codec=charset)
    lines = body.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    segments: list[Segment] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        fields = line.split(field_sep)
        if not _SEGMENT_NAME.match(fields[0]):
            raise MessageError("AR", 100, f"segment {index + 1} has no valid segment name", None)
        if index == 0:
            fields = ["MSH", field_sep, *fields[1:]]
        segments.append(Segment(fields, enc))
    if len(segments[0].fields) < 13:
        raise MessageError("AR", 101, "MSH is missing required fields (MSH-9 to MSH-12)", ("MSH", 12))
    return Message(segments, enc, body, charset)


def peek_header(payload: bytes) -> Message | None:
    """The MSH alone, read byte for byte (ISO 8859-1), for answering a message that failed to parse.

    An AR then still names the sender and carries its control ID in MSA-2.
    """
    first = re.split(rb"[\r\n]", payload.lstrip(b"\r\n\x00 "), maxsplit=1)[0]
    try:
        return parse(first.decode("latin-1"), "latin-1")
    except MessageError:
        return None


def unescape(value: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Decode HL7 escape sequences: delimiters, ``\\.br\\`` (a line break), hex and formatting.

    Unknown or unterminated sequences are kept as they are, so nothing sent is lost.
    """
    esc = enc.escape
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        out.append(_escape_meaning(seq, enc, value[i : end + 1]))
        i = end + 1
    return "".join(out)


def _escape_meaning(seq: str, enc: Encoding, original: str) -> str:
    simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition, "E": enc.escape}
    if seq in simple:
        return simple[seq]
    if seq in (".br", ".sp") or seq.startswith(".sp"):
        return "\n"
    if seq in ("H", "N") or seq[:3] in (".in", ".ti", ".sk", ".ce", ".fi", ".nf"):
        return ""  # highlighting and formatting hints carry no text
    if seq.startswith("X") and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode(enc.codec).replace("\x00", "")
        except (ValueError, LookupError):  # not hex, or not valid in the declared character set
            return original
    return original


def escape(value: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Escape text for one field: delimiters become ``\\F\\`` etc., line breaks ``\\.br\\``.

    No control character reaches the wire as it is (a VT restarts MLLP framing in some receivers):
    C0 controls other than TAB are sent as ``\\Xhh\\`` (the same byte in every character set we
    write), DEL and C1 controls are dropped.
    """
    e = enc.escape
    table = {
        enc.escape: f"{e}E{e}",
        enc.field: f"{e}F{e}",
        enc.component: f"{e}S{e}",
        enc.subcomponent: f"{e}T{e}",
        enc.repetition: f"{e}R{e}",
    }
    out = []
    for ch in value.replace("\r\n", "\n"):
        if ch in table:
            out.append(table[ch])
        elif ch in "\r\n":
            out.append(f"{e}.br{e}")
        elif ch < " " and ch != "\t":
            out.append(f"{e}X{ord(ch):02X}{e}")
        elif "\x7f" <= ch <= "\x9f":
            continue
        else:
            out.append(ch)
    return "".join(out)


def build_segment(name: str, fields: list[str | list[str]], enc: Encoding = DEFAULT_ENCODING) -> str:
    """One segment from already-escaped field values; a list becomes components joined by ``^``.

    Callers escape user text with :func:`escape` first; this only joins.
    """
    parts = [enc.component.join(f) if isinstance(f, list) else f for f in fields]
    while parts and parts[-1] == "":
        parts.pop()
    return enc.field.join([name, *parts])
