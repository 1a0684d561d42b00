"""Identifiers that travel between the edges and the packages below: parsed and checked
once, where they come in."""
