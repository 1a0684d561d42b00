"""How many features of a dictionary do something measurable to the model's predictions,
and how often their decoder's logit lens predicts what steering them does.

For each sampled feature that fired in the evidence: clamp it to `--times` its largest
activation (at every token) on the same held-out texts (contexts of the evidence's score
split, cut to `--text-tokens`), and read the KL of the next-token distribution after each
text and the tokens promoted. The null is the same dictionary with every decoder row
replaced by a random direction of the same norm (same encoder, same clamp), steered the
same way. Measured here on SmolLM2 (layers.6): random directions of a feature's norm move
the predictions as much as the feature does (KL alone cannot tell them apart), so a
feature counts as having a measurable output effect when steering it promotes some token
consistently, on at least half of the texts; the random directions' share of that is the
floor to compare with.

Prediction from the decoder direction, as a check of the steering path without ground
truth: whether the logit lens' top promoted token (the evidence's `promoted`) is among
the tokens steering promotes on most of the texts (and the top-10 overlap).

    GLOSSATOR_DATA_DIR=... .venv/bin/python -m benchmarks.output_effects \\
        [--features 100] [--texts 8] [--times 2] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from probes.steering import Steering, SteeringResult, steer_texts
from runtime import loaders
from runtime.evidence import evidence_folder, open_store
from runtime.settings import get_settings
from sae.base import SparseAutoencoder

SCORE_SPLIT = 1
TOP_TOKENS = 20  # promoted tokens read per text
LENS_TOP = 10


@dataclass
class FeatureEffect:
    feature: int
    max_act: float
    kl: float  # median over the texts of KL(steered || clean) after the text, nats
    kl_random: float  # the same for its random direction
    promoted: list[str]  # promoted on at least half the texts, most often first
    promoted_random: list[str]  # the same for its random direction
    lens: list[str]  # the logit lens' top promoted tokens

    @property
    def lens_top1_promoted(self) -> bool:
        return bool(self.lens) and self.lens[0] in self.promoted

    @property
    def lens_overlap(self) -> float:
        return len(set(self.lens) & set(self.promoted[:LENS_TOP])) / max(len(self.lens), 1)


def random_directions(sae: SparseAutoencoder, seed: int) -> SparseAutoencoder:
    """The dictionary with each decoder row a random direction of the row's norm."""
    control = copy.deepcopy(sae)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        noise = torch.randn(sae.W_dec.shape, generator=generator).to(sae.W_dec)
        noise *= sae.W_dec.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
        control.W_dec.copy_(noise)
    return control


def consistent_promotions(results: list[SteeringResult]) -> list[str]:
    """Tokens among the promoted ones on at least half the texts, most often first."""
    seen = Counter(s.token for r in results for s in r.promoted)
    return [t for t, n in seen.most_common() if n * 2 >= len(results)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100, help="features sampled")
    parser.add_argument("--texts", type=int, default=8, help="held-out texts steered")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--times", type=float, default=2.0, help="clamp: x its max activation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = get_settings()
    subject = loaders.open_subject_model(settings)
    sae = loaders.open_sae(settings, subject)
    hookpoint = loaders.sae_hookpoint(settings, sae)
    store = open_store(settings, evidence_folder(settings, None, None, False))
    rng = random.Random(args.seed)
    features = sorted(rng.sample(store.firing_features(), args.features))
    contexts = rng.sample(store.contexts_in_split(SCORE_SPLIT).tolist(), args.texts)
    texts = ["".join(store.context_tokens(c)[: args.text_tokens]) for c in contexts]
    control = random_directions(sae, args.seed)

    rows: list[FeatureEffect] = []
    start = time.perf_counter()
    for feature in features:
        max_act = store.stats(feature).max_act
        steering = Steering(feature, clamp=args.times * max_act)
        mine, null = (
            steer_texts(
                subject,
                dictionary,
                hookpoint,
                texts,
                steering,
                continuation_tokens=0,
                top_tokens=TOP_TOKENS,
            )
            for dictionary in (sae, control)
        )
        rows.append(
            FeatureEffect(
                feature=feature,
                max_act=max_act,
                kl=statistics.median(r.kl_last for r in mine),
                kl_random=statistics.median(r.kl_last for r in null),
                promoted=consistent_promotions(mine),
                promoted_random=consistent_promotions(null),
                lens=[t.token for t in (store.feature(feature).promoted or [])[:LENS_TOP]],
            )
        )
    seconds = time.perf_counter() - start
    null_kls = sorted(r.kl_random for r in rows)
    summary = {
        "benchmark": "output_effects",
        "model": subject.name,
        "sae": str(loaders.sae_path(settings)),
        "hookpoint": hookpoint,
        "features": len(rows),
        "texts": len(texts),
        "times": args.times,
        "median_kl": round(statistics.median(r.kl for r in rows), 4),
        "median_kl_random": round(statistics.median(null_kls), 4),
        "consistent_share": round(sum(bool(r.promoted) for r in rows) / len(rows), 3),
        "consistent_share_random": round(sum(bool(r.promoted_random) for r in rows) / len(rows), 3),
        "lens_top1_promoted_share": round(sum(r.lens_top1_promoted for r in rows) / len(rows), 3),
        "lens_overlap_mean": round(statistics.fmean(r.lens_overlap for r in rows), 3),
        "seconds": round(seconds, 1),
    }
    if args.json:
        print(json.dumps({"summary": summary, "features": [asdict(r) for r in rows]}, indent=2))
        return
    for row in rows[:10]:
        print(
            f"feature {row.feature}: KL {row.kl:.3f} (random {row.kl_random:.3f}); "
            f"steering promotes {row.promoted[:5]} (random {row.promoted_random[:5]}); "
            f"lens {row.lens[:5]}"
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
