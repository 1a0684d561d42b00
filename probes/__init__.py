"""Model + feature source -> per-token feature activations (see shared DESIGN.md)."""
