"""The service under concurrent use: readers polling, editors racing, dictations live and uploaded,
an LLM call in flight, all at once against one `radservice serve`.

    .venv/bin/python bench/concurrency.py [--seconds 120] [--pg-url postgresql+psycopg://postgres@127.0.0.1/test]

For --seconds (default 120), on SQLite and then on PostgreSQL:

- 20 readers poll, each once a second: the worklist, then a study page (GET /studies/{accession}
  and its report), alternately;
- 5 editors each work their own study and two share one: read the report, PATCH a section with
  the revision read, and now and then sign it final with the revision of the text they last
  saw (a shared study sees stale edits and signatures: 409 is the right answer there);
- 2 live dictations stream a fixture recording over the WebSocket, in real time, again and
  again; 2 uploaders post a fixture recording again and again;
- 1 client keeps an LLM call in flight (suggest-impression; the Ollama stand-in answers after
  5 s).

One worker process runs `tiny.en` for both passes (a lighter load than production's base; the
point is the API under concurrent use). Printed: responses by status (any 500 is a failure),
lost updates (a signed version whose text is not the text its signer last saw, from the
signer's own read or PATCH response), and p50 / p95 / p99 of the reads.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from radservice.db.session import make_engine, make_sessionmaker  # noqa: E402
from radservice.reports.models import Report, ReportVersion  # noqa: E402
from tests.hl7_peer import RisClient, order, read_ack  # noqa: E402
from tests.ollama_standin import Slow, ollama_standin  # noqa: E402
from tests.support import add_report, free_port, fresh_pg_database, radservice, serve, write_config  # noqa: E402

AUDIO = REPO / "fixtures" / "audio"
READERS, EDITORS, LIVE, UPLOADS = 20, 5, 2, 2


class Tally:
    """Responses by status and read latencies, from every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter[str] = Counter()
        self.reads: dict[str, list[float]] = {"worklist": [], "study": [], "report": []}
        self.signed: list[tuple[int, int, dict[str, str]]] = []  # report, version, text the signer saw
        self.errors: list[str] = []

    def count(self, what: str, response: httpx.Response) -> None:
        with self.lock:
            self.status[f"{what} {response.status_code}"] += 1
            if response.status_code >= 500:
                self.errors.append(f"{what}: {response.status_code} {response.text[:200]}")

    def read(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.reads[kind].append(seconds)


def _timed(tally: Tally, kind: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    started = time.perf_counter()
    response = call()
    tally.read(kind, time.perf_counter() - started)
    tally.count(f"GET {kind}", response)
    return response


def reader(base: str, token: str, accessions: list[str], tally: Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        turn = 0
        # independent clients: each starts at its own moment and keeps its own pace (in lock step,
        # 20 readers would ask for the worklist in the same millisecond every other second)
        stop.wait(random.uniform(0, 2.0))
        while not stop.is_set():
            if turn % 2 == 0:
                _timed(tally, "worklist", lambda: http.get("/api/v1/worklist"))
            else:
                study_url = f"/api/v1/studies/{random.choice(accessions)}"
                study = _timed(tally, "study", lambda: http.get(study_url))  # noqa: B023 (called at once)
                report_id = study.json().get("report_id") if study.status_code == 200 else None
                if report_id:
                    report_url = f"/api/v1/reports/{report_id}"
                    _timed(tally, "report", lambda: http.get(report_url))  # noqa: B023 (called at once)
            turn += 1
            stop.wait(random.uniform(0.9, 1.1))


def editor(base: str, token: str, report_ids: list[int], tally: Tally, stop: threading.Event, n: int) -> None:
    """Edit and now and then sign; every signature records the text this editor last saw."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        edits = 0
        while not stop.is_set() and report_ids:
            report_id = report_ids[0]
            read = http.get(f"/api/v1/reports/{report_id}")
            tally.count("GET report (editor)", read)
            body = read.json()
            if body["status"] != "draft":
                report_ids.pop(0)  # signed (by us or the other editor of a shared study): the next
                continue
            seen = body
            edits += 1
            edited = http.patch(f"/api/v1/reports/{report_id}", json={
                "sections": {"impression": f"Impression {n}.{edits}: no acute finding."},
                "revision": body["revision"]})
            tally.count("PATCH report", edited)
            if edited.status_code == 200:
                seen = edited.json()
            if edits % 5 == 0:
                signed = http.post(f"/api/v1/reports/{report_id}/sign",
                                   json={"status": "final", "revision": seen["revision"]})
                tally.count("POST sign", signed)
                if signed.status_code == 200:
                    with tally.lock:
                        tally.signed.append((report_id, signed.json()["version"], dict(seen["sections"])))
            stop.wait(0.2)


def live(base: str, token: str, accession: str, tally: Tally, stop: threading.Event) -> None:
    data = (AUDIO / "ct_chest_pe.webm").read_bytes()
    url = base.replace("http", "ws") + f"/api/v1/studies/{accession}/dictations/stream?section=findings&token={token}"
    while not stop.is_set():
        try:
            with connect(url, open_timeout=10, close_timeout=5) as ws:
                ws.recv(timeout=10)
                chunk = len(data) // 60 + 1  # the 31 s recording in 60 chunks, paced at 2x real time
                for i in range(0, len(data), chunk):
                    if stop.is_set():
                        break
                    ws.send(data[i:i + chunk])
                    time.sleep(0.26)
                ws.send("stop")
                final = ""
                while '"final"' not in final:  # partials may still come first
                    final = str(ws.recv(timeout=120))
            with tally.lock:
                tally.status["WS live final" + (" (pending)" if '"pending"' in final else "")] += 1
        except Exception as exc:  # a dropped stream is counted, not fatal to the bench
            with tally.lock:
                tally.status[f"WS live {type(exc).__name__}"] += 1


def uploader(base: str, token: str, accession: str, tally: Tally, stop: threading.Event) -> None:
    data = (AUDIO / "ct_head_noncontrast.wav").read_bytes()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        while not stop.is_set():
            posted = http.post(f"/api/v1/studies/{accession}/dictations", data={"section": "findings"},
                               files={"audio": ("d.wav", data, "audio/wav")})
            tally.count("POST upload", posted)
            stop.wait(2.0)


def llm_caller(base: str, token: str, report_id: int, tally: Tally, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        while not stop.is_set():
            tally.count("POST suggest", http.post(f"/api/v1/reports/{report_id}/suggest-impression"))


def _served_within(metrics: str, route: str, seconds: float) -> tuple[int, int] | None:
    """(answered within ``seconds``, all) for GET ``route`` from the API's latency histogram."""
    within = total = None
    for line in metrics.splitlines():
        if not line.startswith("radservice_http_request_duration_seconds_") or f'route="{route}"' not in line \
                or 'method="GET"' not in line:
            continue
        if "_bucket" in line and f'le="{seconds}"' in line:
            within = int(float(line.rsplit(" ", 1)[1]))
        elif "_count" in line:
            total = int(float(line.rsplit(" ", 1)[1]))
    return (within, total) if within is not None and total else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


def run(db_url: str | None, label: str, seconds: float, *, target: bool = False, whisper_threads: int = 0) -> bool:
    """The mixed load; ``target``: only the readers, one upload loop and the LLM call (the issue's
    target: worklist p99 under 100 ms on SQLite while an LLM call and an upload are running)."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        url = db_url or f"sqlite:///{work}/rs.db"
        hl7_port = free_port()
        standin = stack.enter_context(ollama_standin())
        standin.script += [Slow(5.0, "Impression: no acute finding.")] * 1000
        config = write_config(work, port=free_port(), hl7_port=hl7_port, db_url=url, workers=1,
                              worker_extra="poll_interval_s = 0.1",
                              extra=f'[whisper]\nmodel = "tiny.en"\nlive_model = "tiny.en"\n'
                                    f'cpu_threads = {whisper_threads}\n'
                                    f'vocabulary_dir = "{REPO}/config/vocabulary"\n'
                                    f'[llm]\nurl = "{standin.url}"\nprompts_dir = "{REPO}/config/prompts"\n')
        running = stack.enter_context(serve(config, work, wait_s=120))
        studies = [f"CC-{n:03d}" for n in range(60)]
        with RisClient(hl7_port) as ris:
            for n, accession in enumerate(studies):
                assert read_ack(ris.send(order(f"CC{n}", accession, procedure="CT CHEST"))).code == "AA"
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        editing = studies[:40]
        report_ids = [add_report(sessions, a, {"findings": "Lungs: clear.", "impression": "Normal."})
                      for a in editing]
        token = radservice("user", "add", "dr.load", "--role", "radiologist", "--config", str(config),
                           cwd=work).stdout.split()[-1]
        tally, stop = Tally(), threading.Event()
        base = running.base_url
        # each editor has its own reports; editors 0 and 1 also share the first one
        queues = [[report_ids[0]] + report_ids[1 + k::EDITORS] if k < 2 else report_ids[1 + k::EDITORS]
                  for k in range(EDITORS)]
        threads = [threading.Thread(target=reader, args=(base, token, studies, tally, stop)) for _ in range(READERS)]
        threads += [threading.Thread(target=editor, args=(base, token, queues[k], tally, stop, k))
                    for k in range(0 if target else EDITORS)]
        threads += [threading.Thread(target=live, args=(base, token, studies[50 + k], tally, stop))
                    for k in range(0 if target else LIVE)]
        threads += [threading.Thread(target=uploader, args=(base, token, studies[55 + k], tally, stop))
                    for k in range(1 if target else UPLOADS)]
        threads.append(threading.Thread(target=llm_caller, args=(base, token, report_ids[-1], tally, stop)))
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        served = httpx.get(f"{base}/metrics", timeout=10).text  # the server's own view, before the stop
        stop.set()
        for thread in threads:
            thread.join(180)
        lost = []
        with sessions() as session:
            for report_id, version, seen in tally.signed:
                row = session.scalars(select(ReportVersion).where(ReportVersion.report_id == report_id,
                                                                  ReportVersion.version == version)).one()
                if {k: v for k, v in row.sections.items() if k in seen} != seen:
                    lost.append(report_id)
            signed_reports = len(session.scalars(select(Report.id).where(Report.status == "final")).all())
        engine.dispose()
        log = running.log()
    load = (f"{READERS} readers, 1 upload loop, 1 LLM call in flight" if target
            else f"{READERS} readers, {EDITORS} editors, {LIVE} live, {UPLOADS} uploads, 1 LLM call in flight")
    print(f"\n## {label}, {seconds:.0f} s, whisper.cpu_threads = {whisper_threads}: {load}")
    for key, count in sorted(tally.status.items()):
        print(f"    {key:28} {count:6d}")
    fivehundreds = sum(c for k, c in tally.status.items() if k.split()[-1].startswith("5"))
    print(f"    responses 5xx: {fivehundreds}; signed versions {len(tally.signed)} ({signed_reports} reports final); "
          f"lost updates: {len(lost)}; tracebacks in the log: {log.count('Traceback')}")
    for kind, values in tally.reads.items():
        if values:
            print(f"    GET {kind:10} n={len(values):5d}  p50 {_pct(values, 0.5):7.1f} ms"
                  f"  p95 {_pct(values, 0.95):7.1f} ms  p99 {_pct(values, 0.99):7.1f} ms"
                  f"  max {max(values) * 1000:7.1f} ms"
                  f"  mean {statistics.mean(values) * 1000:6.1f} ms")
    within = _served_within(served, "/api/v1/worklist", 0.1)
    if within:
        print(f"    server side (its /metrics histogram): {within[0]} of {within[1]} GET worklist answered "
              f"within 100 ms ({100 * within[0] / within[1]:.2f} %)")
    for error in tally.errors[:5]:
        print(f"    {error}")
    return fivehundreds == 0 and not lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--target", action="store_true",
                        help="only readers, one upload loop and the LLM call (the issue's latency target)")
    parser.add_argument("--whisper-threads", type=int, default=0,
                        help="whisper.cpu_threads of the worker (0: CTranslate2 chooses, all cores)")
    args = parser.parse_args()
    ok = True
    if args.only != "postgresql":
        ok &= run(None, "SQLite", args.seconds, target=args.target, whisper_threads=args.whisper_threads)
    if args.only != "sqlite":
        with fresh_pg_database(args.pg_url, prefix="rs_bench") as url:
            ok &= run(url, "PostgreSQL", args.seconds, target=args.target, whisper_threads=args.whisper_threads)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
