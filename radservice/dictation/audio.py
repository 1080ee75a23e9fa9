"""The audio store: uploads checked by decoding them, kept under ``{data_dir}/audio/`` by UUID."""

from __future__ import annotations

import io
import os
import uuid
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from radservice.pipeline.decode import SAMPLE_RATE, decode_stretch

AUDIO_DIR = "audio"
CHUNK = 1 << 16

#: Container names PyAV reports -> the extension we store under (and accept).
FORMATS = {
    "wav": "wav",
    "matroska,webm": "webm",
    "ogg": "ogg",
    "mp3": "mp3",
    "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
    "flac": "flac",
}


class AudioRejected(Exception):
    """An upload that is not usable audio; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredAudio:
    uuid: str
    relative_path: str
    format: str
    size_bytes: int
    duration_s: float


def probe(path: Path, *, max_seconds: float | None = None) -> tuple[str, float]:
    """Decode the whole file: its format and its duration in seconds.

    Decoding every frame (milliseconds for minutes of speech) is what finds a truncated or
    corrupt file now, with a 4xx, instead of in the worker later.

    Raises
    ------
    AudioRejected
        Not a container we accept, no audio stream, undecodable or truncated data, no samples;
        longer than ``max_seconds`` (413), found while decoding (the rest is not decoded).
    """
    try:
        with av.open(str(path), mode="r") as container:
            fmt = FORMATS.get(container.format.name)
            if fmt is None:
                raise AudioRejected(f"unsupported audio format '{container.format.name}' "
                                    "(send WAV, WebM/Opus, OGG/Opus, MP3 or M4A)")
            if not container.streams.audio:
                raise AudioRejected("the file has no audio stream")
            stream = container.streams.audio[0]
            samples = 0
            rate = stream.rate or stream.codec_context.sample_rate or 0
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate or rate
                if max_seconds is not None and rate > 0 and samples / rate > max_seconds:
                    raise AudioRejected(f"audio longer than the limit of {max_seconds:.0f} s", 413)
    except AudioRejected:
        raise
    except (av.FFmpegError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise AudioRejected(f"the audio cannot be decoded ({type(exc).__name__.removesuffix('Error')}): "
                            "not audio, corrupt or truncated") from None
    if samples == 0 or rate <= 0:
        raise AudioRejected("the audio holds no samples (empty or truncated)")
    if fmt == "wav":
        _check_wav_complete(path)
    return fmt, samples / rate


#: Streaming recorders write these as the data size when they do not know it yet.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


def _check_wav_complete(path: Path) -> None:
    """A WAV file whose data chunk is shorter than its header says was cut off in transfer.

    FFmpeg decodes what is there without complaint, so the RIFF header is read here.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk = fh.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - offset - 8
                if declared not in _UNKNOWN_SIZES and present < declared:
                    raise AudioRejected(f"the WAV file is truncated: {present} of {declared} audio bytes present")
                return
            offset += 8 + declared + (declared & 1)


def durable(out: BinaryIO) -> None:
    """The file's data on disk (not only in the page cache) before anything acknowledges it."""
    out.flush()
    os.fsync(out.fileno())


def durable_folder(folder: Path) -> None:
    """A folder's entries (a file created or renamed in it) on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_upload(source: BinaryIO, *, data_dir: Path, max_bytes: int, max_seconds: float) -> StoredAudio:
    """Copy an upload into the audio store under a new UUID name, checked and measured.

    The file is written beside its final place and renamed only once it decoded: a rejected
    upload leaves nothing behind.

    Raises
    ------
    AudioRejected
        Empty (422), larger than ``max_bytes`` (413), longer than ``max_seconds`` (413), or not audio (422).
    """
    folder = data_dir / AUDIO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = str(uuid.uuid4())
    partial = folder / f".{name}.part"
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise AudioRejected(f"audio larger than the limit of {max_bytes // (1 << 20)} MiB", 413)
                out.write(chunk)
            if size:
                durable(out)
        if size == 0:
            raise AudioRejected("the audio file is empty")
        fmt, duration = probe(partial, max_seconds=max_seconds)
        final = folder / f"{name}.{fmt}"
        partial.rename(final)
        durable_folder(folder)  # the new name survives a power loss before the 202 is sent
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return StoredAudio(name, f"{AUDIO_DIR}/{final.name}", fmt, size, round(duration, 3))


class PlaybackRefused(Exception):
    """A stretch of a recording that cannot be played (its message names why; no PHI)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


#: The longest stretch one request plays (s): a word or a few sentences, never a whole long
#: recording decoded into memory for one click.
MAX_STRETCH_S = 120.0


def playback_wav(parts: list[Path], fmt: str, *, start_s: float, end_s: float) -> bytes:
    """The recording's stretch from ``start_s`` to ``end_s`` as a 16 kHz mono 16-bit WAV, on the
    timeline the transcript's word times are on (the parts decoded and joined, as the worker
    does); decoding stops at ``end_s``. An end past the recording plays to its end."""
    if not end_s > start_s:
        raise PlaybackRefused(f"end ({end_s} s) must be after start ({start_s} s)")
    if end_s - start_s > MAX_STRETCH_S:
        raise PlaybackRefused(f"at most {MAX_STRETCH_S:.0f} s are played at once; ask for the rest in steps")
    if not all(part.is_file() for part in parts):
        raise PlaybackRefused("the audio file is missing from the store", status=410)
    try:
        samples, decoded = decode_stretch(parts, fmt, int(start_s * SAMPLE_RATE), int(round(end_s * SAMPLE_RATE)))
    except (av.FFmpegError, EOFError, OSError) as exc:
        raise PlaybackRefused(f"the stored audio could not be decoded ({type(exc).__name__})") from None
    if not samples.size:
        raise PlaybackRefused(f"start ({start_s} s) is after the end of the recording ({decoded / SAMPLE_RATE:.2f} s)")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
