"""Live partial transcripts by local agreement (after whisper_streaming, Machacek et al. 2023).

The audio received so far is transcribed again every time about a second more has arrived.
Words that two successive passes agree on (the longest common prefix of their hypotheses) are
committed and never change; only the audio after the last committed word is decoded again,
with the committed text as the prompt. On "stop" only that uncommitted tail is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from radservice.pipeline.decode import SAMPLE_RATE, Samples
from radservice.pipeline.transcribe import NoSpeech, Transcriber, Word

#: The committed text that goes into the next pass's prompt (Whisper reads about 224 tokens).
PROMPT_TAIL_CHARS = 200
#: Audio kept before the first uncommitted word once the buffer is long (context for the model).
TRIM_AFTER_S = 6.0
#: Longest window before words are committed without a second pass agreeing...
MAX_WINDOW_S = 12.0
#: ...if at least this much audio followed them.
FORCE_AFTER_S = 4.0


def join_words(words: list[Word]) -> str:
    """Words back into text: each word carries its own leading space (" the", ".2" has none)."""
    return "".join(w.word for w in words).strip()


def _key(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


@dataclass
class LocalAgreement:
    """Committed words and the current uncommitted hypothesis of one live dictation.

    Parameters
    ----------
    transcriber
        The worker's model.
    prompt
        The study's vocabulary prompt; the committed text's tail is added after it.
    partial_beam
        Beam width of the partial passes (the final pass uses the configured width).
    """

    transcriber: Transcriber
    prompt: str = ""
    partial_beam: int = 1
    committed: list[Word] = field(default_factory=list)
    tentative: list[Word] = field(default_factory=list)
    buffer_start: float = 0.0

    @property
    def committed_text(self) -> str:
        return join_words(self.committed)

    @property
    def text(self) -> str:
        return join_words(self.committed + self.tentative)

    def _pass(self, audio: Samples, beam_size: int | None) -> list[Word]:
        start = int(self.buffer_start * SAMPLE_RATE)
        window = audio[start:]
        if window.size < SAMPLE_RATE // 4:
            return []
        tail = self.committed_text[-PROMPT_TAIL_CHARS:]
        prompt = f"{self.prompt} {tail}".strip()
        try:
            words = self.transcriber.transcribe(window, prompt=prompt, beam_size=beam_size).words
        except NoSpeech:
            return []
        offset = self.buffer_start
        absolute = [Word(w.word, round(w.start + offset, 2), round(w.end + offset, 2), w.probability) for w in words]
        return self._after_committed(absolute)

    def _after_committed(self, words: list[Word]) -> list[Word]:
        """The part of a new hypothesis that comes after what is already committed.

        The window may start before the last committed word, so the hypothesis can repeat
        committed words, with times a small model gets only roughly right. The times give the
        cut roughly; the text fixes it: of the cuts within two words of it, the one where the
        hypothesis before the cut repeats the most of the committed tail wins.
        """
        if not self.committed:
            return words
        last_end = self.committed[-1].end
        rough = sum(1 for w in words if w.end <= last_end + 0.05)
        tail = [_key(w.word) for w in self.committed[-3:]]

        def overlap(cut: int) -> int:
            for n in range(min(3, cut), 0, -1):
                if [_key(w.word) for w in words[cut - n:cut]] == tail[-n:]:
                    return n
            return 0

        candidates = [c for c in (rough, rough + 1, rough - 1, rough + 2, rough - 2) if 0 <= c <= len(words)]
        best = max(candidates, key=overlap)  # max keeps the first (nearest) among equals
        return words[best:] if overlap(best) else words[rough:]

    def step(self, audio: Samples) -> bool:
        """One partial pass over the audio so far; True when the committed text grew."""
        hypothesis = self._pass(audio, self.partial_beam)
        audio_end = len(audio) / SAMPLE_RATE
        agreed = 0
        for old, new in zip(self.tentative, hypothesis, strict=False):
            if _key(old.word) != _key(new.word):
                break
            agreed += 1
        if audio_end - self.buffer_start > MAX_WINDOW_S:
            # Passes that keep disagreeing would let the window (and each pass, and the final
            # one) grow without bound: words heard with several seconds after them are kept.
            agreed = max(agreed, sum(1 for w in hypothesis if w.end < audio_end - FORCE_AFTER_S))
        grew = agreed > 0
        self.committed.extend(hypothesis[:agreed])
        self.tentative = hypothesis[agreed:]
        self._trim(audio_end)
        return grew

    def _trim(self, audio_end: float) -> None:
        # Keep decoding short: once the window is long, start it after the last committed
        # clause (a word ending in punctuation), else after the last committed word; the
        # committed text goes in as the prompt instead.
        if not self.committed or audio_end - self.buffer_start <= TRIM_AFTER_S:
            return
        cut = self.committed[-1]
        for word in reversed(self.committed):
            if word.end <= self.buffer_start:
                break
            if word.word.rstrip()[-1:] in ".,?!;:":
                cut = word
                break
        self.buffer_start = max(self.buffer_start, cut.end)

    def finish(self, audio: Samples) -> list[Word]:
        """The final pass over the uncommitted tail (configured beam); every word, committed."""
        self.committed.extend(self._pass(audio, None))
        self.tentative = []
        return list(self.committed)
