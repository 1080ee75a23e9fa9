"""Versions of a report reach the RIS once each and in version order, with two senders on one
PostgreSQL database, batches that outlast their lease, and a RIS that answers late (issue 26)."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from integrations.hl7.sender import RisSender
from radservice.config import OutboxSettings, RisSettings
from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker, session_scope
from radservice.outbox.flows import DeliveryLoop
from radservice.outbox.models import Delivery, DeliveryStatus
from radservice.reports import service as reports
from radservice.reports.models import Report, VersionKind
from radservice.users import service as users
from tests.conftest import PG_URL
from tests.ris_peer import RisPeer
from tests.support import add_report, add_study, free_port, fresh_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

STUDIES = 200
TEXT = {"findings": "Lungs: clear.", "impression": "No acute finding."}


@pytest.fixture
def pg() -> Iterator[sessionmaker[Session]]:
    with fresh_pg_database(PG_URL) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield make_sessionmaker(engine)
        engine.dispose()


def _three_versions_each(factory: sessionmaker[Session]) -> dict[str, tuple[str, int]]:
    """200 studies, each with a preliminary, a final and an addendum signed for the RIS; returns
    message control ID -> (accession, version)."""
    with session_scope(factory) as session:
        resident = users.create_user(session=session, username="u.res", role=users.parse_role("resident"))
        radiologist = users.create_user(session=session, username="u.rad", role=users.parse_role("radiologist"))
    report_ids = []
    for n in range(STUDIES):
        add_study(factory, f"ORD-{n:03d}")
        report_ids.append(add_report(factory, f"ORD-{n:03d}", TEXT))
    week = timedelta(days=7)
    with session_scope(factory) as session:
        for report_id in report_ids:
            report = session.get_one(Report, report_id)
            reports.sign(session=session, report=report, kind=VersionKind.PRELIMINARY, user=resident,
                         destinations=["ris"], give_up_after=week)
            reports.sign(session=session, report=report, kind=VersionKind.FINAL, user=radiologist,
                         destinations=["ris"], give_up_after=week)
            reports.add_addendum(session=session, report=report, text="Compared with prior: stable.",
                                 user=radiologist, destinations=["ris"], give_up_after=week)
    with session_scope(factory) as session:
        return {m: (a, v) for m, a, v in session.execute(
            select(Delivery.message_id, Delivery.accession_number, Delivery.version))}


def test_two_senders_deliver_every_version_once_and_in_order(pg: sessionmaker[Session]) -> None:
    messages = _three_versions_each(pg)
    assert len(messages) == 3 * STUDIES
    rng = random.Random(26)
    # Mostly quick ACKs, some late ones (a batch of them outlasts the lease), none near the timeout
    # (a timed-out message is sent again by design, with the same control ID).
    delay = lambda: 0.8 if rng.random() < 0.15 else rng.uniform(0.0, 0.01)  # noqa: E731
    port = free_port()
    ris_settings = RisSettings(host="127.0.0.1", port=port, ack_timeout_s=2.0, connect_timeout_s=0.2)
    settings = OutboxSettings(poll_interval_s=0.02, retry_initial_s=0.1, retry_max_s=0.5, lease_s=4.5)
    assert settings.lease_s > ris_settings.longest_send_s  # a lease the product's settings accept
    with RisPeer(port, delay=delay) as ris:
        loops = []
        for owner in ("sender-a", "sender-b"):
            sender = RisSender(ris_settings, sending_application="RADSERVICE", sending_facility="RADIOLOGY")
            loop = DeliveryLoop(sessions=pg, sender=sender, settings=settings, owner=owner)
            loop.batch = 20  # more than one lease covers at the slowest: the lease must be checked per send
            loops.append(loop)
        for loop in loops:
            loop.start()
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                with session_scope(pg) as session:
                    acked = session.scalar(select(func.count()).select_from(Delivery)
                                           .where(Delivery.status == DeliveryStatus.ACKED.value))
                if acked == len(messages):
                    break
                time.sleep(0.2)
        finally:
            for loop in loops:
                loop.join(10)
        received = [r.field("MSH", 10) for r in ris.received]
    assert acked == len(messages), f"{acked} of {len(messages)} acknowledged"
    counts: dict[str, int] = defaultdict(int)
    for message_id in received:
        counts[message_id] += 1
    assert {m for m, c in counts.items() if c > 1} == set(), "versions that reached the RIS more than once"
    assert set(counts) == set(messages)
    order: dict[str, list[int]] = defaultdict(list)
    for message_id in received:
        accession, version = messages[message_id]
        order[accession].append(version)
    out_of_order = {a: v for a, v in order.items() if v != sorted(v)}
    assert out_of_order == {}, f"versions out of order at the RIS: {list(out_of_order.items())[:5]}"
    assert all(v == [1, 2, 3] for v in order.values())
