"""ACK messages: AA, AE or AR with an ERR segment saying which field and why (HL7 table 0357)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from integrations.hl7.message import CHARSETS, DEFAULT_ENCODING, Encoding, Message, MessageError, build_segment, escape

#: HL7 table 0357, message error condition codes.
ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_V25_ERR = ("2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")


def new_control_id() -> str:
    """A message control ID of 20 characters (the 2.3 limit), unique without coordination."""
    return uuid.uuid4().hex[:20].upper()


def hl7_timestamp(moment: datetime) -> str:
    """A DTM with seconds and the UTC offset."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def build_ack(
    *,
    code: str,
    original: Message | None,
    sending_application: str,
    sending_facility: str,
    error: MessageError | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """The ACK for a message (``original`` None when it could not be parsed at all).

    The ACK echoes the sender's version, processing ID and character set, addresses the sender
    (MSH-5/6 = its MSH-3/4) and carries its control ID in MSA-2.
    """
    enc = original.enc if original else DEFAULT_ENCODING
    moment = now or datetime.now(UTC)
    msh = original.msh if original else None
    version = (original.version if original else "") or "2.5.1"
    trigger = original.message_type[1] if original else ""
    msg_type = ["ACK", escape(trigger, enc)] + (["ACK"] if version >= "2.4" else [])
    header_fields: list[str | list[str]] = [
        enc.component + enc.repetition + enc.escape + enc.subcomponent,
        escape(sending_application, enc),
        escape(sending_facility, enc),
        msh.field(3) if msh else "",
        msh.field(4) if msh else "",
        hl7_timestamp(moment),
        "",
        msg_type,
        control_id or new_control_id(),
        (msh.field(11) if msh else "") or "P",
        escape(version, enc),
    ]
    charset_field = msh.field(18) if msh else ""
    if charset_field and charset_field.split(enc.repetition)[0].strip().upper() in CHARSETS:
        header_fields += ["", "", "", "", "", charset_field]
    segments = [enc.field.join(["MSH", *[enc.component.join(f) if isinstance(f, list) else f
                                          for f in header_fields]])]
    text = escape(error.text, enc) if error else ""
    segments.append(build_segment("MSA", [code, original.msh.field(10) if original else "", text], enc))
    if error is not None:
        segments.append(_err_segment(error, version, enc))
    return "\r".join(segments) + "\r"


def _err_segment(error: MessageError, version: str, enc: Encoding) -> str:
    cond = [str(error.error_code), escape(ERROR_TEXT.get(error.error_code, ""), enc), "HL70357"]
    seg, fld = error.location or ("", 0)
    location = [seg, "1" if seg else "", str(fld) if fld else ""]
    if version in _V25_ERR:
        # ERR-2 location, ERR-3 condition, ERR-4 severity, ERR-8 user message.
        return build_segment("ERR", ["", location, cond, "E", "", "", "", escape(error.text, enc)], enc)
    # v2.3/2.4: ERR-1 is segment^sequence^field^code&text&table.
    return build_segment("ERR", [[*location, enc.subcomponent.join(cond)]], enc)
