"""The bundled model on the dictation fixtures: word times never change the text, and no speech is
left out at a window's end (faster-whisper with the real tiny.en model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radservice.pipeline.decode import SAMPLE_RATE, decode_parts
from radservice.pipeline.transcribe import MISSED_SPEECH_S, Transcript, WhisperTranscriber
from radservice.pipeline.vocabulary import build_prompt, load_vocabulary
from tests.transcripts import AUDIO_FIXTURES, manifest, spoken_wer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    return WhisperTranscriber()


def transcribe(transcriber: WhisperTranscriber, item: dict[str, str]) -> tuple[Transcript, list[tuple[int, int]]]:
    samples = decode_parts([AUDIO_FIXTURES / f"{item['id']}.{item['format']}"], item["format"])
    prompt = build_prompt(load_vocabulary(REPO / "config" / "vocabulary"), modality=item["modality"],
                          procedure=item["procedure"])
    return transcriber.transcribe(samples, prompt=prompt), transcriber.speech(samples)


# the dictations longer than one 30 s window, where the last sentence used to be at risk
LONG = [item for item in manifest() if item["id"] in ("us_gallbladder", "ct_chest_nodule", "us_thyroid", "us_renal")]


@pytest.mark.parametrize("item", LONG, ids=lambda item: item["id"])
def test_words_spell_the_text_and_cover_all_speech_to_the_end(transcriber: WhisperTranscriber,
                                                              item: dict[str, str]) -> None:
    transcript, speech = transcribe(transcriber, item)
    words = transcript.words
    # the text is the decoded text; word times are aligned afterwards and never alter it
    assert "".join(w.word for w in words).strip() == transcript.text
    assert all(0 <= w.start <= w.end <= transcript.duration_s + 0.05 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    assert all(0.0 <= w.probability <= 1.0 for w in words)
    # every stretch of speech longer than a second has words in it; the last one is not left out
    for start, end in speech:
        if end - start > SAMPLE_RATE:
            assert any(w.end > start / SAMPLE_RATE and w.start < end / SAMPLE_RATE for w in words), (start, end)
    assert words[-1].end >= speech[-1][1] / SAMPLE_RATE - MISSED_SPEECH_S
    last_sentence = item["spoken"].rstrip(" .period").rsplit(" period. ", 1)[-1].split()
    heard = {w.strip(".,").lower() for w in transcript.text.split()}
    assert sum(w.lower() in heard for w in last_sentence) >= len(last_sentence) / 2, (last_sentence, transcript.text)


def test_the_bundled_base_model_loads_from_its_two_packages_and_transcribes() -> None:
    base = WhisperTranscriber(model="base")
    assert base.name == "faster-whisper:base:int8"
    item = next(i for i in manifest() if i["id"] == "ct_head_noncontrast")
    transcript, _ = transcribe(base, item)
    assert spoken_wer(item["spoken"], transcript.text) <= 0.2, transcript.text
    assert "".join(w.word for w in transcript.words).strip() == transcript.text


def test_a_model_folder_without_a_model_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no CTranslate2 model"):
        WhisperTranscriber(model=str(tmp_path))


def test_uploads_on_base_and_live_passes_on_tiny_en_when_configured(tmp_path: Path) -> None:
    from radservice.config import load_settings
    from radservice.dictation.flows import FinalTranscribeFlow, LiveTranscribeFlow, TranscribeFlow
    from radservice.dictation.service import TRANSCRIBE, TRANSCRIBE_FINAL, TRANSCRIBE_LIVE
    from radservice.handlers import handlers

    config = tmp_path / "radservice.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[whisper]\nmodel = "base"\nlive_model = "tiny.en"\n'
                      f'vocabulary_dir = "{REPO}/config/vocabulary"\n[llm]\nenabled = false\n'
                      f'[report]\ntemplates_dir = "{REPO}/config/templates"\n'
                      f'macros_file = "{REPO}/config/macros.toml"\n')
    flows = handlers(load_settings(config))
    upload, live = flows[TRANSCRIBE], flows[TRANSCRIBE_LIVE]
    assert isinstance(upload, TranscribeFlow) and isinstance(live, LiveTranscribeFlow)
    assert upload.transcriber.name == "faster-whisper:base:int8"
    assert live.decoder.name == "faster-whisper:tiny.en:int8"
    # the live text is replaced by the upload model's when the recording is done
    final = flows[TRANSCRIBE_FINAL]
    assert live.final_pass and isinstance(final, FinalTranscribeFlow) and final.transcriber is upload.transcriber
    assert getattr(live, "urgent", False) and not getattr(final, "urgent", False)  # live jobs go first

    config.write_text(config.read_text().replace('model = "base"', 'model = "tiny.en"'))
    same = handlers(load_settings(config))[TRANSCRIBE_LIVE]
    assert isinstance(same, LiveTranscribeFlow) and not same.final_pass  # one model: nothing more accurate
