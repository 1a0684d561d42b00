"""WordNet 3.0 read straight from its database files (Debian's `wordnet-base` installs
them under /usr/share/wordnet; `scripts/setup.sh` does so where it may).

What the explainers need of it: the senses of a word (after WordNet's own
lemmatisation, "morphy"), each sense's lexicographer category (noun.animal,
verb.cognition, ...) and hypernym ancestors, and the reverse, every word under a class,
to probe members the evidence never showed. NLTK's reader refuses this folder as
installed (it wants files Debian leaves out) and `wn` downloads its data, so the simple
text format is read here; morphy follows WordNet's documented detachment rules.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from errors import ServiceError
from lexicon.function_words import ALL_FUNCTION_WORDS

DEFAULT_DIR = Path("/usr/share/wordnet")
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

# The 45 lexicographer files, in WordNet's numbering (lexnames(5WN)).
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]

# Plain words for the categories an explanation may name.
LEXNAME_WORDS = {
    "noun.act": "nouns for acts and actions",
    "noun.animal": "animals",
    "noun.artifact": "man-made objects",
    "noun.attribute": "nouns for attributes and qualities",
    "noun.body": "body parts",
    "noun.cognition": "nouns for thought and knowledge",
    "noun.communication": "nouns for communication",
    "noun.event": "events",
    "noun.feeling": "feelings and emotions",
    "noun.food": "foods and drinks",
    "noun.group": "groups and collections",
    "noun.location": "places",
    "noun.motive": "motives",
    "noun.object": "natural objects",
    "noun.person": "people and roles",
    "noun.phenomenon": "natural phenomena",
    "noun.plant": "plants",
    "noun.possession": "money and possessions",
    "noun.process": "processes",
    "noun.quantity": "quantities and units",
    "noun.relation": "relations",
    "noun.shape": "shapes",
    "noun.state": "states and conditions",
    "noun.substance": "substances and materials",
    "noun.time": "times and time periods",
    "verb.body": "verbs of bodily care and function",
    "verb.change": "verbs of change",
    "verb.cognition": "verbs of thinking",
    "verb.communication": "verbs of speaking and communicating",
    "verb.competition": "verbs of fighting and competing",
    "verb.consumption": "verbs of eating and drinking",
    "verb.contact": "verbs of touching and handling",
    "verb.creation": "verbs of making",
    "verb.emotion": "verbs of feeling",
    "verb.motion": "verbs of motion",
    "verb.perception": "verbs of perceiving",
    "verb.possession": "verbs of having and giving",
    "verb.social": "verbs of social activity",
    "verb.stative": "verbs of being and having",
    "verb.weather": "verbs of weather",
}

MIN_NOUN_DEPTH = 5  # "object", "whole", "living thing" sit above this

# WordNet's morphy: exceptions first, then these suffix substitutions (morphy(7WN)).
_DETACH = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


class WordNetMissing(ServiceError):
    """The WordNet database files are not where they were looked for."""


@dataclass(frozen=True)
class Synset:
    id: str  # pos letter + 8-digit offset, e.g. "n02084071"
    lexname: str
    words: tuple[str, ...]  # lemma names, spaces for underscores, case as in WordNet
    hypernyms: tuple[str, ...]  # hypernyms and instance hypernyms, ids
    gloss: str

    @property
    def pos(self) -> str:
        return self.id[0]

    @property
    def name(self) -> str:
        return self.words[0]


class WordNet:
    """The database in memory (about 2 s to read). Words are looked up lowercased."""

    def __init__(self, folder: Path = DEFAULT_DIR) -> None:
        missing = [f"data.{f}" for f in POS_FILES.values() if not (folder / f"data.{f}").is_file()]
        if missing:
            raise WordNetMissing(
                f"WordNet 3.0 database files not found in {folder} (missing {', '.join(missing)}): "
                "install Debian's wordnet-base (`apt-get install wordnet-base`; "
                "scripts/setup.sh does it when run as root)"
            )
        self.folder = folder
        self.synsets: dict[str, Synset] = {}
        self._senses: dict[tuple[str, str], tuple[str, ...]] = {}  # (lemma, pos) -> ids
        self._tagged: dict[tuple[str, str], int] = {}  # (lemma, pos) -> senses seen in SemCor
        self._classes: dict[tuple[str, int], frozenset[str]] = {}
        self._members: dict[tuple[str, int], frozenset[str]] = {}
        self._exceptions: dict[tuple[str, str], tuple[str, ...]] = {}
        self._hyponyms: dict[str, list[str]] = defaultdict(list)
        for pos, name in POS_FILES.items():
            self._read_data(pos, folder / f"data.{name}")
            self._read_index(pos, folder / f"index.{name}")
            exc = folder / f"{name}.exc"
            if exc.is_file():
                self._read_exceptions(pos, exc)
        for synset in self.synsets.values():
            for parent in synset.hypernyms:
                self._hyponyms[parent].append(synset.id)

    def _read_data(self, pos: str, path: Path) -> None:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):
                    continue  # the licence header
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                n_words = int(parts[3], 16)
                words = tuple(_lemma_text(parts[4 + 2 * i]) for i in range(n_words))
                at = 4 + 2 * n_words
                n_pointers = int(parts[at])
                hypernyms = []
                for i in range(n_pointers):
                    symbol, offset, target_pos = parts[at + 1 + 4 * i : at + 4 + 4 * i]
                    if symbol in ("@", "@i"):
                        hypernyms.append(_id(target_pos, offset))
                synset_id = _id(pos, parts[0])
                self.synsets[synset_id] = Synset(
                    id=synset_id,
                    lexname=LEXNAMES[int(parts[1])],
                    words=words,
                    hypernyms=tuple(hypernyms),
                    gloss=gloss.strip(),
                )

    def _read_index(self, pos: str, path: Path) -> None:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                parts = line.split()
                n_synsets = int(parts[2])
                offsets = parts[len(parts) - n_synsets :]
                self._senses[(parts[0], pos)] = tuple(_id(pos, o) for o in offsets)
                self._tagged[(parts[0], pos)] = int(parts[len(parts) - n_synsets - 1])

    def _read_exceptions(self, pos: str, path: Path) -> None:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                inflected, *bases = line.split()
                self._exceptions[(inflected, pos)] = tuple(bases)

    # -- lookups ---------------------------------------------------------------------

    def lemmas(self, word: str, pos: str) -> tuple[str, ...]:
        """The base forms of `word` as part of speech `pos` that WordNet knows (morphy)."""
        key = word.lower().replace(" ", "_")
        found = list(self._exceptions.get((key, pos), ()))
        if (key, pos) in self._senses:
            found.append(key)
        for suffix, replacement in _DETACH[pos]:
            if key.endswith(suffix) and len(key) > len(suffix):
                base = key[: len(key) - len(suffix)] + replacement
                if (base, pos) in self._senses:
                    found.append(base)
        return tuple(dict.fromkeys(b for b in found if (b, pos) in self._senses))

    def senses(self, word: str, pos: str | None = None, limit: int = 0) -> list[Synset]:
        """The senses of `word` (any inflected form), commonest first within each part of
        speech; at most `limit` per part of speech and lemma when limit > 0."""
        out: list[Synset] = []
        for p in (pos,) if pos else POS_FILES:
            for lemma in self.lemmas(word, p):
                ids = self._senses[(lemma, p)]
                out.extend(self.synsets[i] for i in (ids[:limit] if limit else ids))
        return list(dict.fromkeys(out))

    def ancestors(self, synset_id: str) -> frozenset[str]:
        """The synset and all its hypernyms, transitively."""
        return _ancestors(self, synset_id)

    def classes(self, word: str, limit: int = 3) -> frozenset[str]:
        """Every class `word` belongs to by one of its first `limit` senses in the parts of
        speech it is commonly used as: lexicographer categories ("noun.animal") and
        ancestor synset ids. Function words ("in", "a") belong to none."""
        key = (word.lower(), limit)
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = self._classes_of(key[0], limit)
        return found

    def _classes_of(self, word: str, limit: int) -> frozenset[str]:
        if word in ALL_FUNCTION_WORDS or not word.replace("-", "").isalpha():
            return frozenset()
        out: set[str] = set()
        for pos in self.common_pos(word):
            for synset in self.senses(word, pos, limit):
                out.add(synset.lexname)
                out |= self.ancestors(synset.id)
        return frozenset(out)

    def common_pos(self, word: str) -> list[str]:
        """The parts of speech `word` is used as: those with senses seen in WordNet's tagged
        corpus (SemCor) when any has, else every part of speech it has ("wombat")."""
        lemmas = {pos: self.lemmas(word, pos) for pos in POS_FILES}
        tagged = [p for p, ls in lemmas.items() if any(self._tagged.get((b, p), 0) for b in ls)]
        return tagged or [p for p, ls in lemmas.items() if ls]

    def members(self, concept: str, limit: int = 3) -> set[str]:
        """Every single-word lemma in `concept` (a lexname or a synset id), lowercased,
        that belongs to it by one of its first `limit` senses."""
        key = (concept, limit)
        if key not in self._members:
            self._members[key] = frozenset(self._members_of(concept, limit))
        return set(self._members[key])

    def _members_of(self, concept: str, limit: int) -> set[str]:
        if concept in self.synsets:
            ids = self._descendants(concept)
        else:
            ids = {s.id for s in self.synsets.values() if s.lexname == concept}
        words = {
            w.lower() for i in ids for w in self.synsets[i].words if w.replace("-", "").isalpha()
        }
        return {w for w in words if concept in self.classes(w, limit)}

    def sister_terms(self, word: str, limit: int = 1) -> set[str]:
        """Single words (lowercased) that share a hypernym with one of `word`'s first
        `limit` senses in its common parts of speech ("hail" and "sleet" for "rain")."""
        out: set[str] = set()
        for pos in self.common_pos(word):
            for synset in self.senses(word, pos, limit):
                for parent in synset.hypernyms:
                    for child in self._hyponyms.get(parent, ()):
                        out.update(w.lower() for w in self.synsets[child].words if w.isalpha())
        out.discard(word.lower())
        return out

    def _descendants(self, synset_id: str) -> set[str]:
        seen, stack = {synset_id}, [synset_id]
        while stack:
            for child in self._hyponyms.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def describe(self, concept: str) -> str:
        """Plain words for a class: "animals" for noun.animal, the synset's first lemma
        ("garment") for a synset."""
        if concept in self.synsets:
            return self.synsets[concept].name
        return LEXNAME_WORDS.get(concept, concept)

    def nameable(self, concept: str) -> bool:
        """Whether a class says something about its members: a lexicographer category
        with a plain name, or a synset well below the top ("entity", "whole" and
        "abstraction" hold nearly every noun)."""
        if concept in self.synsets:
            return not concept.startswith("n") or self.depth(concept) >= MIN_NOUN_DEPTH
        return concept in LEXNAME_WORDS

    def depth(self, concept: str) -> int:
        """How far below the top a class sits (a lexname counts as depth 1)."""
        if concept not in self.synsets:
            return 1
        return len(self.ancestors(concept))


def _id(pos: str, offset: str) -> str:
    return ("a" if pos == "s" else pos) + offset


def _lemma_text(raw: str) -> str:
    # Adjectives carry a syntactic marker such as "(a)" or "(p)".
    return raw.split("(", 1)[0].replace("_", " ")


@lru_cache(maxsize=200_000)
def _ancestors(wordnet: WordNet, synset_id: str) -> frozenset[str]:
    synset = wordnet.synsets.get(synset_id)
    if synset is None:
        return frozenset()
    out = {synset_id}
    for parent in synset.hypernyms:
        out |= _ancestors(wordnet, parent)
    return frozenset(out)


_lock = threading.Lock()
_loaded: dict[Path, WordNet] = {}


def wordnet(folder: Path = DEFAULT_DIR) -> WordNet:
    """The database at `folder`, read once per process and shared."""
    with _lock:
        if folder not in _loaded:
            _loaded[folder] = WordNet(folder)
        return _loaded[folder]


def common_classes(words: Iterable[str], wn: WordNet, limit: int = 3) -> dict[str, set[str]]:
    """Per class, which of `words` belong to it."""
    out: dict[str, set[str]] = defaultdict(set)
    for word in words:
        for concept in wn.classes(word, limit):
            out[concept].add(word)
    return out
