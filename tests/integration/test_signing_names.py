"""Who signed what, as the peers read it (issue 26): structured names from the user record, a name
written "Family, Given" read the right way round, and an addendum that names its own signer while
the original signer stays the interpreter of the original content. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integrations.dicom.sr import build_sr
from integrations.hl7.message import parse
from integrations.hl7.oru import OruHeader, build_oru
from radservice.db.session import session_scope
from radservice.outbox import service as outbox
from radservice.outbox.models import Delivery
from radservice.reports import service as reports
from radservice.reports.models import Report, VersionKind
from radservice.users import service as users
from radservice.users.names import PersonName
from tests.support import add_report, add_study

pytestmark = pytest.mark.integration

WEEK = timedelta(days=7)


def test_the_addendum_signer_and_the_original_interpreter_both_reach_the_peers(
        factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        # one user from before structured names (display name only, comma form), one with parts
        users.create_user(session=session, username="dr.smith", role=users.parse_role("radiologist"),
                          display_name="Smith, John")
        users.create_user(session=session, username="dr.hopper", role=users.parse_role("radiologist"),
                          name=PersonName(family="Hopper", given="Grace", prefix="Dr.", degree="PhD"))
    add_study(factory, "NAME-1")
    report_id = add_report(factory, "NAME-1", {"findings": "Lungs: clear.", "impression": "Normal."})
    with session_scope(factory) as session:
        report = session.get_one(Report, report_id)
        smith = users.get_user(session=session, username="dr.smith")
        hopper = users.get_user(session=session, username="dr.hopper")
        assert smith is not None and hopper is not None
        reports.sign(session=session, report=report, kind=VersionKind.FINAL, user=smith, destinations=["ris"],
                     give_up_after=WEEK)
        reports.add_addendum(session=session, report=report, text="Compared with prior: stable.", user=hopper,
                             destinations=["ris"], give_up_after=WEEK)
    with session_scope(factory) as session:
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.version == 2))
        assert delivery_id is not None
        outgoing = outbox.outgoing(session=session, delivery_id=delivery_id)
    message = parse(build_oru(outgoing, OruHeader("RADSERVICE", "RADIOLOGY", "RIS", "HOSPITAL")))
    obr = message.first("OBR")
    assert obr is not None
    assert [obr.get(32, 1, n) for n in (1, 2, 3)] == ["dr.smith", "Smith", "John"]  # the original interpreter
    by_section = {o.get(3, 1): (o.get(16, 1), o.get(16, 2)) for o in message.all("OBX") if o.get(2) == "FT"}
    assert by_section["55107-7"] == ("dr.hopper", "Hopper")  # the addendum: its own signer
    assert {v for k, v in by_section.items() if k != "55107-7"} == {("dr.smith", "Smith")}
    ds = build_sr(outgoing, study_instance_uid="1.2.3.4")
    assert [str(o.VerifyingObserverName) for o in ds.VerifyingObserverSequence] == ["Smith^John",
                                                                                    "Hopper^Grace^^Dr.^PhD"]
