"""Refinement figures: the deterministic rules on every audio fixture's transcript.

    .venv/bin/python bench/refine.py [--repeat 200]

Each fixture is transcribed once with the bundled model (the study's vocabulary prompt, as the
worker does), then refined by the rules with the study's template, vocabulary and the site
macros. Printed per fixture and in total, against the written-report reference of
fixtures/audio/manifest.toml ("Findings: ... Impression: ..."):

- written-form WER of the raw transcript and of the refined report (lower case, punctuation
  removed, hyphens as spaces; digits and units as written, so "four millimeter" against "4 mm"
  counts),
- medical WER (`medwer`: only the medical words of both sides, medwer's term list plus ours),
- laterality, negation and measurement errors against the reference, raw and refined, and the
  laterality / negation / measurement words the rules lost (present in the raw transcript,
  missing from the refined text),
- the rules' time per 100 words (median of --repeat runs).

Targets: refined WER <= half the raw WER and <= 0.10; medical WER <= 0.10; nothing lost by the
rules; rules under 5 ms per 100 words; the guard under 2 ms per 100 words.

The LLM path (not part of the test command):

    .venv/bin/python bench/refine.py --llm-url http://127.0.0.1:8080/v1 --llm-api openai --llm-model gemma3
    .venv/bin/python bench/refine.py --llm-standin      # the tests' Ollama stand-in (echoes: plumbing only)

asks the model, per fixture, to clean the refined impression and to merge the second half of the
refined findings into the first, each answer through the guard, and prints how many answers the
guard kept, why it refused the others, and the model's latency per call.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jiwer  # noqa: E402
import medwer  # noqa: E402

from integrations.ollama.client import make_model  # noqa: E402
from radservice.config import LlmSettings  # noqa: E402
from radservice.pipeline.compose import Template, Templates  # noqa: E402
from radservice.pipeline.decode import decode_parts  # noqa: E402
from radservice.pipeline.refine.guard import Guard  # noqa: E402
from radservice.pipeline.refine.llm import LlmRefiner, Prompts, TextModel  # noqa: E402
from radservice.pipeline.refine.macros import load_macros  # noqa: E402
from radservice.pipeline.refine.numbers import written_numbers  # noqa: E402
from radservice.pipeline.refine.rules import Rules  # noqa: E402
from radservice.pipeline.refine.terms import LATERALITY, NEGATION  # noqa: E402
from radservice.pipeline.transcribe import WhisperTranscriber  # noqa: E402
from radservice.pipeline.vocabulary import build_prompt, load_vocabulary, study_terms  # noqa: E402
from radservice.reports.service import merge_text  # noqa: E402
from tests.ollama_standin import ollama_standin  # noqa: E402
from tests.transcripts import AUDIO_FIXTURES, manifest  # noqa: E402

MEASURE = re.compile(r"\b(\d+(?:\.\d+)?)\s*(mm|cm|ml|hu|%)(?!\w)")


def written_words(text: str) -> str:
    """Lower case, punctuation out (decimal points kept), hyphens and slashes as spaces."""
    text = text.lower().replace("-", " ").replace("/", " ")
    return " ".join(re.findall(r"\d+(?:\.\d+)?%?|[a-z0-9']+", text))


def report_text(sections: dict[str, str], template: Template) -> str:
    """The draft as the service shows it: the template's sections in its order, then any other."""
    titles = {s.key: s.title for s in template.sections}
    order = [k for k in titles if k in sections] + [k for k in sections if k not in titles]
    return "\n".join(f"{titles.get(k, k)}: {sections[k]}" for k in order if sections[k])


def category_errors(reference: str, hypothesis: str, words: frozenset[str]) -> int:
    ref = Counter(w for w in reference.split() if w in words)
    hyp = Counter(w for w in hypothesis.split() if w in words)
    return sum(((ref - hyp) + (hyp - ref)).values())


def measurements(text: str) -> Counter[tuple[float, str]]:
    return Counter((float(n), u) for n, u in MEASURE.findall(text.lower()))


def lost(raw: str, refined: str) -> int:
    """Laterality, negation and measurement words of the raw transcript missing after the rules."""
    before, after = written_words(raw).split(), written_words(refined).split()
    words = LATERALITY | NEGATION
    missing = Counter(w for w in before if w in words) - Counter(w for w in after if w in words)
    raw_numbers = measurements(written_numbers(raw)[0])
    return sum(missing.values()) + sum((raw_numbers - measurements(refined)).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--show", action="store_true", help="print each raw transcript and refined report")
    parser.add_argument("--llm-url", default="", help="run the LLM path against this server")
    parser.add_argument("--llm-api", default="ollama", choices=("ollama", "openai"))
    parser.add_argument("--llm-model", default="llama3.2:3b")
    parser.add_argument("--llm-timeout", type=float, default=60.0)
    parser.add_argument("--llm-standin", action="store_true", help="run the LLM path against the Ollama stand-in")
    args = parser.parse_args()
    vocabulary = load_vocabulary(REPO / "config" / "vocabulary")
    templates = Templates.load(REPO / "config" / "templates")
    macros = load_macros(REPO / "config" / "macros.toml")
    medical_terms = set(medwer.load_terms(medwer.default_terms_path())[0])
    medical_terms |= {written_words(t) for tl in vocabulary for t in tl.terms}
    transcriber = WhisperTranscriber()
    transcriber.warm_up()
    llm = LlmBench.start(args)
    totals: dict[str, list[float]] = {k: [] for k in ("raw", "refined", "med_raw", "med_refined")}
    errors = Counter[str]()
    timings: list[float] = []
    guard_timings: list[float] = []
    print(f"{'fixture':26} {'raw WER':>8} {'refined':>8} {'med raw':>8} {'med ref':>8}  "
          "lat/neg/meas raw -> refined  lost")
    for item in manifest():
        path = AUDIO_FIXTURES / f"{item['id']}.{item['format']}"
        prompt = build_prompt(vocabulary, modality=item["modality"], procedure=item["procedure"])
        raw = transcriber.transcribe(decode_parts([path], item["format"]), prompt=prompt).text
        template = templates.pick(modality=item["modality"], procedure_text=item["procedure"])
        rules = Rules(terms=study_terms(vocabulary, modality=item["modality"], procedure=item["procedure"]),
                      macros=macros)
        refined_sections = rules.refine(raw, section="findings", template=template).sections
        refined = report_text(refined_sections, template)
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            rules.refine(raw, section="findings", template=template)
            runs.append(time.perf_counter() - started)
        timings.append(statistics.median(runs) * 1000 * 100 / max(1, len(raw.split())))
        # the guard's cost on this report (an LLM answer of the same length is checked the same way)
        guard = Guard(study_terms(vocabulary, modality=item["modality"], procedure=item["procedure"]))
        assert guard.check(refined, refined).accepted
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            guard.check(refined, refined)
            runs.append(time.perf_counter() - started)
        guard_timings.append(statistics.median(runs) * 1000 * 100 / max(1, len(refined.split())))
        if llm:
            llm.run(refined_sections, guard, show=args.show)
        ref, hyp_raw, hyp = written_words(item["written"]), written_words(raw), written_words(refined)
        row = {"raw": jiwer.wer(ref, hyp_raw), "refined": jiwer.wer(ref, hyp),
               "med_raw": medwer.medical_wer(ref, hyp_raw, medical_terms)[2],
               "med_refined": medwer.medical_wer(ref, hyp, medical_terms)[2]}
        for key, value in row.items():
            totals[key].append(value)
        counts = {
            "raw": (category_errors(ref, hyp_raw, LATERALITY), category_errors(ref, hyp_raw, NEGATION),
                    sum((measurements(item["written"]) - measurements(raw)).values())),
            "refined": (category_errors(ref, hyp, LATERALITY), category_errors(ref, hyp, NEGATION),
                        sum((measurements(item["written"]) - measurements(refined)).values())),
        }
        for stage, (lat, neg, meas) in counts.items():
            errors[f"{stage} laterality"] += lat
            errors[f"{stage} negation"] += neg
            errors[f"{stage} measurement"] += meas
        errors["lost"] += lost(raw, refined)
        print(f"{item['id']:26} {row['raw']:8.3f} {row['refined']:8.3f} {row['med_raw']:8.3f} "
              f"{row['med_refined']:8.3f}  {'/'.join(map(str, counts['raw']))} -> "
              f"{'/'.join(map(str, counts['refined']))}  {lost(raw, refined)}", flush=True)
        if args.show:
            print(f"  raw:       {raw}\n  refined:   {refined!r}\n  reference: {item['written']!r}")
    mean = {k: statistics.mean(v) for k, v in totals.items()}
    print(f"mean: written WER raw {mean['raw']:.3f} -> refined {mean['refined']:.3f} "
          f"(ratio {mean['refined'] / mean['raw']:.2f}); medical WER raw {mean['med_raw']:.3f} -> refined "
          f"{mean['med_refined']:.3f}")
    print("errors against the reference (raw -> refined): " + "; ".join(
        f"{kind} {errors[f'raw {kind}']} -> {errors[f'refined {kind}']}"
        for kind in ("laterality", "negation", "measurement")))
    print(f"laterality / negation / measurement words lost by the rules: {errors['lost']}")
    print(f"rules: {statistics.median(timings):.2f} ms per 100 words (median over fixtures; max "
          f"{max(timings):.2f})")
    print(f"guard: {statistics.median(guard_timings):.2f} ms per 100 words (median over fixtures; max "
          f"{max(guard_timings):.2f})")
    if llm:
        llm.report()
    print("targets: refined WER <= 0.5 x raw and <= 0.10; medical WER <= 0.10; nothing lost; < 5 ms per 100 words; "
          "guard < 2 ms per 100 words")


class LlmBench:
    """The LLM path: clean each impression, merge each findings' second half into its first."""

    def __init__(self, model: TextModel, stack: contextlib.ExitStack) -> None:
        self.model = model
        self.stack = stack
        self.prompts = Prompts.load(REPO / "config" / "prompts")
        self.kept = 0
        self.refused: Counter[str] = Counter()
        self.unavailable: Counter[str] = Counter()
        self.seconds: list[float] = []

    @classmethod
    def start(cls, args: argparse.Namespace) -> LlmBench | None:
        stack = contextlib.ExitStack()
        if args.llm_standin:
            url, api, name = stack.enter_context(ollama_standin()).url, "ollama", "llama3.2:3b"
        elif args.llm_url:
            url, api, name = args.llm_url, args.llm_api, args.llm_model
        else:
            return None
        model = make_model(LlmSettings(api=api, url=url, model=name, timeout_s=args.llm_timeout))
        assert model is not None
        return cls(model, stack)

    def run(self, sections: dict[str, str], guard: Guard, *, show: bool) -> None:
        refiner = LlmRefiner(self.model, self.prompts, guard)
        outcomes = []
        if sections.get("impression"):
            outcomes.append(refiner.clean_impression(sections["impression"]))
        sentences = re.split(r"(?<=\.)\s+", sections.get("findings", ""))
        if len(sentences) >= 2:
            half = len(sentences) // 2
            current, new = " ".join(sentences[:half]), " ".join(sentences[half:])
            outcomes.append(refiner.merge_findings(current, new, rules_text=merge_text(current, new)))
        for outcome in outcomes:
            self.seconds.append(outcome.seconds)
            if outcome.by_llm:
                self.kept += 1
            elif "the guard refused" in outcome.reason:
                for reason in outcome.reason.split("(", 1)[1].split("; "):
                    self.refused[reason.split(":")[0].split(" changed")[0].split(" added")[0].strip()] += 1
            else:
                self.unavailable[outcome.reason.split(":", 1)[-1].strip()[:60]] += 1
            if show:
                print(f"  llm: {'kept' if outcome.by_llm else outcome.reason[:300]}")

    def report(self) -> None:
        calls = len(self.seconds)
        refused = sum(self.refused.values())
        print(f"llm ({self.model.name}): {calls} calls, {self.kept} kept, guard refusals by reason "
              f"{dict(self.refused.most_common())} ({refused} reasons), unavailable {dict(self.unavailable)}; "
              f"latency per call median {statistics.median(self.seconds):.2f} s, max {max(self.seconds):.2f} s")
        self.stack.close()


if __name__ == "__main__":
    main()
