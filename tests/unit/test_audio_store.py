"""The audio store refuses what is not usable audio and keeps what is, under a UUID name."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from radservice.dictation.audio import AudioRejected, probe, store_upload
from tests import audio_samples

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio"


def _store(tmp_path: Path, data: bytes, *, max_bytes: int = 10 << 20, max_seconds: float = 120):
    return store_upload(io.BytesIO(data), data_dir=tmp_path, max_bytes=max_bytes, max_seconds=max_seconds)


@pytest.mark.parametrize("name", ["ct_chest_pe.webm", "ct_chest_nodule.ogg", "mr_knee_meniscus.mp3",
                                  "xr_wrist_fracture.m4a", "ct_head_noncontrast.wav"])
def test_each_accepted_container_is_probed(name: str) -> None:
    fmt, seconds = probe(FIXTURES / name)
    assert fmt == name.rsplit(".", 1)[1]
    assert 20 <= seconds <= 60


def test_upload_is_stored_under_a_server_made_name(tmp_path: Path) -> None:
    stored = _store(tmp_path, audio_samples.tone(2.0))
    path = tmp_path / stored.relative_path
    assert path.is_file() and path.name == f"{stored.uuid}.wav"
    assert stored.duration_s == pytest.approx(2.0, abs=0.01)
    assert stored.size_bytes == path.stat().st_size
    assert [p.name for p in (tmp_path / "audio").iterdir()] == [path.name]  # no partial file left


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"", 422, "empty"),
    (audio_samples.JUNK, 422, "cannot be decoded"),
    (audio_samples.truncated(audio_samples.tone(3.0)), 422, "truncated"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", 422, "cannot be decoded"),
])
def test_bad_audio_is_refused_and_leaves_nothing(tmp_path: Path, data: bytes, status: int, words: str) -> None:
    with pytest.raises(AudioRejected) as refused:
        _store(tmp_path, data)
    assert refused.value.status == status
    assert words in str(refused.value)
    assert list((tmp_path / "audio").iterdir()) == []


def test_limits_answer_413(tmp_path: Path) -> None:
    with pytest.raises(AudioRejected, match="larger than") as too_big:
        _store(tmp_path, audio_samples.tone(3.0), max_bytes=50_000)
    assert too_big.value.status == 413
    with pytest.raises(AudioRejected, match="longer than") as too_long:
        _store(tmp_path, audio_samples.tone(3.0), max_seconds=2)
    assert too_long.value.status == 413
    assert list((tmp_path / "audio").iterdir()) == []


def test_silence_is_accepted_as_audio(tmp_path: Path) -> None:
    # Silence is valid audio: the transcription job says "no speech detected", not the upload.
    assert _store(tmp_path, audio_samples.silence(3.0)).duration_s == pytest.approx(3.0, abs=0.01)


def test_a_stored_upload_and_its_name_are_on_disk_before_it_is_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of the file and of its folder: a power loss after the 202 cannot lose the audio."""
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    stored = _store(tmp_path, audio_samples.tone(1.0))
    assert synced == [str(tmp_path / "audio" / f".{stored.uuid}.part"), str(tmp_path / "audio")]


def test_the_duration_limit_stops_decoding_early() -> None:
    with pytest.raises(AudioRejected) as refused:
        probe(FIXTURES / "ct_chest_nodule.ogg", max_seconds=5)
    assert refused.value.status == 413 and "5 s" in str(refused.value)
