"""Comparing transcripts with reference texts: the spoken-form word error rate."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jiwer

AUDIO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"


def manifest() -> list[dict[str, str]]:
    """The synthetic dictations with their references (fixtures/audio/manifest.toml)."""
    items: list[dict[str, str]] = tomllib.loads((AUDIO_FIXTURES / "manifest.toml").read_text())["dictation"]
    return items


def normalise(text: str) -> str:
    """Lower case, words only: hyphens and punctuation are spacing, not words."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("-", " ")))


def spoken_wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))
