"""`check_server`: what an OpenAI-compatible server does for glossator, probed once.

Reachability and the model it lists, whether it takes `response_format` json_schema (and
keeps to the schema) or json_object, whether it sends log-probabilities, and how fast it
writes. From that: the JSON mode glossator will use, whether the LLM judges can score
from log-probabilities, and a request timeout that fits the server's speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from llm_client.client import LLMClient
from llm_client.config import JsonMode, LLMConfig, LLMUsage
from llm_client.errors import (
    LLMLogprobsUnavailableError,
    LLMOutputError,
    LLMRequestError,
)

# The margin on top of the longest reply's expected time that the suggested timeout keeps.
TIMEOUT_MARGIN = 2.0
SPEED_TOKENS = 64
# The probes' own timeout: a slow server is to be measured, not given up on.
PROBE_TIMEOUT_S = 300.0


class _Probe(BaseModel):
    """Something a JSON-schema grammar can enforce and JSON mode alone does not."""

    colours: list[str] = Field(min_length=2, max_length=2)
    answer: Literal["yes", "no"]


PROBE_ASK = [
    {
        "role": "user",
        "content": "Name two colours and say whether the sky is blue. Reply with JSON.",
    }
]

Outcome = Literal["ok", "refused", "broken"]


@dataclass
class ServerCheck:
    base_url: str
    model: str
    listed_models: list[str] = field(default_factory=list)
    modes: dict[str, Outcome] = field(default_factory=dict)  # json_schema, json_object
    logprobs: bool = False
    tokens_per_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def json_mode(self) -> JsonMode:
        """The mode glossator will use: the best one the server took and kept to."""
        for mode in ("json_schema", "json_object"):
            if self.modes.get(mode) == "ok":
                return mode
        return "off"

    def suggested_timeout_s(self, longest_reply_tokens: int) -> float | None:
        """A request timeout that lets this server write the longest reply glossator
        asks for, with a margin."""
        if not self.tokens_per_s:
            return None
        return round(TIMEOUT_MARGIN * longest_reply_tokens / self.tokens_per_s, 0)


async def check_server(config: LLMConfig) -> ServerCheck:
    """Probe the server of `config` once (no cache). Raises LLMUnavailableError when it
    cannot be reached at all and LLMRequestError when it refuses the model or the key."""
    check = ServerCheck(config.base_url, config.model)
    config = config.model_copy(update={"timeout_s": max(config.timeout_s, PROBE_TIMEOUT_S)})
    async with LLMClient(config.model_copy(update={"max_retries": 1})) as client:
        check.listed_models = await client.models()
    if check.listed_models and config.model not in check.listed_models:
        check.notes.append(
            f"the server lists {', '.join(check.listed_models[:3])}, not {config.model!r}; "
            "single-model servers (llama.cpp) answer any name, others refuse it"
        )
    for mode in ("json_schema", "json_object"):
        check.modes[mode] = await _json_mode(config, mode)
    policy = {"max_retries": 1, "max_output_retries": 0}
    async with LLMClient(config.model_copy(update=policy)) as client:
        try:
            reply = await client.complete_logprobs(
                [{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
                purpose="check",
                top_logprobs=5,
                max_tokens=1,
                cache=False,
            )
            check.logprobs = bool(reply.tokens and reply.tokens[0].top)
        except (LLMLogprobsUnavailableError, LLMRequestError):
            check.logprobs = False
        started, spent = time.monotonic(), LLMUsage()
        await client.complete_text(
            [{"role": "user", "content": "Write a short paragraph about the sea."}],
            purpose="check",
            max_tokens=SPEED_TOKENS,
            usage=spent,
            cache=False,
        )
        seconds = time.monotonic() - started
        written = spent.output_tokens
        if written > 0 and seconds > 0:
            check.tokens_per_s = round(written / seconds, 1)
    return check


async def _json_mode(config: LLMConfig, mode: JsonMode) -> Outcome:
    """ok: accepted and the reply fits the probe schema; refused: the server rejects the
    mode; broken: accepted, but the reply does not fit (JSON mode alone often does not)."""
    policy = {"json_mode": mode, "max_retries": 1, "max_output_retries": 0, "max_tokens": 200}
    async with LLMClient(config.model_copy(update=policy)) as client:
        try:
            await client.complete_json(PROBE_ASK, _Probe, purpose="check", cache=False)
        except LLMOutputError:
            return "broken"
        except LLMRequestError as err:
            if err.status_code in (400, 422):
                return "refused"
            raise
        return "ok" if client.json_mode == mode else "refused"
