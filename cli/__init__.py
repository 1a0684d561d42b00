"""The `glossator` command line: one module per command group (`app` gathers them)."""
