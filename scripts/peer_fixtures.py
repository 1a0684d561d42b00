"""Write the peer-compatibility fixtures under tests/fixtures/peers/ with the peer libraries'
own code (SAELens, EleutherAI sparsify, saprmarks' dictionary_learning).

Each fixture is a tiny SAE (d_in 16, 32 features; transcoders write 12 outputs) with
seeded random weights, biases and thresholds, built from the library's own classes and
written by the library's own save function, in its own on-disk format:

    saelens/<name>/              cfg.json + sae_weights.safetensors   SAE.save_model, or
                                 TrainingSAE.save_inference_model (what a training run saves)
    sparsify/<name>/<hookpoint>/ cfg.json + sae.safetensors           SparseCoder.save_to_disk
    dictionary_learning/<name>/  config.json + ae.pt                  training.trainSAE

Beside the SAE's files, `expected.safetensors` holds an input batch `x` [8, d_in] and what
the library computes from the saved files, reloaded with its own loader
(SAE.load_from_disk, SparseCoder.load_from_disk, utils.load_dictionary):

    features  its encode(x), dense [8, d_sae] (sparsify: its top-k scattered into place)
    decoded   its decode(features) (sparsify: decode(top_acts, top_indices))
    output    its forward(x): the reconstruction, or a transcoder's (skip) output

and `fixture.json` says which class wrote it and which folder holds the SAE. The inputs
are redrawn until no feature is within reach of a decision boundary (a threshold, the
k-th largest pre-activation, a gate at zero), so float32 rounding cannot flip one.
`manifest.json` records the versions and the fixtures. tests/sae/test_peer_fixtures.py
reads all of it without the peers.

The peers are needed only to regenerate. In a virtual environment outside the repository
(torch first: an unpinned torch pulls a multi-GB CUDA build; nnsight, which
dictionary-learning requires, pulls torchvision, whose only build for torch 2.13 here is
a CUDA one that fails to import on the CPU torch and is not used, so it goes again):

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/peers-constraints.txt
    /tmp/peers-venv/bin/pip install -c /tmp/peers-constraints.txt \\
        sae-lens eai-sparsify dictionary-learning
    /tmp/peers-venv/bin/pip uninstall -y torchvision
    /tmp/peers-venv/bin/python scripts/peer_fixtures.py

It replaces tests/fixtures/peers/ whole. A rerun writes the same bytes, except the key
order of the cfg.json that SAELens' save_inference_model writes (it collects the fields in
a set, whose order follows Python's hash seed; set PYTHONHASHSEED to pin it).
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "peers"
D_IN, D_SAE, D_OUT, K, N_ROWS = 16, 32, 12, 4, 8
PACKAGES = {
    "saelens": "sae-lens",
    "sparsify": "eai-sparsify",
    "dictionary_learning": "dictionary-learning",
}
# Inputs are redrawn while a shift this small moves any feature across a boundary.
BOUNDARY_MARGIN = 1e-4
EXPECTED_FILE = "expected.safetensors"
FIXTURE_FILE = "fixture.json"


@dataclass
class Written:
    """One fixture: the peer's reloaded model and how to run it."""

    library: str
    name: str
    sae_dir: Path  # the folder holding the SAE's own files
    peer_class: str
    saved_with: str
    loaded_with: str
    # x -> (features, decoded, output), all computed by the peer's reloaded model
    run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    notes: dict[str, Any] = field(default_factory=dict)


# -- seeded weights -----------------------------------------------------------------------


def randomize(module: nn.Module, seed: int) -> None:
    """Fresh seeded values for every float tensor of `module`, by its role (its name):
    encoders ~ N(0, 1/d_in); decoder rows (one per feature) of norm 0.5-1.5, so that no
    library's unit-norm assumption holds by accident; biases ~ N(0, 0.2^2); thresholds
    uniform in [0.1, 0.8]; r_mag ~ N(0, 0.3^2); skip matrices ~ N(0, 0.25/d_in).
    Integer buffers (k, group sizes) are the library's own."""
    gen = torch.Generator().manual_seed(seed)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    with torch.no_grad():
        for name, tensor in sorted(tensors, key=lambda item: item[0]):
            if tensor.is_floating_point():
                tensor.copy_(_value(name, tuple(tensor.shape), gen).to(tensor.dtype))


def _value(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    leaf = name.removeprefix("encoder.").removeprefix("decoder.")
    role = name if name in ("encoder.weight", "decoder.weight") else leaf
    if role in ("W_enc", "encoder.weight"):
        fan_in = shape[0] if role == "W_enc" else shape[1]
        return torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    if role in ("W_dec", "decoder.weight"):
        feature_axis = shape.index(D_SAE)
        rows = torch.randn(shape, generator=gen)
        rows = rows / rows.norm(dim=1 - feature_axis, keepdim=True)
        scale = 0.5 + torch.rand(D_SAE, generator=gen)
        return rows * (scale[:, None] if feature_axis == 0 else scale[None, :])
    if role == "W_skip":
        return torch.randn(shape, generator=gen) * 0.5 / math.sqrt(shape[1])
    if "threshold" in role:
        return 0.1 + 0.7 * torch.rand(shape, generator=gen, dtype=torch.float64)
    if role == "r_mag":
        return torch.randn(shape, generator=gen) * 0.3
    if len(shape) == 1:
        return torch.randn(shape, generator=gen) * 0.2
    raise ValueError(f"no rule for tensor {name!r} of shape {list(shape)}")


def stable_inputs(encode: Callable[[torch.Tensor], torch.Tensor], seed: int) -> torch.Tensor:
    """An input batch [N_ROWS, D_IN] whose active features do not change when the input
    moves by BOUNDARY_MARGIN in any of a few random directions."""
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        x = torch.randn(N_ROWS, D_IN, generator=gen)
        with torch.no_grad():
            active = encode(x) != 0
            shifts = [torch.randn(x.shape, generator=gen) for _ in range(8)]
            if all(
                torch.equal(
                    encode(x + BOUNDARY_MARGIN * s / s.norm(dim=-1, keepdim=True)) != 0, active
                )
                for s in shifts
            ):
                return x
    raise RuntimeError(f"no stable input batch found for seed {seed}")


# -- SAELens ------------------------------------------------------------------------------


def saelens_fixtures(folder: Path) -> list[Written]:
    from sae_lens import SAE
    from sae_lens.saes.abstopk_sae import AbsTopKSAE, AbsTopKSAEConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import (
        TopKSAE,
        TopKSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.transcoder import (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    def meta() -> Any:
        return SAEMetadata(model_name="gpt2", hook_name="blocks.3.hook_resid_post")

    def tc_meta() -> Any:  # a transcoder of layer 3's MLP: its normed input -> its output
        return SAEMetadata(
            model_name="gpt2",
            hook_name="blocks.3.ln2.hook_normalized",
            hook_name_out="blocks.3.hook_mlp_out",
        )

    sizes: dict[str, Any] = {"d_in": D_IN, "d_sae": D_SAE}
    tc: dict[str, Any] = {**sizes, "d_out": D_OUT, "apply_b_dec_to_input": False}
    # name -> (SAE, save method name, notes)
    specs: dict[str, tuple[Callable[[], Any], str, dict[str, Any]]] = {
        "standard": (
            lambda: StandardSAE(StandardSAEConfig(**sizes, metadata=meta())),
            "save_model",
            {},
        ),
        "standard_layer_norm": (
            lambda: StandardSAE(
                StandardSAEConfig(**sizes, normalize_activations="layer_norm", metadata=meta())
            ),
            "save_model",
            {"normalize_activations": "layer_norm"},
        ),
        "topk": (lambda: TopKSAE(TopKSAEConfig(**sizes, k=K, metadata=meta())), "save_model", {}),
        "topk_rescale_acts": (
            lambda: TopKSAE(
                TopKSAEConfig(**sizes, k=K, rescale_acts_by_decoder_norm=True, metadata=meta())
            ),
            "save_model",
            {"rescale_acts_by_decoder_norm": True, "decoder norms": "0.5-1.5, not folded"},
        ),
        "topk_constant_norm_rescale": (
            lambda: TopKSAE(
                TopKSAEConfig(
                    **sizes, k=K, normalize_activations="constant_norm_rescale", metadata=meta()
                )
            ),
            "save_model",
            {"normalize_activations": "constant_norm_rescale"},
        ),
        "topk_training": (
            lambda: TopKTrainingSAE(TopKTrainingSAEConfig(**sizes, k=K, metadata=meta())),
            "save_inference_model",
            {"rescale_acts_by_decoder_norm": True, "saved": "decoder norms folded on save"},
        ),
        "abstopk": (
            lambda: AbsTopKSAE(AbsTopKSAEConfig(**sizes, k=K, metadata=meta())),
            "save_model",
            {},
        ),
        "jumprelu": (
            lambda: JumpReLUSAE(
                JumpReLUSAEConfig(**sizes, apply_b_dec_to_input=False, metadata=meta())
            ),
            "save_model",
            {"apply_b_dec_to_input": False},
        ),
        "gated": (lambda: GatedSAE(GatedSAEConfig(**sizes, metadata=meta())), "save_model", {}),
        "batchtopk": (
            lambda: BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**sizes, k=K, metadata=meta())),
            "save_inference_model",
            {"saved": "as a jumprelu SAE with the global threshold repeated per feature"},
        ),
        "matryoshka_batchtopk": (
            lambda: MatryoshkaBatchTopKTrainingSAE(
                MatryoshkaBatchTopKTrainingSAEConfig(
                    **sizes, k=K, matryoshka_widths=[8, 16, D_SAE], metadata=meta()
                )
            ),
            "save_inference_model",
            {"saved": "as a jumprelu SAE with the global threshold repeated per feature"},
        ),
        "transcoder": (
            lambda: Transcoder(TranscoderConfig(**tc, metadata=tc_meta())),
            "save_model",
            {},
        ),
        "skip_transcoder": (
            lambda: SkipTranscoder(SkipTranscoderConfig(**tc, metadata=tc_meta())),
            "save_model",
            {},
        ),
        "jumprelu_transcoder": (
            lambda: JumpReLUTranscoder(JumpReLUTranscoderConfig(**tc, metadata=tc_meta())),
            "save_model",
            {},
        ),
        "jumprelu_skip_transcoder": (
            lambda: JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(**tc, metadata=tc_meta())),
            "save_model",
            {},
        ),
    }
    written = []
    for seed, (name, (build, save, notes)) in enumerate(sorted(specs.items()), start=100):
        torch.manual_seed(seed)
        sae = build()
        randomize(sae, seed)
        target = folder / name
        getattr(sae, save)(target)
        loaded = SAE.load_from_disk(target, device="cpu").eval()

        def run(x: torch.Tensor, sae: Any = loaded) -> tuple[torch.Tensor, ...]:
            features = sae.encode(x)
            decoded = sae.decode(features)
            return features, decoded, sae(x)

        written.append(
            Written(
                "saelens",
                name,
                target,
                type(sae).__name__,
                f"{type(sae).__name__}.{save}",
                f"SAE.load_from_disk -> {type(loaded).__name__}",
                run,
                notes,
            )
        )
    return written


# -- sparsify -----------------------------------------------------------------------------


def sparsify_fixtures(folder: Path) -> list[Written]:
    from sparsify import SparseCoder, SparseCoderConfig

    # name -> (config fields, hookpoint folder: a transcoder reads an MLP's input)
    specs: dict[str, tuple[dict[str, Any], str]] = {
        "topk": ({}, "layers.3"),
        "groupmax": ({"activation": "groupmax"}, "layers.3"),
        "skip_connection": ({"skip_connection": True}, "layers.3"),
        "transcode": ({"transcode": True}, "layers.3.mlp"),
        "transcode_skip": ({"transcode": True, "skip_connection": True}, "layers.3.mlp"),
    }
    written = []
    for seed, (name, (fields, hookpoint)) in enumerate(sorted(specs.items()), start=200):
        torch.manual_seed(seed)
        cfg = SparseCoderConfig(num_latents=D_SAE, k=K, **fields)
        coder = SparseCoder(D_IN, cfg)
        randomize(coder, seed)
        target = folder / name / hookpoint
        coder.save_to_disk(target)
        loaded = SparseCoder.load_from_disk(target, device="cpu").eval()

        def run(x: torch.Tensor, coder: Any = loaded) -> tuple[torch.Tensor, ...]:
            top_acts, top_indices, _ = coder.encode(x)
            features = torch.zeros(x.shape[0], coder.num_latents).scatter(-1, top_indices, top_acts)
            return features, coder.decode(top_acts, top_indices), coder(x).sae_out

        written.append(
            Written(
                "sparsify",
                name,
                target,
                "SparseCoder",
                "SparseCoder.save_to_disk",
                "SparseCoder.load_from_disk",
                run,
                {"config": fields},
            )
        )
    return written


# -- dictionary_learning ------------------------------------------------------------------


def dictionary_learning_fixtures(folder: Path) -> list[Written]:
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.gdm import GatedSAETrainer
    from dictionary_learning.trainers.jumprelu import JumpReluTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    from dictionary_learning.trainers.standard import StandardTrainerAprilUpdate
    from dictionary_learning.trainers.top_k import TopKTrainer
    from dictionary_learning.training import trainSAE
    from dictionary_learning.utils import load_dictionary

    common = {
        "steps": 10_000,  # the trainers check their schedules against it
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "layer": 3,
        "lm_name": "EleutherAI/pythia-70m-deduped",
        "submodule_name": "resid_post_layer_3",
        "device": "cpu",
    }
    # name -> (trainer class, its own arguments)
    specs: dict[str, tuple[type, dict[str, Any]]] = {
        "autoencoder": (StandardTrainerAprilUpdate, {}),
        "topk": (TopKTrainer, {"k": K}),
        "batchtopk": (BatchTopKTrainer, {"k": K}),
        "matryoshka_batchtopk": (
            MatryoshkaBatchTopKTrainer,
            {"k": K, "group_fractions": [0.25, 0.25, 0.5]},
        ),
        "jumprelu": (JumpReluTrainer, {}),
        "gated": (GatedSAETrainer, {}),
    }
    written = []
    for seed, (name, (trainer_class, args)) in enumerate(sorted(specs.items()), start=300):
        torch.manual_seed(seed)
        target = folder / name
        with tempfile.TemporaryDirectory() as tmp:
            # trainSAE builds the trainer (whose config it saves), and with steps=0 stops
            # before the first update and saves config.json + ae.pt as after training.
            config = {"trainer": _randomized(trainer_class, seed), **common, **args}
            trainSAE(
                iter([torch.zeros(N_ROWS, D_IN)]), [config], steps=0, save_dir=tmp, device="cpu"
            )
            shutil.copytree(Path(tmp) / "trainer_0", target)
        loaded, saved_config = load_dictionary(str(target), "cpu")
        loaded.eval()

        def run(x: torch.Tensor, ae: Any = loaded) -> tuple[torch.Tensor, ...]:
            features = ae.encode(x)
            return features, ae.decode(features), ae(x)

        dict_class = saved_config["trainer"]["dict_class"]
        written.append(
            Written(
                "dictionary_learning",
                name,
                target,
                dict_class,
                f"training.trainSAE({trainer_class.__name__}, steps=0)",
                f"utils.load_dictionary -> {type(loaded).__name__}",
                run,
            )
        )
    return written


def _randomized(trainer_class: type, seed: int) -> type:
    """`trainer_class` whose dictionary gets seeded random weights once built."""

    def __init__(self: Any, **kwargs: Any) -> None:
        trainer_class.__init__(self, **kwargs)
        randomize(self.ae, seed)

    return type(trainer_class.__name__, (trainer_class,), {"__init__": __init__})


# -- writing ------------------------------------------------------------------------------


def write_expected(item: Written, fixture_dir: Path, seed: int) -> None:
    with torch.no_grad():
        x = stable_inputs(lambda x: item.run(x)[0], seed)
        features, decoded, output = item.run(x)
    tensors = {"x": x, "features": features, "decoded": decoded, "output": output}
    save_file(
        {k: v.detach().float().contiguous() for k, v in tensors.items()},
        fixture_dir / EXPECTED_FILE,
    )
    info = {
        "library": item.library,
        "peer_class": item.peer_class,
        "saved_with": item.saved_with,
        "loaded_with": item.loaded_with,
        "sae": item.sae_dir.relative_to(fixture_dir).as_posix(),
        **({"notes": item.notes} if item.notes else {}),
    }
    (fixture_dir / FIXTURE_FILE).write_text(json.dumps(info, indent=2) + "\n")


def main() -> None:
    torch.set_num_threads(1)
    builders = {
        "saelens": saelens_fixtures,
        "sparsify": sparsify_fixtures,
        "dictionary_learning": dictionary_learning_fixtures,
    }
    if OUT.exists():
        shutil.rmtree(OUT)
    fixtures: dict[str, list[str]] = {}
    for library, build in builders.items():
        folder = OUT / library
        folder.mkdir(parents=True)
        items = build(folder)
        for index, item in enumerate(items):
            write_expected(item, folder / item.name, seed=input_seed(library, index))
        fixtures[library] = [item.name for item in items]
        print(f"{library}: {len(items)} fixtures")
    manifest = {
        "made_by": "scripts/peer_fixtures.py",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "libraries": {
            lib: {"package": pkg, "version": version(pkg)} for lib, pkg in PACKAGES.items()
        },
        "sizes": {"d_in": D_IN, "d_sae": D_SAE, "d_out_transcoders": D_OUT, "k": K, "rows": N_ROWS},
        "fixtures": fixtures,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


def input_seed(library: str, index: int) -> int:
    return 1 + list(PACKAGES).index(library) * 100 + index


if __name__ == "__main__":
    main()
