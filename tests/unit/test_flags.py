"""Words to check before signing: flagged, never changed."""

from __future__ import annotations

from typing import Any

from radservice.pipeline.refine.flags import flag_words, ordered_side


def words(text: str, probabilities: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Transcript words (leading spaces as Whisper writes them), 0.5 s each, p 0.95 unless given."""
    probabilities = probabilities or {}
    return [{"word": f" {w}", "start": i * 0.5, "end": i * 0.5 + 0.4, "probability": probabilities.get(i, 0.95)}
            for i, w in enumerate(text.split())]


def test_a_confident_dictation_has_no_flags() -> None:
    assert flag_words(words("No pleural effusion. Small right pleural effusion. Left lung is clear.")) == []


def test_a_side_word_heard_with_low_confidence_is_flagged_with_its_time() -> None:
    (flag,) = flag_words(words("Small right pleural effusion.", {1: 0.31}))
    assert (flag.word, flag.start) == ("right", 0.5)
    assert "side word" in flag.reason and "31%" in flag.reason
    change = flag.as_change()
    assert (change.rule, change.before) == ("flag", "right") and "0.5 s" in change.after


def test_a_soundalike_of_a_side_next_to_anatomy_is_flagged_but_not_elsewhere() -> None:
    (flag,) = flag_words(words("There is a small light pleural effusion."))
    assert flag.word == "light" and "misheard" in flag.reason
    assert flag_words(words("The bright echogenic focus is seen. Write this down later.")) == []
    assert [f.word for f in flag_words(words("Nodule in the bright upper lobe."))] == ["bright"]


def test_an_unsure_negation_and_an_unsure_sentence_start_are_flagged() -> None:
    flags = flag_words(words("Not enlarged. Pneumothorax is seen.", {0: 0.4, 2: 0.2}))
    assert [(f.word, "negation" in f.reason, "sentence" in f.reason) for f in flags] == \
        [("Not", True, False), ("Pneumothorax", False, True)]


def test_an_improbable_passage_is_flagged_once() -> None:
    flags = flag_words(words("The liver is normal. My old M5s might be real.",
                             {5: 0.1, 6: 0.2, 7: 0.15, 8: 0.3, 9: 0.2}))
    assert len(flags) == 1 and "unclear passage" in flags[0].reason and flags[0].word == "old"


def test_a_side_against_the_ordered_side_is_flagged() -> None:
    flags = flag_words(words("Tear of the right medial meniscus. The left knee is normal."),
                       procedure="MRI LEFT KNEE WITHOUT CONTRAST")
    assert [f.word for f in flags] == ["right"] and "the order is MRI LEFT KNEE" in flags[0].reason
    assert flag_words(words("Right kidney normal. Left kidney normal."), procedure="US RENAL BILATERAL") == []


def test_ordered_side() -> None:
    assert ordered_side("MRI LEFT KNEE") == "left"
    assert ordered_side("XR RT WRIST 3 VIEWS") == "right"
    assert ordered_side("CT CHEST") is None
    assert ordered_side("MAMMO BILATERAL SCREENING") is None
    assert ordered_side("XR LEFT AND RIGHT HANDS") is None


def test_joined_side_words_are_flagged_like_side_words() -> None:
    assert [f.word for f in flag_words(words("A left-sided effusion.", {1: 0.2}))] == ["left-sided"]
    flags = flag_words(words("Small right-sided joint effusion."), procedure="MRI LEFT KNEE")
    assert [f.word for f in flags] == ["right-sided"]


def test_an_unsure_new_at_a_sentence_start_is_flagged_but_new_paragraph_is_not() -> None:
    # "No new consolidation" heard as "New consolidation": the lost "No" is exactly what to catch
    flags = flag_words(words("Clear lungs. New consolidation. New paragraph. Impression.", {2: 0.2, 4: 0.2, 6: 0.1}))
    assert [f.word for f in flags] == ["New"]


def test_speech_without_text_is_flagged_where_it_was() -> None:
    from radservice.pipeline.refine.flags import UNHEARD_WORD, unheard_flags

    (flag,) = unheard_flags([[4.4, 9.7]])
    assert (flag.word, flag.start) == (UNHEARD_WORD, 4.4)
    note = flag.as_change()
    assert note.rule == "flag" and "5.3 s of speech came out as no text" in note.after and "(at 4.4 s)" in note.after


def test_an_unsure_number_or_unit_is_flagged_and_a_sure_one_is_not() -> None:
    flags = flag_words(words("The nodule measures 9 x 7 mm. The duct measures four millimeters.",
                             {3: 0.32, 11: 0.3}))
    assert [(f.word, "measurement" in f.reason) for f in flags] == [("9", True), ("millimeters.", True)]
    assert flag_words(words("The nodule measures 9 x 7 mm.")) == []


def test_a_sentence_starting_like_no_is_flagged() -> None:
    (flag,) = flag_words(words("The prostate is enlarged. Nor extraprostatic extension."))
    assert flag.word == "Nor" and "misheard 'no'" in flag.reason
    assert flag_words(words("No effusion, nor pneumothorax.")) == []  # inside a sentence: English
