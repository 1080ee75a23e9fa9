"""The restore drill docs/operations.md describes, done: a SQLite database copied online with
`radservice db backup` (SQLite's backup API) while orders keep arriving, plus the audio folder,
restored after the originals are lost; and PostgreSQL through pg_dump / pg_restore. Nothing
acknowledged before the backup is missing afterwards."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from radservice.db import migrate
from radservice.db.session import make_engine, make_sessionmaker
from tests.audio_samples import silence
from tests.conftest import PG_URL
from tests.hl7_peer import RisClient, order, read_ack
from tests.support import (
    add_report,
    add_study,
    free_port,
    fresh_pg_database,
    radservice,
    serve,
    sign_report,
    write_config,
)

pytestmark = pytest.mark.integration
TABLES = ("studies", "patients", "reports", "report_versions", "dictations", "users", "audit_events",
          "outbox", "inbound_messages", "jobs")


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = {table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}
    engine.dispose()
    return found


def test_sqlite_online_backup_and_audio_restore_after_loss(tmp_path: Path) -> None:
    hl7_port = free_port()
    config = write_config(tmp_path, port=free_port(), hl7_port=hl7_port)
    database = tmp_path / "rs.db"
    backup = tmp_path / "backup"
    backup.mkdir()
    with serve(config, tmp_path) as running:
        token = radservice("user", "add", "dr.backup", "--role", "radiologist", "--config", str(config),
                           cwd=tmp_path).stdout.split()[-1]
        http = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        with RisClient(hl7_port) as ris:
            assert read_ack(ris.send(order("BK-1", "BK-ACC-1"))).code == "AA"
        uploaded = http.post("/api/v1/studies/BK-ACC-1/dictations", files={"audio": ("d.wav", silence(3))})
        assert uploaded.status_code == 202, uploaded.text
        report_id = http.post("/api/v1/studies/BK-ACC-1/report").json()["report_id"]
        revision = http.get(f"/api/v1/reports/{report_id}").json()["revision"]
        assert http.patch(f"/api/v1/reports/{report_id}", json={"revision": revision, "sections": {
            "findings": "Synthetic findings.", "impression": "Synthetic impression."}}).status_code == 200
        assert sign_report(http, report_id, "final").status_code == 200

        # online: orders keep arriving while the copy is made
        stop = threading.Event()
        acked: list[str] = []

        def keep_ordering() -> None:
            with RisClient(hl7_port) as busy:
                n = 0
                while not stop.is_set() and n < 200:
                    n += 1
                    if read_ack(busy.send(order(f"BK-BUSY-{n}", f"BK-BUSY-{n}"))).code == "AA":
                        acked.append(f"BK-BUSY-{n}")

        writer = threading.Thread(target=keep_ordering)
        writer.start()
        try:
            done = radservice("db", "backup", str(backup / "rs.db"), "--config", str(config), cwd=tmp_path)
        finally:
            stop.set()
            writer.join(30)
        assert done.returncode == 0, done.stderr
        assert "integrity ok" in done.stdout and acked, (done.stdout, len(acked))
        again = radservice("db", "backup", str(backup / "rs.db"), "--config", str(config), cwd=tmp_path)
        assert again.returncode == 2 and "never overwrites" in again.stderr
        shutil.copytree(tmp_path / "data" / "audio", backup / "audio")
        http.close()
    before = _counts(f"sqlite:///{backup / 'rs.db'}")

    # the loss: database (with its WAL) and audio gone
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(tmp_path / "data")
    # the restore: the copy and the folder put back
    shutil.copy(backup / "rs.db", database)
    (tmp_path / "data").mkdir()
    shutil.copytree(backup / "audio", tmp_path / "data" / "audio")
    with serve(config, tmp_path) as running:
        http = httpx.Client(base_url=running.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        report = http.get(f"/api/v1/reports/{report_id}").json()
        assert report["status"] == "final" and report["sections"]["findings"] == "Synthetic findings."
        study = http.get("/api/v1/studies/BK-ACC-1").json()
        (dictation,) = study["dictations"]
        played = http.get(f"/api/v1/dictations/{dictation['dictation_id']}/audio")
        assert played.status_code == 200 and played.content[:4] == b"RIFF"
        rows = http.get(f"/api/v1/reports/{report_id}/deliveries").json()
        assert {row["status"] for row in rows} == {"pending"}  # the outbox kept its work
        http.close()
    assert _counts(f"sqlite:///{database}")["studies"] == before["studies"] >= 2


def test_backup_refuses_a_postgresql_database(tmp_path: Path) -> None:
    config = tmp_path / "radservice.toml"
    config.write_text('[database]\nurl = "postgresql+psycopg://radservice@db.example/radservice"\n')
    done = radservice("db", "backup", str(tmp_path / "b.db"), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "pg_dump" in done.stderr


@pytest.mark.postgres
def test_postgresql_dump_and_restore_drill(tmp_path: Path) -> None:
    with fresh_pg_database(PG_URL) as url, fresh_pg_database(PG_URL, prefix="rs_restore") as restored:
        engine = make_engine(url)
        migrate.upgrade(engine)
        factory = make_sessionmaker(engine)
        for n in range(3):
            add_study(factory, f"PGB-{n}")
        add_report(factory, "PGB-0", {"findings": "Synthetic.", "impression": "Synthetic."})
        engine.dispose()
        config = tmp_path / "radservice.toml"
        config.write_text(f'[database]\nurl = "{url}"\n')
        assert radservice("user", "add", "dr.pg", "--role", "radiologist", "--config", str(config),
                          cwd=tmp_path).returncode == 0
        libpq = lambda u: make_url(u).set(drivername="postgresql").render_as_string(hide_password=False)  # noqa: E731
        dump = tmp_path / "radservice.dump"
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", libpq(url)], check=True, timeout=120)
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq(restored)}", str(dump)],
                       check=True, timeout=120)
        assert _counts(restored) == _counts(url)
        config.write_text(f'[database]\nurl = "{restored}"\n[llm]\nenabled = false\n')
        checked = radservice("check", "--config", str(config), cwd=tmp_path)
        assert "schema up to date" in checked.stdout, checked.stdout
        listed = radservice("user", "list", "--config", str(config), cwd=tmp_path)
        assert "dr.pg" in listed.stdout


def test_a_backup_is_private_and_any_path_works(tmp_path: Path) -> None:
    odd = tmp_path / "site #1?x"  # characters a file: URI would misread
    odd.mkdir()
    engine = make_engine(f"sqlite:///{odd}/rs.db")
    migrate.upgrade(engine)
    engine.dispose()
    config = tmp_path / "radservice.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{odd}/rs.db"\n')
    target = odd / "backup #1.db"
    done = radservice("db", "backup", str(target), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.stat().st_mode & 0o777 == 0o600  # patient data: its owner only, whatever the umask
    assert not list(odd.glob("*.partial")) and _counts(f"sqlite:///{target}")["studies"] == 0
