"""Procedure-aware prompts from the vocabulary folder."""

from __future__ import annotations

from pathlib import Path

from radservice.pipeline.vocabulary import MAX_PROMPT_CHARS, build_prompt, load_vocabulary

REPO_VOCABULARY = Path(__file__).resolve().parents[2] / "config" / "vocabulary"


def test_ct_chest_prompt_has_chest_and_ct_terms_but_not_knee_terms() -> None:
    prompt = build_prompt(load_vocabulary(REPO_VOCABULARY), modality="CT", procedure="CT CHEST WITH CONTRAST")
    assert prompt.startswith("CT chest with contrast. Findings: ")
    assert "pulmonary nodule" in prompt and "pleural effusion" in prompt and "Hounsfield units" in prompt
    assert "meniscus" not in prompt and "hydronephrosis" not in prompt
    # the most specific list (procedure words) comes before the modality's and the general one
    assert prompt.index("pulmonary nodule") < prompt.index("Hounsfield units") < prompt.index("unremarkable")
    assert len(prompt) <= MAX_PROMPT_CHARS


def test_admins_add_terms_without_code(tmp_path: Path) -> None:
    (tmp_path / "cardiac.txt").write_text("# heart\nmatch: cardiac, heart\nagatston score\n# comment line\n"
                                          "coronary calcium  # trailing comment\n")
    (tmp_path / "always.txt").write_text("match: *\nunremarkable\n")
    vocabulary = load_vocabulary(tmp_path)
    assert build_prompt(vocabulary, modality="CT", procedure="CT cardiac calcium score") == (
        "CT cardiac calcium score. Findings: agatston score, coronary calcium, unremarkable.")
    assert build_prompt(vocabulary, modality="MR", procedure="MR KNEE") == "MR knee. Findings: unremarkable."


def test_no_vocabulary_folder_means_a_plain_prompt(tmp_path: Path) -> None:
    assert load_vocabulary(tmp_path / "absent") == []
    assert build_prompt([], modality="US", procedure="") == "Findings: "


def test_prompt_stops_at_the_limit(tmp_path: Path) -> None:
    (tmp_path / "many.txt").write_text("match: *\n" + "\n".join(f"term number {i}" for i in range(500)))
    prompt = build_prompt(load_vocabulary(tmp_path), modality="CT", procedure="CT head")
    assert len(prompt) <= MAX_PROMPT_CHARS and prompt.endswith(".")


def test_procedure_title_keeps_abbreviations_only() -> None:
    prompt = build_prompt([], modality="CT", procedure="CT ABDOMEN AND PELVIS W CONTRAST")
    assert prompt == "CT abdomen and pelvis w contrast. Findings: "
    assert build_prompt([], modality="US", procedure="US Abdomen RUQ").startswith("US Abdomen RUQ. ")


def test_a_lexicon_is_terms_one_a_line_and_an_absent_file_is_none(tmp_path: Path) -> None:
    from radservice.pipeline.vocabulary import load_lexicon

    path = tmp_path / "lexicon.txt"
    path.write_text("# site terms\nspiculated\n\nconus medullaris  # spine\nspiculated\n", encoding="utf-8")
    assert load_lexicon(path) == ["spiculated", "conus medullaris"]
    assert load_lexicon(tmp_path / "missing.txt") == []
