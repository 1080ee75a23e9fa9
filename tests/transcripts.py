"""Comparing transcripts with reference texts: the spoken-form word error rate."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jiwer
import medwer

AUDIO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"


def manifest() -> list[dict[str, str]]:
    """The synthetic dictations with their references (fixtures/audio/manifest.toml)."""
    items: list[dict[str, str]] = tomllib.loads((AUDIO_FIXTURES / "manifest.toml").read_text())["dictation"]
    return items


_whisper_normaliser = medwer.Normalizer()


def normalise(text: str) -> str:
    """Whisper's English normaliser (as medwer applies it: spelled numbers folded to digits, so
    "one point two" and "1.2" agree), then words only: hyphens and punctuation are spacing."""
    folded = _whisper_normaliser(text)
    return " ".join(re.findall(r"[a-z0-9'.]+", folded.lower().replace("-", " ")))


def spoken_wer(reference: str, hypothesis: str) -> float:
    """Word error rate of a transcript against the spoken form of its dictation."""
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def trailing_insertions(reference: str, hypothesis: str) -> int:
    """Words the transcript has after the dictation's last word (Whisper's "Thank you." at the end)."""
    last = jiwer.process_words(normalise(reference), normalise(hypothesis)).alignments[0][-1]
    return last.hyp_end_idx - last.hyp_start_idx if last.type == "insert" else 0
