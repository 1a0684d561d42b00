"""Model + SAE on the tiny real Llama: the feature source (probes/sae_runner.py), the
spliced forward and CE-loss recovered (probes/splice.py), and their CLI commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from probes.activations import FeatureActivations, FeatureSource
from probes.hookpoints import hookpoint_module, parse_hookpoint, run_to_hookpoints
from probes.model import SubjectModel
from probes.reader import ActivationReader
from probes.sae_runner import FeatureIndexError, SAEFeatureSource
from probes.splice import next_token_ce_sum, splice_losses, spliced, zero_replacement
from probes.tokenization import tokenize_batch
from sae.base import SAEConfig, SparseAutoencoder
from sae.metrics import ReconstructionStats
from sae.registry import build_sae
from tests.cli_helpers import run_cli
from tests.sae_helpers import identity_sae

pytestmark = pytest.mark.slow  # `glossator` processes on a model and an SAE

D_MODEL, D_SAE = 32, 96
HOOK = "layers.1"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "red green blue",
    "",
    "def add(a, b):\n    return a + b  # numbers one two three 42. " * 3,  # windowed
    "A fortune a day keeps the bugs away.",
]


def topk_sae(seed: int = 0, k: int = 6, hookpoint: str | None = HOOK) -> SparseAutoencoder:
    cfg = SAEConfig(architecture="topk", d_in=D_MODEL, d_sae=D_SAE, k=k, hookpoint=hookpoint)
    sae = build_sae(cfg)
    sae.init_weights(seed)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=torch.Generator().manual_seed(seed)))
    return sae


def relu_sae(seed: int = 0) -> SparseAutoencoder:
    """A standard ReLU SAE with biases pushed down so that few features fire."""
    sae = build_sae(SAEConfig(architecture="standard", d_in=D_MODEL, d_sae=D_SAE))
    sae.init_weights(seed)
    with torch.no_grad():
        sae.b_enc.fill_(-1.0)
    return sae


def manual(
    subject: SubjectModel, sae: SparseAutoencoder, texts: list[str], **reader: Any
) -> list[torch.Tensor]:
    """Dense codes [T, d_sae] per text: the reader's activations, then `sae.encode`."""
    read = ActivationReader(subject, [HOOK], **reader).read(texts)
    with torch.no_grad():
        return [sae.encode(r.acts_TD[HOOK]) for r in read]


def as_dense(result: FeatureActivations, d_sae: int) -> torch.Tensor:
    return result.dense(list(range(d_sae)))


# -- the feature source ---------------------------------------------------------------


@pytest.mark.parametrize("make", [topk_sae, relu_sae])
def test_runner_equals_model_then_encode(tiny_llama: SubjectModel, make: Any) -> None:
    sae = make()
    options: dict[str, Any] = {"context_length": 12, "window_overlap": 3, "batch_size": 2}
    source = SAEFeatureSource(tiny_llama, sae, HOOK, **options)
    results = source.activations(TEXTS)
    expected = manual(tiny_llama, sae, TEXTS, **options)
    assert [r.text for r in results] == TEXTS
    assert len(results[3].tokens) > 12  # really windowed
    for result, codes_TF in zip(results, expected, strict=True):
        assert len(result.tokens) == codes_TF.shape[0]
        pos, feat = codes_TF.nonzero(as_tuple=True)
        assert torch.equal(result.token_pos_N, pos)  # zeros dropped, sorted by token, feature
        assert torch.equal(result.feature_N, feat)
        torch.testing.assert_close(result.value_N, codes_TF[pos, feat], rtol=1e-5, atol=1e-6)
        assert result.value_N.dtype == torch.float32 and bool((result.value_N != 0).all())
    assert results[2].tokens == [] and results[2].token_pos_N.numel() == 0


def test_runner_equals_an_unbatched_forward(tiny_llama: SubjectModel) -> None:
    """Padding in a batch changes nothing: each text alone, straight through the model."""
    sae = topk_sae()
    texts = [TEXTS[0], TEXTS[1], TEXTS[4]]
    results = SAEFeatureSource(tiny_llama, sae, HOOK, batch_size=3).activations(texts)
    for text, result in zip(texts, results, strict=True):
        ids = tiny_llama.tokenizer(text)["input_ids"]  # BOS + tokens
        acts = run_to_hookpoints(
            tiny_llama.model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), [HOOK]
        )[HOOK][0, 1:]
        with torch.no_grad():
            codes_TF = sae.encode(acts)
        torch.testing.assert_close(as_dense(result, D_SAE), codes_TF, rtol=1e-4, atol=1e-5)


def test_dense_agrees_with_sparse(tiny_llama: SubjectModel) -> None:
    sae = topk_sae(k=10)
    source = SAEFeatureSource(tiny_llama, sae, HOOK, context_length=12, batch_size=2)
    sparse = source.activations(TEXTS)
    fired = sorted({int(f) for r in sparse for f in r.feature_N})
    chosen = [fired[0], D_SAE - 1, fired[-1], fired[0]]  # a repeat, maybe a silent one
    dense = source.dense(TEXTS, chosen)
    for result, acts_TF in zip(sparse, dense, strict=True):
        assert acts_TF.shape == (len(result.tokens), len(chosen))
        for j, feature in enumerate(chosen):  # one column at a time: repeats included
            assert torch.equal(acts_TF[:, j], result.dense([feature])[:, 0])
    assert any(bool(d.any()) for d in dense)


def test_feature_names_and_bad_indices(tiny_llama: SubjectModel) -> None:
    source: FeatureSource = SAEFeatureSource(tiny_llama, topk_sae(), HOOK)
    assert isinstance(source, SAEFeatureSource)  # and mypy checks the protocol above
    assert source.n_features == D_SAE and source.feature_index("12") == 12
    names = source.feature_names
    assert names[:3] == ["0", "1", "2"] and len(names) == D_SAE and names[-1] == str(D_SAE - 1)
    for bad in ("96", "-1", "x", "012"):
        with pytest.raises(FeatureIndexError, match=r"valid indices 0\.\.95"):
            source.feature_index(bad)
    with pytest.raises(FeatureIndexError, match=r"unknown feature index 96: .*0\.\.95"):
        source.dense(["hi"], [3, 96])
    with pytest.raises(ValueError, match="d_model=32"):
        SAEFeatureSource(tiny_llama, identity_sae(16), HOOK)


# -- the spliced forward --------------------------------------------------------------


def long_batch(subject: SubjectModel) -> Any:
    """Rows with a BOS prefix, right padding and a window's repeated left context."""
    return tokenize_batch(
        subject.tokenizer, TEXTS, context_length=12, window_overlap=3, prefix_ids=None
    )


@pytest.mark.parametrize("hookpoint", ["layers.1", "layers.2.attn", "layers.0.mlp"])
def test_splice_touches_only_valid_positions(tiny_llama: SubjectModel, hookpoint: str) -> None:
    model = tiny_llama.model
    batch = long_batch(tiny_llama)
    assert not bool(batch.valid_BT[:, 0].any())  # BOS is never valid
    assert bool((batch.attention_mask_BT == 0).any())  # some padding
    module = hookpoint_module(model, parse_hookpoint(model, hookpoint))
    seen: list[torch.Tensor] = []

    def capture(_m: Any, _i: Any, output: Any) -> None:
        seen.append((output[0] if isinstance(output, tuple) else output).clone())

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=batch.input_ids_BT, attention_mask=batch.attention_mask_BT)

    handle = module.register_forward_hook(capture)
    try:
        forward()  # clean
        with spliced(model, hookpoint, batch.valid_BT, zero_replacement):
            handle.remove()  # the capture must run after the splice
            handle = module.register_forward_hook(capture)
            forward()
    finally:
        handle.remove()
    clean, zeroed = seen
    valid = batch.valid_BT
    assert torch.equal(zeroed[~valid], clean[~valid])  # prefix, padding, left context
    assert bool((zeroed[valid] == 0).all()) and bool((clean[valid] != 0).any())


@pytest.mark.parametrize("hookpoint", ["layers.1", "layers.2.attn", "layers.0.mlp"])
def test_perfect_sae_recovers_all_of_the_loss(tiny_llama: SubjectModel, hookpoint: str) -> None:
    stats = ReconstructionStats(D_MODEL, 2 * D_MODEL)
    losses = splice_losses(
        tiny_llama,
        identity_sae(D_MODEL),
        hookpoint,
        TEXTS,
        context_length=12,
        window_overlap=3,
        batch_size=2,
        stats=stats,
    )
    assert losses.ce_spliced == losses.ce_clean
    assert losses.ce_zero != losses.ce_clean
    assert losses.ce_loss_recovered == 1.0
    metrics = stats.result()
    assert metrics.explained_variance == 1.0 and metrics.mse == 0.0
    n_tokens = sum(len(t) for t in long_batch(tiny_llama).spans)
    assert metrics.n_tokens == n_tokens  # every token once: no prefix, no repeated context
    assert losses.n_targets == n_tokens  # each token is a target once (after its BOS)


def test_zero_sae_recovers_none_of_the_loss(tiny_llama: SubjectModel) -> None:
    zero = build_sae(SAEConfig(architecture="standard", d_in=D_MODEL, d_sae=D_SAE))
    losses = splice_losses(tiny_llama, zero, HOOK, TEXTS, context_length=12, batch_size=3)
    assert losses.ce_spliced == losses.ce_zero
    assert losses.ce_loss_recovered == 0.0
    random = splice_losses(tiny_llama, topk_sae(), HOOK, TEXTS, context_length=12)
    assert random.ce_clean == pytest.approx(losses.ce_clean, rel=1e-5)  # batching aside


def test_clean_ce_equals_per_text_cross_entropy(tiny_llama: SubjectModel) -> None:
    texts = [TEXTS[0], TEXTS[1], TEXTS[4]]
    losses = splice_losses(tiny_llama, topk_sae(), HOOK, texts, batch_size=3)
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tiny_llama.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = tiny_llama.model(input_ids=ids).logits[0, :-1]
        total += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    assert losses.n_targets == count
    assert losses.ce_clean == pytest.approx(total / count, rel=1e-5)
    batch = tokenize_batch(tiny_llama.tokenizer, texts, 64)
    ce = next_token_ce_sum(
        tiny_llama.model, batch.input_ids_BT, batch.attention_mask_BT, batch.valid_BT
    )
    assert ce == pytest.approx(total, rel=1e-5)


# -- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def sae_env(tiny_llama_dir: Path, tmp_path: Path) -> dict[str, str]:
    from sae.loading import save_sae

    folder = tmp_path / "sae"
    save_sae(topk_sae(k=8), folder)
    return {
        "GLOSSATOR_MODEL": str(tiny_llama_dir),
        "GLOSSATOR_SAE": str(folder),
        "GLOSSATOR_DATA_DIR": str(tmp_path / "data"),
        "GLOSSATOR_DEVICE": "cpu",
        "GLOSSATOR_DTYPE": "float32",  # as the in-process `tiny_llama` it is compared with
        "GLOSSATOR_HOOKPOINT": "layers.1",
    }


def test_cli_activations_features_and_top(
    sae_env: dict[str, str], tiny_llama: SubjectModel
) -> None:
    from sae.loading import load_sae

    text = "The quick brown fox."
    sae = load_sae(sae_env["GLOSSATOR_SAE"])
    expected = SAEFeatureSource(tiny_llama, sae, HOOK).activations([text])[0]
    fired = sorted({int(f) for f in expected.feature_N})
    chosen = [fired[0], fired[-1], 7]
    result = run_cli(
        "activations",
        text,
        "--features",
        ",".join(map(str, chosen)),
        "--top",
        "3",
        "--json",
        env=sae_env,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["hookpoint"] == HOOK and doc["d_sae"] == D_SAE and doc["features"] == chosen
    tokens = doc["tokens"]
    assert [(t["text"], t["start"], t["end"]) for t in tokens] == [
        (s.text, s.start, s.end) for s in expected.tokens
    ]
    want = expected.dense(chosen)
    for i, token in enumerate(tokens):
        assert list(token["activations"]) == [str(f) for f in chosen]
        assert list(token["activations"].values()) == pytest.approx(want[i].tolist(), rel=1e-5)
        active = expected.by_token()[i]
        strongest = sorted(active.items(), key=lambda fv: -fv[1])[:3]
        assert [e["feature"] for e in token["top"]] == [f for f, _ in strongest]
        assert [e["activation"] for e in token["top"]] == pytest.approx([v for _, v in strongest])


def run_in_process(*args: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI in this process (no interpreter start-up): for the table views."""
    from typer.testing import CliRunner

    from cli.app import app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(app, list(args))


def test_cli_heat_and_top_tables(
    sae_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = "The quick brown fox."
    shown = run_in_process(
        "activations",
        text,
        "--features",
        "5,17",
        "--top",
        "2",
        env=sae_env,
        monkeypatch=monkeypatch,
    )
    assert shown.exit_code == 0, shown.output
    assert "feature 5" in shown.output and "feature 17" in shown.output  # heat lines
    assert "quick brown" in shown.output  # the text itself, as a heat line
    assert "f17" in shown.output and "top 2 features" in shown.output  # the table
    junk = run_in_process(
        "activations", "hi", "--features", "3,x", env=sae_env, monkeypatch=monkeypatch
    )
    assert junk.exit_code == 2 and "feature indices" in junk.output

    corpus = tmp_path / "heldout.txt"
    corpus.write_text(TEXTS[0])
    table = run_in_process(
        "sae",
        "eval",
        "--corpus",
        str(corpus),
        "--tokens",
        "8",
        env=sae_env,
        monkeypatch=monkeypatch,
    )
    assert table.exit_code == 0, table.output
    assert "CE loss recovered" in table.output and "explained variance" in table.output


def test_cli_bad_feature_index(sae_env: dict[str, str]) -> None:
    bad = run_cli("activations", "hi", "--features", "3,96", env=sae_env)
    assert bad.returncode == 2
    assert "96" in bad.stderr and "0..95" in bad.stderr


def test_missing_sae_says_how_to_get_one(tiny_llama: SubjectModel, tmp_path: Path) -> None:
    from runtime.loaders import open_sae
    from runtime.settings import get_settings
    from sae.base import SAEError
    from sae.loading import save_sae

    settings = get_settings(data_dir=tmp_path, model="unused")
    with pytest.raises(SAEError, match=r"glossator prepare.*GLOSSATOR_SAE"):
        open_sae(settings, tiny_llama)
    with pytest.raises(SAEError, match="GLOSSATOR_SAE=/nowhere does not exist"):
        open_sae(get_settings(sae="/nowhere"), tiny_llama)
    save_sae(identity_sae(16), tmp_path / "narrow")
    with pytest.raises(SAEError, match="32"):
        open_sae(get_settings(sae=str(tmp_path / "narrow")), tiny_llama)
    save_sae(topk_sae(), tmp_path / "fits")
    sae = open_sae(get_settings(sae=str(tmp_path / "fits")), tiny_llama)
    assert sae.cfg.hookpoint == HOOK and sae.d_sae == D_SAE


def test_cli_sae_eval_json(sae_env: dict[str, str], tmp_path: Path) -> None:
    corpus = tmp_path / "heldout.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS if t))
    result = run_cli(
        "sae", "eval", "--corpus", str(corpus), "--tokens", "40", "--json", env=sae_env
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["n_tokens"] == 40 and doc["hookpoint"] == HOOK and doc["d_sae"] == D_SAE
    assert 0 < doc["l0"] <= 8 and 0 < doc["fraction_alive"] <= 1
    assert doc["mse"] > 0 and -1 <= doc["cosine"] <= 1 and doc["explained_variance"] < 1
    assert doc["ce_zero"] != doc["ce_clean"]
    recovered = (doc["ce_zero"] - doc["ce_spliced"]) / (doc["ce_zero"] - doc["ce_clean"])
    assert doc["ce_loss_recovered"] == pytest.approx(recovered)
