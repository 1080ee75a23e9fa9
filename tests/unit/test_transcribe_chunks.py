"""Cutting a dictation into pieces Whisper decodes one window each (no model needed)."""

from __future__ import annotations

from radservice.pipeline.transcribe import CHUNK_S, SPEECH_PAD_S, WhisperTranscriber, plan_chunks, speech_after

RATE = 16_000


class StubDecoder(WhisperTranscriber):
    """The transcriber's piece loop without a model: speech from 0.5 s (or ``SPEECH_FROM``) to
    20 s, and whatever ``_decode_piece`` (each test's) writes."""

    SPEECH_FROM = 0.5

    def __init__(self) -> None:
        self.inline_words = False
        self.beam_size = 5
        self.name = "stub"

    def speech(self, samples: object) -> list[tuple[int, int]]:
        return [(int(self.SPEECH_FROM * RATE), 20 * RATE)]

    def _context(self, prompt: str, texts: list[str]) -> str:
        return prompt


def seconds(pieces: list[tuple[int, int]]) -> list[tuple[float, float]]:
    return [(round(a / RATE, 2), round(b / RATE, 2)) for a, b in pieces]


def sentences(*spans: tuple[float, float]) -> list[tuple[int, int]]:
    return [(int(a * RATE), int(b * RATE)) for a, b in spans]


def test_a_short_dictation_is_one_piece_of_the_whole_audio() -> None:
    speech = sentences((1.0, 5.0), (5.4, 12.0))
    assert seconds(plan_chunks(speech, 14 * RATE)) == [(0.0, 14.0)]


def test_audio_the_voice_detector_calls_silence_is_still_decoded() -> None:
    # telephone-band speech: Silero heard 1.6 s of speech in the first half of a 29 s dictation
    speech = sentences((0.5, 1.1), (2.5, 2.8), (13.6, 13.8), (14.1, 14.5))
    pieces = plan_chunks(speech, 29 * RATE)
    assert pieces[0][0] == 0 and pieces[-1][1] == 29 * RATE
    assert all(prev[1] == nxt[0] for prev, nxt in zip(pieces, pieces[1:], strict=False))


def test_a_32_second_dictation_is_cut_in_the_pause_nearest_its_middle_not_after_30_seconds() -> None:
    # sentences of 3.6 s with 0.4 s pauses: the old way decoded 0-30 s, then 2 s alone
    speech = sentences(*[(i * 4.0, i * 4.0 + 3.6) for i in range(8)])
    pieces = seconds(plan_chunks(speech, 33 * RATE))
    assert len(pieces) == 2
    (a0, a1), (b0, b1) = pieces
    assert a1 == b0 == 15.8  # the pause between the 4th and 5th sentence nearest the middle
    assert (a0, b1) == (0.0, 33.0)


def test_every_piece_fits_one_window_and_the_pieces_cover_all_speech_without_gaps() -> None:
    speech = sentences(*[(i * 2.5, i * 2.5 + 2.2) for i in range(60)])  # 150 s of short sentences
    pieces = plan_chunks(speech, 151 * RATE)
    assert all(b - a <= CHUNK_S * RATE for a, b in pieces)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(pieces, pieces[1:], strict=False))
    assert pieces[0][0] <= speech[0][0] and pieces[-1][1] >= speech[-1][1]
    lengths = [b - a for a, b in pieces]
    assert max(lengths) - min(lengths) <= 3 * RATE  # about equal, no sliver at the end
    for a, _ in pieces[1:]:  # every cut falls in a pause, never inside a sentence
        assert not any(s < a < e for s, e in speech)


def test_speech_longer_than_a_window_without_a_pause_is_cut_where_it_must() -> None:
    speech = sentences((0.0, 70.0))
    pieces = plan_chunks(speech, 70 * RATE)
    assert all(b - a <= CHUNK_S * RATE for a, b in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == 70 * RATE


def test_no_speech_no_pieces() -> None:
    assert plan_chunks([], 10 * RATE) == []


def test_speech_after_counts_only_speech_in_the_range() -> None:
    speech = sentences((0.0, 2.0), (3.0, 5.0))
    assert speech_after(speech, int(1.5 * RATE), int(4.0 * RATE)) == int(1.5 * RATE)


def test_a_window_that_ends_early_is_decoded_once_more_and_never_in_a_loop() -> None:
    import numpy as np

    from radservice.pipeline.transcribe import Word

    calls: list[float] = []

    class EndsEarly(StubDecoder):
        """A decoder that always stops after the word ending at 9.7 s (speech goes on to 20 s)."""

        SPEECH_FROM = 0.0

        def _decode_piece(self, piece: object, offset_s: float, **_: object) -> list[Word]:
            calls.append(offset_s)
            return [Word(" Small", max(offset_s, 9.0), 9.3, 0.9), Word(" effusion.", 9.3, 9.7, 0.9)]

    transcript = EndsEarly().transcribe(np.zeros(21 * RATE, dtype=np.float32))
    assert len(calls) == 2  # the piece, then its rest once: no endless re-decoding of the same rest
    assert calls[1] == round(9.7 - SPEECH_PAD_S, 2)
    assert transcript.text == "Small effusion."  # what the rest repeated is not written twice


def test_a_piece_heard_as_a_list_of_prompt_terms_is_decoded_again_without_the_vocabulary() -> None:
    import numpy as np

    from radservice.pipeline.transcribe import Word

    prompts: list[str] = []

    class ListsTheVocabulary(StubDecoder):
        """With the vocabulary prompt, 20 s of speech come out as one term said over and over."""

        def _decode_piece(self, piece: object, offset_s: float, *, prompt: str, **_: object) -> list[Word]:
            prompts.append(prompt)
            if prompt:
                return [Word(" Findings,", 0.5, 1.0, 0.9)] + [Word(" hyperechoic,", 1.0 + i, 2.0 + i, 0.5)
                                                              for i in range(6)]
            said = "There is occlusive thrombus in the left subclavian vein period".split()
            return [Word(f" {w}", 0.5 + i * 0.4, 0.9 + i * 0.4, 0.8) for i, w in enumerate(said * 5)]

    transcript = ListsTheVocabulary().transcribe(np.zeros(21 * RATE, dtype=np.float32), prompt="hyperechoic, Doppler")
    assert prompts == ["hyperechoic, Doppler", ""]
    assert transcript.text.startswith("There is occlusive thrombus in the left subclavian vein")
    assert "hyperechoic" not in transcript.text


def test_implausible_means_too_few_words_for_the_speech_or_one_word_repeated() -> None:
    from radservice.pipeline.transcribe import Word, implausible

    def words(text: str) -> list[Word]:
        return [Word(f" {w}", i * 0.4, i * 0.4 + 0.3, 0.9) for i, w in enumerate(text.split())]

    normal = words("No pleural effusion period. The heart is normal in size period.")
    assert not implausible(normal, speech_s=5.0)
    assert implausible(normal, speech_s=20.0)  # 12 words for 20 s of speech
    assert not implausible(words("Normal."), speech_s=1.0)  # too little speech to judge
    assert implausible(words("Findings, hyperechoic, hyperechoic, Hyperechoic, hyperechoic. " * 4), speech_s=8.0)


def test_speech_no_word_covers_is_reported_as_unheard() -> None:
    from radservice.pipeline.transcribe import Word, unheard

    speech = sentences((0.5, 4.0), (4.4, 9.0), (9.4, 12.0))
    said = [Word(f" w{i}", 0.5 + i * 0.5, 0.9 + i * 0.5, 0.9) for i in range(7)]  # 0.5 - 4.0 s
    later = [Word(" end.", 10.0, 11.9, 0.9)]
    assert unheard(speech, said + later) == [(4.4, 9.7)]  # the second sentence came out as nothing
    covering = [Word(f" w{i}", 0.5 + i * 0.5, 0.9 + i * 0.5, 0.9) for i in range(23)]  # to 12 s
    assert unheard(speech, covering) == []
    # a pause, a breath or a word aligned a little late is not a gap
    assert unheard(sentences((0.5, 1.6)), [Word(" yes.", 0.8, 1.2, 0.9)]) == []
