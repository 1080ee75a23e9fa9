"""Local agreement on scripted hypotheses: what is committed, what each pass is made to start with,
where the window is cut."""

from __future__ import annotations

import numpy as np
import pytest

from radservice.pipeline.decode import Samples
from radservice.pipeline.streaming import TRIM_AFTER_S, LocalAgreement, _split_prefix, quietest
from radservice.pipeline.transcribe import Word

SR = 16_000


def words(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    return [Word(" " + w, start + i * step, start + i * step + 0.4, 0.9) for i, w in enumerate(text.split())]


class Scripted:
    """Answers each pass like Whisper with a decoder prefix: the prefix's words first, then the
    next scripted words; one word every 0.5 s from the window's start (times relative to it)."""

    name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.windows: list[float] = []
        self.prompts: list[str] = []
        self.prefixes: list[str] = []
        self.beams: list[int | None] = []
        self.budgets: list[int] = []
        self.offset = 0.0

    def decode_window(self, audio: Samples, *, prompt: str = "", prefix: str = "", beam_size: int | None = None,
                      max_new_tokens: int = 200) -> list[Word]:
        self.windows.append(audio.size / SR)
        self.prompts.append(prompt)
        self.prefixes.append(prefix)
        self.beams.append(beam_size)
        self.budgets.append(max_new_tokens)
        return words(f"{prefix} {self.answers.pop(0)}", start=self.offset)


def noise(seconds: float, quiet: tuple[float, float] | None = None) -> np.ndarray:
    """Loud everywhere (speech, as far as a cut can tell), silent between two times if given."""
    samples = np.random.default_rng(7).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)
    if quiet:
        samples[int(quiet[0] * SR):int(quiet[1] * SR)] = 0.0
    return samples


def test_words_are_committed_when_two_passes_agree_and_then_forced_as_the_prefix() -> None:
    model = Scripted("the lungs are", "the lungs were clear", "were clear period", "period no")
    agreement = LocalAgreement(model, prompt="CT chest. Findings:")
    assert agreement.step(noise(1.5)) is False and agreement.committed_text == ""
    assert agreement.text == "the lungs are"
    assert agreement.step(noise(2.0)) is True and agreement.committed_text == "the lungs"
    assert agreement.text == "the lungs were clear"
    assert model.prefixes[-1] == ""  # passes before anything was committed are free
    agreement.step(noise(2.5))
    # the committed words were the pass's prefix: only what follows them is new
    assert model.prefixes[-1] == "the lungs"
    assert agreement.committed_text == "the lungs were clear"
    assert agreement.text == "the lungs were clear period"
    agreement.step(noise(3.0))
    assert agreement.committed_text == "the lungs were clear period"
    assert model.prompts == ["CT chest. Findings:"] * 4  # nothing cut yet: no settled text in the prompt
    assert model.beams == [3, 3, 3, 3]


def test_the_prefix_is_found_however_the_model_groups_it_into_words() -> None:
    grouped = [Word(" 10", 0.0, 0.3, 0.9), Word(".8", 0.3, 0.6, 0.9), Word(" cm", 0.6, 0.9, 0.9),
               Word(" period", 1.0, 1.4, 0.9)]
    assert _split_prefix(grouped, "10.8 cm") == 3
    assert _split_prefix(grouped, "10.8") == 2
    assert _split_prefix(grouped, "10.8 cm period") == 4


def test_fresh_times_for_the_held_words_come_from_the_latest_pass() -> None:
    model = Scripted("no effusion", "no effusion period", "period no")
    agreement = LocalAgreement(model)
    agreement.step(noise(1.5))
    agreement.step(noise(2.0))
    assert [w.end for w in agreement.held] == [0.4, 0.9]
    model.offset = 0.2  # the next pass, hearing more, places the same words a little later
    agreement.step(noise(2.5))
    assert model.prefixes[-1] == "no effusion"
    assert agreement.committed_text == "no effusion period"
    assert [w.end for w in agreement.held] == [0.6, 1.1, 1.6]


def test_a_long_window_is_cut_in_the_quiet_after_a_committed_clause() -> None:
    # 44 words, one per 0.5 s: "w0 ... w9." ends a clause at 4.9 s; the pause after it is at 5.0-5.1 s.
    script = [f"w{i}" + ("." if i == 9 else "") for i in range(44)]
    model = Scripted(" ".join(script[:40]), " ".join(script[:42]), " ".join(script[40:]))
    agreement = LocalAgreement(model, prompt="Findings:")
    agreement.step(noise(11.0, quiet=(4.95, 5.05)))
    assert agreement.committed == [] and agreement.buffer_start == 0.0
    agreement.step(noise(21.0, quiet=(4.95, 5.05)))  # 40 words agreed; the window is over 20 s: cut
    assert agreement.buffer_start == pytest.approx(5.0, abs=0.03)
    assert [w.word.strip() for w in agreement.settled] == script[:10]
    assert agreement.committed_text == " ".join(script[:40])
    cut = agreement.buffer_start
    agreement.step(noise(21.5, quiet=(4.95, 5.05)))
    # the settled text rides in the prompt; the held words after the cut are the prefix
    assert model.prompts[-1] == "Findings: " + " ".join(script[:10])
    assert model.prefixes[-1] == " ".join(script[10:40])
    assert model.windows[-1] == pytest.approx(21.5 - cut, abs=0.001)
    assert agreement.committed_text == " ".join(script[:42])
    # still over 12 s with no clause end: cut before the last committed word but one
    assert [w.word.strip() for w in agreement.held] == script[41:42]


def test_finish_decodes_only_what_follows_the_last_committed_clause_with_the_configured_beam() -> None:
    model = Scripted("findings no effusion.", "findings no effusion. the heart", "heart is normal")
    agreement = LocalAgreement(model)
    # "effusion." is heard 1.0-1.4 s; the pause after it 1.5-1.6 s
    agreement.step(noise(2.5, quiet=(1.5, 1.6)))
    agreement.step(noise(3.0, quiet=(1.5, 1.6)))
    assert agreement.committed_text == "findings no effusion."
    final = agreement.finish(noise(4.0, quiet=(1.5, 1.6)))
    assert agreement.buffer_start == pytest.approx(1.55, abs=0.02)
    assert model.beams[-1] is None and model.prefixes[-1] == ""
    assert model.windows[-1] == pytest.approx(4.0 - 1.55, abs=0.02)
    assert " ".join(w.word.strip() for w in final) == "findings no effusion. heart is normal"
    assert agreement.tentative == []


def test_a_window_that_never_agrees_is_bounded() -> None:
    model = Scripted(*[" ".join(f"{c}{i}" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN") for i in range(60)])
    agreement = LocalAgreement(model)
    for half in range(2, 61):
        agreement.step(noise(half / 2))
    assert agreement.committed, "words heard long ago were never committed"
    assert 30.0 - agreement.buffer_start <= TRIM_AFTER_S + 0.5
    assert max(model.windows) <= TRIM_AFTER_S + 0.5


def test_generation_is_bounded_by_the_audio_not_yet_committed() -> None:
    model = Scripted("one two", "one two three", "three four")
    agreement = LocalAgreement(model)
    agreement.step(noise(1.0))
    agreement.step(noise(10.0))
    agreement.step(noise(10.5))
    # 10 s uncommitted -> 12 + 8 * 10 tokens; after "one two" (held to 0.9 s) 9.6 s remain
    assert model.budgets[1] == 92
    assert model.budgets[2] == 12 + int(8 * 9.6)


def test_a_long_pause_does_not_keep_its_silence_in_the_window() -> None:
    class Silent(Scripted):
        def decode_window(self, audio: Samples, **kwargs: object) -> list[Word]:
            self.windows.append(audio.size / SR)
            return []

    model = Silent()
    agreement = LocalAgreement(model)
    for second in range(1, 26):
        agreement.step(np.zeros(second * SR, dtype=np.float32))
    assert max(model.windows) <= TRIM_AFTER_S + 1.0


def test_quietest_finds_the_pause() -> None:
    audio = noise(3.0, quiet=(1.40, 1.46))
    assert quietest(audio, 1.0, 2.0) == pytest.approx(1.43, abs=0.02)
    assert quietest(audio, 2.9, 3.5) >= 2.9  # runs past the end: still within the audio
