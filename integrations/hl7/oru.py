"""ORU^R01 v2.5.1 from a signed report version (IHE RAD-128 style): a pure function, no I/O.

Every text that came from a person or another system is escaped with the message's own
delimiters (``| ^ & ~ \\`` become ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``); section text goes in
one FT OBX per section, its line breaks written ``\\.br\\``. The message is the same on
every attempt: its control ID (MSH-10) was fixed at signing and its times are the signature's.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.hl7.ack import hl7_timestamp
from integrations.hl7.message import DEFAULT_ENCODING, build_segment, escape
from radservice.outbox.service import OutgoingReport, Signer

#: OBX-3 of each section key (LOINC, as DICOM CID 7001 maps its headings); others get a local code.
SECTION_CODES = {
    "findings": ("18782-3", "Radiology Study observation (narrative)"),
    "impression": ("19005-8", "Radiology Imaging study [Impression] (narrative)"),
    "clinical_history": ("18785-6", "Radiology Reason for study (narrative)"),
    "indication": ("18785-6", "Radiology Reason for study (narrative)"),
    "history": ("11329-0", "History general Narrative"),
    "comparison": ("18834-2", "Radiology Comparison study (narrative)"),
    "technique": ("55111-9", "Current imaging procedure descriptions"),
    "recommendation": ("18783-1", "Radiology Study recommendation (narrative)"),
    "recommendations": ("18783-1", "Radiology Study recommendation (narrative)"),
    "conclusion": ("55110-1", "Conclusions"),
    "addendum": ("55107-7", "Addendum"),
}
#: OBX-3 of the references to the DICOM objects: the study as IHE RAD links results to it (DCM
#: 113014 "DICOM Study"); the SR instance under a local code (no standard code names it in an ORU).
STUDY_UID_CODE = ("113014", "DICOM Study", "DCM")
SR_UID_CODE = ("SR_UID", "DICOM SR SOP Instance UID", "99RADSVC")
#: ORC-5 order status per result status: in process while preliminary, completed afterwards.
_ORDER_STATUS = {"P": "IP", "F": "CM", "C": "CM"}


@dataclass(frozen=True)
class OruHeader:
    """MSH-3 to MSH-6 of our results (from the configuration)."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str


def section_code(key: str) -> tuple[str, str, str]:
    """OBX-3 (identifier, text, coding system) of a report section."""
    base = "addendum" if key.startswith("addendum") else key
    if base in SECTION_CODES:
        code, text = SECTION_CODES[base]
        return code, text, "LN"
    return key.upper()[:20], key.replace("_", " ").capitalize(), "99RADSVC"


def _cwe(code: str, text: str, system: str) -> list[str]:
    return [escape(code), escape(text), escape(system)]


def build_oru(report: OutgoingReport, header: OruHeader) -> str:
    """The ORU^R01 of one signed version, segments joined by CR (the frame's payload, unencoded)."""
    e = DEFAULT_ENCODING
    signed = hl7_timestamp(report.signed_at)
    status = report.result_status
    # OBR-32 (NDL.1, a CNN in subcomponents): the principal result interpreter, who signed the
    # report's content (for an addendum: the original signer, not the addendum's).
    interpreter_cnn = e.subcomponent.join(_person(report.principal_interpreter))
    version_signer = _person(report.signer)
    placer = [escape(report.placer_order_number)] if report.placer_order_number else ""
    filler = [escape(report.filler_order_number)] if report.filler_order_number else ""
    # OBR-4 / OBR-44: the procedure as the order coded it, else its text alone
    service: str | list[str] = (_cwe(report.procedure_code, report.procedure_text, "L") if report.procedure_code
                                else ["", escape(report.procedure_text)] if report.procedure_text else "")
    observed = hl7_timestamp(report.ordered_at) if report.ordered_at else signed

    msh = "|".join(["MSH", e.component + e.repetition + e.escape + e.subcomponent, escape(header.sending_application),
                    escape(header.sending_facility), escape(header.receiving_application),
                    escape(header.receiving_facility), signed, "", "ORU^R01^ORU_R01", escape(report.message_id), "P",
                    "2.5.1", "", "", "", "", "", "UNICODE UTF-8"])
    pid_id = [escape(report.patient_id), "", "", escape(report.patient_issuer), "MR"]
    pid = build_segment("PID", ["1", "", pid_id, "", [escape(report.family_name), escape(report.given_name)], "",
                                _birth_date(report),
                                escape(report.sex)])
    pv1 = build_segment("PV1", ["1", "U"])
    orc = build_segment("ORC", ["RE", placer, filler, "", _ORDER_STATUS.get(status, "CM"), "", "", "", signed, "", "",
                                ""])
    tq1 = build_segment("TQ1", ["1", "", "", "", "", "", observed, "", escape(report.priority or "R")])
    accession = escape(report.accession_number)
    obr_fields: list[str | list[str]] = [""] * 44
    values: dict[int, str | list[str]] = {
        1: "1", 2: placer, 3: filler, 4: service, 7: observed, 13: escape(report.reason), 18: accession,
        19: escape(report.requested_procedure_id), 20: escape(report.scheduled_step_id), 22: signed, 24: "RAD",
        25: status, 32: interpreter_cnn, 44: service,
    }
    for n, value in values.items():
        obr_fields[n - 1] = value
    obr = build_segment("OBR", obr_fields)
    segments = [msh, pid, pv1, orc, tq1, obr]
    set_id = 0

    def obx(value_type: str, ident: tuple[str, str, str], sub_id: str, value: str, observer: list[str]) -> str:
        nonlocal set_id
        set_id += 1
        return build_segment("OBX", [str(set_id), value_type, _cwe(*ident), sub_id, value, "", "", "", "", "",
                                     status, "", "", signed, "", observer])

    # OBX-16 per observation: who is responsible for it (an addendum's own signer for its text).
    for index, section in enumerate(report.sections, start=1):
        segments.append(obx("FT", section_code(section.key), str(index), escape(section.text),
                            _person(section.signer or report.signer)))
    if report.study_instance_uid:
        segments.append(obx("ST", STUDY_UID_CODE, "", escape(report.study_instance_uid), version_signer))
    segments.append(obx("ST", SR_UID_CODE, "", escape(report.sr_instance_uid), version_signer))
    return "\r".join(segments) + "\r"


def _person(signer: Signer) -> list[str]:
    """XCN / CNN: ID ^ family ^ given ^ middle ^ suffix ^ prefix ^ degree (escaped)."""
    n = signer.name
    parts = [escape(part) for part in (signer.username, n.family, n.given, n.middle, n.suffix, n.prefix, n.degree)]
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


def _birth_date(report: OutgoingReport) -> str:
    """PID-7 with the precision the RIS sent (YYYY, YYYYMM or YYYYMMDD)."""
    if report.birth_date is None:
        return ""
    return report.birth_date.strftime(_DATE_FORMATS.get(report.birth_date_precision, "%Y%m%d"))


_DATE_FORMATS = {"year": "%Y", "month": "%Y%m", "day": "%Y%m%d"}
