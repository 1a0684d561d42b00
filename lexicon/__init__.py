"""Lexical knowledge the explainers share: WordNet's classes and word forms, and the
closed classes of English function words."""
