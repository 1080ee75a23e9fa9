"""The ORU^R01 builder and ACK reader, without I/O: escaping, fields, determinism."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from integrations.hl7.message import parse
from integrations.hl7.oru import OruHeader, build_oru, section_code
from integrations.hl7.sender import read_ack
from radservice.outbox.service import OutgoingReport, Section, Signer, backoff
from radservice.users.names import PersonName

HEADER = OruHeader("RADSERVICE", "RADIOLOGY", "RIS", "HOSPITAL")
NASTY = "a|b^c&d~e\\f\nsecond line é"


def _report(**changes: object) -> OutgoingReport:
    base = OutgoingReport(
        delivery_id=1, report_id=1, destination="ris", message_id="ABCDEF0123456789ABCD", version=2, kind="final",
        result_status="F",
        sections=(Section("findings", "Findings", NASTY), Section("impression", "Impression", "Normal."),
                  Section("lungs_extra", "Lungs extra", "x")),
        signer_username="dr.one", signer_name="Dr. Grace Hopper", signed_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        sr_instance_uid="2.25.1234", previous_sr_instance_uid=None, accession_number="ACC|1", accession_issuer="",
        placer_order_number="P^1",
        filler_order_number="F&1", requested_procedure_id="RP1", scheduled_step_id="SPS1",
        study_instance_uid="1.2.3.4", procedure_code="CTCHEST", procedure_text="CT chest ~ abdomen",
        modality="CT", priority="R", reason="cough\\fever", ordered_at=datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
        patient_id="MRN1", patient_issuer="HOSP", family_name="O'Brien^Jr", given_name="Zoë",
        birth_date=date(1970, 1, 2),
        sex="M")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_every_text_is_escaped_and_reads_back_exactly() -> None:
    message = parse(build_oru(_report(), HEADER))
    pid, obr = message.first("PID"), message.first("OBR")
    assert pid is not None and obr is not None
    assert pid.get(5, 1) == "O'Brien^Jr" and pid.get(5, 2) == "Zoë" and pid.get(7) == "19700102"
    assert obr.get(18) == "ACC|1" and obr.get(2) == "P^1" and obr.get(3) == "F&1"
    assert obr.get(4, 2) == "CT chest ~ abdomen" and obr.get(13) == "cough\\fever"
    obx = message.all("OBX")
    assert [o.get(3, 1) for o in obx] == ["18782-3", "19005-8", "LUNGS_EXTRA", "113014", "SR_UID"]
    assert obx[0].get(5) == NASTY and obx[0].get(2) == "FT"
    assert obx[2].get(3, 3) == "99RADSVC"
    assert [o.get(11) for o in obx] == ["F"] * 5
    assert obx[3].get(5) == "1.2.3.4" and obx[4].get(5) == "2.25.1234"
    # segments end with CR only; no raw delimiter leaked into a field
    text = build_oru(_report(), HEADER)
    assert "\n" not in text and text.endswith("\r")


def test_the_header_and_order_fields_receivers_check() -> None:
    message = parse(build_oru(_report(result_status="C", kind="addendum"), HEADER))
    msh, orc, obr, tq1 = message.msh, message.first("ORC"), message.first("OBR"), message.first("TQ1")
    assert orc is not None and obr is not None and tq1 is not None
    assert message.message_type == ("ORU", "R01") and msh.get(9, 3) == "ORU_R01"
    assert message.control_id == "ABCDEF0123456789ABCD" and message.version == "2.5.1"
    assert msh.get(7) == "20261201093000+0000" and msh.get(18) == "UNICODE UTF-8"
    assert (orc.get(1), orc.get(5)) == ("RE", "CM")
    assert (obr.get(7), obr.get(22), obr.get(24), obr.get(25)) == ("20261130080000+0000", "20261201093000+0000",
                                                                   "RAD", "C")
    assert (obr.get(32, 1, 1), obr.get(32, 1, 2), obr.get(32, 1, 3)) == ("dr.one", "Hopper", "Grace")
    assert obr.get(44, 1) == "CTCHEST" and tq1.get(9) == "R"
    assert obr.get(19) == "RP1" and obr.get(20) == "SPS1"
    assert parse(build_oru(_report(result_status="P"), HEADER)).first("ORC").get(5) == "IP"  # type: ignore[union-attr]


def test_same_version_builds_the_same_bytes_and_optional_fields_stay_empty() -> None:
    assert build_oru(_report(), HEADER) == build_oru(_report(), HEADER)
    bare = parse(build_oru(_report(study_instance_uid=None, ordered_at=None, birth_date=None, procedure_code="",
                                   placer_order_number="", signer_name=""), HEADER))
    assert [o.get(3, 1) for o in bare.all("OBX")][-1] == "SR_UID"
    assert "113014" not in [o.get(3, 1) for o in bare.all("OBX")]
    obr = bare.first("OBR")
    assert obr is not None
    assert obr.get(7) == "20261201093000+0000"  # no order time: the signature's
    assert obr.get(2) == "" and obr.get(4, 2) == "CT chest ~ abdomen"
    assert obr.get(32, 1, 2) == "dr.one"  # no display name: the username stands in


def test_section_codes() -> None:
    assert section_code("findings") == ("18782-3", "Radiology Study observation (narrative)", "LN")
    assert section_code("impression")[0] == "19005-8"
    assert section_code("addendum_3")[0] == "55107-7"
    assert section_code("clinical_history")[0] == "18785-6"
    assert section_code("odd")[2] == "99RADSVC"


def test_read_ack_v25_and_v23_errors() -> None:
    v25 = ("MSH|^~\\&|RIS|H|RS|R|20261201||ACK^R01^ACK|1|P|2.5.1\rMSA|AE|CTRL1\r"
           "ERR||OBR^1^3|204^Unknown key identifier^HL70357|E||||Order \\T\\ visit not found\r")
    ack = read_ack(v25.encode())
    assert (ack.code, ack.control_id) == ("AE", "CTRL1")
    assert ack.text == "Order & visit not found 204 Unknown key identifier at OBR-3"
    v23 = "MSH|^~\\&|RIS|H|RS|R|20261201||ACK|2|P|2.3\rMSA|AR|CTRL2|Rejected\rERR|PID^1^3^101&Required field missing\r"
    ack = read_ack(v23.encode("latin-1"))
    assert (ack.code, ack.control_id) == ("AR", "CTRL2")
    assert ack.text == "Rejected; 101 Required field missing at PID"


def test_backoff_doubles_up_to_the_maximum() -> None:
    waits = [backoff(n, initial=timedelta(seconds=5), maximum=timedelta(seconds=60)).total_seconds()
             for n in range(1, 7)]
    assert waits == [5, 10, 20, 40, 60, 60]
    assert backoff(10_000, initial=timedelta(seconds=1), maximum=timedelta(hours=1)) == timedelta(hours=1)


def test_birth_date_keeps_the_precision_the_ris_sent() -> None:
    for precision, expected in (("year", "1970"), ("month", "197001"), ("day", "19700102")):
        pid = parse(build_oru(_report(birth_date_precision=precision), HEADER)).first("PID")
        assert pid is not None and pid.get(7) == expected


def test_control_characters_never_reach_the_wire_as_they_are() -> None:
    text = build_oru(_report(family_name="SYN\x0bTH", sections=(Section("findings", "Findings", "a\x0bb\x1cc\x00"),)),
                     HEADER)
    assert not [ch for ch in text if ch < " " and ch != "\r"]
    assert "SYN\\X0B\\TH" in text
    assert parse(text).first("PID").get(5, 1) == "SYN\x0bTH"  # type: ignore[union-attr]


def addendum_by_another(original_name: PersonName) -> OutgoingReport:
    """A final signed by dr.one (``original_name``) on 2026-12-01 09:30 UTC, and an addendum
    signed by dr.two (John Smith, MD) on 2026-12-02 10:00 UTC: the version of that addendum."""
    original = Signer("dr.one", original_name, datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    second = Signer("dr.two", PersonName(family="Smith", given="John", degree="MD"),
                    datetime(2026, 12, 2, 10, 0, tzinfo=UTC))
    return _report(kind="addendum", result_status="C", signer_username="dr.two", signer_name="John Smith, MD",
                   signer_parts=second.name, signed_at=second.signed_at, interpreter=original,
                   sections=(Section("findings", "Findings", "Clear.", original),
                             Section("addendum_1", "Addendum 1", "Stable.", second)))


def test_an_addendum_names_its_signer_and_keeps_the_original_interpreter() -> None:
    report = addendum_by_another(PersonName(family="Hopper", given="Grace", prefix="Dr.", degree="PhD"))
    message = parse(build_oru(report, HEADER))
    obr = message.first("OBR")
    assert obr is not None
    assert [obr.get(32, 1, n) for n in range(1, 8)] == ["dr.one", "Hopper", "Grace", "", "", "Dr.", "PhD"]
    observers = [(o.get(16, 1), o.get(16, 2), o.get(16, 7)) for o in message.all("OBX")]
    # findings: the original signer; the addendum: its own; the UID observations: this version's signer
    assert observers == [("dr.one", "Hopper", "PhD"), ("dr.two", "Smith", "MD"), ("dr.two", "Smith", "MD"),
                         ("dr.two", "Smith", "MD")]


def test_a_comma_written_name_is_not_turned_around() -> None:
    obr = parse(build_oru(_report(signer_name="Smith, John", signer_username="dr.s"), HEADER)).first("OBR")
    assert obr is not None and (obr.get(32, 1, 2), obr.get(32, 1, 3)) == ("Smith", "John")
    obr = parse(build_oru(_report(signer_name="John Smith, MD", signer_username="dr.s"), HEADER)).first("OBR")
    assert obr is not None and (obr.get(32, 1, 2), obr.get(32, 1, 3), obr.get(32, 1, 7)) == ("Smith", "John", "MD")
