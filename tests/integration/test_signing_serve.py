"""The whole road through `radservice serve`: an order over MLLP, a report signed over HTTP, the
ORU^R01 at the RIS (python-hl7's server), the deliveries route and readiness."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from radservice.db.session import make_engine, make_sessionmaker
from tests.hl7_peer import RisClient, order, read_ack
from tests.ris_peer import RisPeer
from tests.support import add_report, free_port, radservice, serve, write_config

pytestmark = pytest.mark.integration


def test_a_report_signed_in_serve_reaches_the_ris(tmp_path: Path, db_url: str) -> None:
    hl7_port, ris_port = free_port(), free_port()
    config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, db_url=db_url,
                          extra=f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\nack_timeout_s = 2\n'
                                "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 0.2\nretry_max_s = 0.5\n"
                                "[llm]\nenabled = false\n")
    with RisPeer(ris_port) as ris, serve(config, tmp_path) as running:
        ready = httpx.get(running.base_url + "/readyz", timeout=5).json()
        assert ready["checks"]["outbox-ris"] == "ok", ready
        with RisClient(hl7_port) as client:
            assert read_ack(client.send(order("SRV-1", "SRV-ACC"))).code == "AA"
        engine = make_engine(db_url)
        report_id = add_report(make_sessionmaker(engine), "SRV-ACC", {"findings": "No change | stable.",
                                                                       "impression": "Stable."})
        engine.dispose()
        token = radservice("user", "add", "dr.srv", "--role", "radiologist", "--config", str(config),
                           cwd=tmp_path).stdout.split()[-1]
        http = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        signed = http.post(f"/api/v1/reports/{report_id}/sign", json={"status": "final"})
        assert signed.status_code == 200, signed.text
        (oru,) = ris.wait_for(1)
        deadline = time.monotonic() + 10
        while (rows := [r for r in http.get(f"/api/v1/reports/{report_id}/deliveries").json()
                        if r["destination"] == "ris"])[0]["status"] != "acked":
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert oru.field("OBR", 18) == "SRV-ACC" and oru.field("OBR", 25) == "F"
        assert oru.field("ORC", 2) == "P-SRV-ACC" and oru.field("PID", 3) == "MRN-T-1"
        assert oru.sections()["18782-3"] == "No change | stable."
        assert oru.field("MSH", 10) == rows[0]["message_id"]
        assert http.get("/api/v1/worklist").json()["items"] == []
        metrics = httpx.get(running.base_url + "/metrics", timeout=5).text
        assert 'radservice_outbox_deliveries_total{destination="ris",outcome="acked"} 1.0' in metrics
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as session:
        from sqlalchemy import select

        from radservice.audit.models import AuditEvent
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(report_id))).all()
    engine.dispose()
    assert "report.signed_final" in actions and "report.delivery_acked" in actions
    log = running.log()
    assert "outbox: ORU^R01 to the RIS at 127.0.0.1" in log and "SRV-ACC v1" in log
    # no report text or patient names in the log
    assert "stable" not in log.lower() and "SYNTH" not in log
