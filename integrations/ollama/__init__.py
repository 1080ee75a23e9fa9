"""The LLM adapter: Ollama (its own API, through the `ollama` client) or any OpenAI-compatible
chat server (llama.cpp, vLLM, LM Studio, Ollama's /v1)."""
