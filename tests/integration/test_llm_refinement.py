"""The real `ollama` client (and the OpenAI-compatible one) against the Ollama stand-in, with the
refiner and its guard: good edits kept, harmful ones refused with the reason, every failure of
the model leaves the rules' text and says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from integrations.ollama.client import OllamaModel, OpenAiModel, make_model
from radservice.config import LlmSettings
from radservice.pipeline.refine.guard import Guard
from radservice.pipeline.refine.llm import LlmRefiner, LlmUnavailable, Prompts
from tests.ollama_standin import VERSION, Garbage, OllamaStandIn, Reply, Slow, Status, ollama_standin

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CURRENT = "Lungs: There is a 4 mm pulmonary nodule in the right upper lobe.\nPleura: No pleural effusion."
NEW = "no pneumothorax. the heart size is normal."
RULES_MERGE = f"{CURRENT} No pneumothorax. The heart size is normal."


@pytest.fixture
def standin() -> Iterator[OllamaStandIn]:
    with ollama_standin() as running:
        yield running


def refiner(model: OllamaModel | OpenAiModel | None) -> LlmRefiner:
    return LlmRefiner(model, Prompts.load(REPO / "config" / "prompts"), Guard(["pulmonary nodule", "pneumothorax"]))


def test_the_standin_speaks_ollama_to_the_real_client(standin: OllamaStandIn) -> None:
    client = ollama.Client(host=standin.url, timeout=5)
    assert [m.model for m in client.list().models] == ["llama3.2:3b"]
    standin.script.append(Reply("streamed answer in pieces"))
    pieces = [c.message.content for c in client.chat(model="llama3.2:3b", stream=True,
                                                     messages=[{"role": "user", "content": "x"}])]
    assert "".join(p or "" for p in pieces) == "streamed answer in pieces" and len(pieces) > 2
    assert client.generate(model="llama3.2:3b", prompt="echo me").response == "echo me"
    assert httpx.get(f"{standin.url}/api/version").json() == {"version": VERSION}


def test_good_merge_is_kept(standin: OllamaStandIn) -> None:
    merged = ("Lungs: There is a 4 mm pulmonary nodule in the right upper lobe.\n"
              "Pleura: No pleural effusion. No pneumothorax.\nHeart: The heart size is normal.")
    standin.script.append(Reply("Here is the merged findings section:\n\n" + merged))
    model = OllamaModel(url=standin.url, model="llama3.2:3b", timeout_s=5)
    outcome = refiner(model).merge_findings(CURRENT, NEW, rules_text=RULES_MERGE)
    assert outcome.by_llm and outcome.text == merged and outcome.reason == ""
    assert [n.rule for n in outcome.notes] == ["llm"]
    (request,) = standin.requests
    assert request["path"] == "/api/chat" and request["stream"] is False
    assert request["options"]["temperature"] == 0.0 and request["options"]["num_predict"] >= 128
    assert request["messages"][0]["role"] == "system" and "NEW DICTATION" in request["messages"][1]["content"]


@pytest.mark.parametrize(("answer", "why"), [
    (RULES_MERGE.replace("right upper lobe", "left upper lobe"), "laterality"),
    (RULES_MERGE.replace("No pneumothorax", "Pneumothorax"), "negations"),
    (RULES_MERGE.replace("4 mm", "4 cm"), "measurements"),
    (RULES_MERGE + " Small pericardial effusion.", "findings"),
    ("I'm sorry, but I can't help with that.", "talks to the reader"),
])
def test_harmful_answer_keeps_the_rules_text_and_says_why(standin: OllamaStandIn, answer: str, why: str) -> None:
    standin.script.append(Reply(answer))
    outcome = refiner(OllamaModel(url=standin.url, model="llama3.2:3b", timeout_s=5)).merge_findings(
        CURRENT, NEW, rules_text=RULES_MERGE)
    assert not outcome.by_llm and outcome.text == RULES_MERGE
    assert "the guard refused" in outcome.reason and why in outcome.reason
    assert outcome.notes[0].rule == "llm refused by guard"


@pytest.mark.parametrize(("step", "model", "why"), [
    (Status(500, "CUDA out of memory"), "llama3.2:3b", "Ollama answered 500"),
    (Slow(2.0, "too late"), "llama3.2:3b", "within 0.5 s"),
    (Garbage(), "llama3.2:3b", "could not be read"),
    (Reply("   "), "llama3.2:3b", "empty"),
    (Reply("unused"), "no-such-model", "has no model 'no-such-model'"),
])
def test_model_failures_leave_the_rules_text(standin: OllamaStandIn, step: Status | Slow | Garbage | Reply,
                                             model: str, why: str) -> None:
    standin.script.append(step)
    outcome = refiner(OllamaModel(url=standin.url, model=model, timeout_s=0.5)).clean_impression("No acute findings.")
    assert not outcome.by_llm and outcome.text == "No acute findings."
    assert why in outcome.reason, outcome.reason


def test_ollama_down_and_llm_off() -> None:
    with ollama_standin() as gone:
        url = gone.url
    outcome = refiner(OllamaModel(url=url, model="llama3.2:3b", timeout_s=2)).clean_impression("Normal study.")
    assert (outcome.text, outcome.by_llm) == ("Normal study.", False) and "unreachable" in outcome.reason
    off = refiner(make_model(LlmSettings(enabled=False)))
    assert off.clean_impression("Normal study.").reason == "LLM refinement is off (llm.enabled = false)"


def test_suggested_impression_may_summarise_but_not_invent(standin: OllamaStandIn) -> None:
    findings = "There is a 4 mm pulmonary nodule in the right upper lobe. No pneumothorax."
    standin.script += [Reply("4 mm right upper lobe pulmonary nodule."), Reply("Right pneumothorax.")]
    model = OllamaModel(url=standin.url, model="llama3.2:3b", timeout_s=5)
    good = refiner(model).suggest_impression(findings)
    assert good.by_llm and good.text == "4 mm right upper lobe pulmonary nodule."
    bad = refiner(model).suggest_impression(findings)
    assert not bad.by_llm and "the guard refused" in bad.reason


def test_openai_compatible_server(standin: OllamaStandIn) -> None:
    # Ollama serves the OpenAI-compatible API at /v1, as llama.cpp, vLLM and LM Studio do
    standin.script.append(Reply("Sure! Here is the cleaned impression:\nNo acute abnormality."))
    model = make_model(LlmSettings(api="openai", url=f"{standin.url}/v1", model="llama3.2:3b", timeout_s=5))
    assert isinstance(model, OpenAiModel)
    outcome = refiner(model).clean_impression("no acute abnormality")
    assert outcome.by_llm and outcome.text == "No acute abnormality."
    assert standin.requests[-1]["path"] == "/v1/chat/completions" and standin.requests[-1]["max_tokens"] >= 128
    with pytest.raises(LlmUnavailable, match="answered 404"):
        OpenAiModel(url=standin.url, model="gemma3", timeout_s=2).complete(system="s", user="u")
    standin.script.append(Slow(2.0, "late"))
    with pytest.raises(LlmUnavailable, match="within 0.5 s"):
        OpenAiModel(url=standin.url, model="llama3.2:3b", timeout_s=0.5).complete(system="s", user="u")
