"""Exact streaming inference of a unidirectional DeepSpeech2, and decoding on a stream.

A :class:`StreamingModel` takes PCM chunks of any size, stream by stream, and emits
each output frame's log-posteriors as soon as the audio that frame depends on has
arrived: the same numbers as the offline forward pass over the whole utterance
(:meth:`asr.inference.Recognizer.log_probs`, to float32 rounding), whatever the
chunking. That holds because every stage of the model looks a bounded distance
ahead, and each stream carries exactly the context its stages need:

- the STFT: the samples of frames not yet complete; the first frames read the
  utterance's head reflected (:mod:`asr.features`), the last ones, at
  :meth:`StreamingModel.flush`, its tail reflected;
- each convolution: the input frames its next output reads (kernel minus stride,
  plus a stride), zeros before the start and, at the end, after it (the offline
  convolutions zero-pad);
- each GRU layer: its hidden state (unidirectional layers only);
- the lookahead (row) convolution (DS2 sec. 3.5): its last ``lookahead`` frames.

So a stream's memory is constant however long it runs (tools/stream_memory.py
measures an hour), and its delay is :attr:`StreamingModel.latency_seconds`: the
window's right half, the convolutions' right context and the lookahead.
Feature normalisation must not need the utterance's end: global statistics
(``normalize: global``, saved in the checkpoint) or none.

:meth:`StreamingModel.step` advances many streams in one forward pass per layer
(the DeepSpeech2 paper's batch dispatch, sec. 7): a server's cost per stream falls
as streams are added.

A :class:`Session` decodes one stream: a greedy partial result at every chunk;
segments that end where the greedy path has been non-speech (blank or space) for
``endpoint_seconds`` after some speech, each finalized with the given decoder (beam
search with an LM, or greedy); words with times from the start of the stream and
confidences, as ``asr transcribe`` gives them. :func:`run_batch` advances many
sessions with one :meth:`StreamingModel.step`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.decoding import Decoder, GreedyDecoder
from asr.features import _reflect_index
from asr.inference import Recognizer, load_model

__all__ = [
    "Session",
    "StreamState",
    "StreamingError",
    "StreamingModel",
    "run_batch",
]


class StreamingError(ValueError):
    """A checkpoint that cannot run on a stream, or a stream used wrongly; the
    message names the checkpoint and the reason."""


@dataclass(frozen=True)
class _Window:
    """A stage's time geometry: output ``u`` reads input frames ``[u * stride -
    left, u * stride - left + kernel)``; inputs outside ``[0, length)`` are zero
    (the offline model pads ``left`` before and ``right`` after)."""

    kernel: int
    stride: int
    left: int
    right: int

    def outputs(self, length: int) -> int:
        """Outputs of the whole input of ``length`` frames (offline)."""
        if length <= 0:
            return 0
        return (length + self.left + self.right - self.kernel) // self.stride + 1

    def ready(self, received: int) -> int:
        """Outputs whose inputs have all arrived, with ``received`` so far and more
        to come."""
        reach = received + self.left - self.kernel
        return 0 if reach < 0 else reach // self.stride + 1


@dataclass
class _Context:
    """The input frames a stage still needs: ``frames[..., i]`` is input frame
    ``start + i``; ``received`` frames came in, ``emitted`` outputs went out."""

    frames: Tensor | None = None
    start: int = 0
    received: int = 0
    emitted: int = 0

    def push(self, new: Tensor) -> None:
        """Append input frames ``(..., n)`` (those before ``start``, which no
        output reads any more, are dropped)."""
        n = new.shape[-1]
        skip = max(0, self.start - self.received)
        self.received += n
        if skip >= n:
            return
        new = new[..., skip:]
        if self.frames is None:
            self.frames = new.clone()
        else:
            self.frames = torch.cat([self.frames, new], -1)

    def take(self, window: _Window, final: bool) -> tuple[Tensor | None, int]:
        """The inputs of the outputs that can be computed now, as one window
        (outputs ``j`` of a stride-``stride`` convolution without time padding over
        it are outputs ``emitted + j``), and their number; then forget the inputs
        no later output reads."""
        total = window.outputs(self.received) if final else window.ready(self.received)
        n = total - self.emitted
        if n <= 0 or self.frames is None:
            return None, 0
        lo = self.emitted * window.stride - window.left
        hi = (total - 1) * window.stride - window.left + window.kernel
        out = self.frames.new_zeros(*self.frames.shape[:-1], hi - lo)
        a, b = max(lo, self.start), min(hi, self.start + self.frames.shape[-1])
        if b > a:
            out[..., a - lo : b - lo] = self.frames[
                ..., a - self.start : b - self.start
            ]
        self.emitted = total
        keep = max(self.start, total * window.stride - window.left)
        self.frames = self.frames[..., keep - self.start :].clone()
        self.start = keep
        return out, n


@dataclass
class StreamState:
    """One stream's state in a :class:`StreamingModel`: bounded whatever its length.

    Attributes:
        samples: the samples not yet consumed by every frame that reads them,
            ``samples[i]`` being sample ``sample_start + i`` of the stream.
        received: samples received so far.
        frames: feature frames emitted so far.
        convs: each convolution's input context.
        hidden: each GRU layer's state ``(H,)``, None before the first frame.
        lookahead: the lookahead convolution's input context.
        emitted: output frames emitted so far.
        finished: :meth:`StreamingModel.flush` was called.
    """

    samples: Tensor
    sample_start: int = 0
    received: int = 0
    frames: int = 0
    convs: list[_Context] = field(default_factory=list)
    hidden: list[Tensor | None] = field(default_factory=list)
    lookahead: _Context = field(default_factory=_Context)
    emitted: int = 0
    finished: bool = False

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (constant in a long stream)."""
        tensors = [self.samples, self.lookahead.frames]
        tensors += [c.frames for c in self.convs] + list(self.hidden)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class StreamingModel:
    """A unidirectional DeepSpeech2 checkpoint run on streams, exactly.

    Attributes:
        sample_rate: the rate of the PCM it takes, Hz.
        frame_seconds: seconds per output frame.
        labels: the character of each output class (index 0: the blank).
        latency_seconds: the algorithmic delay: how far past an output frame's
            time its last needed sample lies (the window's right half, the
            convolutions' right context, the lookahead), not counting the chunk
            size or the compute time.
    """

    def __init__(self, recognizer: Recognizer, name: str = "the model") -> None:
        model, frontend = recognizer.model, recognizer.frontend
        config = model.config
        if config.bidirectional or model.lookahead is None:
            raise StreamingError(
                f"{name}: a bidirectional model reads the whole utterance and cannot "
                "stream; train a unidirectional one (conf/synthetic/streaming.yaml)"
            )
        if config.rnn_type != "gru":
            raise StreamingError(
                f"{name}: rnn_type {config.rnn_type!r}; streaming runs GRU layers"
            )
        if frontend.normalize == "utterance":
            raise StreamingError(
                f"{name}: features normalised per utterance need the whole "
                "utterance; a streaming model uses normalize: global"
            )
        if frontend.normalize == "global" and int(frontend.global_count) == 0:
            raise StreamingError(
                f"{name}: normalize is global but the checkpoint holds no global "
                "feature statistics (training fits them before its first step)"
            )
        self.recognizer = recognizer
        self.model = model
        self.frontend = frontend
        self.sample_rate = recognizer.sample_rate
        self.frame_seconds = recognizer.frame_seconds
        self.labels = list(recognizer.tokenizer.vocab)
        self.device = recognizer.device
        self._convs = [
            _Window(s.kernel[1], s.stride[1], s.kernel[1] // 2, s.kernel[1] // 2)
            for s in config.conv
        ]
        self._lookahead = _Window(config.lookahead + 1, 1, 0, config.lookahead)
        self._hop = frontend.hop_length
        self._pad = frontend.n_fft // 2
        self._extent = frontend.window_extent
        self.latency_seconds = self._latency()

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu") -> StreamingModel:
        """A checkpoint (slim or Lightning) of a streaming model.

        Raises:
            asr.inference.CheckpointError: not a loadable checkpoint.
            StreamingError: a model that cannot stream (bidirectional, features
                normalised per utterance, no global statistics).
        """
        return cls(load_model(path, device), str(path))

    def _latency(self) -> float:
        """How far past output frame ``u``'s time (``u * frame_seconds``) the last
        sample it depends on lies, in seconds (the same for every ``u`` past the
        first few)."""
        u = 1000
        frame = u + self._lookahead.kernel - 1
        for w in reversed(self._convs):
            frame = frame * w.stride + w.kernel - 1 - w.left
        last = frame * self._hop + self._extent[1]  # exclusive end, in samples
        start = u * self._hop * self.model.frame_stride()
        return (last - start) / self.sample_rate

    def new_state(self) -> StreamState:
        """The state of a new, empty stream."""
        return StreamState(
            samples=torch.zeros(0, device=self.device),
            convs=[_Context() for _ in self._convs],
            hidden=[None] * len(self.model.rnns),
        )

    @torch.inference_mode()
    def step(
        self, states: list[StreamState], chunks: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Advance every stream by its chunk, all streams through the model together.

        Args:
            states: one state per stream (:meth:`new_state`), updated in place.
            chunks: float32 mono PCM at :attr:`sample_rate`, one per stream, of any
                length (0 included).

        Returns:
            Each stream's newly finished output frames: ``(n_i, V)`` float32
            log-posteriors, ``n_i >= 0``.
        """
        if len(states) != len(chunks):
            raise ValueError(f"{len(states)} states but {len(chunks)} chunks")
        for state, chunk in zip(states, chunks, strict=True):
            if state.finished:
                raise StreamingError("audio sent to a stream after its end (flush)")
            pcm = torch.as_tensor(np.asarray(chunk, dtype=np.float32).reshape(-1))
            if len(pcm):
                state.samples = torch.cat([state.samples, pcm.to(self.device)])
                state.received += len(pcm)
        return self._advance(states, final=False)

    @torch.inference_mode()
    def flush(self, states: list[StreamState]) -> list[np.ndarray]:
        """End the streams: their last output frames (the utterance's end is known
        now: the STFT reflects about it, the convolutions zero-pad after it).
        A stream that received no audio emits nothing."""
        for state in states:
            if state.finished:
                raise StreamingError("a stream was ended twice")
        out = self._advance(states, final=True)
        for state in states:
            state.finished = True
        return out

    # -- the stages ---------------------------------------------------------------

    def _advance(self, states: list[StreamState], final: bool) -> list[np.ndarray]:
        B = len(states)
        V = len(self.labels)
        empty = np.zeros((0, V), np.float32)
        # per stream: new feature frames (F, n)
        xs: list[Tensor | None] = self._features(states, final)
        for i, (spec, conv, norm) in enumerate(
            zip(self._convs, self.model.convs, self.model.conv_norms, strict=True)
        ):
            windows: list[tuple[int, Tensor, int]] = []
            for b, state in enumerate(states):
                ctx = state.convs[i]
                x = xs[b]
                if x is not None and x.shape[-1]:
                    ctx.push(x.unsqueeze(0) if i == 0 else x)  # (C, F, n)
                window, n = ctx.take(spec, final)
                if window is not None:
                    windows.append((b, window, n))
            xs = [None] * B
            for b, y in self._conv(windows, conv, norm):
                xs[b] = y
        # (C, F', n) -> (C * F', n)
        seqs = [None if x is None else x.reshape(-1, x.shape[-1]) for x in xs]
        for layer in range(len(self.model.rnns)):
            seqs = self._rnn(states, seqs, layer)
        windows = []
        for b, state in enumerate(states):
            x = seqs[b]
            if x is not None and x.shape[-1]:
                state.lookahead.push(x)
            window, n = state.lookahead.take(self._lookahead, final)
            if window is not None:
                windows.append((b, window, n))
        out = [empty] * B
        for b, lp in self._head(windows):
            out[b] = lp
            states[b].emitted += len(lp)
        return out

    def _features(self, states: list[StreamState], final: bool) -> list[Tensor | None]:
        """Each stream's feature frames ``(F, n)`` that its samples now determine,
        computed together."""
        hop, pad = self._hop, self._pad
        lo, hi = self._extent
        n_fft = self.frontend.n_fft
        cut: list[Tensor] = []
        counts: list[int] = []
        for state in states:
            n = state.received
            if final:
                total = int(self.frontend.frames(n)) if n else 0
            elif n <= pad:  # the head's reflection needs pad + 1 samples
                total = 0
            else:  # frame t complete: its window's last sample has arrived
                total = min(max(0, (n - hi) // hop + 1), int(self.frontend.frames(n)))
            count = max(0, total - state.frames)
            counts.append(count)
            if not count:
                continue
            t = torch.arange(state.frames, total, device=self.device)
            i = (t * hop - pad)[:, None] + torch.arange(n_fft, device=self.device)
            if final:  # reflected about the utterance's own ends
                i = _reflect_index(i, torch.tensor([[n]], device=self.device))
                zero = None
            else:  # the head reflected; samples not yet here fall outside the window
                i = i.abs()
                zero = i >= n
                i = i.clamp(max=n - 1)
            rows = state.samples[i - state.sample_start]  # (count, n_fft)
            if zero is not None:
                rows = rows.masked_fill(zero, 0.0)
            cut.append(rows)
            state.frames = total
            # keep what the next frame and, at the end, the tail's reflection read
            keep = max(state.sample_start, total * hop - pad - 2 * hop)
            state.samples = state.samples[keep - state.sample_start :].clone()
            state.sample_start = keep
        if not cut:
            return [None] * len(states)
        feats = self.frontend.frame_features(torch.cat(cut))  # (F, sum of counts)
        parts = iter(feats.split([c for c in counts if c], dim=1))
        return [next(parts) if c else None for c in counts]

    def _conv(
        self, windows: list[tuple[int, Tensor, int]], conv: nn.Conv2d, norm: nn.Module
    ) -> list[tuple[int, Tensor]]:
        """One convolution (and its batch norm and clipped ReLU) over the streams'
        windows ``(C, F, w)`` in one batch: ``(stream, (C', F', n))`` each."""
        if not windows:
            return []
        C, Fr = windows[0][1].shape[:2]
        width = max(w.shape[-1] for _, w, _ in windows)
        x = windows[0][1].new_zeros(len(windows), C, Fr, width)
        for j, (_, w, _) in enumerate(windows):
            x[j, ..., : w.shape[-1]] = w
        y = F.conv2d(x, conv.weight, None, conv.stride, (conv.padding[0], 0))
        lens = torch.tensor([n for _, _, n in windows], device=x.device)
        y = norm(y[..., : int(lens.max())], lens).clamp(0.0, self.model.config.clip)
        return [(b, y[j, ..., :n]) for j, (b, _, n) in enumerate(windows)]

    def _rnn(
        self, states: list[StreamState], seqs: list[Tensor | None], layer: int
    ) -> list[Tensor | None]:
        """GRU layer ``layer`` over each stream's new frames ``(H_in, n)``, from
        its carried hidden state, all streams in one packed batch."""
        active = [b for b, x in enumerate(seqs) if x is not None and x.shape[-1]]
        out: list[Tensor | None] = [None] * len(seqs)
        if not active:
            return out
        rnn, norm = self.model.rnns[layer], self.model.rnn_norms[layer]
        lens = torch.tensor([seqs[b].shape[-1] for b in active])
        H_in, T = seqs[active[0]].shape[0], int(lens.max())
        x = seqs[active[0]].new_zeros(len(active), H_in, T)
        for j, b in enumerate(active):
            x[j, :, : lens[j]] = seqs[b]
        if layer:
            x = norm(x, lens.to(x.device))
        H = rnn.hidden_size
        h0 = torch.stack(
            [
                x.new_zeros(H)
                if states[b].hidden[layer] is None
                else states[b].hidden[layer]
                for b in active
            ]
        ).unsqueeze(0)  # (1, B, H)
        seq = x.permute(2, 0, 1)  # (B, H_in, T) -> (T, B, H_in)
        packed = pack_padded_sequence(seq, lens, enforce_sorted=False)
        y, h_n = rnn(packed, h0)
        y, _ = pad_packed_sequence(y, total_length=T)  # (T, B, H)
        for j, b in enumerate(active):
            states[b].hidden[layer] = h_n[0, j].clone()
            out[b] = y[: lens[j], j].t()  # (n, H) -> (H, n)
        return out

    def _head(
        self, windows: list[tuple[int, Tensor, int]]
    ) -> list[tuple[int, np.ndarray]]:
        """The lookahead convolution, the output norm and the linear layer to
        log-posteriors: ``(stream, (n, V))`` each."""
        if not windows:
            return []
        look = self.model.lookahead
        H = windows[0][1].shape[0]
        width = max(w.shape[-1] for _, w, _ in windows)
        x = windows[0][1].new_zeros(len(windows), H, width)
        for j, (_, w, _) in enumerate(windows):
            x[j, :, : w.shape[-1]] = w
        y = F.conv1d(x, look.conv.weight, None, groups=H)  # (B, H, width - L)
        y = y.clamp(0.0, self.model.config.clip)
        # every stream's frames side by side: (H, sum n) as one utterance
        frames = torch.cat([y[j, :, :n] for j, (_, _, n) in enumerate(windows)], -1)
        total = torch.tensor([frames.shape[-1]], device=frames.device)
        frames = self.model.out_norm(frames.unsqueeze(0), total)[0]
        logits = self.model.fc(frames.t())  # (H, N) -> (N, H) -> (N, V)
        lp = logits.float().log_softmax(-1).cpu().numpy()
        parts = np.split(lp, np.cumsum([n for _, _, n in windows])[:-1])
        return [(b, p) for (b, _, _), p in zip(windows, parts, strict=True)]


class Session:
    """One stream: model state and decoding.

    Args:
        model: the :class:`StreamingModel` (shared by many sessions).
        decoder: finalizes each segment (``asr.decoding.make_decoder``: beam search
            with an LM, or greedy); None: greedy. Partial results are greedy.
        endpoint_seconds: non-speech (the greedy path's blank or space) that ends a
            segment once it has had speech.
        max_segment_seconds: a segment without such a pause is finalized at its
            last non-speech frame (or, without one, where it is) once it is this
            long, so a session's memory stays bounded.

    :meth:`accept` and :meth:`finish` return events, JSON-ready dicts with times in
    seconds from the start of the stream::

        {"type": "partial", "text": str, "start": float, "end": float}
        {"type": "final", "text": str, "start": float, "end": float,
         "words": [{"word": str, "start": float, "end": float,
                    "confidence": float}, ...]}

    A chunk that completes output frames gives a partial (the open segment's greedy
    text, maybe empty), after the finals of the segments it ended. A final's start
    and end are its first word's start and last word's end; segments that decode
    to no words give no final.
    """

    def __init__(
        self,
        model: StreamingModel,
        decoder: Decoder | None = None,
        *,
        endpoint_seconds: float = 0.8,
        max_segment_seconds: float = 30.0,
    ) -> None:
        if not endpoint_seconds > 0:
            raise ValueError(f"endpoint_seconds must be > 0, got {endpoint_seconds}")
        if not max_segment_seconds > endpoint_seconds:
            raise ValueError(
                f"max_segment_seconds ({max_segment_seconds}) must exceed "
                f"endpoint_seconds ({endpoint_seconds})"
            )
        self.model = model
        self.decoder = decoder if decoder is not None else GreedyDecoder(model.labels)
        self.state = model.new_state()
        fs = model.frame_seconds
        self._endpoint = max(1, round(endpoint_seconds / fs))
        self._max_frames = max(self._endpoint + 1, round(max_segment_seconds / fs))
        labels = model.labels
        self._quiet = {0} | ({labels.index(" ")} if " " in labels else set())
        self._lp = np.zeros((0, len(labels)), np.float32)  # the open segment's frames
        self._start = 0  # the open segment's first frame in the stream
        self._seen = 0  # frames observed so far
        self._observe_reset([])
        self.finished = False

    # -- the open segment's greedy path

    def _observe_reset(self, path: list[int]) -> None:
        self._path: list[int] = []
        self._chars: list[str] = []
        self._first_speech: int | None = None  # position in the segment
        self._trailing = 0  # non-speech frames at the end
        self._gap = 0  # position after the last non-speech frame
        for c in path:
            self._observe(c)

    def _observe(self, c: int) -> None:
        prev = self._path[-1] if self._path else 0
        self._path.append(c)
        if c != prev and c != 0:
            self._chars.append(self.model.labels[c])
        if c in self._quiet:
            self._trailing += 1
            self._gap = len(self._path)
        else:
            self._trailing = 0
            if self._first_speech is None:
                self._first_speech = len(self._path) - 1

    def _text(self) -> str:
        return " ".join("".join(self._chars).split())

    # -- events

    def _finalize(self, n: int) -> dict[str, Any] | None:
        """Decode the open segment's first ``n`` frames as a final; the rest opens
        the next segment."""
        fs = self.model.frame_seconds
        seg, self._lp = self._lp[:n], self._lp[n:]
        path = self._path[n:]
        start = self._start
        self._start += n
        self._observe_reset(path)
        received = self.state.received / self.model.sample_rate
        hyp = self.decoder.decode(np.ascontiguousarray(seg), fs)
        hyp = hyp.shifted(start * fs, received)
        if not hyp.words:
            return None
        return {
            "type": "final",
            "text": hyp.text,
            "start": hyp.words[0].start,
            "end": hyp.words[-1].end,
            "words": [
                {
                    "word": w.text,
                    "start": w.start,
                    "end": w.end,
                    "confidence": w.confidence,
                }
                for w in hyp.words
            ],
        }

    def _partial(self) -> dict[str, Any]:
        fs = self.model.frame_seconds
        received = self.state.received / self.model.sample_rate
        first = self._first_speech
        start = self._start + first if first is not None else self._seen
        return {
            "type": "partial",
            "text": self._text(),
            "start": round(min(start * fs, received), 3),
            "end": round(min(self._seen * fs, received), 3),
        }

    def _consume(self, lp: np.ndarray, final: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any] | None] = []
        if len(lp):
            self._lp = np.concatenate([self._lp, lp])
            for c in lp.argmax(1).tolist():
                self._observe(c)
                self._seen += 1
                n = self._seen - self._start
                if self._first_speech is not None and self._trailing >= self._endpoint:
                    events.append(self._finalize(n))
                elif n >= self._max_frames:
                    events.append(self._finalize(self._gap or n))
        if final:
            if self._first_speech is not None:
                events.append(self._finalize(len(self._lp)))
        elif len(lp):
            events.append(self._partial())
        return [e for e in events if e is not None]

    def accept(self, pcm: np.ndarray) -> list[dict[str, Any]]:
        """Feed a chunk of float32 mono PCM at the model's rate; the events it
        caused (``run_batch([self], [pcm])[0]``)."""
        return run_batch([self], [pcm])[0]

    def finish(self) -> list[dict[str, Any]]:
        """End the stream: its last frames, and the final of the open segment."""
        if self.finished:
            raise StreamingError("the session has already finished")
        lp = self.model.flush([self.state])[0]
        self.finished = True
        return self._consume(lp, final=True)


def run_batch(
    sessions: list[Session], chunks: list[np.ndarray]
) -> list[list[dict[str, Any]]]:
    """Advance many sessions by a chunk each through one :meth:`StreamingModel.step`
    (batch dispatch), then decode each: the events of each session, in order."""
    if not sessions:
        return []
    model = sessions[0].model
    if any(s.model is not model for s in sessions):
        raise ValueError("run_batch takes sessions of one StreamingModel")
    for s in sessions:
        if s.finished:
            raise StreamingError("audio sent to a session after its end (finish)")
    lps = model.step([s.state for s in sessions], chunks)
    return [s._consume(lp, final=False) for s, lp in zip(sessions, lps, strict=True)]
