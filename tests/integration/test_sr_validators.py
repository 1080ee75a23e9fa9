"""Every kind of SR the project writes passes dciodvfy (dicom3tools) with zero errors and is read
by dcmtk's dsrdump with its sections and text."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.dicom.sr import build_sr
from radservice.outbox.service import OutgoingReport, Section, Signer
from radservice.users.names import PersonName
from tests.conftest import IN_CI
from tests.unit.test_hl7_oru import _report

pytestmark = pytest.mark.integration

TOOLS = ("dciodvfy", "dsrdump")
_missing = [t for t in TOOLS if shutil.which(t) is None]
if _missing and IN_CI:
    raise RuntimeError(f"CI needs {', '.join(_missing)}: scripts/system-packages.sh dcmtk dicom3tools")
needs_tools = pytest.mark.skipif(bool(_missing), reason=f"{', '.join(_missing)} not installed "
                                                        "(scripts/system-packages.sh dcmtk dicom3tools)")

CASES: dict[str, OutgoingReport] = {
    "final": _report(),
    "preliminary": _report(result_status="P", kind="preliminary"),
    "addendum": _report(result_status="C", kind="addendum", sr_instance_uid="2.25.77",
                        previous_sr_instance_uid="2.25.1234",
                        sections=(*_report().sections, Section("addendum_1", "Addendum 1", "Größe stable."))),
    "bare order": _report(accession_issuer="", patient_issuer="", birth_date=None, sex="", ordered_at=None,
                          procedure_code="", procedure_text="", placer_order_number="", filler_order_number="",
                          requested_procedure_id="", signer_name=""),
    "with issuer": _report(accession_issuer="HOSP-RIS"),
    # an addendum by another radiologist: two verifying observers, the addendum's own observer context
    "addendum by another signer": _report(
        result_status="C", kind="addendum", sr_instance_uid="2.25.78", previous_sr_instance_uid="2.25.1234",
        signer_username="dr.two", signer_name="John Smith, MD", signed_at=datetime(2026, 12, 2, 10, 0, tzinfo=UTC),
        interpreter=Signer("dr.one", PersonName(family="Hopper", given="Grace", prefix="Dr.", degree="PhD"),
                           datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        sections=(*_report().sections, Section("addendum_1", "Addendum 1", "Größe stable.", Signer(
            "dr.two", PersonName(family="Smith", given="John", degree="MD"),
            datetime(2026, 12, 2, 10, 0, tzinfo=UTC))))),
}


@needs_tools
@pytest.mark.parametrize("case", sorted(CASES))
def test_dciodvfy_finds_no_error_and_dsrdump_reads_it(case: str, tmp_path: Path) -> None:
    path = tmp_path / "sr.dcm"
    build_sr(CASES[case], study_instance_uid="1.2.826.0.1.3680043.8.498.1").save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = checked.stdout + checked.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert checked.returncode == 0 and errors == [], report
    assert "BasicTextSR" in report
    dumped = subprocess.run(["dsrdump", "+U8", str(path)], capture_output=True, timeout=60)
    text = dumped.stdout.decode("utf-8")
    assert dumped.returncode == 0, dumped.stderr
    assert "Basic Text SR Document" in text and '"Diagnostic Imaging Report"' in text
    assert '<contains CONTAINER:(,,"Findings")=SEPARATE>' in text
    assert 'TEXT:(,,"Impression")="Normal."' in text
    if case.startswith("addendum"):
        assert "Größe stable." in text and "Predecessor Docs    : 1" in text
    verification = "UNVERIFIED" if case == "preliminary" else "VERIFIED"
    assert f"Verification Flag   : {verification}" in text
