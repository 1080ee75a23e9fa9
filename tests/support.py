"""Helpers shared by the tests: free ports and a `radservice serve` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from integrations.loopback import free_port  # noqa: F401 - tests import it from here
from radservice.worklist.intake import OrderControl, OrderData, PatientData, Priority


def radservice(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 120, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the radservice CLI in a child process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "radservice.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd,
        input=input_text,
    )


def wait_until_up(proc: subprocess.Popen[str] | subprocess.Popen[bytes], url: str, *, what: str, wait_s: float,
                  log: Callable[[], str], verify: Any = True) -> None:
    """Wait until ``url`` answers 200; fail with ``log()`` when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log()}")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not up after {wait_s}s:\n{log()}")
        time.sleep(0.1)


def wait_job(client: Any, job_id: int, timeout: float = 120) -> dict[str, Any]:
    """The job once it is done or failed (``client``: an httpx client with a token)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


class ServeProcess:
    """A running `radservice serve` and where it listens."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str, log_path: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextmanager
def serve(config_path: Path, workdir: Path, *, env: dict[str, str] | None = None,
          wait_s: float = 60) -> Iterator[ServeProcess]:
    """Start `radservice serve --config FILE`, wait for /healthz, stop it with SIGTERM after."""
    import tomllib

    server = tomllib.loads(config_path.read_text())["server"]
    port = server["port"]
    # HTTPS (server.tls_cert): the test's own CA is not ours to know here; reachability only
    scheme = "https" if server.get("tls_cert") else "http"
    log_path = workdir / "serve.log"
    log_fh = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "radservice.cli", "serve", "--config", str(config_path)],
        stdout=log_fh, stderr=subprocess.STDOUT, text=True, cwd=workdir,
        env={**os.environ, **(env or {})},
    )
    running = ServeProcess(proc, f"{scheme}://127.0.0.1:{port}", log_path)
    try:
        wait_until_up(proc, running.base_url + "/healthz", what="serve", wait_s=wait_s, log=running.log,
                      verify=scheme == "http")
        yield running
    finally:
        # as its docstring says: SIGTERM, so serve stops its workers (a killed serve leaves them
        # to notice on their own, still loading a model on the CPU the next test needs)
        try:
            running.stop(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log_fh.close()


def make_user(factory: sessionmaker[Session], username: str, role: str, *, ttl_hours: int = 24) -> str:
    """Create a user with a token through the domain service; return the token."""
    from radservice.db.session import session_scope
    from radservice.users import service as users

    with session_scope(factory) as session:
        user = users.create_user(session=session, username=username, role=users.parse_role(role))
        return users.issue_token(session=session, user=user, ttl_hours=ttl_hours)


def write_config(tmp_path: Path, *, port: int, db_url: str | None = None, hl7_port: int | None = None,
                 hl7_extra: str = "", extra: str = "", workers: int = 0, worker_extra: str = "") -> Path:
    """A config file for a test instance: loopback, free ports, its own database and data dir.

    ``serve`` starts no worker process unless ``workers`` says so (most tests need none).
    """
    url = db_url or f"sqlite:///{tmp_path}/rs.db"
    path = tmp_path / "radservice.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[database]\nurl = "{url}"\n'
        f'[storage]\ndata_dir = "{tmp_path}/data"\n'
        f'[hl7]\nlisten_host = "127.0.0.1"\nlisten_port = {hl7_port or free_port()}\n{hl7_extra}\n'
        f"[worker]\nserve_workers = {workers}\n{worker_extra}\n"
        + ("" if "[dicom]" in extra else f'[dicom]\nlisten_host = "127.0.0.1"\nlisten_port = {free_port()}\n')
        + f"{extra}"
    )
    return path


@contextmanager
def fresh_pg_database(base_url: str, prefix: str = "rs_test") -> Iterator[str]:
    """A new, empty PostgreSQL database next to ``base_url``'s, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def add_study(factory: sessionmaker[Session], accession: str, *, minutes: int = 0,
              priority: Priority = Priority.ROUTINE, modality: str = "CT", family: str = "SYNTH",
              procedure: str = "CT CHEST", control: OrderControl = OrderControl.NEW,
              patient_id: str | None = None, issuer: str = "") -> None:
    """File an order through the domain service (what HL7 intake does), for API tests."""
    from radservice.db.session import session_scope
    from radservice.worklist import service as worklist

    patient = PatientData(patient_id=patient_id or f"MRN-{accession}", issuer="H", family_name=family,
                          given_name="TEST")
    data = OrderData(control=control, patient=patient, accession_number=accession, accession_issuer=issuer,
                     priority=priority, modality=modality, procedure_text=procedure,
                     ordered_at=T0 + timedelta(minutes=minutes))
    with session_scope(factory) as session:
        worklist.apply_order(session=session, order=data)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return found


REPO = Path(__file__).resolve().parents[1]


def add_report(factory: sessionmaker[Session], accession: str, sections: dict[str, str]) -> int:
    """The study's report draft from its template with these section texts (what dictation and
    editing make), through the domain services; returns the report id."""
    from radservice.db.session import session_scope
    from radservice.pipeline.compose import Templates
    from radservice.reports import service as reports
    from radservice.worklist import service as worklist

    with session_scope(factory) as session:
        study = worklist.find_study(session=session, accession_number=accession, accession_issuer=None)
        assert study is not None, accession
        template = Templates.load(REPO / "config" / "templates").pick(
            modality=study.modality, procedure_code=study.procedure_code, procedure_text=study.procedure_text)
        report, _ = reports.draft_for(session=session, study=study, template=template)
        reports.edit(session=session, report=report, sections=sections, user_id=None)
        return report.id


def start_delivery_loop(app_state: Any, sessions: sessionmaker[Session], sender: Any,
                        outbox: dict[str, float], owner: str) -> Any:
    """An outbox delivery loop for ``sender`` with short timings, started; the in-process API
    (``app_state``: a TestClient's app.state) signs with the same [outbox] settings and wakes it."""
    from radservice.config import OutboxSettings
    from radservice.outbox.flows import DeliveryLoop

    settings = OutboxSettings(**{"poll_interval_s": 0.05, "retry_initial_s": 0.2, "retry_max_s": 0.8, **outbox})
    loop = DeliveryLoop(sessions=sessions, sender=sender, settings=settings, owner=owner)
    loop.start()
    app_state.settings = app_state.settings.model_copy(update={"outbox": settings})
    app_state.outbox_wake = loop.wake
    return loop


def sign_report(http: Any, report_id: int, status: str, *, headers: dict[str, str] | None = None) -> Any:
    """Sign as a client does: read the report, then sign the revision read (an httpx or test client)."""
    extra: dict[str, Any] = {"headers": headers} if headers else {}
    read = http.get(f"/api/v1/reports/{report_id}", **extra)
    assert read.status_code == 200, read.text
    return http.post(f"/api/v1/reports/{report_id}/sign", json={"status": status, "revision": read.json()["revision"]},
                     **extra)


def write_read_audit(app: Any) -> None:
    """Write the audit rows of reads still queued (SQLite queues them for one writer; on
    PostgreSQL each read wrote its own)."""
    queue = app.state.read_audit
    if queue is not None:
        queue.flush()
