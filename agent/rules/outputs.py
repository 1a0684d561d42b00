"""Output claims of the rules reasoner: executable predicates over the next token,
read from one steering experiment's promotions (`probes.promotions`) and tested on
another's (other texts).

Candidate claims, each judged by its fit (`predicates.output.claim_fit`) on the first
experiment:
- the tokens steering promoted most (normalised as predicates compare tokens);
- the tokens the decoder's logit lens points at (what the evidence predicts);
- a WordNet class or a function-word class most promoted tokens belong to, and a token
  shape (numbers, punctuation, capitalised words): a class reaches tokens
  the experiment never promoted.
"""

from __future__ import annotations

from collections import defaultdict

from agent.rules.classes import class_name, wordnet_or_none
from lexicon.function_words import CATEGORIES
from predicates.base import normal
from predicates.language import Predicate, TokenIn, TokenRegex
from predicates.lexical import FunctionWord, WordClass
from predicates.output import ClaimFit, claim_fit
from probes.promotions import Promotions

MAX_WORDS = 8  # words an output list names: a claim to read in one breath
MIN_CLASS_WORDS = 3  # promoted words a class must cover
CLAIMS = 3  # claims tested per feature
# F1 a claim gives up per word or part: a class that fits nearly as well as a list of
# the tokens seen says more in fewer words (and reaches tokens never seen).
SIZE_COST = 0.02
SHAPES = (
    TokenRegex(pattern=r"\d+", meaning="numbers"),
    TokenRegex(pattern=r"[^\w\s]+", meaning="punctuation marks"),
    TokenRegex(pattern=r"[A-Z][a-z]+", meaning="capitalised words"),
)


def word_list(tokens: list[str], n: int = MAX_WORDS) -> TokenIn | None:
    """The first `n` distinct normalised words of `tokens` as a list claim."""
    words: list[str] = []
    for token in tokens:
        word = normal(token)
        if word and word not in words:
            words.append(word)
    return TokenIn(words=tuple(words[:n])) if words else None


def output_claims(promotions: Promotions, lens: list[str]) -> list[tuple[Predicate, ClaimFit]]:
    """Up to CLAIMS candidate claims with a fit, best first (F1 less SIZE_COST per part)."""
    candidates: list[Predicate] = [
        claim
        for claim in (word_list(promotions.promoted_tokens), word_list(lens))
        if claim is not None
    ]
    candidates += _classes(promotions)
    candidates += [FunctionWord(category=c) for c in CATEGORIES]
    candidates += list(SHAPES)
    fits = [(claim, claim_fit(claim, promotions)) for claim in dict.fromkeys(candidates)]
    fits = [(claim, fit) for claim, fit in fits if fit.recalled]
    fits.sort(key=lambda pair: (-(pair[1].f1 - SIZE_COST * pair[0].size()), pair[0].size()))
    return fits[:CLAIMS]


def _classes(promotions: Promotions) -> list[WordClass]:
    """WordNet classes (commonest sense) that cover at least MIN_CLASS_WORDS promoted
    words, the most precise on the candidates first."""
    wn = wordnet_or_none()
    if wn is None:
        return []
    promoted = {normal(c.token) for c in promotions.promoted}
    covered: dict[str, set[str]] = defaultdict(set)
    named: dict[str, int] = defaultdict(int)
    for candidate in promotions.candidates:
        word = normal(candidate.token)
        if not word.isalpha():
            continue
        for concept in wn.classes(word, 1):
            named[concept] += 1
            if word in promoted:
                covered[concept].add(word)
    kept = [c for c, words in covered.items() if len(words) >= MIN_CLASS_WORDS and wn.nameable(c)]
    kept.sort(key=lambda c: (-len(covered[c]) / named[c], -wn.depth(c), c))
    return [
        WordClass(
            concept=c,
            name=class_name(wn, c),
            senses=1,
            examples=tuple(sorted(covered[c]))[:4],
        )
        for c in kept[:4]
    ]


# An output claim holds when its F1 on the test experiment's promotions reaches this:
# e.g. half the promoted tokens named, with half of what it names promoted.
CONFIRM_F1 = 0.5


def claim_statement(claim: Predicate) -> str:
    return f"Promotes {claim.describe()} as the next token."


def fit_reason(fit: ClaimFit, test: str) -> str:
    return (
        f"steered on other texts ({test}), it names {fit.recalled} of the {fit.promoted} words "
        f"steering promoted most (recall {fit.recall:.2f}), and {fit.hits} of the "
        f"{fit.named} it names were made at least twice as likely (precision "
        f"{fit.precision:.2f}): F1 {fit.f1:.2f}"
    )
