"""Local agreement on scripted hypotheses: what is committed, what is dropped as repeated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radservice.pipeline.streaming import LocalAgreement
from radservice.pipeline.transcribe import Audio, Transcript, Word

SR = 16_000


def words(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    return [Word(" " + w, start + i * step, start + i * step + 0.4, 0.9) for i, w in enumerate(text.split())]


class Scripted:
    """Answers each pass with the next hypothesis (times relative to the window, as Whisper's)."""

    name = "scripted"

    def __init__(self, *answers: list[Word]) -> None:
        self.answers = list(answers)
        self.windows: list[float] = []
        self.prompts: list[str] = []
        self.beams: list[int | None] = []

    def transcribe(self, audio: Audio, *, prompt: str = "", hotwords: str = "",
                   beam_size: int | None = None) -> Transcript:
        assert not isinstance(audio, Path)
        self.windows.append(audio.size / SR)
        self.prompts.append(prompt)
        self.beams.append(beam_size)
        return Transcript(text="x", words=self.answers.pop(0))


def audio(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def test_words_are_committed_when_two_passes_agree() -> None:
    model = Scripted(words("the lungs are"), words("the lungs were clear"), words("the lungs were clear period"))
    agreement = LocalAgreement(model, prompt="CT chest. Findings:")
    assert agreement.step(audio(1.5)) is False and agreement.committed_text == ""
    assert agreement.text == "the lungs are"
    assert agreement.step(audio(2.0)) is True and agreement.committed_text == "the lungs"
    assert agreement.text == "the lungs were clear"
    agreement.step(audio(2.5))
    assert agreement.committed_text == "the lungs were clear"
    assert model.prompts[-1] == "CT chest. Findings: the lungs"  # the committed text rides along
    assert model.beams == [1, 1, 1]


def test_repeated_committed_words_are_not_committed_twice() -> None:
    # The window still starts at 0 s: the model repeats committed words, with shifted times.
    model = Scripted(words("no effusion period"), words("no effusion period no"),
                     [Word(" no", 0.1, 0.4, 0.9), Word(" effusion", 0.6, 1.1, 0.9), Word(" period", 1.05, 1.4, 0.9),
                      Word(" no", 1.6, 1.9, 0.9), Word(" pneumothorax", 2.0, 2.6, 0.9)])
    agreement = LocalAgreement(model)
    agreement.step(audio(1.5))
    agreement.step(audio(2.0))
    assert agreement.committed_text == "no effusion period"
    agreement.step(audio(3.0))
    assert agreement.committed_text == "no effusion period no"
    assert agreement.text == "no effusion period no pneumothorax"


def test_finish_decodes_only_the_tail_with_the_configured_beam() -> None:
    model = Scripted(words("a b c d e f g h i j k l m n o p"), words("a b c d e f g h i j k l m n o p q"),
                     words("q r"))
    agreement = LocalAgreement(model)
    agreement.step(audio(8.5))
    agreement.step(audio(9.0))  # 16 words committed, window over 6 s: trimmed after the last one
    assert agreement.buffer_start == 7.9
    final = agreement.finish(audio(10.0))
    assert model.windows[-1] == pytest.approx(10.0 - 7.9) and model.beams[-1] is None
    assert "".join(w.word for w in final).split() == list("abcdefghijklmnopqr")


def test_a_window_that_never_agrees_is_bounded() -> None:
    hypotheses = [words(f"w{i} x{i} y{i} z{i} a{i} b{i} c{i} d{i} e{i} f{i}", step=1.2) for i in range(20)]
    model = Scripted(*hypotheses)
    agreement = LocalAgreement(model)
    for second in range(1, 16):
        agreement.step(audio(float(second)))
    assert agreement.committed, "words heard long ago were never committed"
    assert 15.0 - agreement.buffer_start <= 12.0 + 1.0
