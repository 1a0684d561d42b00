"""What an LLM client needs to know (`LLMConfig`) and what it has spent (`LLMUsage`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

# How the client asks for JSON: "json_schema" (OpenAI structured outputs, vLLM,
# llama.cpp, Ollama: the server decodes under the schema, so it cannot break the list
# bounds, lengths and shapes in it), "json_object" (any JSON object) or "off" (prompt
# only). A server that rejects the chosen mode gets the next one down, once per client.
JsonMode = Literal["json_schema", "json_object", "off"]


class LLMConfig(BaseModel):
    """An OpenAI-compatible chat-completions endpoint and the client's policy for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="e.g. https://api.openai.com/v1, http://localhost:11434/v1")
    # Local servers ignore the key but the openai library insists on one.
    api_key: SecretStr = SecretStr("unused")
    model: str
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=1024, gt=0)
    # OpenAI's reasoning models accept only max_completion_tokens; most servers max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0, description="transport retries: 429, 5xx, timeouts")
    max_output_retries: int = Field(
        default=2, ge=0, description="re-asks after invalid JSON output"
    )
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(
        default=120.0, ge=0, description="cap on a server's Retry-After"
    )
    concurrency: int = Field(default=4, ge=1, description="max requests in flight from this client")
    json_mode: JsonMode = "json_schema"
    # False where the transport enforces the schema while decoding (the local model):
    # the prompt then skips the schema text, which a small model reads slowly and copies.
    schema_in_prompt: bool = True
    # Prices in the currency of your bill; 0 for a local server.
    input_price_per_1k: float = Field(default=0.0, ge=0)
    output_price_per_1k: float = Field(default=0.0, ge=0)
    cache_ttl_s: int | None = Field(default=30 * 24 * 3600, gt=0, description="None: never expire")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_price_per_1k + output_tokens * self.output_price_per_1k
        ) / 1000.0


@dataclass
class LLMUsage:
    """Counts for a client, a purpose, or one caller's run (pass it as `usage=`).

    calls: completions received from the server (each is billed, valid or not);
    cached_calls: answers served from the Redis cache (no call, no tokens, no cost);
    retries: extra requests made because of transport errors or invalid output.
    """

    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    cost: float = 0.0

    def add(self, other: LLMUsage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> LLMUsage:
        return LLMUsage(**{f.name: getattr(self, f.name) for f in fields(self)})

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, type(getattr(self, f.name))(0))
