"""Training TopK-family SAEs on activation streams (see `trainer` for the method).

    from sae.training import TrainConfig, TensorSource, train_sae
    result = train_sae(TrainConfig(d_in=576, d_sae=4096, k=32, total_tokens=10**6),
                       TensorSource(acts_ND), out_dir=Path("sae-folder"))

The source is anything yielding activation chunks [n, d_in]; this package never reads
a model itself (probes/stream.py does).
"""

from sae.training.buffer import ActivationBuffer, ChunkSource, TensorSource
from sae.training.config import ARCHITECTURES, TrainConfig
from sae.training.run import TrainResult, check_out_dir, train_sae
from sae.training.trainer import Trainer, TrainingError

__all__ = [
    "ARCHITECTURES",
    "ActivationBuffer",
    "ChunkSource",
    "TensorSource",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "check_out_dir",
    "train_sae",
]
