"""Inbound messages to domain data: ORM^O01 and OMI^O23 orders, ADT^A08 and ADT^A40 patients.

Field mapping (DESIGN.md, IHE Scheduled Workflow as archives use it): accession OBR-18 (or
IPC-1, or the site's ``hl7.accession_field``), else the filler order number OBR-3 / ORC-3;
requested procedure ID OBR-19 / IPC-2; scheduled step ID OBR-20 / IPC-4; Study Instance UID
ZDS-1 / IPC-3; procedure OBR-44, else OBR-4; modality IPC-5, else OBR-24; reason OBR-31;
priority ORC-7.6 / OBR-27.6 / TQ1-9; ordering physician ORC-12 / OBR-16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from integrations.hl7.message import Message, MessageError, Segment
from radservice.worklist.intake import OrderControl, OrderData, PatientData, PatientMerge, Priority

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
ADT_EVENTS = {"A08", "A40"}  # the ADT events that change anything here
#: ADT events that merge or change patient identifiers, which radservice does not apply (only
#: A40): acknowledged, but with a warning, since the IDs on the worklist and in results stay old.
ADT_IDENTITY_EVENTS = {"A18", "A30", "A34", "A35", "A36", "A37", "A39", "A41", "A42", "A43", "A44", "A45", "A46",
                       "A47", "A48", "A49", "A50", "A51"}

ORDER_CONTROLS = {
    "NW": OrderControl.NEW,
    "CA": OrderControl.CANCEL,
    "OC": OrderControl.CANCEL,
    "DC": OrderControl.CANCEL,
    "OD": OrderControl.CANCEL,
    "XO": OrderControl.CHANGE,
    "XX": OrderControl.CHANGE,
    "SC": OrderControl.CHANGE,
}
# TQ-6 / TQ1-9 priorities (HL7 table 0027) reduced to the worklist's three.
PRIORITIES = {"S": Priority.STAT, "STAT": Priority.STAT, "A": Priority.ASAP, "ASAP": Priority.ASAP,
              "P": Priority.ASAP, "T": Priority.ASAP, "R": Priority.ROUTINE, "C": Priority.ROUTINE}
# OBR-24 diagnostic service sections (HL7 table 0074) that name a DICOM modality.
SERVICE_SECTION_MODALITY = {"CT": "CT", "NMR": "MR", "MR": "MR", "US": "US", "NMS": "NM", "NM": "NM",
                            "CR": "CR", "DX": "DX", "MG": "MG", "XA": "XA", "RF": "RF", "PT": "PT",
                            "PET": "PT", "CTH": "CT", "VUS": "US", "OUS": "US"}
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+\Z")
_FIELD_REF = re.compile(r"([A-Z][A-Z0-9]{2})-(\d+)\Z")
_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?\Z")


@dataclass(frozen=True)
class FieldRef:
    """A field named like ``OBR-18``."""

    segment: str
    field: int

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        match = _FIELD_REF.match(text.strip().upper())
        if not match:
            raise ValueError(f"not a field reference like 'OBR-18': {text!r}")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.segment}-{self.field}"


def check_header(msg: Message) -> tuple[str, str]:
    """The message type and trigger, or AR for an unsupported version or type."""
    version = msg.version
    if version not in SUPPORTED_VERSIONS:
        raise MessageError("AR", 203, f"unsupported HL7 version {version!r}"[:60], ("MSH", 12))
    code, trigger = msg.message_type
    if code == "ADT" and not trigger:
        raise MessageError("AR", 201, "ADT without a trigger event in MSH-9", ("MSH", 9))
    if (code, trigger) in ORDER_TYPES or code == "ADT":
        return code, trigger  # ADT events other than ADT_EVENTS are acknowledged and ignored
    if code in {"ORM", "OMI"}:
        raise MessageError("AR", 201, f"unsupported event {code}^{trigger}"[:60], ("MSH", 9))
    raise MessageError("AR", 200, f"unsupported message type {code}^{trigger}"[:60], ("MSH", 9))


def parse_dtm(value: str, where: tuple[str, int]) -> datetime | None:
    """An HL7 DTM as an aware datetime; without an offset it is the server's local time."""
    if not value:
        return None
    match = _DTM.match(value.strip())
    if not match:
        raise MessageError("AE", 102, f"{where[0]}-{where[1]} is not an HL7 date/time", where)
    y, mo, d, h, mi, s, off = match.groups()
    try:
        moment = datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        raise MessageError("AE", 102, f"{where[0]}-{where[1]} is not a valid date/time", where) from None
    if off:
        sign = 1 if off[0] == "+" else -1
        hours, minutes = int(off[1:3]), int(off[3:5])
        if hours > 14 or minutes > 59:  # UTC offsets run from -12:00 to +14:00
            raise MessageError("AE", 102, f"{where[0]}-{where[1]} has an impossible UTC offset", where)
        return moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return moment.astimezone()


# YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]: a DTM; only the date part is kept.
_BIRTH_DATE = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d+)?)?)?)?)?)?(?:[+-]\d{4})?\Z")
_PRECISION = {1: "year", 2: "month", 3: "day"}


def _parse_date(value: str) -> tuple[date | None, str]:
    """PID-7 as (first day of what was sent, "year" / "month" / "day"); a time part is ignored."""
    if not value.strip():
        return None, "day"
    match = _BIRTH_DATE.match(value.strip())
    if not match:
        raise MessageError("AE", 102, "PID-7 is not a valid date of birth", ("PID", 7))
    y, m, d = match.groups()
    try:
        born = date(int(y), int(m or 1), int(d or 1))
    except ValueError:
        raise MessageError("AE", 102, "PID-7 is not a valid date of birth", ("PID", 7)) from None
    return born, _PRECISION[sum(1 for part in (y, m, d) if part is not None)]


def _identifier_repetition(seg: Segment, n: int) -> int:
    """Which repetition of a CX list (PID-3, MRG-1) is the patient's record number: the first of
    type MR (CX-5) with an ID, else the first. One rule for the patient and for a merge's prior ID."""
    for index in range(1, len(seg.repetitions(n)) + 1):
        if seg.get(n, 5, repetition=index).upper() == "MR" and seg.get(n, 1, repetition=index):
            return index
    return 1


def patient_from(pid: Segment | None) -> PatientData:
    """PID-3 (the MR identifier, else the first), PID-5, PID-7, PID-8."""
    if pid is None:
        raise MessageError("AE", 100, "PID segment missing", ("PID", 0))
    chosen = _identifier_repetition(pid, 3)
    patient_id = pid.get(3, 1, repetition=chosen).strip()
    if not patient_id:
        # v2.3 senders sometimes still put the ID in PID-2 (external ID).
        patient_id = pid.get(2, 1).strip()
    if not patient_id:
        raise MessageError("AE", 101, "PID-3 patient identifier missing", ("PID", 3))
    given = " ".join(p for p in (pid.get(5, 2), pid.get(5, 3)) if p)
    born, precision = _parse_date(pid.get(7))
    sex = pid.get(8).strip().upper()[:1]
    return PatientData(
        patient_id=patient_id,
        issuer=pid.get(3, 4, repetition=chosen).strip(),
        family_name=pid.get(5, 1),
        given_name=given,
        birth_date=born,
        birth_date_precision=precision,
        sex=sex if sex in {"M", "F", "O", "U", "A", "N"} else "",
    )


def _person(seg: Segment | None, n: int) -> str:
    """An XCN as 'Family, Given' (or its ID when no name is sent)."""
    if seg is None:
        return ""
    family, given = seg.get(n, 2), seg.get(n, 3)
    if family:
        return f"{family}, {given}" if given else family
    return seg.get(n, 1)


class _OrderGroup:
    def __init__(self) -> None:
        self.orc: Segment | None = None
        self.obr: Segment | None = None
        self.tq1: Segment | None = None
        self.ipc: Segment | None = None
        self.zds: Segment | None = None


def _groups(msg: Message) -> list[_OrderGroup]:
    groups: list[_OrderGroup] = []
    current: _OrderGroup | None = None
    for seg in msg.segments:
        if seg.name == "ORC" or (seg.name == "OBR" and (current is None or current.obr is not None)):
            current = _OrderGroup()
            groups.append(current)
        if current is None:
            continue
        if seg.name in {"ORC", "OBR", "TQ1", "IPC", "ZDS"} and getattr(current, seg.name.lower()) is None:
            setattr(current, seg.name.lower(), seg)
    zds = msg.first("ZDS")
    for group in groups:
        if group.zds is None and len(groups) == 1:
            group.zds = zds
    return groups


def _value(seg: Segment | None, n: int, component: int = 1) -> str:
    return seg.get(n, component).strip() if seg is not None else ""


def _accession(group: _OrderGroup, configured: FieldRef) -> tuple[str, str]:
    segs = {"ORC": group.orc, "OBR": group.obr, "IPC": group.ipc, "TQ1": group.tq1, "ZDS": group.zds}
    candidates = [configured, FieldRef("IPC", 1), FieldRef("OBR", 3), FieldRef("ORC", 3)]
    for ref in candidates:
        seg = segs.get(ref.segment)
        number = _value(seg, ref.field)
        if number:
            issuer = _value(seg, ref.field, 2) or _value(seg, ref.field, 3)
            return number, issuer
    return "", ""


def _priority(group: _OrderGroup) -> Priority:
    for raw in (_value(group.orc, 7, 6), _value(group.obr, 27, 6), _value(group.tq1, 9)):
        if raw:
            return PRIORITIES.get(raw.upper(), Priority.ROUTINE)
    return Priority.ROUTINE


def _procedure(obr: Segment | None) -> tuple[str, str]:
    for n in (44, 4):
        code, text = _value(obr, n, 1), _value(obr, n, 2)
        if code or text:
            return code, text
    return "", ""


def _reason(obr: Segment | None) -> str:
    if obr is None:
        return ""
    parts = []
    for index in range(1, len(obr.repetitions(31)) + 1):
        text = obr.get(31, 2, repetition=index) or obr.get(31, 1, repetition=index)
        if text:
            parts.append(text.strip())
    return "; ".join(parts)


def _study_uid(group: _OrderGroup) -> str | None:
    for seg, n in ((group.zds, 1), (group.ipc, 3)):
        uid = _value(seg, n)
        if uid:
            if len(uid) > 64 or not _UID.match(uid):
                assert seg is not None
                raise MessageError("AE", 102, f"{seg.name}-{n} is not a valid DICOM UID", (seg.name, n))
            return uid
    return None


def orders_from(msg: Message, accession_field: FieldRef) -> list[OrderData]:
    """Every requested procedure in an ORM^O01 or OMI^O23.

    Raises
    ------
    MessageError
        AE for a missing ORC/OBR, accession or patient ID, an unknown order control, or a
        malformed date or UID.
    """
    patient = patient_from(msg.first("PID"))
    groups = _groups(msg)
    if not groups:
        raise MessageError("AE", 100, "no ORC/OBR order segments", ("ORC", 1))
    orders = []
    for group in groups:
        if group.orc is None:
            raise MessageError("AE", 100, "ORC segment missing before OBR", ("ORC", 1))
        control_code = _value(group.orc, 1).upper()
        if control_code not in ORDER_CONTROLS:
            raise MessageError("AE", 103, f"unsupported order control {control_code!r}"[:60], ("ORC", 1))
        control = ORDER_CONTROLS[control_code]
        if group.obr is None and control is not OrderControl.CANCEL:
            raise MessageError("AE", 100, "OBR segment missing", ("OBR", 0))
        accession, issuer = _accession(group, accession_field)
        if not accession:
            raise MessageError("AE", 101, f"accession number missing ({accession_field}, OBR-3, ORC-3)",
                               (accession_field.segment, accession_field.field))
        code, text = _procedure(group.obr)
        section = _value(group.obr, 24).upper()
        modality = _value(group.ipc, 5).upper() or SERVICE_SECTION_MODALITY.get(section, "")
        ordered_at = (parse_dtm(_value(group.orc, 9), ("ORC", 9))
                      or parse_dtm(_value(group.obr, 6), ("OBR", 6))
                      or parse_dtm(_value(group.tq1, 7), ("TQ1", 7)))
        orders.append(OrderData(
            control=control,
            patient=patient,
            accession_number=accession,
            accession_issuer=issuer,
            placer_order_number=_value(group.orc, 2) or _value(group.obr, 2),
            filler_order_number=_value(group.orc, 3) or _value(group.obr, 3),
            requested_procedure_id=_value(group.obr, 19) or _value(group.ipc, 2),
            scheduled_step_id=_value(group.obr, 20) or _value(group.ipc, 4),
            study_instance_uid=_study_uid(group),
            procedure_code=code,
            procedure_text=text,
            modality=modality,
            priority=_priority(group),
            reason=_reason(group.obr),
            ordering_physician=_person(group.orc, 12) or _person(group.obr, 16),
            ordered_at=ordered_at,
            order_status=_value(group.orc, 5).upper(),
        ))
    return orders


def merge_from(msg: Message) -> PatientMerge:
    """ADT^A40: PID is the surviving patient, MRG-1 the prior identifier."""
    survivor = patient_from(msg.first("PID"))
    mrg = msg.first("MRG")
    chosen = _identifier_repetition(mrg, 1) if mrg else 1
    prior = mrg.get(1, 1, repetition=chosen).strip() if mrg else ""
    if not prior:
        raise MessageError("AE", 101, "MRG-1 prior patient identifier missing", ("MRG", 1))
    assert mrg is not None
    return PatientMerge(survivor=survivor, prior_patient_id=prior,
                        prior_issuer=mrg.get(1, 4, repetition=chosen).strip())
