"""Features whose output effect is known: a dictionary whose feature 2 writes a token's
unembedding direction, so steering it must make the model say that token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from probes.evidence.output_side import final_norm_weight, unembedding
from probes.hookpoints import decoder_layers
from probes.model import SubjectModel
from sae.base import SAEConfig
from sae.registry import build_sae

TOKEN_FEATURE = 2  # the feature of `one_feature_sae` that writes the direction


def token_direction(subject: SubjectModel, token_id: int) -> torch.Tensor:
    """A unit residual direction that the final norm and LM head read as `token_id`'s
    unembedding: U[t] / w, w the final RMSNorm's weight (the norm scales it by w)."""
    weight_D = final_norm_weight(subject.model)
    assert weight_D is not None
    d_D = unembedding(subject.model)[token_id].float() / weight_D.float()
    return d_D / d_D.norm()


def promotes_itself(subject: SubjectModel, token_id: int) -> bool:
    """Whether, read alone, the token's direction makes the token the top logit."""
    weight_D = final_norm_weight(subject.model)
    assert weight_D is not None
    logits_V = unembedding(subject.model).float() @ (weight_D * token_direction(subject, token_id))
    return int(logits_V.argmax()) == token_id


def one_feature_sae(subject: SubjectModel, hookpoint: str, direction_D: torch.Tensor) -> Any:
    d = subject.d_model
    sae = build_sae(SAEConfig(architecture="standard", d_in=d, d_sae=4, hookpoint=hookpoint))
    sae.init_weights(7)
    with torch.no_grad():
        sae.W_dec[TOKEN_FEATURE] = direction_D
    return sae


def last_layer(subject: SubjectModel) -> str:
    return f"layers.{len(decoder_layers(subject.model)) - 1}"


def self_promoting_token(subject: SubjectModel, skip: int = 50) -> int:
    """A token (past the first `skip`) whose direction alone makes it the top logit."""
    special = set(subject.tokenizer.all_special_ids)
    candidates = [t for t in range(len(subject.tokenizer)) if t not in special]
    return next(t for t in candidates[skip:] if promotes_itself(subject, t))


def saved_token_dictionary(
    subject: SubjectModel, model_dir: Path, folder: Path
) -> tuple[dict[str, str], str]:
    """A `one_feature_sae` writing a self-promoting token at the last layer, saved in
    `folder`; the GLOSSATOR_* settings of the model and it, and the token's text."""
    from sae.loading import save_sae

    token_id = self_promoting_token(subject)
    sae = one_feature_sae(subject, last_layer(subject), token_direction(subject, token_id))
    save_sae(sae, folder / "sae")
    env = {
        "GLOSSATOR_MODEL": str(model_dir),
        "GLOSSATOR_SAE": str(folder / "sae"),
        "GLOSSATOR_DATA_DIR": str(folder / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }
    return env, subject.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
