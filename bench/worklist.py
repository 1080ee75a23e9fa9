"""Worklist query latency with 100,000 studies in PostgreSQL (and SQLite for comparison).

Fills a fresh database with synthetic studies (most already reported, as in a department's
history), then times the worklist queries radiologists run: the default list, each filter,
free-text search and a deep page. Both the domain query and the whole HTTP request (token
check, audit row, JSON) are timed.

    .venv/bin/python bench/worklist.py [--studies 100000] [--repeat 200] [--backend postgresql|sqlite|both]

Prints p50 / p95 / p99 in milliseconds per query kind.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, insert, text  # noqa: E402

from radservice.api.app import create_app  # noqa: E402
from radservice.config import Settings  # noqa: E402
from radservice.db import migrate  # noqa: E402
from radservice.db.base import Base  # noqa: E402
from radservice.db.session import make_engine, make_sessionmaker, session_scope  # noqa: E402
from radservice.worklist import service as worklist  # noqa: E402
from radservice.worklist.service import search_text  # noqa: E402
from tests.support import fresh_pg_database, make_user  # noqa: E402

MODALITIES = ["CT"] * 30 + ["MR"] * 20 + ["CR"] * 25 + ["US"] * 15 + ["MG"] * 5 + ["NM"] * 5
STATUS = ["final"] * 80 + ["cancelled"] * 5 + ["scheduled"] * 10 + ["in_progress"] * 2 + ["dictated"] * 2 + [
    "preliminary"]
FAMILIES = ["SYNTH", "TESTER", "SAMPLE", "EXEMPLAR", "PLACEHOLDER", "MÜLLER", "O'NEIL", "GÓMEZ", "NGUYEN", "OKAFOR"]
PROCEDURES = ["CT CHEST", "CT HEAD", "MR BRAIN", "MR KNEE", "XR CHEST", "US ABDOMEN", "MAMMO SCREEN", "BONE SCAN"]


def fill(engine: Engine, studies: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    patients = max(studies // 3, 1)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        people = [
            {"patient_id": f"MRN{i:07d}", "issuer": "BENCH", "family_name": f"{rng.choice(FAMILIES)}{i % 997}",
             "given_name": "TEST", "birth_date": date(1940, 1, 1) + timedelta(days=rng.randrange(25000)),
             "sex": rng.choice("MF"), "created_at": now, "updated_at": now}
            for i in range(patients)
        ]
        conn.execute(insert(Base.metadata.tables["patients"]), people)
        batch = []
        for i in range(studies):
            priority = rng.choices("SAR", weights=[5, 10, 85])[0]
            patient = rng.randrange(patients)
            procedure = rng.choice(PROCEDURES)
            person = people[patient]
            batch.append({
                "accession_number": f"BA{i:08d}", "accession_issuer": "", "patient_id": 1 + patient,
                "status": rng.choice(STATUS), "modality": rng.choice(MODALITIES),
                "procedure_text": procedure, "procedure_code": "", "priority": priority,
                "search_text": search_text(str(person["family_name"]), str(person["given_name"]),
                                           str(person["patient_id"]), f"BA{i:08d}", procedure),
                "priority_rank": "SAR".index(priority), "order_status": "", "placer_order_number": f"P{i}",
                "filler_order_number": f"F{i}", "requested_procedure_id": "", "scheduled_step_id": "",
                "reason": "", "ordering_physician": "", "study_instance_uid": None,
                "ordered_at": t0 + timedelta(minutes=i * 10 + rng.randrange(10)),
                "created_at": now, "updated_at": now,
            })
            if len(batch) == 10_000:
                conn.execute(insert(Base.metadata.tables["studies"]), batch)
                batch = []
        if batch:
            conn.execute(insert(Base.metadata.tables["studies"]), batch)
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))


QUERIES: dict[str, dict[str, object]] = {
    "default (awaiting report)": {},
    "status=scheduled": {"status": "scheduled"},
    "modality=CT": {"modality": "CT"},
    "priority=S": {"priority": "S"},
    "q=name fragment": {"q": "müller12"},
    "q=accession (reported)": {"q": "BA00012345"},
    "q=procedure, many hits": {"q": "chest"},
    "page at offset 2000": {"offset": 2000},
}


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda p: ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]  # noqa: E731
    return statistics.median(ordered), pick(0.95), pick(0.99)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    for _ in range(5):
        fn()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    if backend == "postgresql":
        with fresh_pg_database(pg_url, prefix="rs_bench") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"


def run(backend: str, url: str, studies: int, repeat: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    started = time.perf_counter()
    fill(engine, studies)
    print(f"\n## {backend}: {studies} studies loaded in {time.perf_counter() - started:.1f}s")
    factory = make_sessionmaker(engine)
    token = make_user(factory, "bench", "radiologist")
    client = TestClient(create_app(Settings(), engine))
    headers = {"Authorization": f"Bearer {token}"}
    print(f"{'query':28} {'domain p50/p95/p99 ms':>24} {'HTTP p50/p95/p99 ms':>24}")
    for name, params in QUERIES.items():
        flt = worklist.WorklistFilter(
            status=[str(params["status"])] if "status" in params else [],
            modality=[str(params["modality"])] if "modality" in params else [],
            priority=[str(params["priority"])] if "priority" in params else [],
            q=str(params.get("q", "")),
        )
        offset = int(params.get("offset", 0))  # type: ignore[call-overload]

        def domain(flt: worklist.WorklistFilter = flt, offset: int = offset) -> object:
            with session_scope(factory) as session:
                return worklist.list_worklist(session=session, flt=flt, limit=50, offset=offset)

        def http(params: dict[str, object] = params) -> object:
            response = client.get("/api/v1/worklist", params=params, headers=headers)  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            return response

        d = percentiles(timed(domain, repeat))
        h = percentiles(timed(http, repeat))
        print(f"{name:28} {d[0]:7.1f} {d[1]:7.1f} {d[2]:8.1f} {h[0]:7.1f} {h[1]:7.1f} {h[2]:8.1f}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("RADSERVICE_TEST_PG_URL",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with database(backend, args.pg_url) as url:
            run(backend, url, args.studies, args.repeat)


if __name__ == "__main__":
    main()
