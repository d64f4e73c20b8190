"""Running a recognizer over many audio files: the one path from sources to log-probs.

``asr transcribe``, ``asr evaluate`` and ``asr lm tune`` all turn a list of
:class:`Source` records (files, or segments of files from a manifest) into the
model's per-frame log-posteriors through :class:`PosteriorRunner`; each then does
its own thing with them (decode and write, decode and score, cache and tune).

Two paths through the model:

- **Batched** (a file no longer than ``window_seconds``): the waveforms of several
  files, sorted by duration, are padded into batches of at most ``batch_seconds`` of
  padded audio (:class:`asr.data.DurationBatchSampler`), the next batch being read
  from disk while the model runs on this one. The model is length-aware (masked
  convolutions and batch norm, packed RNNs), so padding does not change any output.
- **Windowed** (a longer file, up to hours): the audio is streamed from disk in
  blocks (:func:`asr.audio.stream_audio`, never loaded whole) and cut into windows
  of ``window_seconds`` that overlap by ``overlap_seconds``; each window's features
  equal the corresponding frames of the whole file's features exactly (every window
  is computed from the samples around it, with the file's own ends), and with the
  per-utterance feature normalization the statistics are the whole file's,
  gathered in a first streaming pass. Windows run through the model in batches.
  Consecutive windows' frame posteriors are joined near the middle of their
  overlap, at a frame where both windows' best paths are blank (a pause between
  characters, so no character is cut in two or emitted twice), never outside the
  middle half of the overlap (so each side keeps at least a quarter of it as
  context for its bidirectional RNNs); see :func:`_join`. When the whole file fits
  in one pass, the windowed result has the same words and times
  (tests/test_transcribe.py).

A file that cannot be read never stops the others: its :class:`Posteriors` carries
the reason instead of log-probs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor

from asr.audio import (
    LEVEL_SECONDS,
    SILENCE_DB,
    AudioError,
    audio_info,
    chunk_levels,
    load_audio,
    stream_audio,
    stream_levels,
)
from asr.data import DurationBatchSampler
from asr.features import STD_FLOOR
from asr.inference import Recognizer
from asr.manifest import Utterance

__all__ = [
    "OVERLAP_SECONDS",
    "WINDOW_SECONDS",
    "PosteriorRunner",
    "Posteriors",
    "Progress",
    "Source",
    "manifest_sources",
]

# Windowing of long files (seconds); see the module docstring.
WINDOW_SECONDS = 30.0
OVERLAP_SECONDS = 5.0
# Without a terminal (a log file, CI, nohup), a progress line a minute.
_PROGRESS_INTERVAL = 60.0


@dataclass(frozen=True)
class Source:
    """One thing to run the model on: a file, or a segment of one from a manifest.

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


def manifest_sources(utterances: Sequence[Utterance]) -> list[Source]:
    """A manifest's utterances as sources, in order. A segment (``offset`` > 0)
    reads ``duration`` seconds from its offset; an utterance without an offset is
    its whole file (the manifest's ``duration`` is not trusted to cut it)."""
    sources = []
    for u in utterances:
        stem = u.id or os.path.splitext(os.path.basename(u.audio_filepath))[0]
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
    return sources


@dataclass
class Posteriors:
    """The model's output for one source.

    Attributes:
        index: the source's position in the list given to :meth:`PosteriorRunner.run`.
        source: the source.
        seconds: seconds of audio read (0 when it could not be read).
        log_probs: ``(T, V)`` float32 natural-log posteriors of the valid frames, or
            ``None`` when the audio could not be read.
        error: why the audio could not be read (one line), or ``None``.
    """

    index: int
    source: Source
    seconds: float = 0.0
    log_probs: np.ndarray | None = None
    error: str | None = None


@dataclass
class PosteriorRunner:
    """Sources -> :class:`Posteriors`, batched, with long files in windows.

    Args:
        recognizer: the model (:func:`asr.inference.load_model`).
        batch_seconds: bound on the padded audio of one batch through the model
            (``batch size * longest``), in seconds; a longer file or window goes
            alone.
        window_seconds: files longer than this run in windows of this length.
        overlap_seconds: overlap of consecutive windows (at least 4 output frames;
            at most half a window).
        silence_db: the silence gate's threshold in dBFS: a source whose loudest
            10 ms (RMS) is below it transcribes as nothing (digital silence,
            dither, faint noise); ``None`` turns the gate off.

    ``stats`` holds the seconds of audio read and of model time of the last run.
    """

    recognizer: Recognizer
    batch_seconds: float = 300.0
    window_seconds: float = WINDOW_SECONDS
    overlap_seconds: float = OVERLAP_SECONDS
    silence_db: float | None = SILENCE_DB
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

    def settings(self) -> dict[str, Any]:
        return {
            "batch_seconds": self.batch_seconds,
            "window_seconds": self.window_seconds,
            "overlap_seconds": self.overlap_seconds,
            "silence_db": self.silence_db,
            "device": str(self.recognizer.device),
            "threads": torch.get_num_threads(),
        }

    def run(
        self, sources: Sequence[Source], progress: Progress | None = None
    ) -> Iterator[list[Posteriors]]:
        """Run the model over every source; yields one list per model batch (a long
        file's windows make one list of one), each source exactly once.

        Sources whose header cannot be read come first, in one list. No reader
        thread runs while the caller holds a yielded list, so the caller may fork
        (a beam-search decoder's process pool) safely.

        Args:
            sources: what to run the model on.
            progress: advanced by the seconds of audio done (see :class:`Progress`).
        """
        self.stats = {"audio_seconds": 0.0, "model_seconds": 0.0, "load_seconds": 0.0}
        unreadable: list[Posteriors] = []
        short: list[tuple[Posteriors, float]] = []
        long: list[tuple[Posteriors, float]] = []
        for i, src in enumerate(sources):
            out = Posteriors(i, src)
            try:
                seconds = _seconds(src)
            except AudioError as err:
                out.error = err.reason
                unreadable.append(out)
                continue
            (long if seconds > self.window_seconds else short).append((out, seconds))
        if unreadable:
            yield unreadable
        yield from self._batched(short, progress)
        for out, seconds in long:
            try:
                self._windowed(out, progress)
            except AudioError as err:
                out.error = err.reason
                if progress is not None:
                    progress.update(seconds)
            yield [out]

    def expected_seconds(self, sources: Sequence[Source]) -> float:
        """Seconds of audio the sources hold by their headers (unreadable ones 0)."""
        total = 0.0
        for src in sources:
            try:
                total += _seconds(src)
            except AudioError:
                pass
        return total

    @property
    def _hop(self) -> int:
        """Samples per level chunk."""
        return max(1, round(LEVEL_SECONDS * self.recognizer.sample_rate))

    def _gate(self, log_probs: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """``(T, V)`` log-posteriors, all blank when no 10 ms chunk of the source
        (``levels``, dBFS) reaches :attr:`silence_db` (see :data:`asr.audio.
        SILENCE_DB`); unchanged otherwise."""
        if self.silence_db is None or not len(log_probs):
            return log_probs
        if len(levels) and levels.max() >= self.silence_db:
            return log_probs
        silent = np.full_like(log_probs, _SILENT_LOG_PROB)
        silent[:, self.recognizer.tokenizer.blank] = 0.0
        return silent

    # -- batched path

    def _batched(
        self, items: list[tuple[Posteriors, float]], progress: Progress | None
    ) -> Iterator[list[Posteriors]]:
        """The model runs on batch ``k`` while a thread reads batch ``k + 1``; the
        thread is joined before batch ``k`` is handed to the caller."""
        if not items:
            return
        sampler = DurationBatchSampler(
            [s for _, s in items], self.batch_seconds, shuffle=False
        )
        batches = [[items[i] for i, _ in b] for b in sampler]
        rate = self.recognizer.sample_rate
        t0 = time.perf_counter()
        loaded = _load_batch([o.source for o, _ in batches[0]], rate)
        self.stats["load_seconds"] += time.perf_counter() - t0
        for k, batch in enumerate(batches):
            reader = None
            if k + 1 < len(batches):
                reader = _Reader([o.source for o, _ in batches[k + 1]], rate)
            good = []
            for (out, _), wave in zip(batch, loaded, strict=True):
                if isinstance(wave, AudioError):
                    out.error = wave.reason
                else:
                    out.seconds = len(wave) / rate
                    self.stats["audio_seconds"] += out.seconds
                    good.append((out, wave))
            for (out, wave), lp in zip(
                good, self._model([w for _, w in good]), strict=True
            ):
                out.log_probs = self._gate(lp, chunk_levels(wave.numpy(), self._hop))
            if reader is not None:
                t0 = time.perf_counter()
                loaded = reader.result()
                self.stats["load_seconds"] += time.perf_counter() - t0
            if progress is not None:
                progress.update(sum(s for _, s in batch))
            yield [out for out, _ in batch]

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

    # -- windowed path

    def _windowed(self, out: Posteriors, progress: Progress | None) -> None:
        rec = self.recognizer
        source = out.source
        frontend, device = rec.frontend, rec.device
        s = rec.model.frame_stride()  # input feature frames per output frame
        fs = rec.frame_seconds
        window = max(1, round(self.window_seconds / fs))  # output frames
        overlap = max(4, round(self.overlap_seconds / fs))
        assert window >= 2 * overlap, (window, overlap)

        def blocks() -> Iterator[np.ndarray]:
            return stream_audio(
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
                w.feats = (w.feats - mean[:, None]) / std.clamp(min=STD_FLOOR)[:, None]
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
            if progress is not None:
                progress.update(covered - reported)
            reported, batch = covered, []
        assert prev is not None
        pieces.append(prev[1][done - prev[0] :])
        log_probs = np.concatenate(pieces)
        expected = int(rec.model.output_lengths(torch.tensor([n_frames])))
        assert len(log_probs) == expected, (len(log_probs), expected, n_frames)
        if self.silence_db is not None:
            levels = np.concatenate(
                list(stream_levels(blocks(), self._hop)) or [np.zeros(0)]
            )
            log_probs = self._gate(log_probs, levels)
        out.log_probs = log_probs
        out.seconds = samples / rec.sample_rate
        self.stats["model_seconds"] += time.perf_counter() - t0
        self.stats["audio_seconds"] += out.seconds

    @torch.inference_mode()
    def _run_windows(self, windows: list[_Window]) -> list[tuple[int, np.ndarray]]:
        """Windows of normalized features -> (first output frame, ``(T, V)``
        log-posteriors) each."""
        s = self.recognizer.model.frame_stride()
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


# What a gated frame's non-blank classes get: probability e^-100, nothing (a finite
# value, so decoders and confidences need no special case).
_SILENT_LOG_PROB = -100.0


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

    def __init__(self, sources: list[Source], sample_rate: int) -> None:
        self._out: list[Tensor | AudioError] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(sources, sample_rate), daemon=True
        )
        self._thread.start()

    def _run(self, sources: list[Source], sample_rate: int) -> None:
        try:
            self._out = _load_batch(sources, sample_rate)
        except BaseException as err:  # re-raised in the caller's thread
            self._error = err

    def result(self) -> list[Tensor | AudioError]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def _load_batch(sources: list[Source], sample_rate: int) -> list[Tensor | AudioError]:
    out: list[Tensor | AudioError] = []
    for src in sources:
        try:
            out.append(load_audio(src.path, sample_rate, src.offset, src.duration))
        except AudioError as err:
            out.append(err)
    return out


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


class Progress:
    """Seconds of audio done: a tqdm bar on a terminal; without one, a line a minute
    (work that takes less than a minute prints nothing).

    Args:
        total_seconds: the work, in seconds of audio.
        stream: where to show it (``None``: nowhere).
        desc: what is being done ("transcribing", "evaluating").
    """

    def __init__(
        self, total_seconds: float, stream: TextIO | None, desc: str = "transcribing"
    ) -> None:
        self.total = total_seconds
        self.stream = stream
        self.desc = desc
        self.done = 0.0
        self.last_line = time.perf_counter()
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
                    desc=desc,
                    file=stream,
                    leave=False,
                    dynamic_ncols=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} "
                    "s of audio [{elapsed}<{remaining}, {rate_fmt}]",
                )
                return

    def update(self, seconds: float) -> None:
        self.done += seconds
        if self.bar is not None:
            self.bar.update(round(seconds, 1))
        elif self.stream is not None:
            now = time.perf_counter()
            if now - self.last_line < _PROGRESS_INTERVAL:
                return
            self.last_line = now
            print(
                f"{self.desc}: {self.done:.0f} of {self.total:.0f} s of audio done "
                f"({100 * self.done / max(self.total, 1e-9):.0f}%, "
                f"{now - self.start:.0f} s elapsed)",
                file=self.stream,
                flush=True,
            )

    def clear(self) -> None:
        """Take the bar off the screen (before printing a message)."""
        if self.bar is not None:
            self.bar.clear()

    def refresh(self) -> None:
        """Show the bar again (after printing a message)."""
        if self.bar is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
