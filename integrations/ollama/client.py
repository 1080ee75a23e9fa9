"""Chat models behind one small interface (``radservice.pipeline.refine.llm.TextModel``).

Every failure becomes ``LlmUnavailable`` with a reason an admin can act on; nothing here
retries or waits longer than ``llm.timeout_s``.
"""

from __future__ import annotations

from typing import Any

import httpx
import ollama

from radservice.config import LlmSettings
from radservice.pipeline.refine.llm import LlmUnavailable, TextModel

#: Deterministic answers: the same text gets the same edit.
OPTIONS = {"temperature": 0.0}


def max_tokens(user: str) -> int:
    """A bound on the answer's length: an edit is about as long as its input (a model that
    rambles on would otherwise hold the server until the timeout, and after it)."""
    return 2 * len(user.split()) + 128


class OllamaModel:
    """Ollama's /api/chat through the `ollama` client (no streaming: the guard needs it whole)."""

    def __init__(self, *, url: str, model: str, timeout_s: float) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.name = f"ollama:{model}"
        self._client = ollama.Client(host=url, timeout=timeout_s)

    def complete(self, *, system: str, user: str) -> str:
        try:
            options = {**OPTIONS, "num_predict": max_tokens(user)}
            response = self._client.chat(model=self.model, stream=False, options=options, messages=[
                {"role": "system", "content": system}, {"role": "user", "content": user}])
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise LlmUnavailable(f"Ollama at {self.url} has no model {self.model!r} (ollama pull it)") from None
            raise LlmUnavailable(f"Ollama answered {exc.status_code}: {str(exc.error)[:200]}") from None
        except httpx.TimeoutException:
            raise LlmUnavailable(f"no answer from Ollama within {self.timeout_s:g} s") from None
        except (httpx.HTTPError, ConnectionError) as exc:
            raise LlmUnavailable(f"Ollama unreachable at {self.url} ({type(exc).__name__})") from None
        except ValueError as exc:  # a body that is not Ollama's JSON
            raise LlmUnavailable(f"Ollama's answer could not be read ({exc})"[:200]) from None
        content = response.message.content or ""
        if not content.strip():
            raise LlmUnavailable("Ollama answered with empty text")
        return content

    def version(self) -> str:
        """Ollama's version (for `radservice check`)."""
        answer = httpx.get(f"{self.url.rstrip('/')}/api/version", timeout=self.timeout_s)
        answer.raise_for_status()
        return str(answer.json().get("version", ""))

    def has_model(self) -> bool:
        return any(m.model in (self.model, f"{self.model}:latest") for m in self._client.list().models)


class OpenAiModel:
    """An OpenAI-compatible /v1/chat/completions server (plain HTTP)."""

    def __init__(self, *, url: str, model: str, timeout_s: float, api_key: str = "") -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.name = f"openai:{model}"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def complete(self, *, system: str, user: str) -> str:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "stream": False,
                                "max_tokens": max_tokens(user), "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": user}]}
        base = self.url if self.url.endswith("/v1") else f"{self.url}/v1"
        try:
            answer = httpx.post(f"{base}/chat/completions", json=body, headers=self._headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise LlmUnavailable(f"no answer from {self.url} within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise LlmUnavailable(f"LLM server unreachable at {self.url} ({type(exc).__name__})") from None
        if answer.status_code != 200:
            raise LlmUnavailable(f"LLM server answered {answer.status_code}: {answer.text[:200]}")
        try:
            content = str(answer.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise LlmUnavailable("the LLM server's answer is not a chat completion") from None
        if not content.strip():
            raise LlmUnavailable("the LLM server answered with empty text")
        return content

    def has_model(self) -> bool:
        """The server lists the model (GET /v1/models)."""
        base = self.url if self.url.endswith("/v1") else f"{self.url}/v1"
        answer = httpx.get(f"{base}/models", headers=self._headers, timeout=self.timeout_s)
        answer.raise_for_status()
        return any(m.get("id") == self.model for m in answer.json().get("data", []))


def make_model(settings: LlmSettings) -> TextModel | None:
    """The configured model, or None when LLM refinement is off."""
    if not settings.enabled:
        return None
    if settings.api == "openai":
        return OpenAiModel(url=settings.url, model=settings.model, timeout_s=settings.timeout_s,
                           api_key=settings.api_key.get_secret_value())
    return OllamaModel(url=settings.url, model=settings.model, timeout_s=settings.timeout_s)
