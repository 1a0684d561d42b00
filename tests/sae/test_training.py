"""SAE training: exact sparse gradients, learning planted structure, the input-scale fold,
exact resume, BatchTopK's threshold, the shuffling buffer, the activation stream and the
`glossator sae train` command (on the tiny real Llama)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from probes.reader import ActivationReader
from probes.stream import ActivationStream, read_activations
from probes.token_cache import token_cache
from sae.base import SparseAutoencoder
from sae.loading import load_sae
from sae.metrics import quality_metrics
from sae.registry import build_sae
from sae.training import (
    ActivationBuffer,
    TensorSource,
    TrainConfig,
    Trainer,
    TrainingError,
    train_sae,
)
from sae.training.checkpoint import list_checkpoints
from sae.training.losses import nmse, training_step
from sae.training.trainer import sae_config
from tests.cli_helpers import run_cli
from tests.conftest import TINY_TRAINING_TEXTS

D_IN, N_DIRS = 64, 48


def planted_activations(n: int, seed: int = 0) -> torch.Tensor:
    """Rows = offset + sparse non-negative mixes (~3 of 48) of fixed unit directions,
    at a scale far from sqrt(d_in) so that input normalisation matters."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(N_DIRS, D_IN, generator=torch.Generator().manual_seed(123))
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = torch.rand(n, N_DIRS, generator=gen) < 3 / N_DIRS
    coeffs = active * (0.5 + torch.rand(n, N_DIRS, generator=gen)) * 40.0
    return coeffs @ dirs + 7.0


@pytest.fixture(scope="module")
def planted() -> torch.Tensor:
    return planted_activations(24_000)


def small_config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "d_in": D_IN,
        "d_sae": 64,
        "k": 4,
        "total_tokens": 30_000,
        "batch_tokens": 256,
        "buffer_tokens": 2048,
        "lr": 1e-2,
        "dead_tokens": 5_000,
    }
    return TrainConfig.model_validate({**base, **overrides})


# -- the sparse training path equals autograd through the dense formulas ------------------


def _dense_reference_loss(
    sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor, aux_rows: int
) -> torch.Tensor:
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    codes = sae.activate(pre)
    if sae.cfg.architecture == "matryoshka":
        recons = sae.prefix_reconstructions(codes)  # type: ignore[operator]
        loss, recon = torch.stack([nmse(x, r) for r in recons]).mean(), recons[-1]
    else:
        recon = codes @ sae.W_dec + sae.b_dec
        loss = nmse(x, recon)
    pre, x, recon = pre[:aux_rows], x[:aux_rows], recon[:aux_rows]
    values, idx = pre[:, dead].topk(6, dim=-1)
    aux_codes = torch.zeros_like(pre[:, dead]).scatter(-1, idx, values.relu())
    return loss + nmse((x - recon).detach(), aux_codes @ sae.W_dec[dead]) / 32


# 64 features: the values' gradient from a dense product; 512: from per-entry dot
# products (k * GATHER_COST < d_sae), while AuxK's many entries stay dense. AuxK on all
# rows, or on the first half (auxk_fraction).
@pytest.mark.parametrize(("d_sae", "auxk_fraction"), [(64, 1.0), (512, 1.0), (64, 0.5)])
@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "matryoshka"])
def test_sparse_step_gradients_equal_dense_autograd(
    architecture: str, d_sae: int, auxk_fraction: float
) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(architecture=architecture, d_in=16, d_sae=d_sae, k=4, total_tokens=1)  # type: ignore[arg-type]
    sae = build_sae(sae_config(cfg))
    sae.init_weights(0)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    sae.train()
    x = torch.randn(40, 16)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[::3] = True
    widths = cfg.resolved_matryoshka_widths() if architecture == "matryoshka" else None
    fast = training_step(
        sae, x, dead, 6, 1 / 32, matryoshka_widths=widths, auxk_fraction=auxk_fraction
    )
    fast.loss.backward()
    fast_grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    reference = _dense_reference_loss(sae, x, dead, round(auxk_fraction * len(x)))
    reference.backward()
    assert float(fast.loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for name, param in sae.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(fast_grads[name], param.grad, rtol=1e-4, atol=1e-6)


# -- learning ------------------------------------------------------------------------------


# bfloat16 ranks the features as mixed-precision training does (the default on CPUs
# with AVX512-BF16 or AMX, and on GPUs); it learns as well as float32.
@pytest.mark.parametrize("encoder_dtype", ["float32", "bfloat16"])
def test_training_learns_planted_directions(planted: torch.Tensor, encoder_dtype: str) -> None:
    cfg = small_config(encoder_dtype=encoder_dtype)
    trainer = Trainer(cfg, TensorSource(planted, chunk_tokens=1024))
    trainer.initialise()
    first = training_step(trainer.sae, trainer.buffer.peek(256) * trainer.scale, None, 1, 0.0)
    trainer.train(progress=False)
    assert trainer.stats.loss < 0.5 * float(first.fvu)
    sae = trainer.folded_sae()
    held = planted_activations(4000, seed=1)
    metrics = quality_metrics(sae, held)
    assert metrics.explained_variance > 0.85
    assert metrics.l0 == pytest.approx(4, abs=0.3)
    assert trainer.dead.dead_fraction() < 0.1
    norms = sae.W_dec.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    # Most planted directions have a feature whose decoder row points the same way.
    dirs = torch.randn(N_DIRS, D_IN, generator=torch.Generator().manual_seed(123))
    dirs /= dirs.norm(dim=1, keepdim=True)
    best = (dirs @ sae.W_dec.T).max(dim=1).values
    assert float((best > 0.9).float().mean()) > 0.8


def test_saved_sae_reads_raw_activations(planted: torch.Tensor, tmp_path: Path) -> None:
    cfg = small_config(total_tokens=10_000, hookpoint="layers.1", model_name="tiny")
    result = train_sae(cfg, TensorSource(planted), tmp_path / "sae", progress=False)
    scale = result.stats["training"]["input_scale"]
    assert abs(scale - 1) > 0.5  # the data's mean norm is far from sqrt(d_in)
    loaded = load_sae(tmp_path / "sae")
    x = planted[:256]
    # The trainer's internal model: scaled input, reconstruction scaled back.
    internal = result.sae  # folded; rebuild the internal (scaled) model from it
    scaled = build_sae(sae_config(cfg))
    for name, tensor in internal.tensors().items():
        getattr(scaled, name).data = tensor.clone() * (scale if name in ("b_enc", "b_dec") else 1)
    torch.testing.assert_close(loaded(x), scaled(x * scale) / scale, rtol=1e-4, atol=1e-4)
    assert loaded.cfg.hookpoint == "layers.1" and loaded.cfg.model_name == "tiny"
    assert loaded.cfg.metadata["training"]["tokens"] == 10_240
    assert not list_checkpoints(tmp_path / "sae")  # removed once the SAE is saved


# -- resume ----------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _interrupting(source: TensorSource, after_chunks: int) -> Iterator[torch.Tensor]:
    for i, chunk in enumerate(source.chunks(0)):
        if i == after_chunks:
            raise _Interrupt
        yield chunk


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_resume_equals_an_uninterrupted_run(
    planted: torch.Tensor, tmp_path: Path, architecture: str
) -> None:
    cfg = small_config(architecture=architecture, total_tokens=12_288, dead_tokens=1_000)
    whole = train_sae(cfg, TensorSource(planted, chunk_tokens=700), progress=False)
    out = tmp_path / "run"
    with pytest.raises(_Interrupt):  # dies in the 3rd buffer fill, after checkpoints
        train_sae(
            cfg,
            _interrupting(TensorSource(planted, chunk_tokens=700), 7),
            out,
            progress=False,
            checkpoint_every=3,
        )
    assert list_checkpoints(out)
    with pytest.raises(TrainingError, match="resume"):
        train_sae(cfg, TensorSource(planted, chunk_tokens=700), out, progress=False)
    with pytest.raises(TrainingError, match="other settings"):
        train_sae(cfg.model_copy(update={"seed": 1}), TensorSource(planted), out, resume=True)
    resumed = train_sae(
        cfg, TensorSource(planted, chunk_tokens=700), out, resume=True, progress=False
    )
    assert resumed.stats["training"]["resumed_from_step"] in (3, 6, 9, 12, 15)
    # Bit-identical on CPU: every tensor and RNG state is restored exactly.
    for name, tensor in whole.sae.tensors().items():
        assert torch.equal(tensor, resumed.sae.tensors()[name]), name


# -- BatchTopK -----------------------------------------------------------------------------


def test_batchtopk_sets_a_threshold_that_keeps_l0_near_k(planted: torch.Tensor) -> None:
    cfg = small_config(architecture="batchtopk", k=4, total_tokens=40_000)
    result = train_sae(cfg, TensorSource(planted), progress=False)
    sae = result.sae
    threshold = float(sae.threshold)  # type: ignore[arg-type]
    assert threshold > 0
    assert not sae.training
    metrics = quality_metrics(sae, planted_activations(4000, seed=2))
    assert metrics.l0 == pytest.approx(4, rel=0.25)
    assert metrics.explained_variance > 0.8


# -- the buffer ------------------------------------------------------------------------------


def _numbered_chunks(sizes: list[int]) -> list[torch.Tensor]:
    chunks, start = [], 0
    for size in sizes:
        ids = torch.arange(start, start + size, dtype=torch.float32)
        chunks.append(ids[:, None].repeat(1, 3))
        start += size
    return chunks


def test_buffer_serves_every_token_exactly_once() -> None:
    chunks = _numbered_chunks([37, 5, 120, 64, 1, 90, 33])  # 350 tokens
    buffer = ActivationBuffer(chunks, capacity=100, batch_size=32, seed=3)
    batches = list(buffer)
    served = torch.cat(batches)[:, 0]
    assert sorted(served.long().tolist()) == list(range(350))
    assert all(b.shape[0] == 32 for b in batches[:-1]) and batches[-1].shape[0] == 350 % 32
    assert not torch.equal(served, torch.arange(350.0))  # shuffled


def test_buffer_restores_its_position() -> None:
    chunks = _numbered_chunks([50] * 8)
    first = ActivationBuffer(chunks, capacity=120, batch_size=16, seed=0)
    head = [first.next_batch() for _ in range(11)]
    state = first.state_dict()
    rest = list(first)
    second = ActivationBuffer(chunks, capacity=120, batch_size=16, seed=0)
    second.load_state_dict(state)
    again = list(second)
    assert len(rest) == len(again) and all(
        torch.equal(a, b) for a, b in zip(rest, again, strict=True)
    )
    everything = torch.cat([*[b for b in head if b is not None], *rest])[:, 0]
    assert sorted(everything.long().tolist()) == list(range(400))


# -- the activation stream -------------------------------------------------------------------


def test_stream_yields_the_valid_tokens_of_every_text(tiny_llama: Any, tmp_path: Path) -> None:
    reader = ActivationReader(tiny_llama, ["layers.1"], context_length=16, batch_size=3)
    texts = [*TINY_TRAINING_TEXTS, "short", "a b c " * 20]  # the last one spans windows
    expected = reader.read(texts)
    stream = ActivationStream(reader, texts, "layers.1", texts_per_chunk=2, seed=5)
    chunks = list(stream)
    assert len(chunks) == stream.chunks_per_epoch == 3
    got = torch.cat(chunks)
    want = torch.cat([e.acts_TD["layers.1"] for e in expected])
    assert got.shape == want.shape == (sum(len(e.tokens) for e in expected), 32)
    assert stream.tokens_read == got.shape[0]
    # Same rows, in another order: compare sorted by a projection.
    key = torch.randn(32)
    torch.testing.assert_close(
        got[torch.argsort(got @ key)], want[torch.argsort(want @ key)], rtol=1e-4, atol=1e-5
    )
    # Chunk i is always the same group: starting at chunk 1 gives the tail.
    tail = list(stream.chunks(1))
    assert all(torch.equal(a, b) for a, b in zip(tail, chunks[1:], strict=True))
    assert read_activations(stream, 10).shape == (10, 32)
    # Rows cut from the texts' token cache instead of tokenizing: the same chunks.
    tokens = token_cache(tmp_path / "tokens", texts, tiny_llama.tokenizer)
    cached = ActivationStream(reader, texts, "layers.1", texts_per_chunk=2, seed=5, tokens=tokens)
    assert all(torch.equal(a, b) for a, b in zip(cached, chunks, strict=True))
    with pytest.raises(ValueError, match="token cache holds"):
        ActivationStream(reader, texts[:3], "layers.1", tokens=tokens)


# -- corpus -> SAE, with resume (the path `sae train` and the default SAE take) -------------


@pytest.mark.parametrize("cache_tokens", [1500, 0])
def test_train_on_texts_resumes_exactly(
    tiny_llama: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_tokens: int
) -> None:
    from runtime.default_sae import train_on_texts
    from runtime.settings import get_settings

    settings = get_settings(data_dir=tmp_path / "data", device="cpu", context_length=32)
    texts = [f"{t} Number {i}." for i in range(30) for t in TINY_TRAINING_TEXTS]
    cfg = TrainConfig(
        d_in=32, d_sae=64, k=4, total_tokens=4096, batch_tokens=256, buffer_tokens=512,
        hookpoint="layers.2", model_name="tiny",
    )  # fmt: skip

    def run(out: Path, resume: bool = False) -> SparseAutoencoder:
        result = train_on_texts(
            settings, tiny_llama, texts, [], cfg, out,  # type: ignore[arg-type]
            resume=resume, cache_tokens=cache_tokens, checkpoint_every=4, progress=False,
        )  # fmt: skip
        return result.sae

    whole = run(tmp_path / "whole")
    saves = 0
    original = Trainer.save_checkpoint

    def save_then_die(self: Trainer) -> Path:
        nonlocal saves
        path = original(self)
        saves += 1
        if saves == 2:
            raise _Interrupt
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    if cache_tokens:  # the cached activations are reused: the model is not read again
        monkeypatch.setattr(ActivationStream, "_read", lambda *_: pytest.fail("model re-read"))
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.cfg.metadata["training"]["resumed_from_step"] == 8
    for name, tensor in whole.tensors().items():
        assert torch.equal(tensor, resumed.tensors()[name]), name
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "cfg.json",
        "sae_weights.safetensors",
    ]


# -- the command line ------------------------------------------------------------------------


@pytest.mark.slow  # a `glossator sae train` process
def test_cli_sae_train_writes_a_loadable_sae(tiny_llama_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = [
        json.dumps({"text": f"{t} Number {i}."}) for i in range(40) for t in TINY_TRAINING_TEXTS
    ]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "sae"
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
    }
    args = ["sae", "train", "--hookpoint", "layers.2", "--width", "64", "--k", "4"]
    args += ["--tokens", "3000", "--batch-size", "256", "--corpus", str(corpus)]
    args += ["--out", str(out), "--cache-tokens", "1500", "--json"]
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["training"]["tokens"] == 3072 and summary["width"] == 64
    sae = load_sae(out)
    assert (sae.cfg.architecture, sae.cfg.hookpoint, sae.d_sae, sae.cfg.k) == (
        "topk",
        "layers.2",
        64,
        4,
    )
    assert sae.cfg.model_name == tiny_llama_dir.name
    assert sae.cfg.metadata["heldout"]["n_tokens"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    again = run_cli(*args, env=env)
    assert again.returncode == 2 and "already holds a trained SAE" in again.stderr


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(d_in=8, d_sae=16384, k=4, total_tokens=4096 * 1000)
    assert cfg.resolved_lr() == pytest.approx(2e-4)  # Gao et al. at 2^14 features
    assert cfg.resolved_warmup_steps() == 50
    lrs = [cfg.lr_at(s) for s in range(cfg.total_steps)]
    assert lrs[0] < lrs[49] == pytest.approx(2e-4)
    assert lrs[500] == pytest.approx(2e-4) and lrs[799] == pytest.approx(2e-4)
    assert lrs[-1] < 2e-6 and all(a >= b for a, b in itertools.pairwise(lrs[800:]))
    assert TrainConfig(d_in=8, d_sae=4096, k=4, total_tokens=1).resolved_lr() == pytest.approx(4e-4)


@pytest.mark.slow  # `glossator` processes
def test_cli_sae_train_from_the_activation_cache(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """--from-cache reads the corpus once into its activation cache, trains on every
    training token of it, never on a held-out one, and leaves the cache for evidence."""
    texts = [f"{t} Number {i}." for i in range(40) for t in TINY_TRAINING_TEXTS]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    env = {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
        "GLOSSATOR_HOOKPOINT": "layers.2",
    }
    args = ["sae", "train", "--width", "64", "--k", "4", "--tokens", "3000"]
    args += ["--batch-size", "256", "--corpus", str(corpus), "--from-cache", "--json"]
    result = run_cli(*args, "--out", str(tmp_path / "sae"), env=env)
    assert result.returncode == 0, result.stderr
    sae = load_sae(tmp_path / "sae")
    source = sae.cfg.metadata["source"]
    assert source["read_from"] == "activation cache"
    listed = json.loads(run_cli("cache", "list", "--json", env=env).stdout)
    (acts,) = [row for row in listed if row["kind"] == "activations"]
    assert acts["state"] == "complete" and acts["texts"] == len(texts)
    held = source["heldout_texts"]
    assert 0 < held < len(texts) and source["train_texts"] == len(texts) - held
    assert 0 < source["cache_tokens"] < acts["tokens"]  # the held-out texts' tokens left out
    assert sae.cfg.metadata["heldout"]["n_tokens"] > 0

    # a second SAE from the same cache reads no model (the cache is reused as is)
    cached_file = tmp_path / "data" / "cache" / "activations" / acts["key"] / "acts.bin"
    stamp = cached_file.stat().st_mtime_ns
    options = ["--auxk-fraction", "0.5", "--encoder-dtype", "float32"]
    again = run_cli(*args, *options, "--out", str(tmp_path / "sae2"), env=env)
    assert again.returncode == 0, again.stderr
    assert cached_file.stat().st_mtime_ns == stamp
    training = load_sae(tmp_path / "sae2").cfg.metadata["training"]
    assert training["config"]["auxk_fraction"] == 0.5 and training["encoder_dtype"] == "float32"
    wrong = run_cli(*args, "--encoder-dtype", "float64", "--out", str(tmp_path / "s3"), env=env)
    assert wrong.returncode == 2 and "choose auto, float32 or bfloat16" in wrong.stderr
