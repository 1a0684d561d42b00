"""Model + feature source -> per-token feature activations: model loading, hookpoints,
tokenization, corpora, planted features, the probe runner, and (probes/evidence/) the
dictionary-wide evidence pass and its store."""
