"""The safety guard: scripted harmful edits are all refused with a reason, good edits all kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from radservice.pipeline.refine.guard import Guard, strip_chatter
from radservice.pipeline.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parents[2]
TERMS = [t for term_list in load_vocabulary(REPO / "config" / "vocabulary") for t in term_list.terms]
GUARD = Guard(TERMS)

CHEST = ("There is a 4 mm pulmonary nodule in the right upper lobe. No pleural effusion or pneumothorax. "
         "The heart size is normal. There is mild emphysema in both upper lobes.")
PE = ("Filling defects in the left lower lobe segmental pulmonary arteries consistent with acute pulmonary "
      "embolism. The right ventricle is not enlarged. Small left pleural effusion. No consolidation.")
RENAL = ("The right kidney measures 11 cm and the left kidney measures 10.8 cm. There is moderate "
         "hydronephrosis on the left. No renal calculus is seen.")
SPINE = ("At L4-L5 there is a left paracentral disc herniation causing mild narrowing of the left lateral "
         "recess. At L5-S1 there is a small disc bulge without spinal canal stenosis.")
THYROID = ("The right thyroid lobe measures 4.1 x 1.6 x 1.5 cm. There is a solid hypoechoic nodule in the "
           "right lower pole measuring 8 mm. No cervical lymphadenopathy.")
HEAD = "No intracranial hemorrhage, mass effect or midline shift. The ventricles are normal in size."

HARMFUL: list[tuple[str, str, str]] = [
    # laterality flipped, dropped, added
    (CHEST, CHEST.replace("right upper lobe", "left upper lobe"), "laterality"),
    (CHEST, CHEST.replace("in the right upper lobe", "in the upper lobe"), "laterality"),
    (PE, PE.replace("Small left pleural", "Small right pleural"), "laterality"),
    (PE, PE.replace("left lower lobe", "right lower lobe"), "laterality"),
    (PE, PE.replace("The right ventricle", "The left ventricle"), "laterality"),
    (RENAL, RENAL.replace("hydronephrosis on the left", "hydronephrosis on the right"), "laterality"),
    (RENAL, RENAL.replace("on the left", "bilaterally"), "laterality"),
    (SPINE, SPINE.replace("left paracentral", "right paracentral"), "laterality"),
    (SPINE, SPINE.replace("of the left lateral", "of the right lateral"), "laterality"),
    (THYROID, THYROID.replace("right lower pole", "left lower pole"), "laterality"),
    (THYROID, THYROID.replace("The right thyroid", "The thyroid"), "laterality"),
    (HEAD, HEAD + " Small left subdural collection.", "laterality"),
    # laterality swapped between two findings: the same words, bound to other findings
    (RENAL, "The left kidney measures 11 cm and the right kidney measures 10.8 cm. There is moderate "
            "hydronephrosis on the left. No renal calculus is seen.", "measurements"),
    ("Right pleural effusion. Left lower lobe atelectasis.",
     "Left pleural effusion. Right lower lobe atelectasis.", "findings"),
    # negation dropped, added, moved
    (CHEST, CHEST.replace("No pleural effusion", "Pleural effusion"), "negations"),
    (CHEST, CHEST.replace("The heart size is normal", "The heart size is not normal"), "negations"),
    (PE, PE.replace("is not enlarged", "is enlarged"), "negations"),
    (PE, PE.replace("No consolidation.", "Consolidation."), "negations"),
    (RENAL, RENAL.replace("No renal calculus is seen", "A renal calculus is seen"), "negations"),
    (SPINE, SPINE.replace("without spinal canal stenosis", "with spinal canal stenosis"), "negations"),
    (THYROID, THYROID.replace("No cervical lymphadenopathy", "Cervical lymphadenopathy"), "negations"),
    (HEAD, HEAD.replace("No intracranial hemorrhage", "Intracranial hemorrhage"), "negations"),
    (HEAD, HEAD.replace("The ventricles are normal", "The ventricles are not normal"), "negations"),
    ("No effusion. Small pneumothorax.", "Small effusion. No pneumothorax.", "findings"),
    ("Negative for pulmonary embolism.", "Positive for pulmonary embolism.", "negations"),
    ("The lungs are free of consolidation.", "The lungs show consolidation.", "negations"),
    ("Pneumothorax is absent.", "Pneumothorax is present.", "negations"),
    ("There isn't any pneumothorax.", "There is a pneumothorax.", "negations"),
    # numbers and units changed, dropped, added
    (CHEST, CHEST.replace("4 mm", "4 cm"), "measurements"),
    (CHEST, CHEST.replace("4 mm", "6 mm"), "numbers"),
    (CHEST, CHEST.replace("a 4 mm pulmonary", "a pulmonary"), "numbers"),
    (RENAL, RENAL.replace("10.8 cm", "108 cm"), "numbers"),
    (RENAL, RENAL.replace("10.8 cm", "10.8 mm"), "measurements"),
    (RENAL, RENAL.replace("11 cm", "11.5 cm"), "numbers"),
    (SPINE, SPINE.replace("L4-L5", "L3-L4"), "numbers"),
    (SPINE, SPINE.replace("L5-S1", "L5"), "numbers"),
    (THYROID, THYROID.replace("4.1 x 1.6 x 1.5 cm", "4.1 x 1.6 cm"), "numbers"),
    (THYROID, THYROID.replace("measuring 8 mm", "measuring 8 cm"), "measurements"),
    (THYROID, THYROID.replace("measuring 8 mm", "measuring eighteen mm"), "numbers"),
    (HEAD, HEAD + " A 5 mm midline shift.", "numbers"),
    ("A 4 mm nodule and a 9 mm cyst.", "A 9 mm nodule and a 4 mm cyst.", "measurements"),
    ("Stenosis of 50% at the origin.", "Stenosis of 70% at the origin.", "numbers"),
    # findings invented or dropped
    (CHEST, CHEST + " Small pericardial effusion.", "findings"),
    (CHEST, CHEST.replace(" There is mild emphysema in both upper lobes.", ""), "findings"),
    (PE, PE.replace("consistent with acute pulmonary embolism", "consistent with pneumonia"), "findings"),
    (RENAL, RENAL.replace("hydronephrosis", "hydroureter and hydronephrosis"), "findings"),
    (HEAD, HEAD.replace("No intracranial hemorrhage, mass effect", "No intracranial mass effect"), "findings"),
    (HEAD, HEAD + " Chronic small vessel ischemic changes.", "findings"),
    (THYROID, THYROID.replace("hypoechoic nodule", "hypoechoic mass"), "findings"),
    ("Mild cardiomegaly.", "Mild cardiomegaly with pulmonary edema.", "findings"),
    # severity, change and certainty
    (CHEST, CHEST.replace("mild emphysema", "severe emphysema"), "qualifiers"),
    (PE, PE.replace("Small left", "Large left"), "qualifiers"),
    (RENAL, RENAL.replace("moderate hydronephrosis", "mild hydronephrosis"), "qualifiers"),
    (PE, PE.replace("consistent with acute", "possibly representing acute"), "qualifiers"),
    ("Stable 4 mm nodule.", "New 4 mm nodule.", "qualifiers"),
    ("Possible small effusion.", "Small effusion.", "qualifiers"),
    # chatter and instructions instead of report text
    (CHEST, "I'm sorry, I cannot help with medical reports.", "talks"),
    (CHEST, "As an AI language model, " + CHEST, "talks"),
    (CHEST, "", "empty"),
]

GOOD: list[tuple[str, str]] = [
    (CHEST, "A 4 mm pulmonary nodule is present in the right upper lobe. There is no pleural effusion or "
            "pneumothorax. Heart size is normal. Mild emphysema is seen in both upper lobes."),
    (CHEST, "There is mild emphysema in both upper lobes. There is a 4 mm pulmonary nodule in the right upper "
            "lobe. No pleural effusion or pneumothorax. The heart size is normal."),
    (PE, "Filling defects are seen in the segmental pulmonary arteries of the left lower lobe, consistent with "
         "acute pulmonary embolism. The right ventricle is not enlarged. There is a small left pleural effusion. "
         "No consolidation."),
    (PE, "Filling defects in the left lower lobe segmental pulmonary arteries, consistent with acute pulmonary "
         "embolism. Right ventricle not enlarged. Small left pleural effusion. No consolidation."),
    (RENAL, "The right kidney measures 11 cm; the left kidney measures 10.8 cm. Moderate hydronephrosis is "
            "present on the left. No renal calculus is seen."),
    (RENAL, "The right kidney measures 11 cm and the left kidney 10.8 cm. Moderate hydronephrosis on the left. "
            "No renal calculus is seen."),
    (SPINE, "At L4-L5, a left paracentral disc herniation causes mild narrowing of the left lateral recess. At "
            "L5-S1, there is a small disc bulge without spinal canal stenosis."),
    (SPINE, "L4-L5: left paracentral disc herniation causing mild narrowing of the left lateral recess. "
            "L5-S1: small disc bulge without spinal canal stenosis."),
    (THYROID, "The right thyroid lobe measures 4.1 x 1.6 x 1.5 cm. A solid hypoechoic nodule measuring 8 mm is "
              "present in the right lower pole. No cervical lymphadenopathy."),
    (THYROID, "Right thyroid lobe: 4.1 x 1.6 x 1.5 cm. There is a solid hypoechoic nodule in the right lower "
              "pole, measuring 8 mm. No cervical lymphadenopathy."),
    (HEAD, "No intracranial hemorrhage, mass effect, or midline shift. The ventricles are normal in size."),
    (HEAD, "There is no intracranial hemorrhage, mass effect or midline shift. Ventricles are of normal size."),
    # merging a new dictation into the findings, without adding or dropping anything
    (CHEST + " Small hiatal hernia.", "There is a 4 mm pulmonary nodule in the right upper lobe. No pleural "
     "effusion or pneumothorax. The heart size is normal. Small hiatal hernia. There is mild emphysema in both "
     "upper lobes."),
    ("The liver is normal. The spleen is normal. The liver has a 1 cm cyst.",
     "The liver is normal except for a 1 cm cyst. The spleen is normal."),
    ("Lungs: clear. Heart: normal size. Lungs: no nodule.", "Lungs: clear, no nodule. Heart: normal size."),
    # grammar, spelling, capitals, punctuation
    ("there is a small left pleural effusion. no pneumothorax", "There is a small left pleural effusion. "
     "No pneumothorax."),
    ("the appendix is dilated measuring 1.2 cm with surrounding fat stranding",
     "The appendix is dilated, measuring 1.2 cm, with surrounding fat stranding."),
    ("Acute appendicitis without perforation", "Acute appendicitis without perforation."),
    ("The kidneys enhances symmetrically without hydronephrosis.",
     "The kidneys enhance symmetrically without hydronephrosis."),
    ("Mild cartilage thinning in the medial compartment", "Mild cartilage thinning in the medial compartment."),
    # the same text with chatter around it
    (CHEST, "Sure, here is the cleaned text:\n\n" + CHEST + "\n\nLet me know if you need anything else."),
    (HEAD, "```\n" + HEAD + "\n```"),
    (PE, "Here is the revised findings section:\n" + PE),
]


@pytest.mark.parametrize(("before", "after", "kind"), HARMFUL,
                         ids=[f"harm{n}-{kind}" for n, (_, _, kind) in enumerate(HARMFUL)])
def test_harmful_edit_is_refused_with_its_reason(before: str, after: str, kind: str) -> None:
    verdict = GUARD.check(before, after)
    assert not verdict.accepted, after
    assert verdict.text == before  # the rules' text stays
    assert any(kind in reason for reason in verdict.reasons), verdict.reasons


@pytest.mark.parametrize(("before", "after"), GOOD, ids=[f"good{n}" for n in range(len(GOOD))])
def test_good_edit_is_accepted(before: str, after: str) -> None:
    verdict = GUARD.check(before, after)
    assert verdict.accepted, verdict.reasons
    assert verdict.text == strip_chatter(after) and "Sure" not in verdict.text and "```" not in verdict.text


def test_the_scripted_sets_are_large_enough() -> None:
    assert len(HARMFUL) >= 50 and len(GOOD) >= 20


def test_echoed_instructions_are_refused() -> None:
    instructions = "Rewrite the findings of a radiology report so they read well without changing any fact."
    answer = "Rewrite the findings of a radiology report so they read well: " + HEAD
    verdict = GUARD.check(HEAD, answer, instructions=instructions)
    assert not verdict.accepted and "repeats the instructions" in " ".join(verdict.reasons)


def test_unchanged_text_is_accepted_and_facts_are_bound() -> None:
    assert GUARD.check(CHEST, CHEST).accepted
    facts = GUARD.facts("A 4 mm nodule in the right upper lobe and a 6 mm cyst in the left kidney.")
    assert facts.measurements == {("4.0", "mm", "nodule"): 1, ("6.0", "mm", "cyst"): 1}
    assert ("upper lobe", False, "right") in facts.terms and ("kidney", False, "left") in facts.terms
    assert ("pneumothorax", True, "") in GUARD.facts("No effusion or pneumothorax.").terms



def test_every_written_reference_passes_against_itself() -> None:
    from tests.transcripts import manifest

    for item in manifest():
        verdict = GUARD.check(item["written"], "Here is the cleaned text:\n" + item["written"])
        assert verdict.accepted and verdict.text == item["written"], (item["id"], verdict.reasons)


def test_a_suggested_impression_may_leave_findings_out_but_not_change_one() -> None:
    assert GUARD.check(CHEST, "4 mm right upper lobe pulmonary nodule. Mild emphysema.", subset=True).accepted
    for wrong in ("4 mm left upper lobe pulmonary nodule.", "6 mm right upper lobe pulmonary nodule.",
                  "Right pleural effusion.", "Severe emphysema.", "No pulmonary nodule."):
        verdict = GUARD.check(CHEST, wrong, subset=True)
        assert not verdict.accepted, wrong
