"""Audio made in the test, for the cases committed fixtures should not hold (silence, junk, cut files)."""

from __future__ import annotations

import io
import wave

import numpy as np

RATE = 16_000


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """16-bit mono PCM WAV of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def silence(seconds: float) -> bytes:
    return wav_bytes(np.zeros(int(seconds * RATE)))


def tone(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return wav_bytes(0.3 * np.sin(2 * np.pi * hz * t))


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first part of a file, as an interrupted upload leaves it."""
    return data[: int(len(data) * keep)]


JUNK = bytes(range(256)) * 40  # not audio at all
