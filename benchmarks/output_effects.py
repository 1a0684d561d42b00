"""How many features of a dictionary do something measurable to the model's next-token
predictions, against random directions of the same norm, and how well the decoder's
logit lens predicts it.

For each sampled feature that fired in the evidence: clamp it at `--times` its largest
activation (at every token) on two sets of held-out texts (quiet contexts of the score
split, cut to `--text-tokens`) and read what it promotes on each (`probes.promotions`:
the next tokens at least twice as likely on average, the top 10 of them). The null is
the same dictionary with every decoder row a random direction of the row's norm (same
encoder, same clamp), steered the same way.

- measurable: steering promoted some token (made it at least twice as likely);
- reproducible: the top promoted words of the first set, read as an output claim, fit
  the second set (`predicates.output.claim_fit`, F1 >= 0.5, the agent's bar): the
  effect is the direction's, not the texts';
- lens: the logit lens' top 10 tokens as the claim, on both sets (its mean F1).

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
from dataclasses import asdict, dataclass

import torch

from agent.rules.outputs import CONFIRM_F1, word_list
from predicates.output import claim_fit
from probes.model import SubjectModel
from probes.promotions import Promotions, promotions_of
from probes.steering import Steering, steer_texts, token_text
from runtime import loaders
from runtime.evidence import evidence_folder, open_store
from runtime.settings import get_settings
from sae.base import SparseAutoencoder

SCORE_SPLIT = 1


@dataclass
class FeatureEffect:
    feature: int
    max_act: float
    kl: float  # median KL(steered || clean) after the texts, nats
    kl_random: float
    measurable: bool
    measurable_random: bool
    split_half_f1: float  # first set's top words as a claim on the second set
    split_half_f1_random: float
    lens_f1: float  # the logit lens' tokens as the claim, mean over both sets
    promoted: list[str]


def random_directions(sae: SparseAutoencoder, seed: int) -> SparseAutoencoder:
    """The dictionary with each decoder row a random direction of the row's norm."""
    control = copy.deepcopy(sae)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        noise = torch.randn(sae.W_dec.shape, generator=generator).to(sae.W_dec)
        noise *= sae.W_dec.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
        control.W_dec.copy_(noise)
    return control


def promotions(
    subject: SubjectModel, sae: SparseAutoencoder, hookpoint: str, texts: list[str], clamp: Steering
) -> Promotions:
    results = steer_texts(subject, sae, hookpoint, texts, clamp, continuation_tokens=0,
                          top_tokens=0, keep_vocabulary=True)  # fmt: skip
    return promotions_of(results, lambda token_id: token_text(subject.tokenizer, token_id))


def split_half(first: Promotions, second: Promotions) -> float:
    claim = word_list(first.promoted_tokens)
    return claim_fit(claim, second).f1 if claim is not None else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100, help="features sampled")
    parser.add_argument("--texts", type=int, default=8, help="held-out texts per set")
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
    contexts = rng.sample(store.contexts_in_split(SCORE_SPLIT).tolist(), 2 * args.texts)
    texts = ["".join(store.context_tokens(c)[: args.text_tokens]) for c in contexts]
    halves = texts[: args.texts], texts[args.texts :]
    control = random_directions(sae, args.seed)

    rows: list[FeatureEffect] = []
    start = time.perf_counter()
    for feature in features:
        max_act = store.stats(feature).max_act
        clamp = Steering(feature, clamp=args.times * max_act)
        mine = [promotions(subject, sae, hookpoint, half, clamp) for half in halves]
        null = [promotions(subject, control, hookpoint, half, clamp) for half in halves]
        lens = word_list([t.token for t in store.feature(feature).promoted or []])
        rows.append(
            FeatureEffect(
                feature=feature,
                max_act=max_act,
                kl=statistics.median([mine[0].kl, mine[1].kl]),
                kl_random=statistics.median([null[0].kl, null[1].kl]),
                measurable=all(p.promoted_count for p in mine),
                measurable_random=all(p.promoted_count for p in null),
                split_half_f1=split_half(*mine),
                split_half_f1_random=split_half(*null),
                lens_f1=statistics.fmean(claim_fit(lens, p).f1 for p in mine) if lens else 0.0,
                promoted=mine[0].promoted_tokens,
            )
        )
    n = len(rows)

    def share(flags: list[bool]) -> float:
        return round(sum(flags) / n, 3)

    summary = {
        "benchmark": "output_effects",
        "model": subject.name,
        "sae": str(loaders.sae_path(settings)),
        "hookpoint": hookpoint,
        "features": n,
        "texts_per_set": args.texts,
        "times": args.times,
        "median_kl": round(statistics.median(r.kl for r in rows), 4),
        "median_kl_random": round(statistics.median(r.kl_random for r in rows), 4),
        "measurable_share": share([r.measurable for r in rows]),
        "measurable_share_random": share([r.measurable_random for r in rows]),
        "reproducible_share": share([r.split_half_f1 >= CONFIRM_F1 for r in rows]),
        "reproducible_share_random": share([r.split_half_f1_random >= CONFIRM_F1 for r in rows]),
        "split_half_f1_mean": round(statistics.fmean(r.split_half_f1 for r in rows), 3),
        "split_half_f1_mean_random": round(
            statistics.fmean(r.split_half_f1_random for r in rows), 3
        ),
        "lens_f1_mean": round(statistics.fmean(r.lens_f1 for r in rows), 3),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        print(json.dumps({"summary": summary, "features": [asdict(r) for r in rows]}, indent=2))
        return
    for row in rows[:10]:
        print(
            f"feature {row.feature}: KL {row.kl:.3f} (random {row.kl_random:.3f}); split-half "
            f"F1 {row.split_half_f1:.2f} (random {row.split_half_f1_random:.2f}); promotes "
            f"{row.promoted[:5]}"
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
