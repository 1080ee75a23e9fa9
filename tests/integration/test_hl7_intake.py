"""Orders from a RIS over a real MLLP connection into the worklist, read back through the HTTP API.

`radservice serve` runs as a subprocess on SQLite and on PostgreSQL; python-hl7's MLLP client
plays the RIS. Every fixture gets the ACK the manifest names, and after every malformed one the
listener still accepts a valid order.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker
from tests.hl7_peer import FIXTURES, MANIFEST, RisClient, order, read_ack
from tests.support import ServeProcess, free_port, make_user, serve, write_config

pytestmark = pytest.mark.integration


@dataclass
class Service:
    proc: ServeProcess
    mllp_port: int
    token: str

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.proc.base_url + path, params=params,  # type: ignore[arg-type]
                         headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


@pytest.fixture
def service(tmp_path: Path, db_url: str) -> Iterator[Service]:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    token = make_user(make_sessionmaker(engine), "dr.intake", "radiologist")
    engine.dispose()
    mllp_port = free_port()
    config = write_config(tmp_path, port=free_port(), db_url=db_url, hl7_port=mllp_port)
    with serve(config, tmp_path) as proc:
        yield Service(proc, mllp_port, token)
        assert proc.stop() == 0


def control_id_of(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[9].decode()


def studies_by_key(service: Service, **params: object) -> dict[tuple[str, str], dict[str, object]]:
    response = service.get("/api/v1/worklist", limit=500, **params)
    assert response.status_code == 200, response.text
    return {(row["accession_number"], row["accession_issuer"]): row for row in response.json()["items"]}


def test_every_fixture_gets_its_ack_and_the_worklist_shows_the_orders(service: Service) -> None:
    with RisClient(service.mllp_port) as ris:  # one connection for every valid message, as a RIS does
        for entry in MANIFEST["valid"]:
            payload = (FIXTURES / entry["file"]).read_bytes()
            ack = read_ack(ris.send(payload))
            assert (entry["file"], ack.code) == (entry["file"], "AA"), ack.raw
            assert ack.control_id == control_id_of(payload)

    rows = studies_by_key(service)
    assert ("ACC1002", "") not in rows  # cancelled: off the worklist
    cancelled = studies_by_key(service, status="cancelled")
    assert cancelled[("ACC1002", "")]["status"] == "cancelled"

    first = rows[("ACC1001", "")]
    assert first["priority"] == "S"  # the XO made it STAT
    assert first["procedure_code"] == "CT.CHEST.W"
    assert first["procedure_text"] == "CT Chest with contrast"
    assert first["study_instance_uid"] == "1.2.826.0.1.3680043.10.1234.1001"
    assert first["reason"] == "Suspected pulmonary embolism"

    assert rows[("ACC1003", "")]["patient"]["given_name"] == "GAMMA QUINN"  # ADT^A08
    assert rows[("ACC1003", "")]["patient"]["birth_date"] == "1990-07-08"
    assert rows[("ACC1003", "")]["patient"]["family_name"] == "O'BRIEN-TEST"
    utf8 = rows[("ACC1004", "")]
    assert (utf8["patient"]["family_name"], utf8["patient"]["given_name"]) == ("MÜLLER-PRÜFUNG", "ZOË")
    assert utf8["reason"] == "Dyspnoe, Fieber 38,5 °C"
    latin1 = rows[("ACC1005", "")]["patient"]
    assert (latin1["family_name"], latin1["given_name"]) == ("GÓMEZ-PRUEBA", "JOSÉ")

    omi = rows[("ACC1006", "CITYHOSP")]
    assert (omi["priority"], omi["modality"]) == ("S", "CT")
    assert omi["study_instance_uid"] == "1.2.826.0.1.3680043.10.1234.1006"

    escaped = rows[("ACC1007", "")]
    assert escaped["patient"]["family_name"] == "SMITH&JONES"
    assert escaped["patient"]["given_name"] == "EPSILON ^ ZETA"
    assert escaped["procedure_text"] == "XR KNEE 3 VIEWS | BILATERAL"
    assert escaped["reason"] == "Fall from ladder.\nPain left knee \\ swelling"

    assert rows[("ACC1009", "")]["patient"]["patient_id"] == "MRN400004"  # moved by ADT^A40
    # search follows demographics updates and merges
    assert list(studies_by_key(service, q="quinn")) == [("ACC1003", "")]
    assert set(studies_by_key(service, q="müller-prüfung")) == {("ACC1004", ""), ("ACC1009", "")}
    assert rows[("FL-2001", "SMALLRIS")]["modality"] == "DX"
    assert (rows[("ACC1008", "")]["priority"], rows[("ACC1008", "")]["modality"]) == ("A", "MG")
    assert ("ACC1001", "SITEB") in rows

    # STAT first, then ASAP, then routine
    order_of_priorities = [row["priority"] for row in service.get("/api/v1/worklist").json()["items"]]
    assert order_of_priorities == sorted(order_of_priorities, key="SAR".index)
    assert order_of_priorities[0] == "S"

    # the study view: one accession of two issuers needs the issuer
    assert service.get("/api/v1/studies/ACC1001").status_code == 409
    detail = service.get("/api/v1/studies/ACC1001", issuer="SITEB")
    assert detail.status_code == 200
    assert detail.json()["patient"]["patient_id"] == "MRN-B-0015"
    one = service.get("/api/v1/studies/ACC1006").json()
    assert one["order"]["requested_procedure_id"] == "RP1006"
    assert one["order"]["scheduled_step_id"] == "SPS1006"
    assert one["order"]["ordering_physician"] == "CHASE, ROBERT"
    assert service.get("/api/v1/studies/NOPE").status_code == 404


def test_resent_control_id_is_acknowledged_again_but_applied_once(service: Service) -> None:
    with RisClient(service.mllp_port) as ris:
        assert read_ack(ris.send(order("DUP-1", "ACC-DUP"))).code == "AA"
        # the same message again (a resend): acknowledged, not applied twice
        again = read_ack(ris.send(order("DUP-1", "ACC-DUP", priority="R")))
        assert (again.code, again.control_id) == ("AA", "DUP-1")
        bad = read_ack(ris.send(order("DUP-2", "ACC-UNKNOWN", control="CA")))
        assert (bad.code, bad.error_code) == ("AE", "204")
        bad_again = read_ack(ris.send(order("DUP-2", "ACC-UNKNOWN", control="CA")))  # evaluated again
        assert (bad_again.code, bad_again.error_code) == ("AE", "204")
    assert studies_by_key(service)[("ACC-DUP", "")]["status"] == "scheduled"
    with RisClient(service.mllp_port) as ris:
        # a RIS whose counter was reset: the old control ID with other content is a new message
        cancel = read_ack(ris.send(order("DUP-1", "ACC-DUP", control="CA")))
        assert (cancel.code, cancel.control_id) == ("AA", "DUP-1")
    assert ("ACC-DUP", "") in studies_by_key(service, status="cancelled")


def test_malformed_messages_are_refused_and_the_listener_lives_on(service: Service) -> None:
    for number, entry in enumerate(MANIFEST["malformed"]):
        payload = (FIXTURES / entry["file"]).read_bytes()
        with RisClient(service.mllp_port) as ris:
            ack = read_ack(ris.send(payload))
            assert (entry["file"], ack.code, ack.error_code) == (entry["file"], entry["ack"], str(entry["error_code"]))
            assert "Traceback" not in ack.raw and "Error" not in ack.raw.split("ERR")[0]
            # the same connection still works after a refusal
            follow = read_ack(ris.send(order(f"AFTER-{number}", f"ACC-AFTER-{number}")))
            assert follow.code == "AA"
        # and so does a new connection
        with RisClient(service.mllp_port) as ris:
            assert read_ack(ris.send(order(f"NEXT-{number}", f"ACC-NEXT-{number}"))).code == "AA"
    on_list = studies_by_key(service)
    assert all(("BADACC" not in acc) for acc, _ in on_list)
    assert len([acc for acc, _ in on_list if acc.startswith("ACC-AFTER-")]) == len(MANIFEST["malformed"])


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_oversize_message_closes_only_its_connection(service: Service) -> None:
    with RisClient(service.mllp_port) as steady:
        assert read_ack(steady.send(order("BIG-0", "ACC-BIG-0"))).code == "AA"
        with socket.create_connection(("127.0.0.1", service.mllp_port), timeout=10) as big:
            header = b"\x0bMSH|^~\\&|R|H|RS|R|20261124||ORM^O01|BIG-1|P|2.3.1\rNTE|1||"
            try:
                big.sendall(header + b"x" * (1_048_576 + 10))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _closed(big)
        # the other connection never noticed
        assert read_ack(steady.send(order("BIG-2", "ACC-BIG-2"))).code == "AA"
    assert ("BIG-1" not in str(studies_by_key(service)))


def test_metrics_count_messages_by_type_and_ack(service: Service) -> None:
    with RisClient(service.mllp_port) as ris:
        ris.send(order("M-1", "ACC-M-1"))
        ris.send((FIXTURES / "malformed/07_wrong_message_type_oru.hl7").read_bytes())
    deadline = time.monotonic() + 5
    while True:
        text = httpx.get(service.proc.base_url + "/metrics", timeout=5).text
        if 'radservice_hl7_messages_total{ack_code="AR",message_type="ORU^R01"} 1.0' in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert 'radservice_hl7_messages_total{ack_code="AA",message_type="ORM^O01"} 1.0' in text
    ready = httpx.get(service.proc.base_url + "/readyz", timeout=5).json()
    assert ready["checks"] == {"database": "ok", "hl7": "ok", "dicom": "ok", "outbox-ris": "ok", "outbox-pacs": "ok"}
