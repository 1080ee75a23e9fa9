"""Sign-to-acknowledgement turnaround: from the sign request to the RIS's ACK of the ORU^R01 and
to the PACS's C-STORE success of the SR.

`radservice serve` runs on SQLite (and on PostgreSQL with --pg-url) with its outbox pointed at
python-hl7's asyncio MLLP server playing the RIS (tests/ris_peer.py, in this process) and at a
real Orthanc (tests/pacs_peer.py). Each report is signed final over HTTP and both
acknowledgements are awaited before the next. The ORU's time is read on the RIS side (this
process's clock); the C-STORE's is the outbox row's `acked_at`, written when Orthanc's success
status arrived (wall clock of the same machine).

    .venv/bin/python bench/turnaround.py [--reports 100] [--pg-url postgresql+psycopg://postgres@127.0.0.1/test]

Prints median and p95 of: the sign request alone, sign request to ORU ACK, to both acknowledgements.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402

from radservice.db.session import make_engine, make_sessionmaker  # noqa: E402
from radservice.outbox.models import Delivery  # noqa: E402
from tests.hl7_peer import RisClient, order, read_ack  # noqa: E402
from tests.pacs_peer import orthanc  # noqa: E402
from tests.ris_peer import RisPeer  # noqa: E402
from tests.support import add_report, free_port, fresh_pg_database, radservice, serve, write_config  # noqa: E402


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def run(db_url: str | None, label: str, reports: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        hl7_port, ris_port = free_port(), free_port()
        url = db_url or f"sqlite:///{work}/rs.db"
        ris = stack.enter_context(RisPeer(ris_port))
        pacs = stack.enter_context(orthanc(work / "orthanc"))
        config = write_config(work, port=free_port(), hl7_port=hl7_port, db_url=url,
                              extra=f'[ris]\nhost = "127.0.0.1"\nport = {ris_port}\n'
                                    f'[pacs]\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\n[llm]\nenabled = false\n')
        running = stack.enter_context(serve(config, work))
        accessions = [f"TAT-{n:04d}" for n in range(reports)]
        with RisClient(hl7_port) as client:
            for n, accession in enumerate(accessions):
                assert read_ack(client.send(order(f"TAT{n}", accession))).code == "AA"
        engine = make_engine(url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        report_ids = [add_report(sessions, a, {"findings": "Lungs: clear.\nPleura: no effusion.",
                                               "impression": "No acute finding."}) for a in accessions]
        token = radservice("user", "add", "dr.bench", "--role", "radiologist", "--config", str(config),
                           cwd=work).stdout.split()[-1]
        http = stack.enter_context(httpx.Client(base_url=running.base_url, timeout=10,
                                                headers={"Authorization": f"Bearer {token}"}))
        sign_ms, ack_ms, both_ms = [], [], []
        for n, report_id in enumerate(report_ids):
            revision = http.get(f"/api/v1/reports/{report_id}").json()["revision"]  # what the signer read
            wall, started = time.time(), time.perf_counter()
            response = http.post(f"/api/v1/reports/{report_id}/sign", json={"status": "final", "revision": revision})
            answered = time.perf_counter()
            assert response.status_code == 200, response.text
            deadline = started + 10
            while True:
                with sessions() as session:
                    acked = [row.acked_at for row in session.scalars(
                        select(Delivery).where(Delivery.report_id == report_id))]
                if len(acked) == 2 and all(acked):
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit(f"report {report_id} not acknowledged by both peers within 10 s")
                time.sleep(0.002)
            got = ris.received[n]
            assert got.field("OBR", 18) == accessions[n] and got.acked_at is not None
            sign_ms.append((answered - started) * 1000)
            ack_ms.append((got.acked_at - started) * 1000)
            both_ms.append((max(a.timestamp() for a in acked if a) - wall) * 1000)
        assert len(pacs.instances()) == reports
        print(f"{label}: {reports} reports signed final, one after another")
        for name, values in (("sign request (HTTP 200)", sign_ms), ("sign request -> ORU ACK written", ack_ms),
                             ("sign request -> ORU ACK and C-STORE", both_ms)):
            print(f"  {name:37} median {statistics.median(values):6.1f} ms   p95 {_p95(values):6.1f} ms   "
                  f"max {max(values):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--pg-url", help="also measure on PostgreSQL (a fresh database is made beside this one)")
    args = parser.parse_args()
    run(None, "SQLite", args.reports)
    if args.pg_url:
        with fresh_pg_database(args.pg_url, prefix="rs_bench") as url:
            run(url, "PostgreSQL", args.reports)


if __name__ == "__main__":
    main()
