"""What a user's message asks for, by simple deterministic rules (no LLM needed):

1. lines starting with `test:` -> test those texts;
2. `hypothesis: ...`, "does it fire on X?", "maybe it responds to X", "it fires on X"
   -> test the hypothesis that it fires on X;
3. "what happens if I turn it up?", "steer it", "turn it off", "what does it do?" -> steer
   it (clamped to a multiple of its largest activation: 4x up, 0 off, -2x down, or
   the "N times" the message names) on the quoted texts, or on texts from its evidence;
4. a question ("what ...", "why ...", "how ...") -> answer from the explanation and the
   evidence, and run any double-quoted texts in it;
5. double-quoted texts ("I love dogs") -> test them;
6. anything else -> a question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.chat.models import ChatInputError, Intent
from probes.probe_runner import MAX_PROBE_CHARS

MAX_MESSAGE_CHARS = MAX_PROBE_CHARS  # a message may be one whole test text
MAX_TEST_TEXTS = 8
MAX_HYPOTHESIS_WORDS = 8

_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')
_TEST_LINE = re.compile(r"^\s*test\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_FEATURE = r"(?:it|this(?: feature)?|the feature|feature \d+)"
_FIRE = (
    r"(?:fire|respond|react|activate|trigger|light up|detect|track|pick up|care)(?:s|es|ed)?"
    r"(?: (?:on|to|for|at|when|with|by|about|up on))?"
)
_HYPOTHESIS = [
    re.compile(r"^\s*hypothes[ie]s\s*[:\-]\s*(?P<claim>.+)$", re.IGNORECASE | re.DOTALL),
    re.compile(
        rf"^\s*(?:does|do|would|will|can|could|might) {_FEATURE} (?:also |ever )?{_FIRE}"
        r"\s+(?P<claim>.+)$",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(
        r"^\s*(?:maybe|perhaps|probably|i think|i guess|i suspect|i bet|my guess is|"
        r"my hypothesis is|what if|could it be|is it possible)[,:]?\s+(?:that\s+)?"
        rf"(?P<claim>{_FEATURE}\s.+)$",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(
        rf"^\s*(?:is|isn't) {_FEATURE} (?:a |an )?(?:about|for|detecting|tracking|responding to|"
        r"firing on)\s+(?P<claim>.+)$",
        re.IGNORECASE | re.DOTALL,
    ),
    re.compile(rf"^\s*(?P<claim>{_FEATURE} (?:only |mostly |just )?{_FIRE}\s.+)$", re.IGNORECASE),
]
# "it fires on", "it is about", ... at the start of a claim: what follows is the target.
_CLAIM_LEAD = re.compile(
    rf"^\s*{_FEATURE}\s+(?:(?:only|mostly|just|also)\s+)?(?:{_FIRE}|is about|is for)\s*",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    r"^\s*(?!(?:what|how) about\b)(?:what|why|how|which|where|when|who|explain|describe|"
    r"tell me|show me|can you|could you|summari[sz]e)\b",
    re.IGNORECASE,
)
_STEER = re.compile(
    r"\b(?:steer|amplif|boost|crank|clamp|ablat|suppress|"
    r"turn(?:s|ed|ing)? (?:it |this(?: feature)? |the feature )?(?:up|down|off|on)|"
    r"(?:increase|decrease|raise|lower) (?:it|this|the feature)|"
    r"what (?:does|would) (?:it|this(?: feature)?|the feature) do\b|what it does\b|"
    r"output side)",
    re.IGNORECASE,
)
_STEER_OFF = re.compile(r"\b(?:off|ablat|zero|remove)", re.IGNORECASE)
_STEER_DOWN = re.compile(r"\b(?:down|suppress|decrease|lower|negative)", re.IGNORECASE)
_TIMES = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:x\b|×|times\b)", re.IGNORECASE)
STEER_UP, STEER_DOWN = 4.0, -2.0  # multiples of its largest activation
MAX_STEER_TIMES = 100.0
# Words that say how to test rather than what: left out of the words a hypothesis names.
_NOT_CONTENT_WORDS = """
    a an the and or of on in to for at by with about from as like such is are be it its
    this that these those any some word words token tokens text texts term terms phrase
    phrases mention mentions mentioning use uses using names name thing things kind kinds
    sort type types fire fires firing respond responds responding react reacts activate
    activates activation detect detects tracks track feature when where which what
    other also only mostly just maybe perhaps e g i e etc"""
_NOT_CONTENT = frozenset(_NOT_CONTENT_WORDS.split())


@dataclass(frozen=True)
class Request:
    """What a message asks for."""

    intent: Intent
    texts: list[str] = field(default_factory=list)  # texts to run through the feature
    hypothesis: str = ""  # HYPOTHESIS: what the user says it fires on
    words: list[str] = field(default_factory=list)  # HYPOTHESIS: the content words of it
    times: float = STEER_UP  # STEER: the multiple of its largest activation to clamp to


def check_message(text: str) -> str:
    """The message, stripped; ChatInputError when it is empty or too long."""
    stripped = text.strip()
    if not stripped:
        raise ChatInputError("the message is empty: ask a question, or send a text to test")
    if len(stripped) > MAX_MESSAGE_CHARS:
        raise ChatInputError(
            f"the message has {len(stripped):,} characters; the limit is "
            f"{MAX_MESSAGE_CHARS:,}: send shorter test texts"
        )
    return stripped


def understand(text: str) -> Request:
    """The request in a (checked) message."""
    tests = _test_lines(text)
    if tests:
        return Request(Intent.TEST, texts=_checked_texts(tests))
    for pattern in _HYPOTHESIS:
        found = pattern.match(text)
        if found:
            return _hypothesis(found.group("claim"))
    quoted = _quoted(text)
    if _STEER.search(_QUOTED.sub(" ", text)):  # the quoted texts are data, not the ask
        return Request(Intent.STEER, texts=_checked_texts(quoted), times=_steer_times(text))
    if _QUESTION.match(text):
        return Request(Intent.QUESTION, texts=_checked_texts(quoted))
    if quoted:
        return Request(Intent.TEST, texts=_checked_texts(quoted))
    return Request(Intent.QUESTION)


def _steer_times(text: str) -> float:
    """How far to turn it: the "N times" the message names, else off, down or up."""
    unquoted = _QUOTED.sub(" ", text)
    named = _TIMES.search(unquoted)
    if named:
        times = float(named.group(1))
        if abs(times) > MAX_STEER_TIMES:
            raise ChatInputError(
                f"{times:g} times its largest activation is too far to tell anything; "
                f"steer within ±{MAX_STEER_TIMES:g} times"
            )
        return times
    if _STEER_OFF.search(unquoted):
        return 0.0
    return STEER_DOWN if _STEER_DOWN.search(unquoted) else STEER_UP


def _hypothesis(claim: str) -> Request:
    target = _CLAIM_LEAD.sub("", claim.strip()).strip().rstrip("?.! ")
    words = content_words(target)
    if not words:
        raise ChatInputError(
            "the hypothesis names nothing to test; say what it should fire on, e.g. "
            "'hypothesis: it fires on the word love'"
        )
    return Request(Intent.HYPOTHESIS, hypothesis=target or claim.strip(), words=words)


def content_words(text: str) -> list[str]:
    """The words of `text` that say what to look for (lowercase, in order, no repeats)."""
    words = [w.lower() for w in re.findall(r"[^\W_]+(?:['’-][^\W_]+)*", text)]
    kept = [w for w in dict.fromkeys(words) if w not in _NOT_CONTENT]
    if len(kept) > MAX_HYPOTHESIS_WORDS:
        raise ChatInputError(
            f"the hypothesis names {len(kept)} words; test at most {MAX_HYPOTHESIS_WORDS} at a time"
        )
    return kept


def _test_lines(text: str) -> list[str]:
    texts = []
    for rest in _TEST_LINE.findall(text):
        quoted = _quoted(rest)
        texts += quoted or [rest.strip()]
    return [t for t in texts if t.strip()]


def _quoted(text: str) -> list[str]:
    return [a or b for a, b in _QUOTED.findall(text) if (a or b).strip()]


def _checked_texts(texts: list[str]) -> list[str]:
    unique = list(dict.fromkeys(texts))
    if len(unique) > MAX_TEST_TEXTS:
        raise ChatInputError(
            f"the message has {len(unique)} test texts; send at most {MAX_TEST_TEXTS} at a time"
        )
    return unique
