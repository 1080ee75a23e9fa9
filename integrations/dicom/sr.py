"""A signed report version as a Basic Text SR following TID 2000 (PS3.16, Basic Diagnostic
Imaging Report): a pure builder, domain data in, pydicom Dataset out, and its reader.

Content tree (https://dicom.nema.org/medical/dicom/current/output/chtml/part16/chapter_A.html#sect_TID_2000)::

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")      CID 7000 document title
      HAS CONCEPT MOD  CODE  Language of Content Item and Descendants = en-US   (TID 1204)
      HAS OBS CONTEXT  CODE  Observer Type = Person                              (TID 1001/1002)
      HAS OBS CONTEXT  PNAME Person Observer Name = the signer
      CONTAINS CONTAINER (59776-5, LN, "Findings")            CID 7001 headings (TID 2001)
        CONTAINS TEXT (121071, DCM, "Finding") = the section's text              CID 7002 elements
      CONTAINS CONTAINER (19005-8, LN, "Impressions")
        CONTAINS TEXT (121073, DCM, "Impression") = ...

Content items are classes that mirror the value types (as highdicom's ``sr.value_types``):
each validates its arguments on construction and converts to and from a Dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from radservice.outbox.service import OutgoingReport, Signer
from radservice.reports.text import clean_line, clean_text

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
#: Our implementation's identity in the file meta (a 2.25 UID made once for radservice).
IMPLEMENTATION_CLASS_UID = "2.25.160354979153374416925395347011632049153"
IMPLEMENTATION_VERSION = "RADSERVICE_01"
#: Fixed namespace for the UIDs derived from others (one SR series per report and study).
_SERIES_NAMESPACE = uuid.UUID("6f1c5d1e-1c1f-4a53-9a55-3f4f3d2a7b10")
_RELATIONSHIPS = ("CONTAINS", "HAS OBS CONTEXT", "HAS CONCEPT MOD", "HAS PROPERTIES", "INFERRED FROM")


class SrError(ValueError):
    """A content item or document that cannot be built as asked (the message names the argument)."""


@dataclass(frozen=True)
class Code:
    """A coded concept: (code value, coding scheme designator, code meaning)."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        for name in ("value", "scheme", "meaning"):
            if not getattr(self, name):
                raise SrError(f"Code: argument '{name}' must not be empty")
        if len(self.value) > 16:
            raise SrError(f"Code: argument 'value' {self.value!r} is longer than 16 characters (SH)")

    def to_dataset(self) -> Dataset:
        ds = Dataset()
        ds.CodeValue = self.value
        ds.CodingSchemeDesignator = self.scheme
        ds.CodeMeaning = clean_line(self.meaning)[:64]
        return ds

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Code:
        return cls(str(ds.CodeValue), str(ds.CodingSchemeDesignator), str(ds.CodeMeaning))


DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic Imaging Report")
LANGUAGE_OF_CONTENT = Code("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
PERSON = Code("121006", "DCM", "Person")
PERSON_OBSERVER_NAME = Code("121008", "DCM", "Person Observer Name")

#: Section key -> (CID 7001 heading, CID 7002 element of its text); current editions' LOINC headings.
SECTION_CONCEPTS = {
    "clinical_history": (Code("11329-0", "LN", "History"), Code("11329-0", "LN", "History")),
    "history": (Code("11329-0", "LN", "History"), Code("11329-0", "LN", "History")),
    "indication": (Code("18785-6", "LN", "Indications for Procedure"), Code("11329-0", "LN", "History")),
    "technique": (Code("55111-9", "LN", "Current Procedure Descriptions"),
                  Code("121065", "DCM", "Procedure Description")),
    "comparison": (Code("55114-3", "LN", "Prior Procedure Descriptions"),
                   Code("121065", "DCM", "Procedure Description")),
    "findings": (Code("59776-5", "LN", "Findings"), Code("121071", "DCM", "Finding")),
    "impression": (Code("19005-8", "LN", "Impressions"), Code("121073", "DCM", "Impression")),
    "recommendation": (Code("18783-1", "LN", "Recommendations"), Code("121075", "DCM", "Recommendation")),
    "recommendations": (Code("18783-1", "LN", "Recommendations"), Code("121075", "DCM", "Recommendation")),
    "conclusion": (Code("55110-1", "LN", "Conclusions"), Code("121077", "DCM", "Conclusion")),
    "addendum": (Code("55107-7", "LN", "Addendum"), Code("55107-7", "LN", "Addendum")),
}


def section_concepts(key: str, title: str) -> tuple[Code, Code]:
    """(heading, text element) of a report section; a section no code names gets a local code."""
    base = "addendum" if key.startswith("addendum") else key
    if base in SECTION_CONCEPTS:
        return SECTION_CONCEPTS[base]
    local = Code(key.upper()[:16], "99RADSVC", title or key)
    return local, local


class ContentItem:
    """One node of the content tree: relationship to its parent, concept name, value type."""

    value_type = ""

    def __init__(self, relationship: str | None, concept: Code) -> None:
        if relationship is not None and relationship not in _RELATIONSHIPS:
            raise SrError(f"{type(self).__name__}: argument 'relationship' {relationship!r} is not one of "
                          f"{', '.join(_RELATIONSHIPS)}")
        self.relationship = relationship
        self.concept = concept

    def to_dataset(self) -> Dataset:
        ds = Dataset()
        if self.relationship is not None:
            ds.RelationshipType = self.relationship
        ds.ValueType = self.value_type
        ds.ConceptNameCodeSequence = DicomSequence([self.concept.to_dataset()])
        return ds


class TextItem(ContentItem):
    value_type = "TEXT"

    def __init__(self, relationship: str, concept: Code, text: str) -> None:
        super().__init__(relationship, concept)
        if not text.strip():
            raise SrError("TextItem: argument 'text' must not be empty")
        self.text = text

    def to_dataset(self) -> Dataset:
        ds = super().to_dataset()
        ds.TextValue = clean_text(self.text)  # UT: line breaks kept, no other control character
        return ds


class CodeItem(ContentItem):
    value_type = "CODE"

    def __init__(self, relationship: str, concept: Code, value: Code) -> None:
        super().__init__(relationship, concept)
        self.value = value

    def to_dataset(self) -> Dataset:
        ds = super().to_dataset()
        ds.ConceptCodeSequence = DicomSequence([self.value.to_dataset()])
        return ds


class PersonNameItem(ContentItem):
    value_type = "PNAME"

    def __init__(self, relationship: str, concept: Code, name: str) -> None:
        super().__init__(relationship, concept)
        if not name:
            raise SrError("PersonNameItem: argument 'name' must not be empty")
        self.name = name

    def to_dataset(self) -> Dataset:
        ds = super().to_dataset()
        ds.PersonName = self.name
        return ds


class ContainerItem(ContentItem):
    value_type = "CONTAINER"

    def __init__(self, relationship: str | None, concept: Code, children: Sequence[ContentItem],
                 template: str | None = None) -> None:
        super().__init__(relationship, concept)
        self.children = list(children)
        self.template = template

    def to_dataset(self) -> Dataset:
        ds = super().to_dataset()
        ds.ContinuityOfContent = "SEPARATE"
        if self.template:
            tid = Dataset()
            tid.MappingResource = "DCMR"
            tid.TemplateIdentifier = self.template
            ds.ContentTemplateSequence = DicomSequence([tid])
        if self.children:
            ds.ContentSequence = DicomSequence([child.to_dataset() for child in self.children])
        return ds


class BasicDiagnosticImagingReport(ContainerItem):
    """TID 2000 Basic Diagnostic Imaging Report: the root container of our SR.

    Parameters
    ----------
    sections
        ``(key, title, text)`` per section, in report order; empty texts are left out.
    observer_name
        The signer of the report's content as a DICOM person name (``Family^Given``): TID 1001's
        person observer of the whole document.
    section_observers
        Section key -> another person observer for that section alone (an addendum signed by
        someone else): the section's container gets its own observation context (TID 1001).
    """

    def __init__(self, sections: Sequence[tuple[str, str, str]], observer_name: str,
                 section_observers: Mapping[str, str] | None = None) -> None:
        children: list[ContentItem] = [
            CodeItem("HAS CONCEPT MOD", LANGUAGE_OF_CONTENT, ENGLISH_US),
            CodeItem("HAS OBS CONTEXT", OBSERVER_TYPE, PERSON),
            PersonNameItem("HAS OBS CONTEXT", PERSON_OBSERVER_NAME, observer_name),
        ]
        others = section_observers or {}
        for key, title, text in sections:
            if not text.strip():
                continue
            heading, element = section_concepts(key, title)
            items: list[ContentItem] = []
            if others.get(key, observer_name) != observer_name:
                items += [CodeItem("HAS OBS CONTEXT", OBSERVER_TYPE, PERSON),
                          PersonNameItem("HAS OBS CONTEXT", PERSON_OBSERVER_NAME, others[key])]
            children.append(ContainerItem("CONTAINS", heading, [*items, TextItem("CONTAINS", element, text)]))
        if len(children) == 3:
            raise SrError("BasicDiagnosticImagingReport: argument 'sections' holds no text")
        super().__init__(None, DIAGNOSTIC_IMAGING_REPORT, children, template="2000")


def series_uid(study_instance_uid: str, report_id: int) -> str:
    """The SR series of one report in its study: the same on every attempt and for every version."""
    return f"2.25.{uuid.uuid5(_SERIES_NAMESPACE, f'{study_instance_uid}/{report_id}').int}"


# Dates and times are written in UTC, and the SR says so in Timezone Offset From UTC (0008,0201):
# without it, readers take DA/TM/DT as the local time of wherever they run.
def _da(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d") if moment else ""


def _tm(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%H%M%S") if moment else ""


#: SH, the VR of Accession Number: a longer accession cannot be written, only cut (and then it
#: no longer matches the study), so the SR is refused instead (intake refuses such orders when a
#: PACS is configured).
MAX_DICOM_ACCESSION = 16


def _person_name(family: str, given: str, middle: str = "", prefix: str = "", suffix: str = "") -> str:
    """PN: Family^Given^Middle^Prefix^Suffix, trailing empty parts left out."""
    # 64 characters per component group: each part is cut to fit.
    parts = [clean_line(p).replace("^", " ").replace("=", " ") for p in (family, given, middle, prefix, suffix)]
    budget = 64 - 4
    cut = []
    for part in parts:
        cut.append(part[:max(budget, 0)])
        budget -= len(cut[-1])
    return "^".join(cut).rstrip("^")


def _signer_pn(signer: Signer) -> str:
    n = signer.name
    # DICOM PN has no degree component: it goes with the suffix ("Jr. MD").
    return _person_name(n.family, n.given, n.middle, n.prefix, " ".join(p for p in (n.suffix, n.degree) if p))


def build_sr(report: OutgoingReport, *, study_instance_uid: str, manufacturer: str = "radservice",
             institution: str = "") -> Dataset:
    """The Basic Text SR of one signed version, ready to store (file meta included).

    Final versions and addenda are VERIFIED by the signer; a preliminary one is UNVERIFIED and
    PRELIMINARY. A version that replaces an earlier one names it in PredecessorDocumentsSequence.

    Raises
    ------
    SrError
        No study UID, or no section with text.
    """
    if not study_instance_uid:
        raise SrError("build_sr: argument 'study_instance_uid' must not be empty")
    interpreter = report.principal_interpreter
    content = BasicDiagnosticImagingReport(
        [(s.key, s.title, s.text) for s in report.sections], _signer_pn(interpreter),
        {s.key: _signer_pn(s.signer) for s in report.sections if s.signer is not None}).to_dataset()
    series = series_uid(study_instance_uid, report.report_id)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = report.sr_instance_uid
    if len(report.accession_number) > MAX_DICOM_ACCESSION:
        raise SrError(f"accession number longer than {MAX_DICOM_ACCESSION} characters: DICOM (SH) cannot carry it")
    ds.InstanceCreationDate, ds.InstanceCreationTime = _da(report.signed_at), _tm(report.signed_at)
    ds.TimezoneOffsetFromUTC = "+0000"
    # Patient
    ds.PatientName = _person_name(report.family_name, report.given_name)
    ds.PatientID = report.patient_id
    if report.patient_issuer:
        ds.IssuerOfPatientID = report.patient_issuer
    # DA holds a whole date only: a year or month of birth is left empty (type 2) rather than made up.
    known = report.birth_date is not None and report.birth_date_precision == "day"
    ds.PatientBirthDate = report.birth_date.strftime("%Y%m%d") if known and report.birth_date else ""
    ds.PatientSex = report.sex if report.sex in ("M", "F", "O") else ""
    # General Study (the original study's identity)
    ds.StudyInstanceUID = study_instance_uid
    ds.StudyDate, ds.StudyTime = _da(report.ordered_at), _tm(report.ordered_at)
    ds.ReferringPhysicianName = ""
    ds.StudyID = report.requested_procedure_id[:16]
    ds.AccessionNumber = report.accession_number
    if report.accession_issuer:
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = report.accession_issuer
        ds.IssuerOfAccessionNumberSequence = DicomSequence([issuer])
    if report.procedure_text:
        ds.StudyDescription = clean_line(report.procedure_text)[:64]
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 999
    ds.SeriesDescription = "Radiology report"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    # General Equipment
    ds.Manufacturer = manufacturer
    if institution:
        ds.InstitutionName = institution
    # SR Document General
    ds.InstanceNumber = report.version
    ds.ContentDate, ds.ContentTime = _da(report.signed_at), _tm(report.signed_at)
    ds.CompletionFlag = "COMPLETE"
    if report.result_status == "P":
        ds.VerificationFlag = "UNVERIFIED"
        ds.PreliminaryFlag = "PRELIMINARY"
    else:
        ds.VerificationFlag = "VERIFIED"
        ds.PreliminaryFlag = "FINAL"
        # Each part of the content stays verified by the one who signed it, when they did: the
        # original content by its signer, each addendum by its own (all listed, oldest first).
        signers = [report.signer]
        if report.kind == "addendum":
            signers += [interpreter, *(s.signer for s in report.sections if s.signer is not None)]
        distinct = {(who.username, who.signed_at): who for who in signers}
        verifiers = sorted(distinct.values(), key=lambda who: who.signed_at)
        observers = []
        for who in verifiers:
            observer = Dataset()
            observer.VerifyingObserverName = _signer_pn(who)
            observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
            observer.VerifyingOrganization = institution or manufacturer
            observer.VerificationDateTime = who.signed_at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
            observers.append(observer)
        ds.VerifyingObserverSequence = DicomSequence(observers)
    ds.ReferencedRequestSequence = DicomSequence([_request(report, study_instance_uid)])
    ds.PerformedProcedureCodeSequence = DicomSequence()
    if report.previous_sr_instance_uid:
        ds.PredecessorDocumentsSequence = DicomSequence([_reference(study_instance_uid, series,
                                                                    report.previous_sr_instance_uid)])
    if "99RADSVC" in {c.CodingSchemeDesignator for c in _codes(ds, content)}:
        scheme = Dataset()
        scheme.CodingSchemeDesignator = "99RADSVC"
        scheme.CodingSchemeName = "radservice local codes (report sections and procedures without a standard code)"
        ds.CodingSchemeIdentificationSequence = DicomSequence([scheme])
    # SR Document Content (the root content item's attributes live at the top level)
    for element in content:
        ds.add(element)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(BASIC_TEXT_SR)
    meta.MediaStorageSOPInstanceUID = UID(report.sr_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    return ds


def _codes(*datasets: Dataset) -> list[Dataset]:
    """Every code item (a dataset with a CodingSchemeDesignator) under the given datasets."""
    found = []
    for ds in datasets:
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    if "CodingSchemeDesignator" in item:
                        found.append(item)
                    found.extend(_codes(item))
    return found


def _request(report: OutgoingReport, study_instance_uid: str) -> Dataset:
    """One item of ReferencedRequestSequence: the order this report answers (never empty)."""
    item = Dataset()
    item.StudyInstanceUID = study_instance_uid
    item.AccessionNumber = report.accession_number
    if report.accession_issuer:
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = report.accession_issuer
        item.IssuerOfAccessionNumberSequence = DicomSequence([issuer])
    item.RequestedProcedureID = report.requested_procedure_id[:16]
    item.RequestedProcedureDescription = clean_line(report.procedure_text)[:64]
    item.RequestedProcedureCodeSequence = DicomSequence(
        [Code(report.procedure_code[:16], "99RADSVC", report.procedure_text or report.procedure_code).to_dataset()]
        if report.procedure_code else [])
    item.ReferencedStudySequence = DicomSequence()
    # LO (64 characters): the whole order number, as the ORU carries it.
    item.PlacerOrderNumberImagingServiceRequest = clean_line(report.placer_order_number)[:64]
    item.FillerOrderNumberImagingServiceRequest = clean_line(report.filler_order_number)[:64]
    return item


def _reference(study: str, series: str, instance: str) -> Dataset:
    sop = Dataset()
    sop.ReferencedSOPClassUID = BASIC_TEXT_SR
    sop.ReferencedSOPInstanceUID = instance
    series_item = Dataset()
    series_item.SeriesInstanceUID = series
    series_item.ReferencedSOPSequence = DicomSequence([sop])
    item = Dataset()
    item.StudyInstanceUID = study
    item.ReferencedSeriesSequence = DicomSequence([series_item])
    return item


@dataclass(frozen=True)
class ReadSection:
    heading: Code
    text: str


def read_sections(ds: Dataset) -> list[ReadSection]:
    """The headings and their text of a TID 2000 SR, in document order (for round trips and tests).

    Raises
    ------
    SrError
        The dataset is not a report titled from CID 7000 with CONTAINER headings.
    """
    if ds.get("ValueType") != "CONTAINER" or "ConceptNameCodeSequence" not in ds:
        raise SrError("read_sections: the root content item is not a titled CONTAINER")
    sections = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType != "CONTAINER" or item.RelationshipType != "CONTAINS":
            continue
        texts = [str(child.TextValue) for child in item.get("ContentSequence", []) if child.ValueType == "TEXT"]
        sections.append(ReadSection(Code.from_dataset(item.ConceptNameCodeSequence[0]), "\n".join(texts)))
    return sections
