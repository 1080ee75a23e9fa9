"""POST /api/v1/studies/{accession}/dictations and GET /api/v1/jobs/{id}: what is accepted, what is refused."""

from __future__ import annotations

import io
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radservice.api.app import create_app
from radservice.audit.models import AuditEvent
from radservice.config import Settings
from radservice.dictation import service as dictations
from radservice.dictation.models import Dictation
from radservice.jobs.models import Job
from radservice.worklist.intake import OrderControl
from radservice.worklist.models import Study
from tests import audio_samples
from tests.support import add_study, make_user

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


@pytest.fixture
def token(factory: sessionmaker[Session]) -> str:
    add_study(factory, "ACC-1", procedure="CT CHEST WITH CONTRAST")
    add_study(factory, "GONE")
    add_study(factory, "GONE", control=OrderControl.CANCEL)
    return make_user(factory, "dr.dictate", "radiologist")


def upload(client: TestClient, token: str, accession: str, data: bytes, *, name: str = "a.wav",
           section: str = "findings") -> tuple[int, dict[str, object]]:
    response = client.post(f"/api/v1/studies/{accession}/dictations", files={"audio": (name, data)},
                           data={"section": section}, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json()


def audio_files(client: TestClient) -> list[Path]:
    folder = Path(client.app.state.settings.storage.data_dir) / "audio"  # type: ignore[attr-defined]
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", ["ct_chest_pe.webm", "xr_chest_pneumonia.webm", "ct_chest_nodule.ogg",
                                  "mr_knee_meniscus.mp3", "xr_wrist_fracture.m4a", "ct_head_noncontrast.wav"])
def test_upload_is_stored_and_queued_before_202(client: TestClient, token: str, factory: sessionmaker[Session],
                                                name: str) -> None:
    code, body = upload(client, token, "ACC-1", (FIXTURES / name).read_bytes(), name=f"../../etc/{name}",
                        section="Impression")
    assert code == 202, body
    dictation_id, job_id = body["dictation_id"], body["job_id"]
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        job = session.get_one(Job, job_id)
        assert (dictation.section, dictation.status, dictation.job_id) == ("impression", "received", job_id)
        assert dictation.audio_path == f"audio/{dictation_id}.{name.rsplit('.', 1)[1]}"  # our name, not the client's
        assert 20 <= dictation.duration_s <= 60
        assert (job.kind, job.status, job.payload) == ("transcribe", "queued", {"dictation_id": dictation_id})
        assert session.scalar(select(Study.status).where(Study.accession_number == "ACC-1")) == "in_progress"
        assert session.scalar(select(AuditEvent.action).where(AuditEvent.actor == "dr.dictate")) == "dictation.created"
    assert [p.name for p in audio_files(client)] == [f"{dictation_id}.{name.rsplit('.', 1)[1]}"]
    headers = {"Authorization": f"Bearer {token}"}
    job_view = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert (job_view["status"], job_view["progress"], job_view["error"], job_view["result"]) == (
        "queued", 0.0, "", None)
    study = client.get("/api/v1/studies/ACC-1", headers=headers).json()
    assert [d["dictation_id"] for d in study["dictations"]] == [dictation_id]
    again = client.post(f"/api/v1/dictations/{dictation_id}/transcribe", headers=headers)
    assert again.status_code == 202 and again.json()["job_id"] != job_id


@pytest.mark.parametrize(("accession", "data", "section", "status", "words"), [
    ("NOPE", audio_samples.tone(1.0), "findings", 404, "no study with accession"),
    ("GONE", audio_samples.tone(1.0), "findings", 409, "cancelled"),
    ("ACC-1", audio_samples.tone(1.0), "history", 422, "body.section"),
    ("ACC-1", b"", "findings", 422, "empty"),
    ("ACC-1", audio_samples.JUNK, "findings", 422, "cannot be decoded"),
    ("ACC-1", audio_samples.truncated(audio_samples.tone(3.0)), "findings", 422, "truncated"),
])
def test_bad_requests_get_a_clear_4xx_and_store_nothing(client: TestClient, token: str,
                                                        factory: sessionmaker[Session], accession: str, data: bytes,
                                                        section: str, status: int, words: str) -> None:
    code, body = upload(client, token, accession, data, section=section)
    assert code == status and words in str(body["detail"])
    assert audio_files(client) == []
    with factory() as session:
        assert session.scalars(select(Dictation)).all() == [] and session.scalars(select(Job)).all() == []


def test_limits_from_config(factory: sessionmaker[Session], token: str, tmp_path: Path) -> None:
    engine = factory.kw["bind"]
    settings = Settings(database={"url": engine.url.render_as_string(hide_password=False)},
                        storage={"data_dir": tmp_path / "limited", "max_audio_mb": 1, "max_audio_seconds": 5})
    with TestClient(create_app(settings, engine)) as limited:
        code, body = upload(limited, token, "ACC-1", audio_samples.tone(6.0))
        assert (code, body["detail"]) == (413, "audio longer than the limit of 5 s")
        code, body = upload(limited, token, "ACC-1", audio_samples.tone(40.0))  # 1.28 MB
        assert code == 413 and "larger than the limit of 1 MiB" in str(body["detail"])
        assert upload(limited, token, "ACC-1", audio_samples.tone(4.0))[0] == 202


def test_who_may_dictate(client: TestClient, token: str, factory: sessionmaker[Session]) -> None:
    editor = make_user(factory, "ed.it", "editor")
    resident = make_user(factory, "res.ident", "resident")
    assert upload(client, editor, "ACC-1", audio_samples.tone(1.0))[0] == 403
    assert upload(client, resident, "ACC-1", audio_samples.tone(1.0))[0] == 202
    assert client.post("/api/v1/studies/ACC-1/dictations", files={"audio": ("a.wav", b"x")}).status_code == 401


def test_unknown_job_and_dictation_are_404(client: TestClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/jobs/999", headers=headers).status_code == 404
    assert client.post("/api/v1/dictations/nope/transcribe", headers=headers).status_code == 404
    assert client.get("/api/v1/dictations/nope", headers=headers).status_code == 404


def wav_samples(body: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32767


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def test_audio_of_a_word_or_the_whole_recording_is_played_to_readers_and_audited(
        client: TestClient, token: str, factory: sessionmaker[Session]) -> None:
    t = np.arange(16000) / 16000
    recording = np.concatenate([np.zeros(16000), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(16000)])
    code, body = upload(client, token, "ACC-1", audio_samples.wav_bytes(recording))
    assert code == 202, body
    dictation_id = body["dictation_id"]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/dictations/{dictation_id}/audio"

    whole = client.get(url, headers=headers)
    assert whole.status_code == 200, whole.text
    assert whole.headers["content-type"] == "audio/wav" and whole.headers["cache-control"] == "no-store"
    assert abs(wav_samples(whole.content).size - 48000) <= 160
    word = client.get(url, params={"start": 1.0, "end": 2.0}, headers=headers)
    samples = wav_samples(word.content)
    assert abs(samples.size - 16000) <= 160 and rms(samples) > 0.15  # the tone, not the silence around it
    assert rms(wav_samples(client.get(url, params={"start": 0.0, "end": 0.9}, headers=headers).content)) < 0.01
    # an end past the recording plays to its end
    assert abs(wav_samples(client.get(url, params={"start": 2.5, "end": 9}, headers=headers).content).size
               - 8000) <= 160
    # every role that reads the study may listen; each play is audited with the stretch played
    editor = make_user(factory, "ed.listen", "editor")
    assert client.get(url, params={"start": 1, "end": 2}, headers={"Authorization": f"Bearer {editor}"}
                      ).status_code == 200
    if queue := client.app.state.read_audit:  # type: ignore[attr-defined]  # SQLite: reads audited in batches
        queue.flush()
    with factory() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == "dictation.audio.read")
                               .order_by(AuditEvent.id)).all()
        assert [(r.actor, r.entity_id, r.detail["start"], r.detail["end"]) for r in rows] == [
            ("dr.dictate", dictation_id, 0.0, None), ("dr.dictate", dictation_id, 1.0, 2.0),
            ("dr.dictate", dictation_id, 0.0, 0.9), ("dr.dictate", dictation_id, 2.5, 9.0),
            ("ed.listen", dictation_id, 1.0, 2.0)]
        assert rows[0].detail["accession"] == "ACC-1"

    # a resumed live dictation's parts are joined, as the worker joins them for the words' times
    data_dir = Path(client.app.state.settings.storage.data_dir)  # type: ignore[attr-defined]
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        (data_dir / dictations.part_path(dictation, 2)).write_bytes(audio_samples.tone(0.5))
        dictation.audio_parts = 2
        session.commit()
    joined = wav_samples(client.get(url, headers=headers).content)
    assert abs(joined.size - 56000) <= 320 and rms(joined[-8000:]) > 0.15
    # a part left empty (a take scratched before its audio came, then stopped) adds nothing
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        (data_dir / dictations.part_path(dictation, 3)).write_bytes(b"")
        dictation.audio_parts = 3
        session.commit()
    assert wav_samples(client.get(url, headers=headers).content).size == joined.size


def test_a_play_decodes_only_as_far_as_its_end_and_plays_are_bounded(
        client: TestClient, token: str, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    from radservice.api.routes import dictations as route
    from radservice.pipeline.decode import decode_stretch

    long = audio_samples.tone(60.0)
    dictation_id = upload(client, token, "ACC-1", long)[1]["dictation_id"]
    data_dir = Path(client.app.state.settings.storage.data_dir)  # type: ignore[attr-defined]
    (path,) = (data_dir / "audio").glob(f"{dictation_id}.*")
    stretch, decoded = decode_stretch([path], "wav", 16000, 32000)
    assert stretch.size == 16000 and decoded < 5 * 16000  # not the whole minute
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/dictations/{dictation_id}/audio"
    too_long = client.get(url, params={"start": 0, "end": 121}, headers=headers)
    assert too_long.status_code == 422 and "at most 120 s" in too_long.text
    # without an end: 120 s at most (here the rest of the minute)
    assert abs(wav_samples(client.get(url, params={"start": 50}, headers=headers).content).size - 160000) <= 320
    # more plays at once than the service decodes: a clear 503 to retry, never a pile-up
    monkeypatch.setattr(route, "_PLAYS", threading.BoundedSemaphore(1))
    monkeypatch.setattr(route, "_PLAY_WAIT_S", 0.05)
    route._PLAYS.acquire()
    busy = client.get(url, params={"start": 1, "end": 2}, headers=headers)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    route._PLAYS.release()
    assert client.get(url, params={"start": 1, "end": 2}, headers=headers).status_code == 200
    # a part gone from the store: 410, as the worker says it
    path.unlink()
    gone = client.get(url, params={"start": 1, "end": 2}, headers=headers)
    assert gone.status_code == 410 and "missing from the store" in gone.text


@pytest.mark.parametrize(("change", "params", "status", "words"), [
    ({}, {"start": 2.0, "end": 1.0}, 422, "must be after start"),
    ({}, {"start": 30.0}, 422, "after the end of the recording"),
    ({}, {"start": -1.0}, 422, "greater than or equal to 0"),
    ({"status": "recording"}, {}, 409, "not complete"),
    ({"status": "finalizing"}, {}, 409, "not complete"),
    ({"audio_path": None}, {}, 410, "no longer stored"),
])
def test_audio_that_cannot_be_played_is_refused_with_a_reason(
        client: TestClient, token: str, factory: sessionmaker[Session], change: dict[str, object],
        params: dict[str, float], status: int, words: str) -> None:
    dictation_id = upload(client, token, "ACC-1", audio_samples.tone(1.0))[1]["dictation_id"]
    with factory() as session:
        dictation = session.get_one(Dictation, dictation_id)
        for key, value in change.items():
            setattr(dictation, key, value)
        session.commit()
    response = client.get(f"/api/v1/dictations/{dictation_id}/audio", params=params,
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status and words in response.text, response.text
    assert client.get(f"/api/v1/dictations/{dictation_id}/audio").status_code == 401
    assert client.get("/api/v1/dictations/nope/audio", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 404
