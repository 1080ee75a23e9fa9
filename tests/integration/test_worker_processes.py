"""`radservice worker --concurrency N`: real worker processes sharing one queue in PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker, session_scope
from radservice.jobs import service as jobs
from radservice.jobs.models import Job
from tests.conftest import PG_URL
from tests.support import child_pids, free_port, fresh_pg_database, write_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@contextmanager
def workers(config: Path, workdir: Path, concurrency: int) -> Iterator[subprocess.Popen[str]]:
    log = (workdir / "worker.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "radservice.cli", "worker", "--config", str(config),
                             "--concurrency", str(concurrency), "--handlers", "tests.job_handlers:handlers"],
                            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
        assert code == 0, (workdir / "worker.log").read_text()[-3000:]


def _wait(factory, done: int, timeout: float, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as session:
            finished = session.scalar(select(func.count()).where(Job.status.in_(["done", "failed"])))
        if finished >= done:
            return
        time.sleep(0.2)
    raise AssertionError(f"only {finished} of {done} jobs finished:\n" + (workdir / "worker.log").read_text()[-3000:])


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[str, object]]:
    with fresh_pg_database(PG_URL) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield url, make_sessionmaker(engine)
        engine.dispose()


def test_four_workers_run_two_hundred_jobs_exactly_once(pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, factory = pg
    log = tmp_path / "runs.log"
    with session_scope(factory) as session:
        ids = [jobs.enqueue(session=session, kind="record", payload={"log": str(log)}).id for _ in range(200)]
    config = write_config(tmp_path, port=free_port(), db_url=url, worker_extra="poll_interval_s = 0.1")
    with workers(config, tmp_path, 4):
        _wait(factory, 200, 120, tmp_path)
    runs = Counter(int(line.split()[1]) for line in log.read_text().splitlines())
    assert sorted(runs) == sorted(ids)
    assert set(runs.values()) == {1}, f"jobs run more than once: {[j for j, n in runs.items() if n > 1]}"
    pids = {line.split()[2] for line in log.read_text().splitlines()}
    assert len(pids) >= 2, "the work was not shared between processes"
    with factory() as session:
        statuses = Counter(session.scalars(select(Job.status)).all())
        assert statuses == {"done": 200}
        assert set(session.scalars(select(Job.attempts)).all()) == {1}


def test_job_of_a_killed_worker_completes_on_another(pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, factory = pg
    log = tmp_path / "runs.log"
    with session_scope(factory) as session:
        job_id = jobs.enqueue(session=session, kind="slow", payload={"log": str(log), "seconds": 3}).id
    config = write_config(tmp_path, port=free_port(), db_url=url,
                          worker_extra="poll_interval_s = 0.1\nlease_s = 2")
    with workers(config, tmp_path, 2):
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        event, _, victim = log.read_text().split()
        assert event == "start"
        os.kill(int(victim), signal.SIGKILL)  # mid-job, no chance to clean up
        _wait(factory, 1, 60, tmp_path)
    lines = [line.split() for line in log.read_text().splitlines()]
    ends = [pid for event, jid, pid in lines if event == "end"]
    assert len(ends) == 1 and ends[0] != victim
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempts) == ("done", 2)
    assert "exited with -9; starting another" in (tmp_path / "worker.log").read_text()


def test_workers_stop_when_their_parent_is_killed(pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ = pg
    config = write_config(tmp_path, port=free_port(), db_url=url, worker_extra="poll_interval_s = 0.1")
    log = (tmp_path / "worker.log").open("w")
    parent = subprocess.Popen([sys.executable, "-m", "radservice.cli", "worker", "--config", str(config),
                               "--concurrency", "2", "--handlers", "tests.job_handlers:handlers"],
                              stdout=log, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    deadline = time.monotonic() + 60
    while (tmp_path / "worker.log").read_text().count(" ready in ") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # the resource tracker of multiprocessing is a child too; it ends with its parent on its own
    workers_ = [pid for pid in child_pids(parent.pid)
                if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text() and "pipe_handle" in
                Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers_) == 2, (tmp_path / "worker.log").read_text()
    parent.kill()  # no chance to stop its children
    parent.wait(10)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in workers_) and time.monotonic() < deadline:
        time.sleep(0.2)
    log.close()
    alive = [pid for pid in workers_ if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "worker processes outlived their killed parent"
    assert "is gone; stopping" in (tmp_path / "worker.log").read_text()
