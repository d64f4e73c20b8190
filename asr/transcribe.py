"""Transcription of files, directories and manifests: words with times and confidences.

:func:`collect_sources` turns what the user named (audio files, directories searched
recursively, JSON Lines manifests) into :class:`Source` records; a :class:`Transcriber`
turns sources into :class:`Transcript` records (or :class:`Failure` records for files
that cannot be read, which never stop the others); :mod:`asr.formats` writes them.

Two paths through the model:

- **Batched** (a file no longer than ``window_seconds``): the waveforms of several
  files, sorted by duration, are padded into batches of at most ``batch_seconds`` of
  padded audio (:class:`asr.data.DurationBatchSampler`), the next batch being read
  from disk while the model runs on this one. The model is length-aware (masked
  convolutions and batch norm, packed RNNs), so padding does not change any output.
- **Windowed** (a longer file, up to hours): the audio is streamed from disk in
  blocks (never loaded whole) and cut into windows of ``window_seconds`` that overlap
  by ``overlap_seconds``; each window's features equal the corresponding frames of
  the whole file's features exactly (every window is computed from the samples
  around it, with the file's own ends), and with the per-utterance feature
  normalization the statistics are the whole file's, gathered in a first streaming
  pass. Windows run through the model in batches. Consecutive windows' frame
  posteriors are joined near the middle of their overlap (each frame decided by
  the window that saw more context around it), at a frame where both windows'
  best paths are blank (a pause between characters, so no character is cut in two
  or emitted twice), never outside the middle half of the overlap (so each side
  keeps at least a quarter of it as context for its bidirectional RNNs); see
  :func:`_join`. The joined posteriors are decoded once, so words come out with
  times in the whole file and a word at a window edge is neither cut nor
  duplicated. When the whole file fits in one pass, the windowed result has the
  same words and times
  (tested: ``tests/test_transcribe.py``).

Times are seconds from the start of the audio file (a manifest segment's ``offset``
is added).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from asr.audio import AudioError, audio_info, load_audio
from asr.data import DurationBatchSampler
from asr.decoding import Decoder, GreedyDecoder, Hypothesis, Word
from asr.features import _STD_FLOOR
from asr.inference import Recognizer
from asr.manifest import ManifestError, read_manifest
from asr.model import count_parameters

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_THREADS",
    "DecoderUnavailable",
    "Failure",
    "Source",
    "Transcriber",
    "Transcript",
    "collect_sources",
    "make_decoder",
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

# Windowing of long files (seconds); see the module docstring.
WINDOW_SECONDS = 30.0
OVERLAP_SECONDS = 5.0
# Intra-op CPU threads of `asr transcribe` unless told otherwise. Measured with
# tools/bench_transcribe.py on the 2-core machine shared with training jobs (demo
# model, greedy): one thread 1.7x faster than two (median of alternating rounds;
# 167x vs 99x real time), since a second intra-op thread contends with the other
# processes and with our own reader thread, and this model's matrices are small.
# On the idle machine two threads are 1.3-1.6x faster (348x vs 220x real time).
DEFAULT_THREADS = 1
# Audio is read from disk in blocks of this many seconds.
_BLOCK_SECONDS = 10.0
# Without a terminal, progress lines are printed for work longer than this (seconds
# of audio), about every tenth of it.
_PROGRESS_LINES_SECONDS = 600.0


class DecoderUnavailable(RuntimeError):
    """Beam search was asked for but this build has no beam-search decoder."""


@dataclass(frozen=True)
class Source:
    """One thing to transcribe: a file, or a segment of one from a manifest.

    Attributes:
        path: the audio file.
        name: how outputs name it: the manifest's ``id`` if it has one, else ``path``.
        stem: a relative name without extension for per-input output files (the
            file's stem; for a file found in a directory, its path inside that
            directory; a manifest's ``id``).
        offset: start of the segment in the file, in seconds.
        duration: seconds to read from ``offset``; ``None`` reads to the end.
        id: the manifest's ``id``, if any.
    """

    path: str
    name: str
    stem: str
    offset: float = 0.0
    duration: float | None = None
    id: str | None = None


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
            for u in utts:
                stem = u.id or Path(u.audio_filepath).stem
                if u.id is None and u.offset:
                    stem = f"{stem}_{u.offset:g}"
                sources.append(
                    Source(
                        path=u.audio_filepath,
                        name=u.id or u.audio_filepath,
                        stem=stem,
                        offset=u.offset,
                        duration=u.duration if u.offset else None,
                        id=u.id,
                    )
                )
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
        sf.info(path)
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


# -- decoders and descriptions -------------------------------------------------------


def make_decoder(
    labels: Sequence[str],
    checkpoint: str | os.PathLike[str] | None = None,
    lm: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Decoder:
    """The decoder for transcription.

    Greedy when there is no language model and no decoder setting; otherwise
    :func:`asr.decoding.build_decoder` (beam search through pyctcdecode, with KenLM
    when ``lm`` is given) with :func:`asr.decoding.resolve_decoder_settings`: the
    settings tuned for ``checkpoint`` (its ``decoder.json``) when there is an LM,
    overridden by ``overrides`` (``alpha``, ``beta``, ``beam_width``...; ``None``
    values are ignored).

    Raises:
        DecoderUnavailable: beam search was asked for and this build lacks it.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if lm is None and not given:
        return GreedyDecoder(list(labels))
    try:
        from asr.decoding import (
            DecoderError,
            build_decoder,
            resolve_decoder_settings,
        )
    except ImportError:
        raise DecoderUnavailable(
            "beam search (--lm, --alpha, --beta, --beam-width) is not available in "
            "this build: asr.decoding has no build_decoder"
        ) from None
    if checkpoint is not None:
        settings = resolve_decoder_settings(checkpoint, lm, **given)
    else:
        settings = {**given, **({"lm": lm} if lm is not None else {})}
    try:
        return build_decoder(list(labels), **settings)
    except DecoderError:
        raise
    except (TypeError, ValueError) as err:
        # The command line's values are typed; a decoder.json beside the checkpoint
        # is only JSON, so a value of the wrong type ("alpha": "0.5") lands here.
        where = (
            f"{Path(checkpoint).parent / 'decoder.json'}: "
            if checkpoint is not None and lm is not None
            else ""
        )
        raise DecoderError(f"{where}bad decoder settings ({err})") from None


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
            "parameters": count_parameters(recognizer.model),
            "sample_rate": recognizer.sample_rate,
            "frame_seconds": recognizer.frame_seconds,
            # The output classes after the blank (class 0), in class order.
            "characters": "".join(recognizer.tokenizer.vocab[1:]),
            "frontend": desc.get("frontend"),
            "model": desc.get("model"),
        }
    )
    return summary


# -- reading audio in blocks ----------------------------------------------------------


def _stream_audio(
    path: str,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
    block_seconds: float = _BLOCK_SECONDS,
) -> Iterator[np.ndarray]:
    """A file (or a segment of it) as consecutive mono float32 blocks at
    ``sample_rate``, read and resampled incrementally: memory holds one block.

    The concatenated blocks are :func:`asr.audio.load_audio`'s output for the same
    arguments (the same mixdown, soxr "HQ" resampling run as a stream, and clipping),
    and the same problems raise the same :class:`AudioError`.
    """
    info = audio_info(path)  # missing, empty, not audio, truncated header: AudioError
    rate = info.sample_rate
    start = round(offset * rate)
    if start >= info.frames:
        raise AudioError(
            path,
            f"offset {offset:g} s is at or beyond the end of the audio "
            f"({info.duration:g} s)",
        )
    wanted = info.frames - start
    if duration is not None:
        wanted = min(round(duration * rate), wanted)
    if wanted <= 0:
        raise AudioError(path, f"the segment at {offset:g} s holds no samples")
    resampler = (
        soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
        if rate != sample_rate
        else None
    )
    block = max(1, round(block_seconds * rate))
    try:
        f = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(path, f"unreadable audio header ({e})") from e
    got = 0
    fmt = f.format
    with f:
        try:
            if start:
                if fmt == "MP3":  # seeking in MP3 is approximate (asr.audio)
                    skip = start
                    while skip > 0:
                        n = len(f.read(min(skip, block), dtype="float32"))
                        if n == 0:
                            break
                        skip -= n
                else:
                    f.seek(start)
            while got < wanted:
                data = f.read(min(block, wanted - got), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                got += len(data)
                yield _block(path, data, resampler, last=got >= wanted)
        except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
            raise AudioError(path, f"corrupt or truncated audio data ({e})") from e
    # As asr.audio: an MP3 header without a frame count only estimates the length.
    tolerance = max(2 * 1152, wanted // 100) if fmt == "MP3" else 0
    if got < wanted - tolerance:
        raise AudioError(
            path,
            f"corrupt or truncated audio data: the header promises {wanted} frames "
            f"from {start}, only {got} could be decoded",
        )
    if got < wanted and resampler is not None:  # flush what the resampler holds
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        yield np.clip(tail, -1.0, 1.0).astype(np.float32, copy=False)


def _block(
    path: str, data: np.ndarray, resampler: soxr.ResampleStream | None, last: bool
) -> np.ndarray:
    """``(frames, channels)`` file samples -> mono, resampled, clipped."""
    if not np.isfinite(data).all():
        raise AudioError(path, "the audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)  # (frames, channels) -> (frames,)
    if resampler is not None:
        mono = resampler.resample_chunk(mono, last=last)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


# -- exact feature windows -----------------------------------------------------------


@dataclass
class _Window:
    """Unnormalized features of frames ``[start, start + feats.shape[-1])`` of the
    whole file; ``last`` if they reach its end, and then ``samples``, the file's
    length in samples."""

    start: int
    feats: Tensor  # (F, T) float32
    last: bool
    samples: int | None = None


def _feature_windows(
    blocks: Iterator[np.ndarray],
    frontend: torch.nn.Module,
    length: int,
    step: int,
    device: torch.device,
) -> Iterator[_Window]:
    """Frames ``[k * step, k * step + length)`` (cut at the end) of the features of
    the whole stream, for ``k = 0, 1, ...``, each exactly what the frontend gives for
    the whole file (without normalization), computed from a buffer of samples that
    never holds much more than one window.

    Frame ``t`` of a centred STFT covers samples ``[t * hop - n_fft // 2,
    t * hop + n_fft // 2)``, reflected about the file's ends. Each window is
    computed from the samples it covers plus a margin of whole hops at least
    ``n_fft // 2`` long, and the margin's frames (whose reflection differs from the
    whole file's) are dropped; at the file's ends the segment ends where the file
    does, so the reflection is the file's own.
    """
    hop = frontend.hop_length
    margin = hop * (-(-(frontend.n_fft // 2) // hop) + 1)  # whole hops >= n_fft / 2
    buf = np.zeros(0, np.float32)
    buf_start = 0  # absolute index of buf[0]
    eof = False
    a = 0
    while True:
        b = a + length
        seg_lo = max(0, a * hop - margin)
        need = b * hop + margin  # samples [seg_lo, need) compute frames [a, b)
        while not eof and buf_start + len(buf) <= need:
            try:
                buf = np.concatenate([buf, next(blocks)])
            except StopIteration:
                eof = True
        n_total = buf_start + len(buf)  # known to be the file's length once eof
        seg = buf[seg_lo - buf_start : min(need, n_total) - buf_start]
        wave = torch.from_numpy(np.ascontiguousarray(seg)).to(device)[None]
        feats, lens = frontend.extract(wave, torch.tensor([len(seg)], device=device))
        total_frames = frontend.frames(n_total) if eof else None
        end = b if total_frames is None else min(b, total_frames)
        first = (a * hop - seg_lo) // hop
        assert first + (end - a) <= int(lens[0]), (a, end, seg_lo, len(seg), lens)
        last = total_frames is not None and total_frames <= b
        yield _Window(
            a, feats[0, :, first : first + end - a], last, n_total if last else None
        )
        if last:
            return
        a += step
        drop = max(0, a * hop - margin) - buf_start
        buf, buf_start = buf[drop:], buf_start + drop


def _join(
    prev_start: int, prev: np.ndarray, cur_start: int, cur: np.ndarray, blank: int
) -> int:
    """Where to switch from the previous window's posteriors to the current's.

    In the overlap, the previous window is the better informed in the first half
    (the current one has just started there) and the current window in the second,
    so the ideal switch is the middle. But a character the two windows place a frame
    or two apart would be emitted twice or not at all by a switch between the two
    places, so the switch goes where both windows' best paths are blank on both
    sides of it; among such frames, in the middle half of the overlap, the chosen
    one leaves the fewest frames where the paths differ to the less informed window
    (a word separator that only the better-informed window emits is kept), then is
    the nearest the middle.

    Args:
        prev_start, prev: first global frame and ``(T1, V)`` log-posteriors of the
            previous window; ``cur_start``, ``cur`` the current window's.
        blank: the blank index.

    Returns:
        A global frame ``t``: frames before ``t`` come from ``prev``, from ``t`` on
        from ``cur``.
    """
    lo, hi = cur_start, prev_start + len(prev)  # the overlap [lo, hi)
    if hi - lo < 4:
        return (lo + hi) // 2
    left = prev[lo - prev_start : hi - prev_start].argmax(axis=1)  # (hi - lo,)
    right = cur[: hi - lo].argmax(axis=1)
    middle = (hi - lo) // 2
    quarter = (hi - lo) // 4
    ts = np.arange(max(1, quarter), hi - lo - quarter + 1)  # relative to lo
    differ = np.concatenate([[0], np.cumsum(left != right)])  # differ[i]: in [0, i)
    # Frames between t and the middle that the less informed window decides.
    cost = np.abs(differ[ts] - differ[middle])
    both_blank = (left == blank) & (right == blank)
    ok = both_blank[ts - 1] & both_blank[np.minimum(ts, hi - lo - 1)]
    if ok.any():
        ts, cost = ts[ok], cost[ok]
    best = np.lexsort((np.abs(ts - middle), cost))[0]
    return int(lo + ts[best])


# -- progress -------------------------------------------------------------------------


class _Progress:
    """Seconds of audio done: a tqdm bar on a terminal; without one, a line about
    every tenth of the work when there is a lot of it; otherwise nothing."""

    def __init__(self, total_seconds: float, stream: TextIO | None) -> None:
        self.total = total_seconds
        self.stream = stream
        self.done = 0.0
        self.next_line = total_seconds / 10
        self.bar = None
        self.start = time.perf_counter()
        if stream is None:
            return
        if stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(
                    total=round(total_seconds, 1),
                    unit="s",
                    desc="transcribing",
                    file=stream,
                    leave=False,
                    dynamic_ncols=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} "
                    "s of audio [{elapsed}<{remaining}, {rate_fmt}]",
                )
                return
        if total_seconds < _PROGRESS_LINES_SECONDS:
            self.stream = None

    def update(self, seconds: float) -> None:
        self.done += seconds
        if self.bar is not None:
            self.bar.update(round(seconds, 1))
        elif self.stream is not None and self.done >= self.next_line:
            elapsed = time.perf_counter() - self.start
            print(
                f"transcribed {self.done:.0f} of {self.total:.0f} s of audio "
                f"({100 * self.done / max(self.total, 1e-9):.0f}%, "
                f"{elapsed:.0f} s elapsed)",
                file=self.stream,
                flush=True,
            )
            while self.next_line <= self.done:
                self.next_line += self.total / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the transcriber ------------------------------------------------------------------


@dataclass
class _Item:
    index: int  # position in the input order
    source: Source
    seconds: float  # duration from the header (or manifest segment)


@dataclass
class Transcriber:
    """Sources -> transcripts with a recognizer and a decoder.

    Args:
        recognizer: the model (:func:`asr.inference.load_model`).
        decoder: e.g. from :func:`make_decoder`.
        batch_seconds: bound on the padded audio of one batch through the model
            (``batch size * longest``), in seconds; a longer file or window goes
            alone.
        window_seconds: files longer than this are transcribed in windows of this
            length (see the module docstring).
        overlap_seconds: overlap of consecutive windows (at least 4 output frames;
            at most half a window).
    """

    recognizer: Recognizer
    decoder: Decoder
    batch_seconds: float = 300.0
    window_seconds: float = WINDOW_SECONDS
    overlap_seconds: float = OVERLAP_SECONDS
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be > 0, got {self.batch_seconds}")
        fs = self.recognizer.frame_seconds
        if not self.overlap_seconds >= 4 * fs:
            raise ValueError(
                f"overlap_seconds must be at least 4 output frames ({4 * fs:g} s), "
                f"got {self.overlap_seconds}"
            )
        if not self.window_seconds >= 2 * self.overlap_seconds:
            raise ValueError(
                f"window_seconds ({self.window_seconds}) must be at least twice "
                f"overlap_seconds ({self.overlap_seconds})"
            )

    @property
    def time_stride(self) -> int:
        """Input feature frames per output frame."""
        return self.recognizer.model.frame_stride()

    def settings(self) -> dict[str, Any]:
        """The decoder's and the transcriber's settings, for reports."""
        return {
            **self.decoder.settings(),
            "batch_seconds": self.batch_seconds,
            "window_seconds": self.window_seconds,
            "overlap_seconds": self.overlap_seconds,
            "device": str(self.recognizer.device),
            "threads": torch.get_num_threads(),
        }

    def transcribe(
        self,
        sources: Sequence[Source],
        on_failure: Callable[[Failure], None] | None = None,
        progress: TextIO | None = None,
    ) -> list[Transcript | Failure]:
        """Transcribe every source; one result per source, in input order.

        Args:
            sources: what to transcribe.
            on_failure: called with each failure as soon as it happens (e.g. to
                report it on stderr).
            progress: where to show progress (a bar on a terminal, occasional lines
                otherwise for long work); ``None`` shows none.
        """
        results: list[Transcript | Failure | None] = [None] * len(sources)
        bar: _Progress | None = None

        def fail(item: _Item, reason: str) -> None:
            failure = Failure(item.source, reason)
            results[item.index] = failure
            if on_failure is not None:
                if bar is not None and bar.bar is not None:
                    bar.bar.clear()
                on_failure(failure)
                if bar is not None and bar.bar is not None:
                    bar.bar.refresh()

        short: list[_Item] = []
        long: list[_Item] = []
        for i, src in enumerate(sources):
            item = _Item(i, src, 0.0)
            try:
                item.seconds = _seconds(src)
            except AudioError as err:
                fail(item, err.reason)
                continue
            (long if item.seconds > self.window_seconds else short).append(item)
        bar = _Progress(sum(it.seconds for it in short + long), progress)
        self.stats = {"audio_seconds": 0.0, "model_seconds": 0.0, "decode_seconds": 0.0}
        try:
            for item, out in self._batched(short, bar):
                if isinstance(out, str):
                    fail(item, out)
                else:
                    results[item.index] = out
            for item in long:
                try:
                    results[item.index] = self._windowed(item.source, bar)
                except AudioError as err:
                    fail(item, err.reason)
        finally:
            bar.close()
        assert all(r is not None for r in results), results
        return results  # type: ignore[return-value]

    # -- batched path

    def _batched(
        self, items: list[_Item], bar: _Progress
    ) -> Iterator[tuple[_Item, Transcript | str]]:
        """The model runs on batch ``k`` while a thread reads batch ``k + 1``; the
        thread is joined before decoding, since a beam-search decoder may fork
        worker processes (forking beside a running thread can deadlock)."""
        if not items:
            return
        sampler = DurationBatchSampler(
            [it.seconds for it in items], self.batch_seconds, shuffle=False
        )
        batches = [[items[i] for i, _ in b] for b in sampler]
        rate = self.recognizer.sample_rate
        loaded = _load_batch(batches[0], rate)
        for k, batch in enumerate(batches):
            reader = None
            if k + 1 < len(batches):
                reader = _Reader(batches[k + 1], rate)
            good = []
            for it, w in zip(batch, loaded, strict=True):
                if isinstance(w, AudioError):
                    yield it, w.reason
                else:
                    good.append((it, w))
            log_probs = self._model([w for _, w in good])
            if reader is not None:
                loaded = reader.result()
            hyps = self._decode(log_probs)
            for (it, w), hyp in zip(good, hyps, strict=True):
                seconds = len(w) / rate
                self.stats["audio_seconds"] += seconds
                yield it, Transcript(it.source, seconds, _shift(hyp, it))
            bar.update(sum(it.seconds for it in batch))

    def _model(self, waves: list[Tensor]) -> list[np.ndarray]:
        """Waveforms -> ``(T_i, V)`` log-posteriors each, as one padded batch."""
        if not waves:
            return []
        lens = torch.tensor([len(w) for w in waves], dtype=torch.int64)
        padded = torch.zeros(len(waves), int(lens.max()))
        for i, w in enumerate(waves):
            padded[i, : len(w)] = w
        t0 = time.perf_counter()
        log_probs, out_lens = self.recognizer.log_probs(padded, lens)  # (T, B, V)
        lp = log_probs.float().cpu().numpy()
        self.stats["model_seconds"] += time.perf_counter() - t0
        return [
            np.ascontiguousarray(lp[:n, i]) for i, n in enumerate(out_lens.tolist())
        ]

    def _decode(self, log_probs: list[np.ndarray]) -> list[Hypothesis]:
        if not log_probs:
            return []
        t0 = time.perf_counter()
        hyps = self.decoder.decode_batch(log_probs, self.recognizer.frame_seconds)
        self.stats["decode_seconds"] += time.perf_counter() - t0
        return hyps

    # -- windowed path

    def _windowed(self, source: Source, bar: _Progress) -> Transcript:
        rec = self.recognizer
        frontend, device = rec.frontend, rec.device
        s = self.time_stride
        fs = rec.frame_seconds
        window = max(1, round(self.window_seconds / fs))  # output frames
        overlap = max(4, round(self.overlap_seconds / fs))
        assert window >= 2 * overlap, (window, overlap)

        def blocks() -> Iterator[np.ndarray]:
            return _stream_audio(
                source.path, rec.sample_rate, source.offset, source.duration
            )

        t0 = time.perf_counter()
        mean = std = None
        if frontend.normalize == "utterance":
            mean, std = _file_stats(blocks(), frontend, window * s, device)
        elif frontend.normalize == "global":
            mean = frontend.global_mean.float()
            std = frontend.global_std.float()
        pieces: list[np.ndarray] = []
        prev: tuple[int, np.ndarray] | None = None  # (start frame, log-probs)
        done = 0  # output frames already in pieces
        reported = 0.0  # seconds of audio shown as done
        batch: list[_Window] = []
        budget = max(1, int(self.batch_seconds // self.window_seconds))
        windows = _feature_windows(
            blocks(), frontend, window * s, (window - overlap) * s, device
        )
        n_frames = samples = 0
        for w in windows:
            n_frames = w.start + w.feats.shape[-1]
            samples = w.samples or 0
            if mean is not None:
                w.feats = (w.feats - mean[:, None]) / std.clamp(min=_STD_FLOOR)[:, None]
            batch.append(w)
            if len(batch) < budget and not w.last:
                continue
            for start, lp in self._run_windows(batch):
                if prev is not None:
                    cut = _join(*prev, start, lp, rec.tokenizer.blank)
                    pieces.append(prev[1][done - prev[0] : cut - prev[0]])
                    done = cut
                prev = (start, lp)
            covered = n_frames * frontend.hop_length / rec.sample_rate
            bar.update(covered - reported)
            reported, batch = covered, []
        assert prev is not None
        pieces.append(prev[1][done - prev[0] :])
        log_probs = np.concatenate(pieces)
        expected = int(rec.model.output_lengths(torch.tensor([n_frames])))
        assert len(log_probs) == expected, (len(log_probs), expected, n_frames)
        t1 = time.perf_counter()
        hyp = self.decoder.decode(log_probs, fs)
        t2 = time.perf_counter()
        seconds = samples / rec.sample_rate
        self.stats["model_seconds"] += t1 - t0
        self.stats["decode_seconds"] += t2 - t1
        self.stats["audio_seconds"] += seconds
        item = _Item(0, source, seconds)
        return Transcript(source, seconds, _shift(hyp, item))

    @torch.inference_mode()
    def _run_windows(self, windows: list[_Window]) -> list[tuple[int, np.ndarray]]:
        """Windows of normalized features -> (first output frame, ``(T, V)``
        log-posteriors) each."""
        s = self.time_stride
        device = self.recognizer.device
        lens = torch.tensor([w.feats.shape[-1] for w in windows], dtype=torch.int64)
        F = windows[0].feats.shape[0]
        feats = torch.zeros(len(windows), F, int(lens.max()), device=device)
        for i, w in enumerate(windows):
            feats[i, :, : w.feats.shape[-1]] = w.feats
        log_probs, out_lens = self.recognizer.model(feats, lens.to(device))
        lp = log_probs.float().cpu().numpy()  # (T, B, V)
        out = []
        for i, (w, n) in enumerate(zip(windows, out_lens.tolist(), strict=True)):
            assert w.start % s == 0, (w.start, s)
            out.append((w.start // s, np.ascontiguousarray(lp[:n, i])))
        return out


def _seconds(source: Source) -> float:
    """Seconds of audio a source holds, from its header; AudioError if unreadable."""
    info = audio_info(source.path)
    seconds = info.duration - source.offset
    if seconds <= 0:
        raise AudioError(
            source.path,
            f"offset {source.offset:g} s is at or beyond the end of the audio "
            f"({info.duration:g} s)",
        )
    if source.duration is not None:
        seconds = min(seconds, source.duration)
    return seconds


class _Reader:
    """:func:`_load_batch` in a thread; :meth:`result` joins it."""

    def __init__(self, items: list[_Item], sample_rate: int) -> None:
        self._out: list[Tensor | AudioError] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(items, sample_rate), daemon=True
        )
        self._thread.start()

    def _run(self, items: list[_Item], sample_rate: int) -> None:
        try:
            self._out = _load_batch(items, sample_rate)
        except BaseException as err:  # re-raised in the caller's thread
            self._error = err

    def result(self) -> list[Tensor | AudioError]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def _load_batch(items: list[_Item], sample_rate: int) -> list[Tensor | AudioError]:
    out: list[Tensor | AudioError] = []
    for it in items:
        src = it.source
        try:
            out.append(load_audio(src.path, sample_rate, src.offset, src.duration))
        except AudioError as err:
            out.append(err)
    return out


def _file_stats(
    blocks: Iterator[np.ndarray], frontend: torch.nn.Module, chunk: int, device: Any
) -> tuple[Tensor, Tensor]:
    """Per-feature mean and standard deviation over all frames of a stream: what
    per-utterance normalization computes for the whole file, in one streaming pass
    (sums in float64)."""
    total = sq = None
    count = 0
    for w in _feature_windows(blocks, frontend, chunk, chunk, device):
        x = w.feats.double()
        total = x.sum(-1) if total is None else total + x.sum(-1)
        sq = x.square().sum(-1) if sq is None else sq + x.square().sum(-1)
        count += x.shape[-1]
    assert total is not None and sq is not None and count > 0
    mean = total / count
    var = (sq / count - mean.square()).clamp(min=0)
    return mean.float(), var.sqrt().float()


def _shift(hyp: Hypothesis, item: _Item) -> Hypothesis:
    """Word times relative to the file rather than the segment."""
    offset = item.source.offset
    if not offset:
        return hyp
    words = tuple(
        Word(w.text, round(w.start + offset, 3), round(w.end + offset, 3), w.confidence)
        for w in hyp.words
    )
    return Hypothesis(hyp.text, words, hyp.score)
