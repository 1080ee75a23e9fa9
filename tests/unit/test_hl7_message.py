"""HL7 text: character sets, parsing, escapes and ACKs, on strings alone."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.hl7.ack import build_ack
from integrations.hl7.message import DEFAULT_ENCODING, MessageError, decode, escape, parse, peek_header, unescape

MSH = "MSH|^~\\&|RIS|HOSP|RS|RAD|20261124||ORM^O01|C1|P|2.3.1"


def test_fields_use_hl7_numbering_including_msh() -> None:
    msg = parse(MSH + "\rPID|1||MRN1^^^HOSP^MR~X9^^^SSA^SS||DOE^JANE^Q\r")
    assert msg.msh.get(1) == "|"
    assert msg.msh.get(2) == "^~\\&"
    assert msg.msh.get(3) == "RIS"
    assert msg.control_id == "C1"
    assert msg.version == "2.3.1"
    assert msg.message_type == ("ORM", "O01")
    pid = msg.first("PID")
    assert pid is not None
    assert pid.get(3) == "MRN1"
    assert pid.get(3, 4) == "HOSP"
    assert pid.get(3, 1, repetition=2) == "X9"
    assert pid.get(5, 2) == "JANE"
    assert pid.get(40) == ""  # absent fields read as empty


def test_other_delimiters_are_honoured() -> None:
    msg = parse("MSH#*@!%#RIS#HOSP#RS#RAD#20261124##ORM*O01#C2#P#2.4\rPID#1##A1*B*C*D%E")
    pid = msg.first("PID")
    assert pid is not None
    assert msg.message_type == ("ORM", "O01")
    assert pid.get(3, 4) == "D"
    assert pid.get(3, 4, 2) == "E"


def test_lf_and_crlf_segment_endings_are_accepted() -> None:
    assert [s.name for s in parse(MSH + "\nPID|1\r\nPV1|1\n").segments] == ["MSH", "PID", "PV1"]


def test_explicit_null_reads_empty() -> None:
    pid = parse(MSH + '\rPID|1||""').first("PID")
    assert pid is not None and pid.get(3) == ""


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("A\\F\\B", "A|B"), ("A\\S\\B", "A^B"), ("A\\T\\B", "A&B"), ("A\\R\\B", "A~B"), ("A\\E\\B", "A\\B"),
        ("line1\\.br\\line2", "line1\nline2"), ("\\H\\bold\\N\\", "bold"), ("caf\\XE9\\", "café"),
        ("unterminated \\F", "unterminated \\F"), ("\\Zcustom\\", "\\Zcustom\\"),
    ],
)
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_escape_then_unescape_round_trips(text: str) -> None:
    # DEL and C1 are dropped on the wire, NUL when read back (no text in any character set)
    expected = re.sub("[\x00\x7f-\x9f]", "", text.replace("\r\n", "\n").replace("\r", "\n"))
    escaped = escape(text)
    assert not set(escaped) & {"|", "^", "&", "~", "\r", "\n"}
    assert not [ch for ch in escaped if (ch < " " and ch != "\t") or "\x7f" <= ch <= "\x9f"]  # none on the wire
    assert unescape(escaped, DEFAULT_ENCODING) == expected


def test_utf8_declared_in_msh18() -> None:
    payload = (MSH + "|||AL|NE||UNICODE UTF-8\rPID|1||1||MÜLLER^ZOË").encode("utf-8")
    text, codec = decode(payload)
    assert codec == "utf-8" and "MÜLLER" in text


def test_latin1_declared_in_msh18() -> None:
    payload = (MSH + "||||||8859/1\rPID|1||1||GÓMEZ^JOSÉ").encode("latin-1")
    text, codec = decode(payload)
    assert codec == "latin-1" and "GÓMEZ" in text


def test_undeclared_charset_prefers_utf8_then_latin1() -> None:
    assert decode("MSH|^~\\&|Ü".encode())[1] == "utf-8"
    assert decode("MSH|^~\\&|Ü".encode("latin-1"))[1] == "latin-1"


def test_hex_escapes_are_decoded_in_the_declared_charset() -> None:
    utf8 = parse(*decode((MSH + "|||AL|NE||UNICODE UTF-8\rPID|1||1||M\\XC3A9\\LLER").encode()))
    assert utf8.first("PID").get(5) == "MéLLER"  # type: ignore[union-attr]
    latin1 = parse(*decode((MSH + "||||||8859/1\rPID|1||1||M\\XE9\\LLER").encode("latin-1")))
    assert latin1.first("PID").get(5) == "MéLLER"  # type: ignore[union-attr]
    broken = parse(*decode((MSH + "|||AL|NE||UNICODE UTF-8\rPID|1||1||M\\XE9\\").encode()))
    assert broken.first("PID").get(5) == "M\\XE9\\"  # type: ignore[union-attr]  # not UTF-8: kept as sent


def test_charset_repetitions_split_on_the_declared_repetition_character() -> None:
    payload = "MSH|^*\\&|RIS|HOSP|RS|RAD|20261124||ORM^O01|C1|P|2.3.1|||AL|NE||8859/1*UNICODE UTF-8\rPID|1||1||GÓMEZ"
    assert decode(payload.encode("latin-1"))[1] == "latin-1"


def test_bytes_invalid_in_declared_charset_are_refused_not_replaced() -> None:
    with pytest.raises(MessageError) as info:
        decode((MSH + "|||AL|NE||UNICODE UTF-8\rPID|1||1||PEÑA").encode("latin-1"))
    assert (info.value.ack_code, info.value.location) == ("AR", ("MSH", 18))


@pytest.mark.parametrize(
    "text",
    ["PID|1", "MSH|^^\\&|A", "MSH|^~\\&|RIS", MSH + "\rpid|1", MSH + "\rOB"],
    ids=["no-msh", "repeated-delimiter", "short-msh", "bad-name", "truncated"],
)
def test_unparseable_messages_raise_ar(text: str) -> None:
    with pytest.raises(MessageError) as info:
        parse(text)
    assert info.value.ack_code == "AR"


def test_peek_header_recovers_the_control_id_of_a_broken_message() -> None:
    header = peek_header((MSH + "\rOB").encode())
    assert header is not None and header.control_id == "C1"


def test_ack_for_v25_has_err_with_location_code_and_severity() -> None:
    msg = parse("MSH|^~\\&|RIS|HOSP|RS|RAD|20261124||ORM^O01^ORM_O01|C9|P|2.5.1\rPID|1")
    err = MessageError("AE", 101, "accession number missing", ("OBR", 18))
    ack = build_ack(code="AE", original=msg, error=err, sending_application="RADSERVICE",
                    sending_facility="RAD", control_id="ACK1")
    segments = ack.rstrip("\r").split("\r")
    assert segments[0].split("|")[2:6] == ["RADSERVICE", "RAD", "RIS", "HOSP"]
    assert segments[0].split("|")[8:12] == ["ACK^O01^ACK", "ACK1", "P", "2.5.1"]
    assert segments[1] == "MSA|AE|C9|accession number missing"
    assert segments[2] == "ERR||OBR^1^18|101^Required field missing^HL70357|E||||accession number missing"


def test_ack_for_v23_uses_err1_and_escapes_text() -> None:
    msg = parse("MSH|^~\\&|RIS|HOSP|RS|RAD|20261124||ORM^O01|C10|P|2.3")
    err = MessageError("AR", 200, "unsupported type A^B", ("MSH", 9))
    ack = build_ack(code="AR", original=msg, error=err, sending_application="RS", sending_facility="R")
    segments = ack.rstrip("\r").split("\r")
    assert segments[0].split("|")[8] == "ACK^O01"
    assert segments[1] == "MSA|AR|C10|unsupported type A\\S\\B"
    assert segments[2] == "ERR|MSH^1^9^200&Unsupported message type&HL70357"


def test_ack_echoes_a_supported_charset_only() -> None:
    msg = parse(MSH + "|||AL|NE||UNICODE UTF-8")
    ack = build_ack(code="AA", original=msg, sending_application="RS", sending_facility="R")
    assert ack.split("\r")[0].split("|")[17] == "UNICODE UTF-8"
