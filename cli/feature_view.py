"""`glossator feature N` in the terminal: one feature's evidence, each context on one line
with its tokens highlighted by activation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from cli.common import console, shown_token

if TYPE_CHECKING:
    from probes.evidence.config import EvidenceManifest
    from probes.evidence.store import Example, FeatureEvidence, FeatureStatistics
    from probes.planted import PlantedFeatureSpec

HIST_BAR = 30  # characters of the histogram's longest bar
NON_ACTIVATING_SHOWN = 3
LABEL_WIDTH = 14  # the activation or bin range at the left of each context


def print_feature(
    found: FeatureEvidence, named: PlantedFeatureSpec | None, manifest: EvidenceManifest
) -> None:
    _header(found, named, manifest)
    scale = found.stats.max_act
    _histogram(found.stats)
    _token_firing(found)
    _title(f"top {len(found.top)} contexts (activation, then the context)")
    for example in found.top:
        console.print(_line(f"{example.max_act:.4g}", example, scale))
    if found.quantiles:
        _title("samples across activation quantiles (bin, range, then the context)")
    labels = [f"q{b.index} {b.lo:.3g}-{b.hi:.3g}" for b in found.quantiles]
    width = max(map(len, labels), default=0)
    for label, bin_ in zip(labels, found.quantiles, strict=True):
        for example in bin_.examples:
            console.print(_line(f"{label:<{width}}", example, scale))
    if found.non_activating:
        _title("contexts where it does not fire")
    for example in found.non_activating[:NON_ACTIVATING_SHOWN]:
        console.print(_line("0", example, scale, style="dim"))
    _output_side(found)


TOKENS_SHOWN = 16


def _token_firing(found: FeatureEvidence) -> None:
    """The tokens it fires on most over the whole explain split: fires / occurrences."""
    if not found.token_firing:
        return
    _title("fires most on (whole explain split: firings / occurrences of the token)")
    console.print(
        Text("  ").join(
            Text.assemble(
                (_shown(t.token).replace(" ", "␣"), "bold"),
                f" {t.fires:,}/{t.occurrences:,}",
            )
            for t in found.token_firing[:TOKENS_SHOWN]
        )
    )


def _title(text: str) -> None:
    console.print()
    console.print(Text(text, style="bold underline"))


def _header(
    found: FeatureEvidence, named: PlantedFeatureSpec | None, manifest: EvidenceManifest
) -> None:
    stats = found.stats
    title = Text(f"feature {found.feature}", style="bold")
    if named is not None:
        title.append(f" · {named.id}", style="bold green")
    title.append(f" · evidence {found.evidence_id} ({manifest.source.get('kind', '?')})")
    console.print(title)
    if named is not None:
        console.print(Text(named.description, style="italic"))
    if not stats.fired_tokens:
        console.print(f"never fired on the {stats.tokens:,} tokens read")
        return
    mean = f"{stats.mean_act:.4g}" if stats.mean_act is not None else "-"
    console.print(
        f"fired on {stats.fired_tokens:,} of {stats.tokens:,} tokens: density "
        f"{100 * stats.density:.3g}% (1 in {1 / stats.density:,.0f} tokens)"
    )
    console.print(f"mean activation {mean} · max activation {stats.max_act:.4g}")


def _histogram(stats: FeatureStatistics) -> None:
    """The non-empty bins of the log-spaced activation histogram, bars scaled to the
    fullest. Bin 0 also holds values below its edge, the last one values above."""
    counts, edges = stats.hist_counts, stats.hist_edges
    if not any(counts):
        return
    _title("activation histogram")
    most, last = max(counts), len(counts) - 1
    for i, count in enumerate(counts):
        if not count:
            continue
        lo = "0" if i == 0 else f"{edges[i]:.3g}"
        hi = "inf" if i == last else f"{edges[i + 1]:.3g}"
        bar = "█" * max(1, round(HIST_BAR * count / most))
        console.print(Text.assemble(f"{lo:>8}-{hi:<8} {count:>9,} ", (bar, "cyan")))


def heat_style(act: float, scale: float, peak: bool) -> str:
    """Background from pale yellow (weak) to deep red (the feature's max); bold peak."""
    style = ""
    if act > 0 and scale > 0:
        t = min(act / scale, 1.0)
        r, g, b = (round(lo + (hi - lo) * t) for lo, hi in ((255, 190), (240, 20), (190, 30)))
        style = f"{'black' if t < 0.55 else 'white'} on rgb({r},{g},{b})"
    return f"bold {style}".strip() if peak else style


def _shown(token: str) -> str:
    return shown_token(token.replace("\r", "\\r"))


def window(shown: list[str], peak: int, budget: int) -> tuple[int, int]:
    """The widest run of tokens around `peak` whose text fits in `budget` characters."""
    lo, hi, used = peak, peak + 1, len(shown[peak])
    grew = True
    while grew:
        grew = False
        if lo > 0 and used + len(shown[lo - 1]) <= budget:
            lo, used, grew = lo - 1, used + len(shown[lo - 1]), True
        if hi < len(shown) and used + len(shown[hi]) <= budget:
            hi, used, grew = hi + 1, used + len(shown[hi]), True
    return lo, hi


def _line(label: str, example: Example, scale: float, style: str = "") -> Text:
    """`label` then the example on one line: tokens around its peak, highlighted."""
    label = f"{label:>{LABEL_WIDTH}}"
    line = Text.assemble((label, "cyan"), " ")
    if not example.tokens:
        return line
    shown = [_shown(t) for t in example.tokens]
    peak = example.peak if example.max_act > 0 else 0
    budget = max(20, console.width - len(label) - 3)  # 3: the space and two ellipses
    lo, hi = window(shown, peak, budget)
    if lo > 0:
        line.append("…", style="dim")
    for i in range(lo, hi):
        act = example.acts[i] if i < len(example.acts) else 0.0
        heat = heat_style(act, scale, i == peak and example.max_act > 0)
        line.append(shown[i], style=heat or style)
    if hi < len(shown):
        line.append("…", style="dim")
    return line


def _output_side(found: FeatureEvidence) -> None:
    """Logit lens and decoder-cosine neighbours (model + SAE evidence only)."""
    for name, tokens, colour in (
        ("promotes", found.promoted, "green"),
        ("suppresses", found.suppressed, "red"),
    ):
        if tokens is None:
            continue
        _title(f"logit lens: {name}")
        console.print(
            Text("  ").join(
                Text.assemble((_shown(t.token).replace(" ", "␣"), colour), f" {t.value:+.3g}")
                for t in tokens
            )
        )
    if found.similar is not None:
        _title("similar features (decoder cosine)")
        console.print(
            Text("  ").join(
                Text.assemble((str(n.feature), "green"), f" {n.cosine:.3f}") for n in found.similar
            )
        )
