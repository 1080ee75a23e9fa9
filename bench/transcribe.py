"""Transcription figures over the dictation fixtures: speed, accuracy, load time, memory.

    .venv/bin/python bench/transcribe.py [--no-baseline] [--beam-size 5] [--threads 0]

For each fixture of fixtures/audio/manifest.toml: real-time factor (processing seconds per
audio second); word error rate against the spoken form (jiwer after Whisper's English
normaliser with number folding, as medwer applies it, so "one point two" and "1.2" agree);
medical word error rate (medwer: the same normaliser, only the words of its fixed medical
term list counted), against the spoken form; and, for reference, medwer's WER against the
written report form (what the rules of a later stage aim at). The transcriber is
radservice's own (faster-whisper, the configured bundled model, int8, VAD) with the
procedure-aware prompt from config/vocabulary; the baseline pass runs without a prompt.
Targets (2 cores, tiny.en int8): real-time factor <= 0.1, raw WER <= 0.15, medical WER <= 0.20.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import medwer  # noqa: E402

from radservice.dictation.audio import probe  # noqa: E402
from radservice.pipeline.transcribe import WhisperTranscriber  # noqa: E402
from radservice.pipeline.vocabulary import build_prompt, load_vocabulary  # noqa: E402
from tests.transcripts import AUDIO_FIXTURES, manifest, normalise, spoken_wer  # noqa: E402


def run_pass(transcriber: WhisperTranscriber, prompted: bool, scorer: medwer.Scorer) -> dict[str, float]:
    vocabulary = load_vocabulary(REPO / "config" / "vocabulary")
    total_audio = total_time = 0.0
    edits = words = 0
    spoken: list[str] = []
    written: list[str] = []
    hyps: list[str] = []
    print(f"\n## {'with the procedure-aware prompt' if prompted else 'baseline: no prompt'}")
    print(f"{'fixture':28} {'audio s':>7} {'rtf':>6} {'wer':>6} {'med wer':>7} {'written':>7}")
    for item in manifest():
        path = AUDIO_FIXTURES / f"{item['id']}.{item['format']}"
        _, seconds = probe(path)
        prompt = build_prompt(vocabulary, modality=item["modality"], procedure=item["procedure"].upper()) \
            if prompted else ""
        started = time.perf_counter()
        text = transcriber.transcribe(path, prompt=prompt).text
        elapsed = time.perf_counter() - started
        rate = spoken_wer(item["spoken"], text)
        ref_words = len(normalise(item["spoken"]).split())
        edits += round(rate * ref_words)
        words += ref_words
        total_audio += seconds
        total_time += elapsed
        spoken.append(item["spoken"])
        written.append(item["written"])
        hyps.append(text)
        med = scorer.corpus([item["spoken"]], [text])["medical_wer"]
        vs_written = scorer.corpus([item["written"]], [text])["wer"]
        print(f"{item['id']:28} {seconds:7.1f} {elapsed / seconds:6.3f} {rate:6.3f} "
              f"{med if med is not None else float('nan'):7.3f} {vs_written:7.3f}")
    figures = {"rtf": total_time / total_audio, "wer": edits / words,
               "medical_wer": scorer.corpus(spoken, hyps)["medical_wer"],
               "written_wer": scorer.corpus(written, hyps)["wer"]}
    print(f"{'TOTAL':28} {total_audio:7.1f} {figures['rtf']:6.3f} {figures['wer']:6.3f} "
          f"{figures['medical_wer']:7.3f} {figures['written_wer']:7.3f}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-baseline", action="store_true", help="skip the pass without a prompt")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 CPU threads (0: its default)")
    args = parser.parse_args()
    started = time.perf_counter()
    transcriber = WhisperTranscriber(beam_size=args.beam_size, cpu_threads=args.threads)
    load = time.perf_counter() - started
    warm = transcriber.warm_up()
    print(f"# {transcriber.name}, beam {args.beam_size}, threads {args.threads or 'default'}")
    print(f"model load {load:.2f} s, warm-up {warm:.2f} s")
    scorer = medwer.Scorer()
    results = {"prompt": run_pass(transcriber, True, scorer)}
    if not args.no_baseline:
        results["no prompt"] = run_pass(transcriber, False, scorer)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (max RSS) {peak_mib:.0f} MiB")
    print("targets: rtf <= 0.10, wer <= 0.15, medical wer <= 0.20")
    for name, f in results.items():
        verdict = "met" if f["rtf"] <= 0.1 and f["wer"] <= 0.15 and f["medical_wer"] <= 0.2 else "NOT met"
        print(f"{name:10} rtf {f['rtf']:.3f}  wer {f['wer']:.3f}  medical wer {f['medical_wer']:.3f}  "
              f"(wer vs written {f['written_wer']:.3f})  -> {verdict}")


if __name__ == "__main__":
    main()
