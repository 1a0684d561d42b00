"""`glossator bench --score-corpus PATH`: the evidence a benchmark scores on, read from
another corpus. PATH goes through the same evidence pass as the bench's own evidence
(same model and SAE, or the same planted features; same hookpoint and settings), with
every text in the score split, so its scoring examples are drawn exactly as the score
split's are and feature ids match. The firing threshold and everything the explainers
see still come from the bench's own evidence.

The build is cached like any evidence (its id hashes source, corpus and settings) but
never recorded as the source's latest: `glossator explain` must not start reading it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from probes.corpus import ACCEPTED_FORMATS, CorpusFormatError
from probes.evidence.config import EvidenceConfig, EvidenceError
from probes.evidence.store import EvidenceStore
from runtime.agent import AgentSetup
from runtime.bench_options import BenchOptionError
from runtime.evidence import (
    PLANTED,
    EvidenceJob,
    open_store,
    planted_job,
    run_job,
    sae_job,
    same_source,
)
from runtime.settings import Settings

ALL_HELD_OUT = 1.0  # score_fraction: every text of the score corpus is held out


class ScoreCorpusError(BenchOptionError):
    """The score corpus cannot be read or cannot be scored on; the message says why."""


def score_corpus_store(
    settings: Settings,
    setup: AgentSetup,
    path: Path,
    on_chunk: Callable[[int, int], None] | None = None,
) -> EvidenceStore:
    """The evidence of `path` for the bench's subject, built now or found in the cache.
    Raises ScoreCorpusError when `path` is missing, unreadable, holds no texts, or the
    settings no longer name the source the bench's evidence was built from."""
    main = setup.deps.store.manifest
    job = _job(settings, setup, path)
    if not same_source(main.source, job.source):
        keys = job.source.keys() | main.source.keys()
        differ = sorted(k for k in keys if job.source.get(k) != main.source.get(k))
        raise ScoreCorpusError(
            f"the bench's evidence {main.evidence_id} was built from another source than the "
            f"settings now name (differs in: {', '.join(differ)}), so feature ids could not be "
            "matched; rebuild it with `glossator evidence build`, or restore the settings"
        )
    # Held out entirely, and read to the end (the bench's own token cap is for its pass).
    config = EvidenceConfig(
        **{**main.config.model_dump(), "score_fraction": ALL_HELD_OUT, "max_tokens": None}
    )
    # The decoder side is the bench evidence's own; scoring never reads it.
    job = dataclasses.replace(job, output_side=None)
    _, folder, _ = run_job(settings, job, config, on_chunk, record_latest=False)
    return open_store(settings, folder)


def _job(settings: Settings, setup: AgentSetup, path: Path) -> EvidenceJob:
    """The evidence job of `path` for the bench's source, its texts read (and checked)."""
    from probes.sae_runner import SAEFeatureSource

    source = setup.deps.store.manifest.source
    where = path.expanduser().resolve()
    if not where.exists():
        raise ScoreCorpusError(
            f"the score corpus {where} does not exist; expected {ACCEPTED_FORMATS}"
        )
    try:
        if source.get("kind") == PLANTED:
            spec = source.get("spec_path")
            if spec is None:
                raise ScoreCorpusError("the bench's evidence does not name its planted spec")
            return planted_job(settings, where, Path(spec))
        probe = setup.deps.probe.source
        loaded = (probe.subject, probe.sae) if isinstance(probe, SAEFeatureSource) else None
        return sae_job(settings, where, source.get("hookpoint"), loaded=loaded)
    except (OSError, CorpusFormatError, EvidenceError) as err:
        raise ScoreCorpusError(f"cannot read the score corpus {where}: {err}") from err
