"""PACS faults on the way out (issue 26): a C-FIND that fails is not "no such study", several or
foreign studies are never filed under, and a PACS that refuses our SOP class fails the delivery
at once. The PACS here is a pynetdicom SCP in-process, told what to answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from integrations.dicom.scu import PacsSender
from radservice.config import DicomSettings, PacsSettings
from tests.support import free_port
from tests.unit.test_hl7_oru import _report

pytestmark = pytest.mark.integration


@dataclass
class FakePacs:
    """What the SCP answers: C-FIND matches (uid, patient ID) and a final status; stores kept."""

    matches: list[tuple[str, str]] = field(default_factory=list)
    issuer: str = ""
    find_status: int = 0x0000
    stored: list[Dataset] = field(default_factory=list)

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for uid, patient_id in self.matches:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = uid
            ds.PatientID = patient_id
            if self.issuer:
                ds.IssuerOfPatientID = self.issuer
            yield 0xFF00, ds
        if self.find_status != 0x0000:
            yield self.find_status, None

    def on_store(self, event: Any) -> int:
        self.stored.append(event.dataset)
        return 0x0000


@pytest.fixture
def pacs(request: pytest.FixtureRequest) -> Iterator[tuple[FakePacs, PacsSender]]:
    param = getattr(request, "param", True)
    accept_sr, patient_issuer = (param, "") if isinstance(param, bool) else (True, param)
    fake = FakePacs()
    ae = AE(ae_title="FAKEPACS")
    contexts = [StudyRootQueryRetrieveInformationModelFind, Verification] + ([BasicTextSRStorage] if accept_sr else [])
    for context in contexts:
        ae.add_supported_context(context)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, fake.on_find), (evt.EVT_C_STORE, fake.on_store)])
    sender = PacsSender(PacsSettings(host="127.0.0.1", port=port, ae_title="FAKEPACS", timeout_s=5,
                                     connect_timeout_s=2, patient_issuer=patient_issuer), DicomSettings())
    try:
        yield fake, sender
    finally:
        sender.close()
        server.shutdown()


def test_a_failed_c_find_is_retried_not_read_as_no_study(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.find_status = 0xA700  # out of resources
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "later" and "0xA700" in result.detail
    assert fake.stored == []  # no SR filed under a made-up study


def test_one_study_of_our_patient_is_used(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches = [("1.2.3.99", "MRN1")]
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "acked", result.detail
    assert [ds.StudyInstanceUID for ds in fake.stored] == ["1.2.3.99"]


def test_several_studies_fail_the_delivery_with_the_reason(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches = [("1.2.3.98", "MRN1"), ("1.2.3.99", "MRN1")]
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "refused" and "2 studies" in result.detail
    assert fake.stored == []


def test_a_study_of_another_patient_is_never_filed_under(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches = [("1.2.3.97", "MRN-SOMEONE-ELSE")]
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "refused" and "another patient" in result.detail
    assert "MRN" not in result.detail  # no identifier in the error text
    assert fake.stored == []


@pytest.mark.parametrize("pacs", [False], indirect=True)
def test_a_pacs_that_refuses_basic_text_sr_fails_at_once(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    result = sender.send(_report())
    assert result.outcome == "refused"
    assert "PACS does not accept Basic Text SR" in result.detail


def test_the_same_patient_id_under_another_issuer_is_not_our_patient(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches, fake.issuer = [("1.2.3.96", "MRN1")], "OTHER-HOSPITAL"
    result = sender.send(_report(study_instance_uid=None))  # the order's issuer is HOSP
    assert result.outcome == "refused" and "pacs.patient_issuer" in result.detail
    assert fake.stored == []


@pytest.mark.parametrize("pacs", ["PACS-LOCAL"], indirect=True)
def test_the_pacs_s_own_name_for_our_issuer_is_configured(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches, fake.issuer = [("1.2.3.96", "MRN1")], "PACS-LOCAL"
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "acked", result.detail
    assert [ds.StudyInstanceUID for ds in fake.stored] == ["1.2.3.96"]


def test_a_cancelled_c_find_is_retried(pacs: tuple[FakePacs, PacsSender]) -> None:
    fake, sender = pacs
    fake.matches, fake.find_status = [("1.2.3.95", "MRN1")], 0xFE00
    result = sender.send(_report(study_instance_uid=None))
    assert result.outcome == "later" and "0xFE00" in result.detail
    assert fake.stored == []
