"""Tuning the language model's decoding weights on a dev set (``asr lm tune``).

The acoustic model runs once over a dev manifest (:func:`manifest_log_probs`,
optionally cached as ``.npz``), then beam search with the LM re-decodes the cached
log-probabilities for each (alpha, beta) of a grid or a random search
(:func:`tune_lm_weights`); the best pair by WER is what ``asr lm tune`` saves beside
the checkpoint (:func:`asr.decoding.save_decoder_settings`), where ``asr transcribe``
and ``asr evaluate`` find it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr.atomic import atomic_write_bytes
from asr.decoding import TUNABLE_SETTINGS, BeamSearchDecoder, GreedyDecoder
from asr.inference import load_model
from asr.manifest import read_manifest
from asr.metrics import error_rates
from asr.posteriors import PosteriorRunner, manifest_sources
from asr.text import normalize

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_BETAS",
    "LogProbSet",
    "Trial",
    "TuneError",
    "TuneResult",
    "format_tune_table",
    "manifest_log_probs",
    "tune_lm_weights",
]

log = logging.getLogger(__name__)


class TuneError(ValueError):
    """Tuning settings that cannot work (an empty grid, no trials)."""


@dataclass
class LogProbSet:
    """The acoustic model's output over a manifest, decoded many times while tuning.

    ``log_probs[i]`` is utterance ``i``'s ``(T_i, V)`` float32 natural-log posteriors
    (valid frames only); ``failed`` are the ids whose audio could not be read (their
    reference words count as deletions).
    """

    ids: list[str]
    references: list[str]
    log_probs: list[np.ndarray]
    frame_seconds: float
    labels: list[str]
    audio_seconds: float
    failed: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        """Write an ``.npz`` (no pickles), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"lp{i}": lp for i, lp in enumerate(self.log_probs)}
        info = {
            "meta": meta,
            "ids": self.ids,
            "references": self.references,
            "frame_seconds": self.frame_seconds,
            "labels": self.labels,
            "audio_seconds": self.audio_seconds,
            "failed": self.failed,
        }
        buffer = io.BytesIO()
        np.savez(buffer, info=np.array(json.dumps(info)), **arrays)
        atomic_write_bytes(path, buffer.getbuffer())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[LogProbSet, dict[str, Any]]:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            lps = [z[f"lp{i}"] for i in range(len(info["ids"]))]
        return (
            cls(
                ids=info["ids"],
                references=info["references"],
                log_probs=lps,
                frame_seconds=info["frame_seconds"],
                labels=info["labels"],
                audio_seconds=info["audio_seconds"],
                failed=info["failed"],
            ),
            info["meta"],
        )


def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """What identifies a file's version for the cache: path, mtime, size."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_mtime_ns, st.st_size


def _labels(vocab: Sequence[str], blank: int) -> list[str]:
    """Our vocabulary as pyctcdecode labels: blank -> "" (its blank symbol)."""
    return ["" if i == blank else c for i, c in enumerate(vocab)]


def manifest_log_probs(
    manifest: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    batch_seconds: float = 300.0,
    device: str = "cpu",
    cache: str | os.PathLike[str] | None = None,
) -> LogProbSet:
    """Run the acoustic model once over a manifest and keep its log-posteriors.

    Args:
        manifest: JSON Lines manifest (references are normalized like the LM text).
        checkpoint: an asr checkpoint (:func:`asr.inference.load_model`).
        batch_seconds: padded audio per batch.
        device: where the model runs.
        cache: an ``.npz`` file: loaded if it was made from the same manifest and
            checkpoint files (path, size, mtime), else computed and written.

    Returns:
        A :class:`LogProbSet` in manifest order.
    """
    meta = {
        "manifest": list(_file_key(manifest)),
        "checkpoint": list(_file_key(checkpoint)),
    }
    if cache is not None and Path(cache).is_file():
        try:
            cached, cached_meta = LogProbSet.load(cache)
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable log-prob cache (%s); recomputing", cache, err)
        else:
            if cached_meta == meta:
                log.info("%s: cached log-probs of %d utts", cache, len(cached.ids))
                return cached
            log.info("%s: stale log-prob cache; recomputing", cache)

    rec = load_model(checkpoint, device)
    utts = read_manifest(manifest)
    runner = PosteriorRunner(rec, batch_seconds)
    V = len(rec.tokenizer)
    log_probs = [np.zeros((0, V), np.float32)] * len(utts)
    failed = []
    for batch in runner.run(manifest_sources(utts)):
        for p in batch:
            if p.log_probs is None:
                failed.append(p.source.name)
                log.warning(
                    "%s: %s; its words count as deletions", p.source.path, p.error
                )
            else:
                log_probs[p.index] = p.log_probs.astype(np.float32, copy=False)
    result = LogProbSet(
        ids=[u.id or u.audio_filepath for u in utts],
        references=[normalize(u.text) for u in utts],
        log_probs=log_probs,
        frame_seconds=rec.frame_seconds,
        labels=_labels(rec.tokenizer.vocab, rec.tokenizer.blank),
        audio_seconds=runner.stats["audio_seconds"],
        failed=failed,
    )
    if cache is not None:
        result.save(cache, meta)
        log.info("%s: wrote log-probs of %d utterances", cache, len(utts))
    return result


@dataclass(frozen=True)
class Trial:
    alpha: float
    beta: float
    wer: float
    cer: float
    seconds: float


@dataclass
class TuneResult:
    """Every (alpha, beta) tried, and the best one (lowest WER, then CER)."""

    trials: list[Trial]
    best: Trial
    greedy_wer: float
    greedy_cer: float
    settings: dict[str, Any]
    manifest: str
    utterances: int
    words: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "utterances": self.utterances,
            "words": self.words,
            "greedy": {"wer": self.greedy_wer, "cer": self.greedy_cer},
            "best": vars(self.best),
            "settings": self.settings,
            "trials": [vars(t) for t in self.trials],
        }


DEFAULT_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5)
DEFAULT_BETAS = (0.0, 0.5, 1.0, 2.0, 3.0)


def tune_lm_weights(
    data: LogProbSet,
    lm: str | os.PathLike[str],
    alphas: Sequence[float] | None = None,
    betas: Sequence[float] | None = None,
    random_trials: int | None = None,
    seed: int = 0,
    manifest: str = "",
    **decoder_settings: Any,
) -> TuneResult:
    """Search the LM weight ``alpha`` and word bonus ``beta`` by WER.

    Args:
        data: cached log-probs (:func:`manifest_log_probs`).
        lm: the KenLM model (with its unigram list, see :func:`load_lm`).
        alphas, betas: the grid (default :data:`DEFAULT_ALPHAS` x
            :data:`DEFAULT_BETAS`); with ``random_trials``, their ranges.
        random_trials: sample this many pairs uniformly in ``[min, max]`` of the
            alphas and betas (Bergstra & Bengio 2012) instead of the full grid.
        seed: the random search's seed.
        manifest: reported with the result.
        decoder_settings: the rest of :func:`asr.decoding.build_decoder`'s
            settings (``beam_width``, ``workers``...), fixed during the search.

    Returns:
        A :class:`TuneResult`; ``settings`` are the best decoder settings plus a
        ``"tuned"`` record (LM file, manifest, WER...), ready for
        :func:`asr.decoding.save_decoder_settings`.
    """
    alphas = tuple(DEFAULT_ALPHAS if alphas is None else alphas)
    betas = tuple(DEFAULT_BETAS if betas is None else betas)
    if not alphas or not betas:
        raise TuneError("tuning needs at least one alpha and one beta")
    if random_trials is not None and random_trials < 1:
        raise TuneError(f"random search needs at least 1 trial, got {random_trials}")
    if random_trials:
        rng = random.Random(seed)
        a_lo, a_hi = min(alphas), max(alphas)
        b_lo, b_hi = min(betas), max(betas)
        pairs = [
            (round(rng.uniform(a_lo, a_hi), 3), round(rng.uniform(b_lo, b_hi), 3))
            for _ in range(random_trials)
        ]
    else:
        pairs = [(a, b) for a in alphas for b in betas]

    greedy = GreedyDecoder(data.labels)
    hyps = [h.text for h in greedy.decode_batch(data.log_probs, data.frame_seconds)]
    g_words, g_chars = error_rates(data.references, hyps)
    log.info("greedy: WER %.2f%%, CER %.2f%%", 100 * g_words.rate, 100 * g_chars.rate)

    decoder = BeamSearchDecoder(data.labels, lm=lm, **decoder_settings)
    trials: list[Trial] = []
    try:
        for n, (alpha, beta) in enumerate(pairs, start=1):
            decoder.set_weights(alpha, beta)
            start = time.perf_counter()
            out = decoder.decode_batch(data.log_probs, data.frame_seconds)
            seconds = time.perf_counter() - start
            words, chars = error_rates(data.references, [h.text for h in out])
            trials.append(Trial(alpha, beta, words.rate, chars.rate, seconds))
            log.info(
                "[%d/%d] alpha %.3g beta %.3g: WER %.2f%% CER %.2f%% (%.1f s)",
                n, len(pairs), alpha, beta, 100 * words.rate, 100 * chars.rate, seconds,
            )  # fmt: skip
        best = min(trials, key=lambda t: (t.wer, t.cer, t.alpha, t.beta))
        decoder.set_weights(best.alpha, best.beta)
        found = decoder.settings()
    finally:
        decoder.close()
    settings = {k: found[k] for k in TUNABLE_SETTINGS}
    settings["tuned"] = {
        "lm": str(Path(lm).resolve()),
        "unigrams": found["unigrams"],
        "manifest": manifest,
        "utterances": len(data.ids),
        "wer": best.wer,
        "cer": best.cer,
        "greedy_wer": g_words.rate,
        "search": f"random ({len(pairs)} trials)" if random_trials else "grid",
        "alphas": sorted({a for a, _ in pairs}),
        "betas": sorted({b for _, b in pairs}),
    }
    return TuneResult(
        trials=trials,
        best=best,
        greedy_wer=g_words.rate,
        greedy_cer=g_chars.rate,
        settings=settings,
        manifest=manifest,
        utterances=len(data.ids),
        words=g_words.reference_length,
    )


def format_tune_table(result: TuneResult, rows: int = 10) -> str:
    """A markdown table of the best ``rows`` trials, best first, plus greedy."""
    g_wer, g_cer = 100 * result.greedy_wer, 100 * result.greedy_cer
    lines = [
        f"{result.manifest}: {result.utterances} utterances, {result.words} words; "
        f"greedy WER {g_wer:.2f}%, CER {g_cer:.2f}%",
        "",
        "| alpha | beta | WER % | CER % | decode s |",
        "|------:|-----:|------:|------:|---------:|",
    ]
    ranked = sorted(result.trials, key=lambda t: (t.wer, t.cer, t.alpha, t.beta))
    for t in ranked[:rows]:
        lines.append(
            f"| {t.alpha:.3g} | {t.beta:.3g} | {100 * t.wer:.2f} | {100 * t.cer:.2f} "
            f"| {t.seconds:.1f} |"
        )
    if len(ranked) > rows:
        lines.append(f"| ... {len(ranked) - rows} more | | | | |")
    b = result.best
    best = f"best: alpha {b.alpha:.3g}, beta {b.beta:.3g}: WER {100 * b.wer:.2f}%"
    lines += ["", best]
    return "\n".join(lines)
