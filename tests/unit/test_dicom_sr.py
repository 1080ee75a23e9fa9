"""The TID 2000 Basic Text SR builder, without I/O beyond memory: content tree, flags, references,
round trip through DICOM bytes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from io import BytesIO

import pydicom
import pytest

from integrations.dicom.sr import (
    BASIC_TEXT_SR,
    BasicDiagnosticImagingReport,
    Code,
    SrError,
    TextItem,
    build_sr,
    read_sections,
    series_uid,
)
from radservice.outbox.service import Section, Signer
from radservice.users.names import PersonName
from tests.unit.test_hl7_oru import _report, addendum_by_another

TEXT = "Lungs: 4 mm nodule | right ^ upper & lobe.\n\nPleura: Größe 5 × 3 cm, Ødem ñ."


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buffer.getvalue()))


def test_sections_and_text_read_back_the_same() -> None:
    report = replace(_report(), sections=(Section("findings", "Findings", TEXT),
                                          Section("impression", "Impression", "No acute finding."),
                                          Section("addendum_1", "Addendum 1", "Stable.")))
    ds = _roundtrip(build_sr(report, study_instance_uid="1.2.3.4"))
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.SOPInstanceUID == "2.25.1234"
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.Modality == "SR"
    sections = read_sections(ds)
    assert [(s.heading.value, s.heading.scheme) for s in sections] == [("59776-5", "LN"), ("19005-8", "LN"),
                                                                       ("55107-7", "LN")]
    assert [s.text for s in sections] == [TEXT, "No acute finding.", "Stable."]
    root = ds.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator, root.CodeMeaning) == ("18748-4", "LN",
                                                                               "Diagnostic Imaging Report")
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    language, observer_type, observer = ds.ContentSequence[:3]
    assert language.RelationshipType == "HAS CONCEPT MOD" and language.ConceptCodeSequence[0].CodeValue == "en-US"
    assert observer_type.ConceptCodeSequence[0].CodeValue == "121006"
    assert observer.RelationshipType == "HAS OBS CONTEXT" and observer.PersonName == "Hopper^Grace^^Dr."


def test_patient_study_and_request_attributes_come_from_the_order() -> None:
    ds = _roundtrip(build_sr(_report(), study_instance_uid="1.2.3.4"))
    assert str(ds.PatientName) == "O'Brien Jr^Zoë" and ds.PatientID == "MRN1" and ds.IssuerOfPatientID == "HOSP"
    assert ds.PatientBirthDate == "19700102" and ds.PatientSex == "M"
    assert ds.StudyInstanceUID == "1.2.3.4" and ds.AccessionNumber == "ACC|1"
    assert ds.StudyDate == "20261130" and ds.ContentDate == "20261201" and ds.ContentTime == "093000"
    (request,) = ds.ReferencedRequestSequence
    assert request.StudyInstanceUID == "1.2.3.4" and request.AccessionNumber == "ACC|1"
    assert request.RequestedProcedureID == "RP1"
    assert request.RequestedProcedureCodeSequence[0].CodeValue == "CTCHEST"
    assert request.PlacerOrderNumberImagingServiceRequest == "P^1"
    assert request.FillerOrderNumberImagingServiceRequest == "F&1"
    assert ds.SeriesInstanceUID == series_uid("1.2.3.4", 1) != ds.StudyInstanceUID
    assert ds.InstanceNumber == 2


def test_a_year_of_birth_is_not_written_as_a_whole_date() -> None:
    ds = _roundtrip(build_sr(_report(birth_date_precision="year"), study_instance_uid="1.2.3.4"))
    assert ds.PatientBirthDate == ""  # DA is YYYYMMDD: an unknown day is left empty, never made up


def test_final_is_verified_preliminary_is_not_and_corrections_name_their_predecessor() -> None:
    final = build_sr(_report(), study_instance_uid="1.2.3.4")
    assert final.VerificationFlag == "VERIFIED" and final.CompletionFlag == "COMPLETE"
    assert final.VerifyingObserverSequence[0].VerifyingObserverName == "Hopper^Grace^^Dr."
    assert final.VerifyingObserverSequence[0].VerificationDateTime == "20261201093000+0000"
    assert "PredecessorDocumentsSequence" not in final
    preliminary = build_sr(_report(result_status="P"), study_instance_uid="1.2.3.4")
    assert preliminary.VerificationFlag == "UNVERIFIED" and preliminary.PreliminaryFlag == "PRELIMINARY"
    assert "VerifyingObserverSequence" not in preliminary
    addendum = build_sr(_report(result_status="C", sr_instance_uid="2.25.5678", previous_sr_instance_uid="2.25.1234"),
                        study_instance_uid="1.2.3.4")
    (predecessor,) = addendum.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == "1.2.3.4"
    assert predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "2.25.1234"
    assert addendum.SeriesInstanceUID == final.SeriesInstanceUID  # one series for the report's versions
    assert build_sr(_report(), study_instance_uid="1.2.3.4") == final  # the same on every attempt


def test_constructors_fail_fast_naming_the_argument() -> None:
    with pytest.raises(SrError, match="argument 'value'"):
        Code("", "LN", "x")
    with pytest.raises(SrError, match="argument 'text'"):
        TextItem("CONTAINS", Code("121071", "DCM", "Finding"), "  ")
    with pytest.raises(SrError, match="argument 'relationship'"):
        TextItem("OWNS", Code("121071", "DCM", "Finding"), "x")
    with pytest.raises(SrError, match="argument 'sections'"):
        BasicDiagnosticImagingReport([("findings", "Findings", "")], "A^B")
    with pytest.raises(SrError, match="study_instance_uid"):
        build_sr(_report(), study_instance_uid="")


def test_no_control_character_reaches_the_sr() -> None:
    report = replace(_report(family_name="SYN\x0bTH", placer_order_number="P" * 40),
                     sections=(Section("findings", "Findings", "soft\x0bbreak\x00 and nul\x1c."),))
    ds = _roundtrip(build_sr(report, study_instance_uid="1.2.3.4"))
    (text,) = [s.text for s in read_sections(ds)]
    assert text == "soft\nbreak and nul\n."
    assert str(ds.PatientName) == "SYN TH^Zoë"
    assert ds.ReferencedRequestSequence[0].PlacerOrderNumberImagingServiceRequest == "P" * 40  # LO, not cut to 16


def test_times_are_utc_and_say_so() -> None:
    ds = _roundtrip(build_sr(_report(), study_instance_uid="1.2.3.4"))
    assert ds.TimezoneOffsetFromUTC == "+0000"
    assert ds.ContentTime == "093000"  # signed at 09:30 UTC


def test_an_accession_dicom_cannot_carry_is_refused_not_cut() -> None:
    with pytest.raises(SrError, match="16 characters"):
        build_sr(_report(accession_number="A" * 17), study_instance_uid="1.2.3.4")
    ds = build_sr(_report(accession_number="A" * 16), study_instance_uid="1.2.3.4")
    assert ds.AccessionNumber == "A" * 16


def test_an_addendum_sr_keeps_the_original_verifier_and_observes_the_addendum_by_its_signer() -> None:
    report = addendum_by_another(PersonName(family="Hopper", given="Grace", middle="B", prefix="Dr.", degree="PhD"))
    ds = _roundtrip(build_sr(report, study_instance_uid="1.2.3.4"))
    assert [(str(o.VerifyingObserverName), o.VerificationDateTime) for o in ds.VerifyingObserverSequence] == [
        ("Hopper^Grace^B^Dr.^PhD", "20261201093000+0000"), ("Smith^John^^^MD", "20261202100000+0000")]
    root_observer = ds.ContentSequence[2]
    assert str(root_observer.PersonName) == "Hopper^Grace^B^Dr.^PhD"
    findings, addendum = [item for item in ds.ContentSequence if item.ValueType == "CONTAINER"]
    assert [i.ValueType for i in findings.ContentSequence] == ["TEXT"]  # observed by the document's observer
    names = [str(i.PersonName) for i in addendum.ContentSequence if i.ValueType == "PNAME"]
    assert names == ["Smith^John^^^MD"]
    assert [s.text for s in read_sections(ds)] == ["Clear.", "Stable."]


def test_every_signer_of_content_present_stays_a_verifier() -> None:
    a = Signer("dr.a", PersonName(family="Alpha", given="Ann"), datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    b = Signer("dr.b", PersonName(family="Beta", given="Bob"), datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    c = Signer("dr.c", PersonName(family="Gamma", given="Cy"), datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    report = _report(kind="addendum", result_status="C", signer_username="dr.c", signer_name="Cy Gamma",
                     signer_parts=c.name, signed_at=c.signed_at, interpreter=a,
                     sections=(Section("findings", "Findings", "Clear.", a),
                               Section("addendum_1", "Addendum 1", "Stable.", b),
                               Section("addendum_2", "Addendum 2", "Still stable.", c)))
    ds = build_sr(report, study_instance_uid="1.2.3.4")
    assert [str(o.VerifyingObserverName) for o in ds.VerifyingObserverSequence] == ["Alpha^Ann", "Beta^Bob",
                                                                                    "Gamma^Cy"]


def test_a_person_name_fits_its_64_characters() -> None:
    long = PersonName(family="F" * 64, given="G" * 64, middle="M" * 64, prefix="P" * 32, suffix="S" * 32)
    report = _report(signer_parts=long)
    ds = build_sr(report, study_instance_uid="1.2.3.4")
    assert len(str(ds.VerifyingObserverSequence[0].VerifyingObserverName)) <= 64
