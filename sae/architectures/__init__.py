"""One module per architecture; `ARCHITECTURES` lists every class (the registry reads it)."""

from sae.architectures.abstopk import AbsTopKSAE
from sae.architectures.batchtopk import BatchTopKSAE
from sae.architectures.gated import GatedSAE
from sae.architectures.groupmax import GroupMaxSAE
from sae.architectures.jumprelu import JumpReLUSAE
from sae.architectures.matryoshka import MatryoshkaSAE
from sae.architectures.standard import StandardSAE
from sae.architectures.topk import TopKSAE
from sae.architectures.transcoder import TRANSCODERS

ARCHITECTURES = (
    StandardSAE,
    TopKSAE,
    BatchTopKSAE,
    MatryoshkaSAE,
    JumpReLUSAE,
    GatedSAE,
    AbsTopKSAE,
    GroupMaxSAE,
    *TRANSCODERS,
)

__all__ = [
    "ARCHITECTURES",
    "TRANSCODERS",
    "AbsTopKSAE",
    "BatchTopKSAE",
    "GatedSAE",
    "GroupMaxSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "StandardSAE",
    "TopKSAE",
]
