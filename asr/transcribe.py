"""Transcription of files, directories and manifests: words with times and confidences.

:func:`collect_sources` turns what the user named (audio files, directories searched
recursively, JSON Lines manifests) into :class:`asr.posteriors.Source` records; a
:class:`Transcriber` runs the model over them (:class:`asr.posteriors.
PosteriorRunner`: batched, long files in exact windows) and decodes each into a
:class:`Transcript`, or a :class:`Failure` for a file that cannot be read, which
never stops the others; :mod:`asr.formats` writes them.

Times are seconds from the start of the audio file (a manifest segment's ``offset``
is added).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import soundfile as sf

from asr.audio import SILENCE_DB
from asr.decoding import Decoder, Hypothesis, Word
from asr.inference import Recognizer
from asr.manifest import ManifestError, read_manifest
from asr.posteriors import (
    OVERLAP_SECONDS,
    WINDOW_SECONDS,
    PosteriorRunner,
    Posteriors,
    Progress,
    Source,
    manifest_sources,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_THREADS",
    "Failure",
    "Source",
    "Transcriber",
    "Transcript",
    "collect_sources",
    "model_summary",
]

# File extensions searched for in directories: those of the formats libsndfile reads
# (soundfile.available_formats()), plus the common aliases. RAW needs its parameters
# given by hand, so it is left out.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {f".{name.lower()}" for name in sf.available_formats() if name != "RAW"}
    | {".aif", ".aifc", ".oga", ".opus", ".snd", ".sph", ".wave"}
)
MANIFEST_EXTENSIONS = (".jsonl", ".json")

# Intra-op CPU threads of `asr transcribe` unless told otherwise. Measured with
# tools/bench_transcribe.py on the 2-core machine shared with training jobs (demo
# model, greedy): one thread 1.7x faster than two (median of alternating rounds),
# since a second intra-op thread contends with the other processes and with our own
# reader thread, and this model's matrices are small (docs/benchmarks.md).
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class Transcript:
    """A transcribed source.

    Attributes:
        source: what was transcribed.
        duration: seconds of audio transcribed.
        hypothesis: the decoder's output; word times are in seconds from the start
            of the file (``source.offset`` added).
    """

    source: Source
    duration: float
    hypothesis: Hypothesis

    @property
    def text(self) -> str:
        return self.hypothesis.text

    @property
    def words(self) -> tuple[Word, ...]:
        return self.hypothesis.words


@dataclass(frozen=True)
class Failure:
    """A source (or a named input) that could not be transcribed, and why."""

    source: Source
    reason: str

    def __str__(self) -> str:
        return f"{self.source.path}: {self.reason}"


# -- inputs ---------------------------------------------------------------------------


def _source(path: str, stem: str) -> Source:
    return Source(path=path, name=path, stem=stem)


def collect_sources(
    inputs: Iterable[str | os.PathLike[str]],
) -> tuple[list[Source], list[Failure]]:
    """Expand the inputs into sources, in order.

    A directory gives the audio files under it (recursively, extensions in
    :data:`AUDIO_EXTENSIONS`, hidden files and directories skipped, sorted by path);
    a ``.jsonl``/``.json`` file is read as a manifest (:func:`asr.manifest.
    read_manifest`); anything else is taken as an audio file (and fails later if it
    is not one). An input that cannot be expanded (a bad manifest, a directory
    without audio) becomes a :class:`Failure` rather than an exception, so the other
    inputs are still transcribed.

    Returns:
        ``(sources, failures)``.
    """
    sources: list[Source] = []
    failures: list[Failure] = []
    for item in inputs:
        p = os.fspath(item)
        if os.path.isdir(p):
            found = _audio_files(p)
            if not found:
                exts = " ".join(sorted(e[1:] for e in AUDIO_EXTENSIONS))
                failures.append(
                    Failure(_source(p, p), f"no audio files ({exts}) in the directory")
                )
            for f in found:
                rel = os.path.relpath(f, p)
                sources.append(_source(f, os.path.splitext(rel)[0]))
        elif p.lower().endswith(MANIFEST_EXTENSIONS) and not _looks_like_audio(p):
            try:
                utts = read_manifest(p)
            except ManifestError as err:
                failures.append(Failure(_source(p, p), _manifest_reason(p, err)))
                continue
            sources.extend(manifest_sources(utts))
        else:
            sources.append(_source(p, Path(p).stem))
    return sources, failures


def _audio_files(directory: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in (
                AUDIO_EXTENSIONS
            ):
                found.append(os.path.join(root, name))
    return sorted(found)


def _looks_like_audio(path: str) -> bool:
    """True for a file whose header libsndfile recognizes (never a manifest)."""
    try:
        sf.info(os.fsencode(path))
    except Exception:  # not audio, missing, unreadable: treat it as a manifest
        return False
    return True


def _manifest_reason(path: str, err: ManifestError) -> str:
    """The manifest error as one line, without the leading ``path:``."""
    msg = str(err).splitlines()[0]
    if len(err.problems) > 1:
        msg = f"{len(err.problems)} problems in the manifest, first: {err.problems[0]}"
    prefix = f"{path}:"
    return msg[len(prefix) :].lstrip() if msg.startswith(prefix) else msg


# -- descriptions --------------------------------------------------------------------


def _sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_summary(
    recognizer: Recognizer, checkpoint: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """What the results were computed with: the checkpoint (path and SHA-256) and a
    summary of its description (frontend, model, vocabulary, sizes)."""
    desc = recognizer.description
    summary: dict[str, Any] = {}
    if checkpoint is not None:
        summary["checkpoint"] = os.fspath(checkpoint)
        if os.path.isfile(checkpoint):
            summary["sha256"] = _sha256(checkpoint)
    summary.update(
        {
            "format": desc.get("format"),
            "model_preset": desc.get("model_preset"),
            "backend": recognizer.backend,
            "parameters": recognizer.n_parameters,
            "sample_rate": recognizer.sample_rate,
            "frame_seconds": recognizer.frame_seconds,
            # The output classes after the blank (class 0), in class order.
            "characters": "".join(recognizer.tokenizer.vocab[1:]),
            "frontend": desc.get("frontend"),
            "model": desc.get("model"),
        }
    )
    return summary


# -- the transcriber ------------------------------------------------------------------


@dataclass
class Transcriber:
    """Sources -> transcripts with a recognizer and a decoder.

    Args:
        recognizer: the model (:func:`asr.inference.load_model`).
        decoder: e.g. from :func:`asr.decoding.make_decoder`.
        batch_seconds, window_seconds, overlap_seconds, silence_db: how the model
            runs over the audio (:class:`asr.posteriors.PosteriorRunner`).
    """

    recognizer: Recognizer
    decoder: Decoder
    batch_seconds: float = 300.0
    window_seconds: float = WINDOW_SECONDS
    overlap_seconds: float = OVERLAP_SECONDS
    silence_db: float | None = SILENCE_DB
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runner = PosteriorRunner(
            self.recognizer,
            self.batch_seconds,
            self.window_seconds,
            self.overlap_seconds,
            self.silence_db,
        )

    def settings(self) -> dict[str, Any]:
        """The decoder's and the transcriber's settings, for reports."""
        return {**self.decoder.settings(), **self.runner.settings()}

    def transcribe(
        self,
        sources: Sequence[Source],
        on_failure: Callable[[Failure], None] | None = None,
        progress: TextIO | None = None,
        on_result: Callable[[int, Transcript], None] | None = None,
    ) -> list[Transcript | Failure]:
        """Transcribe every source; one result per source, in input order.

        Args:
            sources: what to transcribe.
            on_failure: called with each failure as soon as it happens (e.g. to
                report it on stderr).
            progress: where to show progress (a bar on a terminal, occasional lines
                otherwise for long work); ``None`` shows none.
            on_result: called with each transcript and its source's index as soon
                as it is decoded (e.g. to write it).
        """
        results: list[Transcript | Failure | None] = [None] * len(sources)
        bar = Progress(self.runner.expected_seconds(sources), progress)
        decode_seconds = 0.0
        try:
            for batch in self.runner.run(sources, bar):
                good = [p for p in batch if p.log_probs is not None]
                t0 = time.perf_counter()
                hyps = (
                    self.decoder.decode_batch(
                        [p.log_probs for p in good], self.recognizer.frame_seconds
                    )
                    if good
                    else []
                )
                decode_seconds += time.perf_counter() - t0
                for p, hyp in zip(good, hyps, strict=True):
                    t = Transcript(p.source, p.seconds, _place(hyp, p))
                    results[p.index] = t
                    if on_result is not None:
                        bar.clear()
                        on_result(p.index, t)
                        bar.refresh()
                for p in batch:
                    if p.error is not None:
                        failure = Failure(p.source, p.error)
                        results[p.index] = failure
                        if on_failure is not None:
                            bar.clear()
                            on_failure(failure)
                            bar.refresh()
        finally:
            bar.close()
            self.stats = {
                "audio_seconds": self.runner.stats.get("audio_seconds", 0.0),
                "model_seconds": self.runner.stats.get("model_seconds", 0.0),
                "decode_seconds": decode_seconds,
            }
        assert all(r is not None for r in results), results
        return results  # type: ignore[return-value]


def _place(hyp: Hypothesis, p: Posteriors) -> Hypothesis:
    """Word times in the file rather than the segment (``offset`` added), and never
    past the end of the audio."""
    return hyp.shifted(p.source.offset, p.seconds + p.source.offset)
