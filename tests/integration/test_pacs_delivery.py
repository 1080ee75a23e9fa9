"""Signed reports to the PACS: the outbox's delivery loop and the C-STORE sender against a real
Orthanc (read back through its REST API) and dcmtk's storescp, on SQLite and PostgreSQL.
Faults: PACS down at signing, an association refused, a study found only by C-FIND."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from integrations.dicom.scu import PacsSender, made_study_uid
from integrations.dicom.sr import read_sections
from radservice.config import DicomSettings, PacsSettings
from radservice.db.session import session_scope
from radservice.outbox.flows import DeliveryLoop
from radservice.worklist import service as worklist
from radservice.worklist.models import Study
from tests.integration.test_ris_delivery import FINDINGS, IMPRESSION, STUDY_UID, _order, _sign
from tests.pacs_peer import MISSING, orthanc, storescp
from tests.support import add_report, free_port, make_user, start_delivery_loop, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                                                       "(scripts/system-packages.sh orthanc dcmtk)")]


def _add(factory: sessionmaker[Session], accession: str, *, study_uid: str | None = STUDY_UID) -> int:
    from dataclasses import replace

    with session_scope(factory) as session:
        worklist.apply_order(session=session, order=replace(_order(accession), study_instance_uid=study_uid))
    return add_report(factory, accession, {"findings": FINDINGS, "impression": IMPRESSION})


@pytest.fixture
def pacs_loop(factory: sessionmaker[Session], client: TestClient) -> Iterator[Callable[..., DeliveryLoop]]:
    loops: list[DeliveryLoop] = []

    def start(port: int, ae_title: str = "ORTHANC") -> DeliveryLoop:
        pacs = PacsSettings(host="127.0.0.1", port=port, ae_title=ae_title, timeout_s=5, connect_timeout_s=1)
        loops.append(start_delivery_loop(client.app.state, factory,  # type: ignore[attr-defined]
                                         PacsSender(pacs, DicomSettings()), {}, owner="test:pacs"))
        return loops[-1]

    yield start
    for loop in loops:
        loop.join(10)


@pytest.fixture
def doctor(factory: sessionmaker[Session]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_user(factory, 'dr.pacs', 'radiologist')}"}


def _rows(client: TestClient, report_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    rows = client.get(f"/api/v1/reports/{report_id}/deliveries", headers=headers).json()
    return [r for r in rows if r["destination"] == "pacs"]


def _all_acked(client: TestClient, report_id: int, headers: dict[str, str]) -> Callable[[], bool]:
    return lambda: all(r["status"] == "acked" for r in _rows(client, report_id, headers))


def test_signed_versions_are_stored_in_orthanc_and_read_back(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-1")
    with orthanc(tmp_path / "orthanc") as pacs:
        pacs_loop(pacs.dicom_port)
        _sign(client, report_id, doctor, "final")
        added = client.post(f"/api/v1/reports/{report_id}/addenda", json={"text": "Addendum: Größe | stable."},
                            headers=doctor)
        assert added.status_code == 201
        wait_for(lambda: len(_rows(client, report_id, doctor)) == 2 and _all_acked(client, report_id, doctor)(),
              "both versions stored")
        rows = _rows(client, report_id, doctor)
        assert [(r["version"], r["ack_code"], r["attempts"]) for r in rows] == [(1, "0x0000", 1), (2, "0x0000", 1)]
        versions = client.get(f"/api/v1/reports/{report_id}", headers=doctor).json()["versions"]
        stored = {pacs.dataset(i).SOPInstanceUID: pacs.dataset(i) for i in pacs.instances()}
        assert set(stored) == {v["sr_instance_uid"] for v in versions}
        final, addendum = (stored[v["sr_instance_uid"]] for v in versions)
        studies = pacs.get("/studies")
        assert len(studies) == 1
        study = pacs.get(f"/studies/{studies[0]}")
        assert study["MainDicomTags"]["StudyInstanceUID"] == STUDY_UID
        assert study["MainDicomTags"]["AccessionNumber"] == "SR-1"
        assert len(study["Series"]) == 1  # one SR series for the report's versions
        sections = {s.heading.value: s.text for s in read_sections(final)}
        assert sections == {"59776-5": FINDINGS, "19005-8": IMPRESSION}
        assert final.VerificationFlag == "VERIFIED" and addendum.VerificationFlag == "VERIFIED"
        assert {s.heading.value: s.text for s in read_sections(addendum)}["55107-7"] == "Addendum: Größe | stable."
        predecessor = addendum.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == final.SOPInstanceUID
        assert str(final.PatientName) == "SYNTH ETIC^Tëst" and final.PatientID == "MRN-SR-1"


def test_pacs_down_at_signing_then_up_is_stored_once(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-DOWN")
    port = free_port()
    pacs_loop(port)
    _sign(client, report_id, doctor, "final")
    wait_for(lambda: (lambda r: r["attempts"] >= 2 and r["status"] == "pending")(
        _rows(client, report_id, doctor)[0]), "two failed attempts")
    (row,) = _rows(client, report_id, doctor)
    assert row["status"] == "pending" and "no association" in row["last_error"], row
    with orthanc(tmp_path / "orthanc", dicom_port=port) as pacs:
        wait_for(_all_acked(client, report_id, doctor), "the C-STORE", timeout=20)
        time.sleep(0.5)
        assert len(pacs.instances()) == 1


def test_an_association_the_pacs_refuses_is_retried(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-REJ")
    with orthanc(tmp_path / "orthanc", check_called_aet=True, ae_title="REALPACS") as pacs:
        pacs_loop(pacs.dicom_port, ae_title="WRONGAET")
        _sign(client, report_id, doctor, "final")
        # Orthanc closes the socket right after its A-ASSOCIATE-RJ; now and then pynetdicom reads the
        # close first and reports an abort, so the wait is for an attempt that was read as rejected.
        wait_for(lambda: (lambda r: r["attempts"] >= 3 and r["status"] == "pending" and "rejected" in r["last_error"])(
            _rows(client, report_id, doctor)[0]), "three refused associations, one read as rejected", timeout=30)
        (row,) = _rows(client, report_id, doctor)
        assert row["status"] == "pending" and "rejected" in row["last_error"], row
        assert pacs.instances() == []


def test_a_study_without_uid_in_the_order_is_found_by_c_find(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-FIND", study_uid=None)
    image_study = generate_uid()
    with orthanc(tmp_path / "orthanc") as pacs:
        pacs.upload(_image(image_study, "SR-FIND"))
        pacs_loop(pacs.dicom_port)
        _sign(client, report_id, doctor, "final")
        wait_for(_all_acked(client, report_id, doctor), "the C-STORE")
        (row,) = _rows(client, report_id, doctor)
        assert "found in the PACS by accession number" in row["last_error"], row
        srs = [pacs.dataset(i) for i in pacs.instances() if pacs.dataset(i).Modality == "SR"]
        assert [sr.StudyInstanceUID for sr in srs] == [image_study]
        assert len(pacs.get("/studies")) == 1  # beside the images, not a study of its own
    with factory() as session:
        assert session.query(Study).filter_by(accession_number="SR-FIND").one().study_instance_uid == image_study


def test_no_uid_anywhere_makes_one_and_says_so(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-NONE", study_uid=None)
    with orthanc(tmp_path / "orthanc") as pacs:
        pacs_loop(pacs.dicom_port)
        _sign(client, report_id, doctor, "final")
        wait_for(_all_acked(client, report_id, doctor), "the C-STORE")
        (row,) = _rows(client, report_id, doctor)
        assert row["last_error"].startswith("warning: no Study Instance UID"), row
        report = client.get(f"/api/v1/reports/{report_id}", headers=doctor).json()
        assert report["warnings"] == [row["last_error"]]
        (instance,) = pacs.instances()
        assert pacs.dataset(instance).StudyInstanceUID == made_study_uid("SR-NONE", "")


def test_storescp_receives_a_readable_sr(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], tmp_path: Path) -> None:
    report_id = _add(factory, "SR-SCP")
    folder = tmp_path / "received"
    with storescp(folder) as port:
        pacs_loop(port, ae_title="STORESCP")
        _sign(client, report_id, doctor, "preliminary")
        wait_for(_all_acked(client, report_id, doctor), "the C-STORE")
    (path,) = [p for p in folder.iterdir() if p.is_file()]
    ds = pydicom.dcmread(path)
    assert ds.VerificationFlag == "UNVERIFIED" and ds.StudyInstanceUID == STUDY_UID
    assert {s.heading.value: s.text for s in read_sections(ds)}["59776-5"] == FINDINGS


def _image(study_uid: str, accession: str) -> Dataset:
    """A tiny Secondary Capture image of the study, as a modality would have stored it."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.AccessionNumber, ds.PatientID, ds.PatientName = accession, f"MRN-{accession}", "SYNTH^IMAGE"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OT", 1, 1
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = b"\x00\x01\x02\x03"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture
def scripted_scp() -> Iterator[Callable[[Callable[[Any], int]], int]]:
    """A pynetdicom storage SCP whose C-STORE answer the test scripts (a status, or a long wait)."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import BasicTextSRStorage  # type: ignore[attr-defined]

    servers = []

    def start(answer: Callable[[Any], int]) -> int:
        ae = AE(ae_title="SCRIPTED")
        ae.add_supported_context(BasicTextSRStorage)
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, answer)]))
        return port

    yield start
    for server in servers:
        server.shutdown()  # type: ignore[union-attr]


def test_a_failure_status_fails_the_delivery_with_its_meaning(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], scripted_scp: Callable[[Callable[[Any], int]], int]) -> None:
    report_id = _add(factory, "SR-A900")
    answers: list[str] = []

    def refuse(event: Any) -> int:
        answers.append(event.request.AffectedSOPInstanceUID)
        return 0xA900

    pacs_loop(scripted_scp(refuse), ae_title="SCRIPTED")
    _sign(client, report_id, doctor, "final")
    wait_for(lambda: _rows(client, report_id, doctor)[0]["status"] == "failed", "the failure")
    time.sleep(0.6)  # several backoff periods: a refused store is not retried
    (row,) = _rows(client, report_id, doctor)
    assert row["ack_code"] == "0xA900" and "does not match SOP class" in row["last_error"], row
    assert row["attempts"] == 1 and len(answers) == 1


def test_a_pacs_that_does_not_answer_in_time_is_retried(
        client: TestClient, factory: sessionmaker[Session], pacs_loop: Callable[..., DeliveryLoop],
        doctor: dict[str, str], scripted_scp: Callable[[Callable[[Any], int]], int]) -> None:
    report_id = _add(factory, "SR-SLOW")
    calls: list[float] = []

    def slow_then_fine(event: Any) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(2.5)  # beyond the client's timeout_s = 1
        return 0x0000

    settings_port = scripted_scp(slow_then_fine)
    loop = pacs_loop(settings_port, ae_title="SCRIPTED")
    loop.sender.client.ae.dimse_timeout = 1  # type: ignore[attr-defined]
    _sign(client, report_id, doctor, "final")
    wait_for(lambda: _rows(client, report_id, doctor)[0]["attempts"] >= 1
          and _rows(client, report_id, doctor)[0]["status"] != "sent", "the first attempt")
    first = _rows(client, report_id, doctor)[0]
    assert first["status"] == "pending" and "no C-STORE response" in first["last_error"], first
    wait_for(_all_acked(client, report_id, doctor), "the C-STORE on a retry")
    (row,) = _rows(client, report_id, doctor)
    assert row["attempts"] == 2 and len(calls) == 2
