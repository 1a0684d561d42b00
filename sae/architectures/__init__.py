"""One module per architecture; importing this package registers them all."""

from sae.architectures import batchtopk, gated, jumprelu, matryoshka, standard, topk

__all__ = ["batchtopk", "gated", "jumprelu", "matryoshka", "standard", "topk"]
