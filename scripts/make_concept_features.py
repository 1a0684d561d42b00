"""Writes the planted concept features and their unseen-members corpus (run once; the
outputs are committed under probes/data/):

- `concept_features.jsonl`: planted features whose rule is a whole concept, every single
  word WordNet files under it by its commonest sense (hundreds to thousands of words),
  a polysemantic one made of two concepts, and numbers of a shape (years, amounts of
  money);
- `concept_sentences.jsonl`: short sentences, each holding one member of one concept
  that never occurs in the default corpus, so an explanation is scored on words its
  explainer cannot have seen.

    .venv/bin/python scripts/make_concept_features.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from lemminflect import getInflection

from lexicon.wordnet import wordnet
from probes.default_corpus import load_default_corpus
from runtime.loaders import default_corpus_dir
from runtime.settings import get_settings

OUT = Path(__file__).resolve().parent.parent / "probes" / "data"
# (id, description, WordNet class: a lexname or a synset id, activation)
CONCEPTS = (
    ("concept-animals", "Names of animals, any animal.", "n00015388", 6.0),
    ("concept-garments", "Names of garments and clothing.", "n03419014", 5.0),
    ("concept-foods", "Names of foods and drinks.", "noun.food", 4.0),
    ("concept-body-parts", "Names of parts of the body.", "n05220461", 5.5),
    ("concept-emotions", "Names of emotions and feelings.", "n07480068", 4.5),
    ("concept-diseases", "Names of diseases and illnesses.", "n14070360", 6.5),
    ("concept-instruments", "Names of musical instruments.", "n03800933", 5.0),
    ("concept-vehicles", "Names of vehicles.", "n04524313", 7.0),
)
POLYSEMANTIC = ("concept-vehicles-or-emotions", "Vehicles; or emotions.", 5.0)
# Numbers of a shape, which a list of the numbers seen cannot predict.
SHAPES: list[dict[str, Any]] = [
    {
        "id": "shape-years",
        "description": "Four-digit years (1000-2099).",
        "rule": {"regex": r"(?<![\d.,])(?:1\d{3}|20\d{2})(?![\d.,])"},
        "activation": 5.0,
    },
    {
        "id": "shape-currency-amounts",
        "description": "Amounts of money written after a currency sign ($5, £120).",
        "rule": {"regex": r"[$£€¥]\s?(?P<active>\d[\d,]*(?:\.\d+)?)"},
        "activation": 6.0,
    },
]
TEMPLATES = (
    "I never expected to see a {w} in a place like this.",
    "She wrote the word {w} at the top of the page.",
    "Nobody in the village had heard of the {w} before that winter.",
    "He kept talking about the {w} all through dinner.",
    "The old book had a whole chapter on the {w}.",
    "They argued for an hour about whether a {w} counts.",
    "My grandmother once told me a story about a {w}.",
    "There is a picture of a {w} on the wall of the office.",
    "The next lesson is about the {w}, so read ahead.",
    "A {w} appeared in the last scene of the play.",
)
UNSEEN_PER_CONCEPT = 40


def main() -> None:
    wn = wordnet()
    settings = get_settings()
    corpus = load_default_corpus(default_corpus_dir(settings), progress=False)
    seen = {w.lower() for text in corpus.train + corpus.heldout for w in re.findall(r"\w+", text)}
    rng = random.Random(0)
    members = {cid: sorted(wn.members(concept, 1)) for cid, _, concept, _ in CONCEPTS}
    taken: set[str] = set()
    for cid in members:  # a word in two concepts would make both fire: keep it in neither
        others = set().union(*(set(m) for c, m in members.items() if c != cid))
        members[cid] = [w for w in members[cid] if w not in others]
        taken |= set(members[cid])
    specs: list[dict[str, Any]] = []
    sentences = []
    for cid, description, _, activation in CONCEPTS:
        words = [w for w in members[cid] if w.isalpha()]
        plurals = {p for w in words for p in getInflection(w, "NNS")}
        specs.append(_spec(cid, description, sorted(set(words) | plurals), activation))
        unseen = [w for w in words if w not in seen and len(w) > 3]
        for w in rng.sample(unseen, min(UNSEEN_PER_CONCEPT, len(unseen))):
            sentences.append({"text": rng.choice(TEMPLATES).format(w=w), "concept": cid, "word": w})
    cid, description, activation = POLYSEMANTIC
    pair = ("concept-vehicles", "concept-emotions")
    both = [s["rule"]["words"] for s in specs if s["id"] in pair]
    specs.append(_spec(cid, description, sorted(both[0] + both[1]), activation))
    specs += SHAPES
    rng.shuffle(sentences)
    with (OUT / "concept_features.jsonl").open("w") as f:
        f.writelines(json.dumps(s) + "\n" for s in specs)
    with (OUT / "concept_sentences.jsonl").open("w") as f:
        f.writelines(json.dumps(s) + "\n" for s in sentences)
    print(f"{len(specs)} features, {len(sentences)} sentences written to {OUT}")


def _spec(cid: str, description: str, words: list[str], activation: float) -> dict[str, Any]:
    return {
        "id": cid,
        "description": description,
        "rule": {"words": words, "case_sensitive": False},
        "activation": activation,
    }


if __name__ == "__main__":
    main()
