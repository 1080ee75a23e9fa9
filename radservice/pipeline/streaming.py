"""Live partial transcripts by local agreement (after whisper_streaming, Machacek et al. 2023).

The audio received so far is decoded again every time about half a second more has arrived.
Words that two successive passes agree on are committed: the radiologist sees them as settled,
and they never change. The next pass is made to start with them (Whisper's decoder prefix), so
it only generates what comes after, and there is no aligning of a new hypothesis with the
committed words by their (rough) times: the words after the prefix are the new ones.

The window holds several clauses, up to ``TRIM_AFTER_S``, because Whisper decodes a phrase better
when it hears what surrounds it (cutting after every clause, at the rough end time of its last
word, clipped the next word's start). Past that it is cut in the quiet after a committed clause,
and the text before the cut becomes the prompt. It is not kept longer because the decoder works
through the prefix token by token: a pass over a 20 s window costs about 0.9 s at beam 3. On "stop" the window is cut
once more after the last committed clause, so the final pass (configured beam) decodes only the
seconds not yet committed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from radservice.pipeline.decode import SAMPLE_RATE, Samples

# PROMPT_TAIL_CHARS: the settled text that goes into each pass's prompt, after the study's vocabulary
from radservice.pipeline.transcribe import PROMPT_TAIL_CHARS, WindowDecoder, Word

#: A window longer than this is cut after a committed clause (measured: 8, 10, 12 and 20 s; 12 s
#: gave the fewest errors, 20 s the longest passes).
TRIM_AFTER_S = 12.0
#: In a window longer than this, with nothing committed for half as long...
FORCE_WINDOW_S = 12.0
#: ...words with at least this much audio after them are committed without a second pass agreeing.
FORCE_AFTER_S = 4.0
#: Generated tokens allowed per second of audio not yet committed (speech is 3-5), plus a few.
TOKENS_PER_S = 8
#: Clause ends: where a window may be cut.
CLAUSE_END = ".?!;:,"


def join_words(words: list[Word]) -> str:
    """Words back into text: each word carries its own leading space (" the", ".2" has none)."""
    return "".join(w.word for w in words).strip()


def _key(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def _split_prefix(words: list[Word], prefix: str) -> int:
    """How many of a pass's words spell out the prefix it was given (by characters: the model
    may group the prefix's tokens into words differently, e.g. " 10.8" or " 10" ".8")."""
    target = len(re.sub(r"\s", "", prefix))
    seen = 0
    for i, word in enumerate(words):
        if seen >= target:
            return i
        seen += len(re.sub(r"\s", "", word.word))
    return len(words)


@dataclass
class LocalAgreement:
    """Committed words and the current uncommitted hypothesis of one live dictation.

    Parameters
    ----------
    decoder
        The worker's model.
    prompt
        The study's vocabulary prompt; the settled text's tail is added after it.
    partial_beam
        Beam width of the partial passes (the final pass uses the model's configured width).
        Measured on this machine (``bench/stream.py``): 3 commits fewer wrong words than 1 for
        about 0.15 s more per pass.
    """

    decoder: WindowDecoder
    prompt: str = ""
    partial_beam: int = 3
    #: committed words before the window (the prompt carries them)
    settled: list[Word] = field(default_factory=list)
    #: committed words inside the window (each pass starts with them, as its prefix)
    held: list[Word] = field(default_factory=list)
    tentative: list[Word] = field(default_factory=list)
    buffer_start: float = 0.0

    @property
    def committed(self) -> list[Word]:
        return self.settled + self.held

    @property
    def committed_text(self) -> str:
        return join_words(self.committed)

    @property
    def text(self) -> str:
        return join_words(self.committed + self.tentative)

    def _pass(self, audio: Samples, beam_size: int | None) -> tuple[list[Word], list[Word]]:
        """Decode the window: the held words (with fresh times when the pass spelled them out the
        same way: a pass that heard more places them better) and the words after them, in audio time."""
        start = self.buffer_start
        window = audio[int(start * SAMPLE_RATE):]
        if window.size < SAMPLE_RATE // 4:
            return self.held, []
        prefix = join_words(self.held)
        prompt = f"{self.prompt} {join_words(self.settled)[-PROMPT_TAIL_CHARS:]}".strip()
        uncommitted_s = window.size / SAMPLE_RATE - (self.held[-1].end - start if self.held else 0.0)
        words = self.decoder.decode_window(window, prompt=prompt, prefix=prefix, beam_size=beam_size,
                                           max_new_tokens=int(12 + TOKENS_PER_S * max(uncommitted_s, 0.5)))
        words = [Word(w.word, round(w.start + start, 2), round(w.end + start, 2), w.probability) for w in words]
        n = _split_prefix(words, prefix) if prefix else 0
        if n != len(self.held):
            return self.held, words[n:]
        return [Word(h.word, w.start, w.end, h.probability) for h, w in zip(self.held, words, strict=False)], words[n:]

    def step(self, audio: Samples) -> bool:
        """One partial pass over the audio so far; True when the committed text grew."""
        self.held, hypothesis = self._pass(audio, self.partial_beam)
        audio_end = audio.size / SAMPLE_RATE
        agreed = 0
        for old, new in zip(self.tentative, hypothesis, strict=False):
            if _key(old.word) != _key(new.word):
                break
            agreed += 1
        last_commit = self.held[-1].end if self.held else self.buffer_start
        if audio_end - self.buffer_start > FORCE_WINDOW_S and audio_end - last_commit > FORCE_WINDOW_S / 2:
            # Passes that keep disagreeing would let the window (and each pass) grow without
            # bound: words heard with several seconds after them are kept.
            agreed = max(agreed, sum(1 for w in hypothesis if w.end < audio_end - FORCE_AFTER_S))
        self.held.extend(hypothesis[:agreed])
        self.tentative = hypothesis[agreed:]
        if not hypothesis and not self.held and audio_end - self.buffer_start > TRIM_AFTER_S:
            self.buffer_start = audio_end - 2.0  # a long pause: nothing to keep in the window
        elif audio_end - self.buffer_start > TRIM_AFTER_S:
            self._cut(audio, keep_last=True)
        return agreed > 0

    def _cut(self, audio: Samples, *, keep_last: bool) -> None:
        """Start the window in the quiet after the last committed clause (after the last held
        word but one when ``keep_last``, so a word the model is made to repeat follows the cut)."""
        last = len(self.held) - (2 if keep_last else 1)
        if last < 0:
            return
        at = next((i for i in range(last, -1, -1) if self.held[i].word.rstrip()[-1:] in CLAUSE_END), None)
        if at is None:
            if not keep_last:
                return
            at = last
        before = self.held[at]
        after = self.held[at + 1].start if at + 1 < len(self.held) else before.end + 0.3
        cut = quietest(audio, min(before.end, after) - 0.15, max(before.end, after) + 0.15)
        self.settled.extend(self.held[:at + 1])
        self.held = self.held[at + 1:]
        self.buffer_start = max(self.buffer_start, cut)

    def finish(self, audio: Samples) -> list[Word]:
        """The final pass over what is not committed yet (configured beam); every word, committed."""
        self._cut(audio, keep_last=False)
        held, tail = self._pass(audio, None)
        self.held = held + tail
        self.tentative = []
        return self.committed


def quietest(audio: Samples, start: float, end: float, frame_s: float = 0.01) -> float:
    """The middle of the quietest stretch between two times, in 10 ms frames (a pause between words)."""
    lo = max(int(start * SAMPLE_RATE), 0)
    hi = min(int(end * SAMPLE_RATE), audio.size)
    frame = int(frame_s * SAMPLE_RATE)
    n = (hi - lo) // frame
    if n < 1:
        return max(start, 0.0)
    energy = (audio[lo:lo + n * frame].reshape(n, frame) ** 2).mean(axis=1)
    # the middle of the quiet stretch around the quietest frame, not its edge
    quiet = energy <= energy.min() * 2 + 1e-10
    first = last = int(np.argmin(energy))
    while first > 0 and quiet[first - 1]:
        first -= 1
    while last < n - 1 and quiet[last + 1]:
        last += 1
    return (lo + ((first + last) / 2 + 0.5) * frame) / SAMPLE_RATE
