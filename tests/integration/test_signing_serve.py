"""The whole road through `radservice serve`: an order over MLLP, a report signed over HTTP, the
ORU^R01 at the RIS (python-hl7's server) and the SR in the PACS (Orthanc), the deliveries route,
readiness, metrics, audit, and `radservice check` reaching both peers."""

from __future__ import annotations

import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from radservice.audit.models import AuditEvent
from radservice.db.session import make_engine, make_sessionmaker
from tests.hl7_peer import RisClient, order, read_ack
from tests.pacs_peer import MISSING, orthanc
from tests.ris_peer import RisPeer
from tests.support import add_report, free_port, radservice, serve, sign_report, write_config

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed")]


def test_a_report_signed_in_serve_reaches_the_ris_and_the_pacs(tmp_path: Path, db_url: str) -> None:
    hl7_port, ris_port = free_port(), free_port()
    with RisPeer(ris_port) as ris, orthanc(tmp_path / "orthanc") as pacs:
        config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port, db_url=db_url,
                              extra=f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\nack_timeout_s = 2\n'
                                    f'[pacs]\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\n'
                                    "[outbox]\npoll_interval_s = 0.2\nretry_initial_s = 0.2\nretry_max_s = 0.5\n"
                                    "[llm]\nenabled = false\n")
        checked = radservice("check", "--config", str(config), cwd=tmp_path)
        assert f"pacs: ok (C-ECHO to ORTHANC@127.0.0.1:{pacs.dicom_port} as RADSERVICE)" in checked.stdout, \
            checked.stdout
        assert f"ris: ok (MLLP connection to 127.0.0.1:{ris_port})" in checked.stdout
        with serve(config, tmp_path) as running:
            ready = httpx.get(running.base_url + "/readyz", timeout=5).json()
            assert ready["checks"]["outbox-ris"] == "ok" and ready["checks"]["dicom"] == "ok", ready
            # our DICOM listener answers dcmtk's echoscu (an independent SCU)
            dicom_port = tomllib.loads(config.read_text())["dicom"]["listen_port"]
            echo = subprocess.run(["echoscu", "-v", "-aec", "RADSERVICE", "127.0.0.1", str(dicom_port)],
                                  capture_output=True, text=True, timeout=30)
            assert echo.returncode == 0 and "Received Echo Response (Success)" in echo.stderr + echo.stdout, \
                echo.stderr
            with RisClient(hl7_port) as client:
                assert read_ack(client.send(order("SRV-1", "SRV-ACC"))).code == "AA"
            engine = make_engine(db_url)
            report_id = add_report(make_sessionmaker(engine), "SRV-ACC", {"findings": "No change | stable.",
                                                                           "impression": "Stable."})
            engine.dispose()
            token = radservice("user", "add", "dr.srv", "--role", "radiologist", "--config", str(config),
                               cwd=tmp_path).stdout.split()[-1]
            http = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            signed = sign_report(http, report_id, "final")
            assert signed.status_code == 200, signed.text
            (oru,) = ris.wait_for(1)
            deadline = time.monotonic() + 15
            while True:
                rows = http.get(f"/api/v1/reports/{report_id}/deliveries").json()
                if all(r["status"] == "acked" for r in rows):
                    break
                assert time.monotonic() < deadline, rows
                time.sleep(0.05)
            assert sorted(r["destination"] for r in rows) == ["pacs", "ris"]
            (ris_row,) = [r for r in rows if r["destination"] == "ris"]
            assert oru.field("OBR", 18) == "SRV-ACC" and oru.field("OBR", 25) == "F"
            assert oru.field("ORC", 2) == "P-SRV-ACC" and oru.field("PID", 3) == "MRN-T-1"
            assert oru.sections()["18782-3"] == "No change | stable."
            assert oru.field("MSH", 10) == ris_row["message_id"]
            (instance,) = pacs.instances()
            sr = pacs.dataset(instance)
            assert sr.AccessionNumber == "SRV-ACC"
            assert sr.SOPInstanceUID == signed.json()["versions"][0]["sr_instance_uid"]
            assert http.get("/api/v1/worklist").json()["items"] == []
            metrics = httpx.get(running.base_url + "/metrics", timeout=5).text
            for destination in ("ris", "pacs"):
                assert f'radservice_outbox_deliveries_total{{destination="{destination}",outcome="acked"}} 1.0' \
                    in metrics
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(report_id))).all()
    engine.dispose()
    assert "report.signed_final" in actions and actions.count("report.delivery_acked") == 2
    log = running.log()
    assert "outbox: ORU^R01 to the RIS at 127.0.0.1" in log and "SRV-ACC v1" in log
    assert "DICOM listening on 127.0.0.1:" in log and "outbox: SR C-STORE to ORTHANC" in log
    # no report text or patient names in the log
    assert "stable" not in log.lower() and "SYNTH" not in log
