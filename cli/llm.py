"""`glossator llm check`: what the configured LLM server does for glossator."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cli.common import JsonFlag, console, print_json, user_errors
from runtime.settings import get_settings

if TYPE_CHECKING:
    from llm_client.check import ServerCheck

llm_app = typer.Typer(help="The configured OpenAI-compatible LLM server.", no_args_is_help=True)

_SHOWN = {"ok": "ok", "refused": "refused by the server", "broken": "accepted, reply off-schema"}


@llm_app.command("check")
def check_command(as_json: JsonFlag = False) -> None:
    """Probe the server once: reachable, model, json_schema, json_object, logprobs and
    speed; then the modes glossator will use and the settings to change."""
    from llm_client.check import check_server
    from runtime.agent import llm_config

    with user_errors():
        settings = get_settings()
        config = llm_config(settings)
        check = asyncio.run(check_server(config))
    longest = _longest_reply_tokens(config.max_tokens)
    advice = _advice(check, settings.llm_timeout, longest)
    if as_json:
        print_json(
            {
                **asdict(check),
                "json_mode": check.json_mode,
                "suggested_timeout_s": check.suggested_timeout_s(longest),
                "advice": advice,
            }
        )
        return
    table = Table(title=f"{check.base_url} (model {check.model})")
    table.add_column("check")
    table.add_column("result")
    table.add_row("reachable", f"yes; lists {', '.join(check.listed_models[:3]) or 'no models'}")
    for mode, outcome in check.modes.items():
        table.add_row(f"response_format {mode}", _SHOWN[outcome])
    table.add_row("log-probabilities", "yes" if check.logprobs else "no")
    speed = f"{check.tokens_per_s} tokens/s" if check.tokens_per_s else "unknown"
    table.add_row("speed", speed)
    console.print(table)
    console.print(f"glossator will use json_mode {check.json_mode!r}.")
    for line in [*check.notes, *advice]:
        console.print(f"- {line}")


def _longest_reply_tokens(max_tokens: int | None) -> int:
    """The longest reply glossator asks for: the agent's hypotheses, an entry each (with
    no max_tokens set, the server decides; sized as for the default)."""
    from agent.llm_schemas import LONGEST_REPLY_ENTRIES, reply_tokens
    from llm_client.config import LLMConfig

    per_reply = max_tokens or LLMConfig.model_fields["max_tokens"].default
    return reply_tokens(per_reply, LONGEST_REPLY_ENTRIES) or per_reply


def _advice(check: ServerCheck, timeout_s: float, longest_reply_tokens: int) -> list[str]:
    """The settings to change for this server, each with why."""
    lines = []
    if check.json_mode != "json_schema":
        lines.append(
            "the server does not decode under a JSON schema: replies are validated and "
            "re-asked, which costs calls; a server with grammars (llama.cpp, vLLM, "
            "Ollama >= 0.5) keeps them valid"
        )
    if not check.logprobs:
        lines.append(
            "no log-probabilities: the LLM judges score from the reply's text "
            "(`glossator bench --judges llm` works, less finely)"
        )
    suggested = check.suggested_timeout_s(longest_reply_tokens)
    if suggested is not None and suggested > timeout_s:
        lines.append(
            f"a {longest_reply_tokens:,}-token reply takes about {suggested / 2:.0f} s here: set "
            f"GLOSSATOR_LLM_TIMEOUT={suggested:.0f} (now {timeout_s:.0f})"
        )
    return lines
