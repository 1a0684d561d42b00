"""Dictionary-wide feature evidence: streaming accumulators over sparse activations."""
