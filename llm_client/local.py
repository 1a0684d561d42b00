"""`LocalTransport`: chat completions from a transformers model in this process.

It speaks `Transport`'s interface, so `LLMClient` (validation, re-asks, the Redis cache,
usage accounting) works on it unchanged. Decoding is greedy. A JSON `response_format`
is enforced while decoding with llguidance: the model can only emit JSON that fits the
schema ("json_schema") or any JSON object ("json_object"), and the tokens the grammar
forces (keys, quotes, separators) go through the model in one step instead of one step
each. Generation runs in a worker thread, one request at a time: a small model on a few
CPU cores is fastest alone, and concurrent agent runs then queue instead of thrashing.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from errors import UserError
from llm_client.config import LLMConfig, LLMUsage
from llm_client.errors import LLMRequestError
from llm_client.prompting import Message
from llm_client.results import TokenLogprobs
from llm_client.transport import Completion

log = logging.getLogger(__name__)

LOCAL_SCHEME = "local://"
# Bounds the grammar adds where a schema sets none: a small greedy model otherwise
# tends to repeat itself until max_tokens. Replies are still validated in full.
MAX_STRING_CHARS = 200
MAX_ARRAY_ITEMS = 8
DEFAULT_MAX_TOKENS = 1024  # when a call names no limit (LLMConfig's default too)
PREFIX_CACHES = 3  # KV caches kept for prompt reuse (~70 MB each at 1,500 tokens, 135M)


class LocalModelError(UserError):
    """The local chat model's folder is missing or is not a usable chat model."""


def check_chat_model_folder(path: Path) -> Path:
    """`path` resolved, after cheap checks (no weights loaded) that it holds a HF causal
    LM with a tokenizer that has a chat template; LocalModelError says what is missing."""
    path = path.expanduser().resolve()
    if path.is_file():
        raise LocalModelError(
            f"{path} is a file; the local chat model must be a Hugging Face model folder "
            "(config.json, weights, tokenizer with a chat template). For a .gguf file, load "
            "it once with transformers and save_pretrained it to a folder"
        )
    if not (path / "config.json").is_file():
        raise LocalModelError(f"{path} has no config.json: it is not a Hugging Face model folder")
    if not (path / "tokenizer.json").is_file():
        raise LocalModelError(f"{path} has no tokenizer.json (a fast tokenizer is required)")
    if not _has_chat_template(path):
        raise LocalModelError(
            f"the tokenizer in {path} has no chat template: use an instruction-tuned (chat) "
            "model, e.g. the default SmolLM2-135M-Instruct"
        )
    return path


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the decoder enforces it: compact JSON, every declared property
    written out in order (no extra ones), strings and arrays bounded."""
    tightened: dict[str, Any] = _tighten(schema)
    tightened["x-guidance"] = {"whitespace_flexible": False}
    return tightened


def _tighten(node: Any) -> Any:
    if isinstance(node, list):
        return [_tighten(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _tighten(value) for key, value in node.items()}
    if isinstance(out.get("properties"), dict):
        # Writing defaults out costs a few tokens and makes the model decide them.
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if out.get("type") == "string" and "enum" not in out:
        out.setdefault("maxLength", MAX_STRING_CHARS)
    if out.get("type") == "array":
        out.setdefault("maxItems", MAX_ARRAY_ITEMS)
    return out


@dataclass
class _Cached:
    context: list[int]  # the tokens whose keys and values `cache` holds
    cache: Any  # a transformers Cache


class _PrefixCaches:
    """The KV caches of the last few requests. A request that starts like one of them
    (the same evidence for hypothesize and conclude, a re-ask, a judge's fixed
    instructions) feeds only the rest of its prompt."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: list[_Cached] = []  # most recent last

    def take(self, prompt: list[int]) -> tuple[_Cached, list[int]]:
        """A cache to continue from (removed from the store) and what is left to feed:
        at least one token, whose logits start the reply."""
        best, keep = None, 0
        for entry in self._entries:
            n = _common_prefix(entry.context, prompt, len(prompt) - 1)
            if n > keep:
                best, keep = entry, n
        # Cropping destroys the rest of the entry: only when most of it is reused.
        if best is None or keep < len(best.context) // 2:
            return _Cached([], None), prompt
        self._entries.remove(best)
        if len(best.context) > keep:
            # A negative count drops that many tokens in transformers 4.x and 5.x alike.
            best.cache.crop(keep - len(best.context))
            best.context = best.context[:keep]
        return best, prompt[keep:]

    def put(self, entry: _Cached) -> None:
        self._entries = [*self._entries, entry][-self.size :]


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if n >= limit or x != y:
            break
        n += 1
    return n


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    grammar_tokenizer: Any  # llguidance.LLTokenizer
    eos_ids: frozenset[int]
    cache_kw: str  # how forward() takes the KV cache: "cache" (transformers 5) or older name
    caches: _PrefixCaches | None  # None: sliding-window attention, a cropped cache is wrong


@dataclass
class _Generated:
    ids: list[int]
    finish_reason: str
    tokens: list[TokenLogprobs] | None


class LocalTransport:
    """`Transport` for an in-process chat model (a Hugging Face folder). The model loads
    on the first request; requests run one at a time in a worker thread."""

    def __init__(self, path: Path, device: str = "auto", dtype: str = "auto") -> None:
        self.path = check_chat_model_folder(path)
        self.device = device
        self.dtype = dtype
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()  # one generation at a time, across event loops
        self.stats = LocalStats()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def base_url(self) -> str:
        """What stands for a server URL in configs and cache keys."""
        return f"{LOCAL_SCHEME}{self.path.name}"

    async def create(
        self,
        messages: list[Message],
        purpose: str,
        spent: LLMUsage,
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
    ) -> Completion:
        """One greedy completion; `response_format` as in the OpenAI API (json_schema,
        json_object, or None for free text). Tokens are counted in `spent`; cost is 0."""
        budget = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS
        reply = await asyncio.to_thread(
            self._complete, messages, purpose, response_format, budget, top_logprobs
        )
        spent.calls += 1
        spent.input_tokens += reply.input_tokens
        spent.output_tokens += reply.output_tokens
        return reply

    async def aclose(self) -> None:
        """Nothing to close: the weights go with the transport."""

    def _complete(
        self,
        messages: list[Message],
        purpose: str,
        response_format: dict[str, Any] | None,
        budget: int,
        top_logprobs: int | None,
    ) -> Completion:
        # Not canonical(): sorting keys would reorder the properties the grammar writes.
        grammar = _grammar(json.dumps(response_format)) if response_format else None
        with self._lock:
            loaded = self._load()
            prompt = _prompt_ids(loaded.tokenizer, messages)
            started = time.perf_counter()
            out = _generate(loaded, prompt, grammar, budget, top_logprobs)
            seconds = time.perf_counter() - started
            self.stats.add(len(prompt), len(out.ids), seconds)
        log.info(
            "local %s %r: %d prompt + %d new tokens in %.1f s",
            self.name,
            purpose,
            len(prompt),
            len(out.ids),
            seconds,
        )
        text = loaded.tokenizer.decode(out.ids, skip_special_tokens=True)
        return Completion(text, out.finish_reason, out.tokens, len(prompt), len(out.ids))

    def _load(self) -> _Loaded:
        if self._loaded is None:
            self._loaded = _load(self.path, self.device, self.dtype)
        return self._loaded


@dataclass
class LocalStats:
    """Generation totals of a transport (cache hits never reach it), for benchmarks."""

    calls: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    def add(self, prompt_tokens: int, new_tokens: int, seconds: float) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.new_tokens += new_tokens
        self.seconds += seconds


@functools.lru_cache(maxsize=32)
def _grammar(response_format: str) -> str:
    """The llguidance grammar for an OpenAI-style response_format (as JSON text;
    cached: every call of one reasoner step asks for the same)."""
    import llguidance

    fmt = json.loads(response_format)
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = grammar_schema(fmt["json_schema"]["schema"])
    elif kind == "json_object":
        schema = {"type": "object", "x-guidance": {"whitespace_flexible": False}}
    else:
        raise LLMRequestError(f"unknown response_format type {kind!r}", status_code=400)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        # 400: the client then steps down to json_object, a grammar that always works.
        raise LLMRequestError(
            f"the local decoder cannot enforce this JSON schema: {problem}", status_code=400
        )
    return grammar


def _load(path: Path, device: str, dtype: str) -> _Loaded:
    import llguidance.hf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes.model import resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    started = time.perf_counter()
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype, torch_device)
        )
    except (OSError, ValueError) as err:
        raise LocalModelError(f"could not load a chat model from {path}: {err}") from err
    model.to(torch_device).eval()
    model.requires_grad_(False)
    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(int(tokenizer.eos_token_id))
    grammar_tokenizer = llguidance.hf.from_tokenizer(
        tokenizer, n_vocab=int(model.config.vocab_size), eos_token=sorted(eos_ids)
    )
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    full_attention = getattr(model.config, "sliding_window", None) is None
    caches = _PrefixCaches(PREFIX_CACHES) if full_attention else None
    log.info("loaded local chat model %s in %.1f s", path, time.perf_counter() - started)
    return _Loaded(model, tokenizer, grammar_tokenizer, frozenset(eos_ids), cache_kw, caches)


def _prompt_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


@torch.inference_mode()
def _generate(
    loaded: _Loaded, prompt: list[int], grammar: str | None, budget: int, top_logprobs: int | None
) -> _Generated:
    """Greedy decoding with a KV cache. Under a grammar, disallowed tokens are masked out,
    and forced tokens are fed in one forward pass (skipped when log-probabilities are
    asked for, so that every output token has its own)."""
    import llguidance
    import llguidance.numpy  # not llguidance.torch: importing it pulls torch._dynamo (~10 s)

    matcher = llguidance.LLMatcher(loaded.grammar_tokenizer, grammar) if grammar else None
    if matcher is not None and matcher.is_error():
        raise LLMRequestError(f"the local decoder's grammar is invalid: {matcher.get_error()}")
    vocab = int(loaded.model.config.vocab_size)
    bitmask = llguidance.numpy.allocate_token_bitmask(1, vocab) if matcher else None
    entry, feed = loaded.caches.take(prompt) if loaded.caches else (_Cached([], None), prompt)
    out: list[int] = []
    tokens: list[TokenLogprobs] | None = [] if top_logprobs is not None else None
    finish = "length"
    while len(out) < budget:
        logits = _forward(loaded, entry, feed)
        if tokens is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
        if matcher is not None and bitmask is not None:
            llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, 0)
            logits = logits.masked_fill(~_allowed(bitmask, vocab).to(logits.device), -torch.inf)
        choice = int(torch.argmax(logits))
        if not torch.isfinite(logits[choice]):
            problem = matcher.get_error() if matcher is not None else "no token allowed"
            raise LLMRequestError(f"the local decoder's grammar allowed no token: {problem}")
        if choice in loaded.eos_ids:
            finish = "stop"
            break
        out.append(choice)
        if tokens is not None:
            tokens.append(_token_logprobs(loaded.tokenizer, choice, logprobs, top_logprobs or 0))
        feed = [choice]
        if matcher is None:
            continue
        if not matcher.consume_token(choice):
            raise LLMRequestError(f"the local decoder's grammar failed: {matcher.get_error()}")
        if tokens is None and not matcher.is_stopped():
            forced = matcher.compute_ff_tokens()[: budget - len(out)]
            if forced and matcher.consume_tokens(forced):
                out += forced
                feed += forced
        if matcher.is_stopped():
            finish = "stop"
            break
    if loaded.caches is not None and entry.cache is not None:
        loaded.caches.put(entry)
    return _Generated(out, finish, tokens)


def _forward(loaded: _Loaded, entry: _Cached, feed: list[int]) -> torch.Tensor:
    """Feed tokens through the model on top of `entry`'s cache (extended in place);
    the next token's logits."""
    kwargs: dict[str, Any] = {"use_cache": True, "logits_to_keep": 1}
    if entry.cache is not None:
        kwargs[loaded.cache_kw] = entry.cache
    result = loaded.model(input_ids=torch.tensor([feed], device=loaded.model.device), **kwargs)
    entry.cache = result.past_key_values
    entry.context += feed
    logits: torch.Tensor = result.logits[0, -1].float()
    return logits


def _allowed(bitmask: np.ndarray, vocab: int) -> torch.Tensor:
    """llguidance's packed bitmask (bit i of word i // 32 for token i) as a bool vector."""
    words = bitmask[0].astype("<i4", copy=False)  # little-endian bytes: bit order = token order
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab]
    return torch.from_numpy(bits.astype(bool))


def _token_logprobs(tokenizer: Any, choice: int, logprobs: torch.Tensor, k: int) -> TokenLogprobs:
    top: dict[str, float] = {}
    if k > 0:
        values, ids = torch.topk(logprobs, k)
        for value, token_id in zip(values.tolist(), ids.tolist(), strict=True):
            text = tokenizer.decode([token_id])
            top[text] = max(value, top.get(text, float("-inf")))
    return TokenLogprobs(tokenizer.decode([choice]), float(logprobs[choice]), top)


def local_config(transport: LocalTransport, **policy: Any) -> LLMConfig:
    """An LLMConfig naming `transport` (base_url local://<folder>, so cache keys tell it
    apart): JSON enforced by the schema while decoding, so not repeated in the prompt;
    no price. `policy` overrides the rest (max_tokens, max_output_retries, ...)."""
    settings: dict[str, Any] = {"json_mode": "json_schema", "schema_in_prompt": False, **policy}
    return LLMConfig(base_url=transport.base_url, model=transport.name, **settings)
