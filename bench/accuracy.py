"""Accuracy on speech nobody tuned to: the held-out evaluation set beside the tuning set.

    .venv/bin/python bench/accuracy.py [--set eval|tuning|wide|both|all] [--model tiny.en|base|FOLDER]
                                       [--inline-words] [--beam-size 5] [--no-prompt] [--show] [--per-file]

Three sets of synthetic dictations, each with its spoken and written reference:

- tuning: fixtures/audio/manifest.toml (12 dictations; vocabulary, rules, prompts and thresholds
  were looked at and tuned on these),
- wide: fixtures/tuning/manifest.toml (32 dictations written in the evaluation set's style with
  other cases and partly other voices, for tuning corrections and thresholds; ``--per-file`` is
  fine here),
- evaluation: fixtures/eval/manifest.toml (64 dictations, written and frozen before any tuning,
  other voices, speeds, pitches, noise, reverberation, telephone band, five containers). Its
  per-file errors are not read while editing vocabulary, rules or prompts: tune on the tuning sets,
  report on the evaluation set (``--per-file`` prints them; use it only on the tuning sets).

Each dictation goes through the worker's path: the configured transcriber with the study's
vocabulary prompt, then the deterministic rules with the study's template, vocabulary and the
site macros (the LLM step is not part of this figure). Printed per set:

- raw WER: the transcript against the spoken form (Whisper's English normaliser, numbers folded),
- written WER: the report draft against the written form (lower case, punctuation out, digits and
  units as written),
- medical WER: the same, counting only medical words (medwer's list plus the project's vocabulary),
- critical phrases: laterality words (left, right, bilateral, ...), negations (no, without, not,
  negative, ...) and measurements (number and unit) of the written reference that the draft lost
  or changed, or that the draft added; and how many of those errors carry a flag on the report,
- real-time factor of the transcription.

Targets (issue 25), on the evaluation set: written WER <= 0.15, medical WER <= 0.15, no critical
phrase lost or changed without a flag, upload RTF <= 0.3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jiwer  # noqa: E402
import medwer  # noqa: E402

from bench.refine import report_text, written_words  # noqa: E402
from radservice.pipeline.compose import Templates  # noqa: E402
from radservice.pipeline.decode import decode_parts  # noqa: E402
from radservice.pipeline.refine.flags import UNHEARD_WORD, Flag, flag_words, unheard_flags  # noqa: E402
from radservice.pipeline.refine.macros import load_macros  # noqa: E402
from radservice.pipeline.refine.rules import Rules  # noqa: E402
from radservice.pipeline.refine.terms import LATERALITY, NEGATORS  # noqa: E402
from radservice.pipeline.transcribe import Transcript, WhisperTranscriber, Word  # noqa: E402
from radservice.pipeline.vocabulary import build_prompt, load_lexicon, load_vocabulary, study_terms  # noqa: E402
from tests.transcripts import normalise  # noqa: E402

SETS = {"tuning": REPO / "fixtures" / "audio", "wide": REPO / "fixtures" / "tuning", "eval": REPO / "fixtures" / "eval"}
UNITS = frozenset({"mm", "cm", "ml", "hu", "cc", "degrees", "%"})
NEGATION_WORDS = NEGATORS | {"negative"}


def load_set(name: str) -> list[dict[str, str]]:
    folder = SETS[name]
    items: list[dict[str, str]] = tomllib.loads((folder / "manifest.toml").read_text(encoding="utf-8"))["dictation"]
    for item in items:
        item["path"] = str(folder / f"{item['id']}.{item['format']}")
    return items


def critical_kind(tokens: list[str], i: int) -> str | None:
    """What a written-form token is, if it is a critical one: a side, a negation, or a measurement
    (a number followed by a unit, or a percentage)."""
    word = tokens[i]
    if word in LATERALITY:
        return "laterality"
    if word in NEGATION_WORDS:
        return "negation"
    if word.endswith("%") or (word.replace(".", "", 1).isdigit() and i + 1 < len(tokens)
                              and tokens[i + 1] in UNITS):
        return "measurement"
    return None


@dataclass
class PhraseErrors:
    """Critical words of the reference the draft lost or changed, and critical words it added."""

    by_kind: Counter[str] = field(default_factory=Counter)
    flagged: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def phrase_errors(reference: str, hypothesis: str, flagged_positions: set[int]) -> PhraseErrors:
    """Align the written forms word by word; each critical reference word must come out equal
    (a measurement: its number and its unit). ``flagged_positions`` are hypothesis word indexes the
    report marks; an error within two words of a marked one counts as flagged."""
    ref, hyp = reference.split(), hypothesis.split()
    out = PhraseErrors()
    if not ref:
        return out
    pairs: list[tuple[int | None, int | None]] = []  # (ref index, hyp index) for every aligned position
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp) or "<empty>").alignments[0]:
        if chunk.type in ("equal", "substitute"):
            pairs += list(zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                              range(chunk.hyp_start_idx, chunk.hyp_end_idx), strict=True))
        elif chunk.type == "delete":
            pairs += [(r, None) for r in range(chunk.ref_start_idx, chunk.ref_end_idx)]
        else:
            pairs += [(None, h) for h in range(chunk.hyp_start_idx, chunk.hyp_end_idx)]
    hyp_of = {r: h for r, h in pairs if r is not None}
    nearest_hyp = 0
    for r, h in pairs:
        if h is not None:
            nearest_hyp = h
        if r is not None:
            kind = critical_kind(ref, r)
            if kind is None:
                continue
            span = [r, r + 1] if kind == "measurement" and not ref[r].endswith("%") else [r]
            if all(hyp_of.get(x) is not None and hyp[hyp_of[x]] == ref[x] for x in span if x < len(ref)):
                continue
            error = f"{kind}: '{' '.join(ref[x] for x in span if x < len(ref))}' -> " \
                    f"'{' '.join(hyp[hyp_of[x]] for x in span if hyp_of.get(x) is not None) or '(lost)'}'"
        elif h is not None and critical_kind(hyp, h) in ("laterality", "negation"):
            kind = critical_kind(hyp, h) or ""
            error = f"{kind}: added '{hyp[h]}'"
        else:
            continue
        out.by_kind[kind] += 1
        out.examples.append(error)
        if any(abs(nearest_hyp - f) <= 2 for f in flagged_positions):
            out.flagged += 1
    return out


@dataclass
class Totals:
    audio_s: float = 0.0
    seconds: float = 0.0
    raw_edits: int = 0
    raw_words: int = 0
    written_refs: list[str] = field(default_factory=list)
    written_hyps: list[str] = field(default_factory=list)
    phrases: PhraseErrors = field(default_factory=PhraseErrors)
    files_with_errors: int = 0

    def figures(self, medical_terms: set[str]) -> dict[str, float]:
        med = medwer.medical_wer(" ".join(self.written_refs), " ".join(self.written_hyps), medical_terms)
        return {"files": len(self.written_refs), "rtf": self.seconds / self.audio_s,
                "raw_wer": self.raw_edits / self.raw_words,
                "written_wer": float(jiwer.wer(self.written_refs, self.written_hyps)),
                "medical_wer": float(med[2]),
                "laterality": self.phrases.by_kind["laterality"], "negation": self.phrases.by_kind["negation"],
                "measurement": self.phrases.by_kind["measurement"],
                "unflagged": self.phrases.total - self.phrases.flagged}


class Pipeline:
    """The worker's path for one dictation: transcribe with the study's prompt, then the rules."""

    def __init__(self, transcriber: WhisperTranscriber, *, prompt: bool, flags: bool = True,
                 sure_words: bool = True, lexicon: bool = True, cache: Path | None = None) -> None:
        self.transcriber = transcriber
        self.prompt = prompt
        self.lexicon = load_lexicon(REPO / "config" / "lexicon.txt") if lexicon else []
        self.cache = cache
        self.flags = flags
        self.sure_words = sure_words
        self.flag_count = 0
        self.vocabulary = load_vocabulary(REPO / "config" / "vocabulary")
        self.templates = Templates.load(REPO / "config" / "templates")
        self.macros = load_macros(REPO / "config" / "macros.toml")

    def run(self, item: dict[str, str]) -> tuple[str, str, float, float, set[int]]:
        """(raw transcript, report draft, audio seconds, transcription seconds, flagged word positions)."""
        samples = decode_parts([Path(item["path"])], item["format"])
        prompt = build_prompt(self.vocabulary, modality=item["modality"], procedure=item["procedure"]) \
            if self.prompt else ""
        started = time.perf_counter()
        transcript = self._transcribe(item, samples, prompt)
        elapsed = time.perf_counter() - started
        template = self.templates.pick(modality=item["modality"], procedure_text=item["procedure"])
        terms = study_terms(self.vocabulary, modality=item["modality"], procedure=item["procedure"])
        refined = Rules(terms=terms, macros=self.macros, lexicon=self.lexicon).refine(
            transcript.text, section="findings", template=template,
            words=[w.__dict__ for w in transcript.words] if self.sure_words else ())
        draft = report_text(refined.sections, template)
        flags = flag_words([w.__dict__ for w in transcript.words], procedure=item["procedure"]) \
            + unheard_flags(transcript.unheard) if self.flags else []
        self.flag_count += len(flags)
        return (transcript.text, draft, samples.size / 16_000, elapsed,
                draft_positions(transcript.words, flags, draft))


    def _transcribe(self, item: dict[str, str], samples: Any, prompt: str) -> Transcript:
        """The transcriber's output, or (``--cache``) the one stored for the same file, model and
        settings: rules and flags can then be compared in seconds (the RTF is then the cache's)."""
        if self.cache is None:
            return self.transcriber.transcribe(samples, prompt=prompt)
        t = self.transcriber
        key = hashlib.sha256(json.dumps([item["path"], Path(item["path"]).stat().st_size, t.name, t.beam_size,
                                         t.inline_words, prompt]).encode()).hexdigest()[:24]
        path = self.cache / f"{item['id']}-{key}.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return Transcript(text=data["text"], words=[Word(*w) for w in data["words"]],
                              duration_s=data["duration_s"], model=data["model"],
                              unheard=[(a, b) for a, b in data["unheard"]])
        transcript = t.transcribe(samples, prompt=prompt)
        self.cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"text": transcript.text, "duration_s": transcript.duration_s,
                                    "model": transcript.model, "unheard": transcript.unheard,
                                    "words": [[w.word, w.start, w.end, w.probability] for w in transcript.words]}))
        return transcript


def draft_positions(words: list[Word], flags: list[Flag], draft: str) -> set[int]:
    """Where flagged transcript words ended up in the draft (written-form word indexes): the
    transcript's written tokens are aligned with the draft's, a dropped token maps to the place
    before it."""
    owner: list[int] = []
    for i, w in enumerate(words):
        owner += [i] * len(written_words(w.word).split())
    raw = [t for w in words for t in written_words(w.word).split()]
    hyp = written_words(draft).split()
    if not raw or not hyp:
        return set()
    to_draft: dict[int, int] = {}
    for chunk in jiwer.process_words(" ".join(raw), " ".join(hyp)).alignments[0]:
        for k, r in enumerate(range(chunk.ref_start_idx, chunk.ref_end_idx)):
            to_draft[r] = chunk.hyp_start_idx + min(k, max(0, chunk.hyp_end_idx - chunk.hyp_start_idx - 1))
    flagged_words = {i for i, w in enumerate(words) for f in flags if w.start == f.start and w.word.strip() == f.word}
    # speech without text is marked where it was: after the last word before it
    flagged_words |= {max([i for i, w in enumerate(words) if w.end <= f.start] or [0]) for f in flags
                      if f.word == UNHEARD_WORD}
    return {to_draft[t] for t, i in enumerate(owner) if i in flagged_words and t in to_draft}


def run_set(name: str, pipeline: Pipeline, args: argparse.Namespace) -> Totals:
    totals = Totals()
    items = load_set(name)[: args.limit or None]
    per_file = args.per_file or args.show
    if per_file:
        print(f"\n## {name}\n{'dictation':44} {'voice':16} {'effect':9} {'rtf':>5} {'raw':>6} {'written':>7} "
              f"{'errors':>6}")
    for item in items:
        raw, draft, audio_s, elapsed, flagged = pipeline.run(item)
        totals.audio_s += audio_s
        totals.seconds += elapsed
        ref_spoken = normalise(item["spoken"]).split()
        rate = float(jiwer.wer(" ".join(ref_spoken), normalise(raw) or "<empty>"))
        totals.raw_edits += round(rate * len(ref_spoken))
        totals.raw_words += len(ref_spoken)
        ref_written, hyp_written = written_words(item["written"]), written_words(draft)
        totals.written_refs.append(ref_written)
        totals.written_hyps.append(hyp_written or "<empty>")
        errors = phrase_errors(ref_written, hyp_written, flagged)
        totals.phrases.by_kind.update(errors.by_kind)
        totals.phrases.flagged += errors.flagged
        totals.files_with_errors += bool(errors.total)
        if per_file:
            print(f"{item['id'][:44]:44} {item.get('voice', ''):16} {item.get('effect', 'clean'):9} "
                  f"{elapsed / audio_s:5.2f} {rate:6.3f} {jiwer.wer(ref_written, hyp_written or '<empty>'):7.3f} "
                  f"{errors.total:6d}  {'; '.join(errors.examples)}", flush=True)
        if args.show:
            print(f"  raw:   {raw}\n  draft: {draft!r}")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="all",
                        help="eval, tuning, wide, a comma-separated list, both (eval,tuning) or all")
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base (both bundled) or a CTranslate2 folder")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--inline-words", action="store_true",
                        help="word timestamps while decoding (the service's settings before issue 25)")
    parser.add_argument("--no-prompt", action="store_true", help="no vocabulary prompt")
    parser.add_argument("--correct-sure-words", action="store_true",
                        help="let the vocabulary correct words the recogniser was sure of")
    parser.add_argument("--no-flags", action="store_true", help="no flags for words to check")
    parser.add_argument("--no-lexicon", action="store_true", help="correct to the study's vocabulary only")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep transcripts in this folder and reuse them (for comparing rules quickly)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N dictations of each set")
    parser.add_argument("--per-file", action="store_true", help="a line per dictation (tuning sets only, please)")
    parser.add_argument("--show", action="store_true", help="also print each transcript and draft")
    args = parser.parse_args()
    started = time.perf_counter()
    transcriber = WhisperTranscriber(model=args.model, beam_size=args.beam_size, inline_words=args.inline_words)
    load_s = time.perf_counter() - started
    transcriber.warm_up()
    pipeline = Pipeline(transcriber, prompt=not args.no_prompt, flags=not args.no_flags,
                        sure_words=not args.correct_sure_words, lexicon=not args.no_lexicon, cache=args.cache)
    vocabulary_terms = {written_words(t) for tl in pipeline.vocabulary for t in tl.terms}
    medical_terms = set(medwer.load_terms(medwer.default_terms_path())[0]) | vocabulary_terms
    names = {"both": ["eval", "tuning"], "all": ["eval", "tuning", "wide"]}.get(args.set, args.set.split(","))
    if unknown := [n for n in names if n not in SETS]:
        parser.error(f"unknown set {', '.join(unknown)}; choose from {', '.join(SETS)}")
    print(f"# {transcriber.name}, beam {args.beam_size}, words {'inline' if args.inline_words else 'aligned after'}"
          f", prompt {'off' if args.no_prompt else 'on'}; model load {load_s:.1f} s")
    results, flag_counts = {}, {}
    for name in names:
        before = pipeline.flag_count
        results[name] = run_set(name, pipeline, args).figures(medical_terms)
        flag_counts[name] = pipeline.flag_count - before
    print(f"\n{'set':8} {'files':>5} {'rtf':>6} {'raw WER':>8} {'written':>8} {'medical':>8} "
          f"{'lat':>4} {'neg':>4} {'meas':>4} {'unflagged':>9}")
    for name, f in results.items():
        print(f"{name:8} {f['files']:5d} {f['rtf']:6.3f} {f['raw_wer']:8.3f} {f['written_wer']:8.3f} "
              f"{f['medical_wer']:8.3f} {f['laterality']:4d} {f['negation']:4d} {f['measurement']:4d} "
              f"{f['unflagged']:9d} {flag_counts[name]:5d}")
    if "eval" in results:
        f = results["eval"]
        met = f["written_wer"] <= 0.15 and f["medical_wer"] <= 0.15 and f["rtf"] <= 0.3 \
            and f["unflagged"] == 0
        print(f"targets on eval (written <= 0.15, medical <= 0.15, rtf <= 0.3, no unflagged critical error): "
              f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
