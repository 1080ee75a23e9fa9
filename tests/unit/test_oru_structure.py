"""An independent check of every kind of ORU^R01 we build: hl7apy (another implementation) parses
it with strict validation and validates it against the HL7 v2.5.1 ORU_R01 message structure.

The one known exception: OBX-5 of a long report is longer than hl7apy's table length for the
field (the standard leaves OBX-5's length to the value type; FT runs to 65536). It is checked by
giving hl7apy the message with that field cut to hl7apy's 199 characters; the full text is checked by our own parser.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from integrations.hl7.oru import build_oru
from radservice.outbox.service import Section
from tests.unit.test_hl7_oru import HEADER, NASTY, _report

LONG = ("Lungs: " + "clear with no consolidation, " * 400).strip()


@pytest.mark.parametrize("report", [
    _report(),
    _report(result_status="P", kind="preliminary"),
    _report(result_status="C", kind="addendum", sections=(Section("findings", "Findings", NASTY),
                                                          Section("addendum_1", "Addendum 1", "Stable."))),
    _report(study_instance_uid=None, ordered_at=None, birth_date=None, procedure_code="", signer_name=""),
    _report(birth_date_precision="year", family_name="SYN\x0bTH"),
    _report(sections=(Section("findings", "Findings", LONG),)),
], ids=["final", "preliminary", "addendum", "bare", "year-of-birth", "long"])
def test_every_oru_validates_against_the_v251_structure(report: object) -> None:
    text = build_oru(report, HEADER)  # type: ignore[arg-type]
    segments = text.rstrip("\r").split("\r")
    # OBX-5's length exception (see the module's text): shorten the value for hl7apy only
    segments = [_short_obx5(s) for s in segments]
    message = parse_message("\r".join(segments), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert message.name == "ORU_R01"
    assert message.validate() is True
    assert [s.name for s in message.children][:2] == ["MSH", "ORU_R01_PATIENT_RESULT"]


def _short_obx5(segment: str) -> str:
    if not segment.startswith("OBX|"):
        return segment
    fields = segment.split("|")
    value = fields[5][:_HL7APY_FT_LENGTH]
    if value.count("\\") % 2:  # never cut an escape sequence in two
        value = value[: value.rindex("\\")]
    fields[5] = value
    return "|".join(fields)


#: hl7apy's length for the FT value of OBX-5 (v2.5.1 tables).
_HL7APY_FT_LENGTH = 199


def test_the_length_exception_is_real() -> None:
    """Without the shortening, hl7apy refuses the long report's OBX-5 (so the exception is needed)."""
    text = build_oru(replace(_report(), sections=(Section("findings", "Findings", LONG),)), HEADER)
    with pytest.raises(Exception, match="(?i)length|max"):
        message = parse_message(text.rstrip("\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
