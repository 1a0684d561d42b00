"""Long reads report progress without a terminal too (a log file, a CI job)."""

from __future__ import annotations

import io

from rich.console import Console

from runtime.progress import StepProgress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120), out


def test_without_a_terminal_it_prints_plain_lines() -> None:
    console, out = _console(terminal=False)
    with StepProgress("reading activations", 1000, console=console, every=0.0) as bar:
        bar.advance(250)
        bar.advance(750)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("reading activations: 250 of 1,000 tokens (25%)")
    assert lines[-1].endswith("done") and "1,000 of 1,000 tokens (100%)" in lines[-1]
    assert "\x1b[" not in out.getvalue()  # no escape codes in a log file


def test_lines_are_spaced_in_time() -> None:
    console, out = _console(terminal=False)
    with StepProgress("read", 10, console=console, every=3600.0) as bar:
        for _ in range(10):
            bar.advance(1)
    assert len(out.getvalue().splitlines()) == 2  # the first step and done only


def test_nothing_read_says_nothing() -> None:
    console, out = _console(terminal=False)
    with StepProgress("read", 10, console=console, every=0.0):
        pass  # e.g. the evidence was already built
    assert out.getvalue() == ""


def test_hidden_shows_nothing() -> None:
    console, out = _console(terminal=False)
    with StepProgress("read", 10, show=False, console=console, every=0.0) as bar:
        bar.advance(10)
    assert out.getvalue() == ""
