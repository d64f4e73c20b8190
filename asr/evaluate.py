"""Scoring a checkpoint on a manifest: WER/CER, S/D/I counts, confidence intervals,
real-time factor, and a per-utterance report of aligned errors.

Flow: manifest -> duration-bucketed batches of audio -> the checkpoint's frontend and
model -> per-utterance ``(T_i, V)`` log-probs -> a :class:`asr.decoding.Decoder`
(greedy, or beam search + KenLM) -> hypotheses -> :mod:`asr.metrics` against the
references.

References are scored after :func:`asr.text.normalize` (the form the model is trained
to write: lower case, no punctuation), so a manifest holding raw LibriSpeech
transcripts ("HELLO, WORLD") is scored like a normalized one.

Unreadable audio is never dropped: the utterance is listed under ``failed`` with the
reason, and its reference words count as deletions (the hypothesis is empty), so the
WER is what a user of the system would have seen.

Real-time factor: seconds of compute over seconds of audio, for the model (frontend +
network, device-synchronized by the copy of its output to the host) and for the
decoder separately; ``rtf`` is their sum. Reading and resampling audio is timed
separately (``load_seconds``) and is not part of the RTF.

Speakers: when every utterance of the manifest names its speaker (``speaker``, as
``asr manifest`` writes for a LibriSpeech tree), the results are also given per
speaker, with a second interval that resamples whole speakers. Utterances of one
speaker share their errors (a voice the model has not learned fails on all of
them), so with few test speakers the utterance interval is too narrow: the speaker
interval answers "how different would the rate be with other speakers like these".
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from asr.audio import SILENCE_DB
from asr.decoding import Decoder, make_decoder
from asr.inference import load_model
from asr.manifest import read_manifest
from asr.metrics import (
    Alignment,
    ErrorCounts,
    align,
    bootstrap_ci,
    char_errors,
)
from asr.posteriors import PosteriorRunner, Progress, manifest_sources
from asr.text import normalize

__all__ = [
    "Evaluation",
    "UtteranceResult",
    "default_report_path",
    "evaluate",
    "evaluate_manifest",
]


@dataclass(frozen=True)
class UtteranceResult:
    """One scored utterance.

    Attributes:
        index: position in the manifest.
        id: the utterance id (or its audio path when it has none).
        audio_filepath: the audio file.
        duration: seconds of audio read (the manifest's duration when the audio
            could not be read).
        reference: the normalized reference transcript.
        hypothesis: the decoded text ("" when the audio was unreadable).
        alignment: the word alignment of reference and hypothesis.
        chars: character-level error counts.
        error: why the audio could not be read, or None.
        speaker: the speaker's label from the manifest, or None.
    """

    index: int
    id: str
    audio_filepath: str
    duration: float
    reference: str
    hypothesis: str
    alignment: Alignment
    chars: ErrorCounts
    error: str | None = None
    speaker: str | None = None

    @property
    def words(self) -> ErrorCounts:
        return self.alignment.counts


@dataclass
class Evaluation:
    """The results of :func:`evaluate`: per-utterance results and timings.

    ``summary()`` is the machine-readable digest, ``report()`` the text report.
    """

    manifest: str
    checkpoint: str
    decoder: str
    decoder_settings: dict[str, Any]
    utterances: list[UtteranceResult]
    model_seconds: float = 0.0
    decoding_seconds: float = 0.0
    load_seconds: float = 0.0
    resamples: int = 1000
    seed: int = 0
    _ci: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    @property
    def words(self) -> ErrorCounts:
        return sum((u.words for u in self.utterances), ErrorCounts())

    @property
    def chars(self) -> ErrorCounts:
        return sum((u.chars for u in self.utterances), ErrorCounts())

    @property
    def failed(self) -> list[UtteranceResult]:
        return [u for u in self.utterances if u.error is not None]

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio decoded (unreadable files excluded)."""
        return sum(u.duration for u in self.utterances if u.error is None)

    def ci(self, level: str = "words") -> tuple[float, float]:
        """Bootstrap 95% interval of the word (or ``"chars"``) error rate."""
        if level not in self._ci:
            counts = [u.words if level == "words" else u.chars for u in self.utterances]
            self._ci[level] = self._bootstrap(counts)
        return self._ci[level]

    def _bootstrap(self, counts: list[ErrorCounts]) -> tuple[float, float]:
        """The interval of the corpus rate, resampling the units ``counts`` holds."""
        return bootstrap_ci(
            [c.errors for c in counts],
            [c.reference_length for c in counts],
            resamples=self.resamples,
            seed=self.seed,
        )

    def per_speaker(self) -> dict[str, tuple[int, ErrorCounts, ErrorCounts]]:
        """Speaker -> (utterances, word counts, character counts), in order of first
        appearance; empty unless every utterance names its speaker."""
        if not self.utterances or any(u.speaker is None for u in self.utterances):
            return {}
        out: dict[str, tuple[int, ErrorCounts, ErrorCounts]] = {}
        for u in self.utterances:
            key = str(u.speaker)
            n, w, c = out.get(key, (0, ErrorCounts(), ErrorCounts()))
            out[key] = (n + 1, w + u.words, c + u.chars)
        return out

    def speaker_ci(self, level: str = "words") -> tuple[float, float]:
        """Bootstrap 95% interval of the word (or ``"chars"``) error rate that
        resamples whole speakers (a cluster bootstrap); ``(nan, nan)`` with fewer
        than two speakers or an utterance without one."""
        key = f"speakers:{level}"
        if key not in self._ci:
            speakers = self.per_speaker()
            if len(speakers) < 2:
                self._ci[key] = (math.nan, math.nan)
            else:
                counts = [w if level == "words" else c for _, w, c in speakers.values()]
                self._ci[key] = self._bootstrap(counts)
        return self._ci[key]

    def summary(self) -> dict[str, Any]:
        """JSON-serializable results; rates are fractions (0.05 = 5%)."""
        w, c = self.words, self.chars
        secs = self.audio_seconds
        speakers = self.per_speaker()

        def rtf(x: float) -> float:
            return x / secs if secs else 0.0

        return {
            "manifest": self.manifest,
            "checkpoint": self.checkpoint,
            "decoder": self.decoder,
            "decoder_settings": self.decoder_settings,
            "utterances": len(self.utterances),
            "failed": [
                {"id": u.id, "audio_filepath": u.audio_filepath, "error": u.error}
                for u in self.failed
            ],
            "words": w.reference_length,
            "wer": _finite(w.rate),
            "wer_ci": [_finite(x) for x in self.ci("words")],
            "substitutions": w.substitutions,
            "deletions": w.deletions,
            "insertions": w.insertions,
            "errors": w.errors,
            "chars": c.reference_length,
            "cer": _finite(c.rate),
            "cer_ci": [_finite(x) for x in self.ci("chars")],
            "char_substitutions": c.substitutions,
            "char_deletions": c.deletions,
            "char_insertions": c.insertions,
            "ci_level": 0.95,
            "bootstrap_resamples": self.resamples,
            "speakers": len(speakers),
            "wer_ci_speakers": [_finite(x) for x in self.speaker_ci("words")],
            "cer_ci_speakers": [_finite(x) for x in self.speaker_ci("chars")],
            "per_speaker": [
                {
                    "speaker": spk,
                    "utterances": n,
                    "words": w.reference_length,
                    "wer": _finite(w.rate),
                    "chars": c.reference_length,
                    "cer": _finite(c.rate),
                }
                for spk, (n, w, c) in speakers.items()
            ],
            "audio_seconds": round(secs, 3),
            "model_seconds": round(self.model_seconds, 4),
            "decoding_seconds": round(self.decoding_seconds, 4),
            "load_seconds": round(self.load_seconds, 4),
            "rtf": rtf(self.model_seconds + self.decoding_seconds),
            "rtf_model": rtf(self.model_seconds),
            "rtf_decoding": rtf(self.decoding_seconds),
        }

    @staticmethod
    def _speaker_lines(s: dict[str, Any]) -> list[str]:
        """The report's per-speaker header lines (none without speaker labels)."""
        if not s["per_speaker"]:
            return []
        (wlo, whi), (clo, chi) = s["wer_ci_speakers"], s["cer_ci_speakers"]
        lines = [
            f"# speakers: {s['speakers']}; 95% CI resampling whole speakers: "
            f"WER {_pct(wlo)} - {_pct(whi)}, CER {_pct(clo)} - {_pct(chi)}",
            "# per speaker, worst CER first (speaker, utterances, WER, CER):",
        ]
        rows = sorted(s["per_speaker"], key=lambda r: -(r["cer"] or 0.0))
        lines += [
            f"#   {r['speaker']}  {r['utterances']}  WER {_pct(r['wer'])}  "
            f"CER {_pct(r['cer'])}"
            for r in rows
        ]
        return lines

    def report(self, order: str = "worst") -> str:
        """The text report: a summary header, then every utterance's alignment.

        Args:
            order: ``"worst"`` (highest utterance WER first, then most errors, then
                manifest order) or ``"manifest"``.
        """
        if order not in ("worst", "manifest"):
            raise ValueError(f"order must be 'worst' or 'manifest', got {order!r}")
        s = self.summary()
        lo, hi = s["wer_ci"]
        settings = ", ".join(
            f"{k}={v}" for k, v in self.decoder_settings.items() if k != "decoder"
        )
        header = [
            "# asr evaluate: per-utterance alignments",
            # absolute, so that a later run from another directory still knows it
            f"# manifest:   {Path(self.manifest).resolve()}",
            f"# checkpoint: {self.checkpoint}",
            f"# decoder:    {self.decoder}" + (f" ({settings})" if settings else ""),
            f"# utterances: {s['utterances']} ({len(s['failed'])} unreadable, "
            "scored as deletions)",
            f"# WER {_pct(s['wer'])} ({s['errors']} / {s['words']} words: "
            f"S {s['substitutions']}, D {s['deletions']}, I {s['insertions']}; "
            f"95% CI {_pct(lo)} - {_pct(hi)})",
            f"# CER {_pct(s['cer'])} ({s['chars']} characters)",
            *self._speaker_lines(s),
            f"# RTF {s['rtf']:.4f} (model {s['rtf_model']:.4f}, decoding "
            f"{s['rtf_decoding']:.4f}) over {s['audio_seconds']:.1f} s of audio",
            "# Errors in upper case, * for a missing word; OPS: S substitution, "
            "D deletion, I insertion.",
            "# Order: "
            + ("worst utterance WER first" if order == "worst" else "manifest"),
            "",
        ]
        utts = list(self.utterances)
        if order == "worst":
            utts.sort(key=lambda u: (-u.words.rate, -u.words.errors, u.index))
        body: list[str] = []
        for u in utts:
            w = u.words
            status = f"  UNREADABLE: {u.error}" if u.error else ""
            body.append(
                f"{u.id}  WER {_pct(w.rate)} (S {w.substitutions}, D {w.deletions}, "
                f"I {w.insertions} / {w.reference_length} words){status}"
            )
            ref, hyp, ops = u.alignment.lines()
            body += [f"REF: {ref}", f"HYP: {hyp}", f"OPS: {ops}".rstrip(), ""]
        return "\n".join(header + body)


def _finite(x: float) -> float | None:
    """JSON has no inf/nan: they become null."""
    return x if math.isfinite(x) else None


def _pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.2f}%"


def default_report_path(
    checkpoint: str | Path, manifest: str | Path, decoder: str
) -> Path:
    """``<checkpoint dir>/<manifest stem>.<decoder>.report.txt``: next to the model
    the results are about, named by test set and decoder so runs do not collide.

    A file already there that is not a report on this manifest (a report on
    another manifest of the same name -- ``test.jsonl`` of another data directory --
    or any other file) is kept: the new report takes the first free number,
    ``test.greedy.2.report.txt``. A report on the same manifest is replaced.
    """
    base = Path(checkpoint).parent
    stem = Path(manifest).stem
    for n in itertools.count(1):
        number = "" if n == 1 else f".{n}"
        path = base / f"{stem}.{decoder}{number}.report.txt"
        if _free_for(path, manifest):
            return path
    raise AssertionError("unreachable")


def _free_for(path: Path, manifest: str | Path) -> bool:
    """Nothing at ``path``, or a report of ours on ``manifest`` (by its header)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [f.readline() for _ in range(3)]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not head[0].startswith("# asr evaluate"):
        return False
    for line in head[1:]:
        if line.startswith("# manifest:"):
            written_for = line[len("# manifest:") :].strip()
            return Path(written_for).resolve() == Path(manifest).resolve()
    return False


def evaluate(
    manifest: str | Path,
    checkpoint: str | Path,
    decoder: Decoder | None = None,
    batch_seconds: float = 300.0,
    device: str = "cpu",
    resamples: int = 1000,
    seed: int = 0,
    lm: str | Path | None = None,
    decoder_settings: dict[str, Any] | None = None,
    progress: TextIO | None = None,
    silence_db: float | None = SILENCE_DB,
) -> Evaluation:
    """Decode every utterance of a manifest and score it against its reference.

    Args:
        manifest: a JSON Lines manifest (``audio_filepath``, ``duration``, ``text``).
        checkpoint: a slim or Lightning checkpoint (:func:`asr.inference.load_model`).
        decoder: a :class:`asr.decoding.Decoder`; when None, the one
            :func:`asr.decoding.make_decoder` builds from ``lm`` and
            ``decoder_settings`` (as ``asr transcribe`` does: greedy when both
            are empty; with an LM, the weights tuned for the checkpoint unless
            given).
        batch_seconds: seconds of padded audio per model batch.
        device: where the model runs.
        resamples: bootstrap draws for the confidence intervals.
        seed: the bootstrap's seed.
        lm: a KenLM model for beam search (when ``decoder`` is None).
        decoder_settings: e.g. ``alpha``, ``beta``, ``beam_width`` (None = default).
        progress: where to show progress (:class:`asr.posteriors.Progress`).
        silence_db: the silence gate (:class:`asr.posteriors.PosteriorRunner`).

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ManifestError: the manifest cannot be read.
    """
    rec = load_model(checkpoint, device)
    if decoder is None:
        decoder = make_decoder(
            rec.tokenizer.vocab, checkpoint, lm, **(decoder_settings or {})
        )
    utts = read_manifest(manifest)
    runner = PosteriorRunner(rec, batch_seconds, silence_db=silence_db)
    sources = manifest_sources(utts)
    hyps: dict[int, str] = {}
    errors: dict[int, str] = {}
    seconds: dict[int, float] = {}
    decode_s = 0.0
    bar = Progress(runner.expected_seconds(sources), progress, "evaluating")
    try:
        for batch in runner.run(sources, bar):
            good = [p for p in batch if p.log_probs is not None]
            errors.update((p.index, p.error) for p in batch if p.error is not None)
            if not good:
                continue
            start = time.perf_counter()
            out = decoder.decode_batch([p.log_probs for p in good], rec.frame_seconds)
            decode_s += time.perf_counter() - start
            for p, h in zip(good, out, strict=True):
                hyps[p.index] = h.text
                seconds[p.index] = p.seconds
    finally:
        bar.close()
    results = []
    for i, u in enumerate(utts):
        ref = normalize(u.text)
        hyp_text = hyps.get(i, "")
        results.append(
            UtteranceResult(
                index=i,
                id=u.id or u.audio_filepath,
                audio_filepath=u.audio_filepath,
                duration=seconds.get(i, u.duration),
                reference=ref,
                hypothesis=hyp_text,
                alignment=align(ref.split(), hyp_text.split()),
                chars=char_errors(ref, hyp_text),
                error=errors.get(i),
                speaker=u.speaker,
            )
        )
    return Evaluation(
        manifest=str(manifest),
        checkpoint=str(checkpoint),
        decoder=decoder.name,
        decoder_settings=decoder.settings(),
        utterances=results,
        model_seconds=runner.stats["model_seconds"],
        decoding_seconds=decode_s,
        load_seconds=runner.stats["load_seconds"],
        resamples=resamples,
        seed=seed,
    )


def evaluate_manifest(
    manifest: str | Path,
    checkpoint: str | Path,
    batch_seconds: float = 300.0,
    device: str = "cpu",
    decoder: Decoder | None = None,
) -> dict[str, Any]:
    """:func:`evaluate`'s summary: WER/CER with S/D/I counts, CI and RTF, as a dict."""
    return evaluate(manifest, checkpoint, decoder, batch_seconds, device).summary()
