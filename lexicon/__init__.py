"""Lexical knowledge the explainers and judges share: WordNet's classes and word forms,
the closed classes of English function words, and text embeddings."""
