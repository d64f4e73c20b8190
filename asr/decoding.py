"""Decoding CTC outputs into words, with times and confidences.

Two decoders share one interface (:class:`Decoder`):
``decode(log_probs, frame_seconds)`` takes one utterance's ``(T, V)`` log-posteriors
as a NumPy array and returns a :class:`Hypothesis` -- the text and its words, each
with a start and end time in seconds and a confidence in [0, 1].

- :class:`GreedyDecoder`: best path (Graves et al. 2006, sec. 3.2): the most probable
  class per frame, repeats merged, blanks dropped. :func:`greedy_decode` is its batched
  tensor form for training-time validation.
- :class:`BeamSearchDecoder` (in this module, through pyctcdecode and KenLM): see its
  docstring.

Word times from CTC: a character is emitted at the frames of its run in the best path,
so a word spans from the first frame of its first character to the last frame of its
last character (CTC peaks are sharp, so times are accurate to about one output frame,
40 ms for the demo model). Confidence: the mean over the word's character runs of the
posterior of the emitted character at its peak frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Decoder",
    "GreedyDecoder",
    "Hypothesis",
    "Word",
    "greedy_decode",
    "words_from_path",
]


@dataclass(frozen=True)
class Word:
    """One recognized word: text, start and end in seconds, confidence in [0, 1]."""

    text: str
    start: float
    end: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hypothesis:
    """A decoded utterance: its text (words joined by single spaces) and words.

    ``score`` is the decoder's own score of the hypothesis (greedy: the log-probability
    of the best path; beam search: pyctcdecode's combined acoustic + LM score).
    """

    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": self.score,
            "words": [w.to_dict() for w in self.words],
        }


class Decoder(Protocol):
    """What :mod:`asr.inference` needs from a decoder."""

    name: str

    def settings(self) -> dict[str, Any]:
        """The decoder's settings, JSON-serializable (reported with results)."""
        ...

    def decode(self, log_probs: np.ndarray, frame_seconds: float) -> Hypothesis:
        """One utterance: ``log_probs`` is ``(T, V)`` float32 natural-log posteriors
        of its valid frames only; ``frame_seconds`` is the output frame shift."""
        ...

    def decode_batch(
        self, log_probs: list[np.ndarray], frame_seconds: float
    ) -> list[Hypothesis]:
        """Several utterances (each ``(T_i, V)``), in order."""
        ...


def greedy_decode(
    log_probs: Tensor, out_lens: Tensor, blank: int = 0
) -> list[list[int]]:
    """Best-path label sequences, batched on the tensors' device.

    Args:
        log_probs: ``(T, B, V)`` log-probabilities (or any scores).
        out_lens: ``(B,)`` valid frames.
        blank: the blank index.

    Returns:
        ``B`` lists of label indices.
    """
    best = log_probs.argmax(-1).t()  # (T, B) -> (B, T)
    T = best.shape[1]
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]  # first frame of each run only
    keep &= torch.arange(T, device=best.device)[None, :] < out_lens[:, None].to(
        best.device
    )
    best, keep = best.cpu(), keep.cpu()
    return [row[mask].tolist() for row, mask in zip(best, keep, strict=True)]


def words_from_path(
    path: np.ndarray,
    log_probs: np.ndarray,
    labels: list[str],
    frame_seconds: float,
    blank: int = 0,
) -> tuple[Word, ...]:
    """Words, times and confidences of a frame-level CTC path.

    Args:
        path: ``(T,)`` class index per frame (e.g. the argmax).
        log_probs: ``(T, V)`` natural-log posteriors the confidences are read from.
        labels: the character of each class (``labels[blank]`` is ignored; a space
            separates words).
        frame_seconds: seconds per output frame.
        blank: the blank index.

    Returns:
        The words in order. A word's ``start`` is the start of the first frame of
        its first character, ``end`` the end of the last frame of its last one.
    """
    T = len(path)
    if T == 0:
        return ()
    # Runs of equal labels: starts[i]..ends[i] (inclusive) carry runs_label[i].
    change = np.flatnonzero(np.diff(path)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [T - 1]])
    words: list[Word] = []
    chars: list[str] = []
    conf: list[float] = []
    first = last = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        c = int(path[s])
        if c == blank:
            continue
        ch = labels[c]
        if ch == " ":
            if chars:
                words.append(_word(chars, conf, first, last, frame_seconds))
                chars, conf = [], []
            continue
        if not chars:
            first = s
        last = e
        chars.append(ch)
        conf.append(float(np.exp(log_probs[s : e + 1, c].max())))
    if chars:
        words.append(_word(chars, conf, first, last, frame_seconds))
    return tuple(words)


def _word(
    chars: list[str], conf: list[float], first: int, last: int, frame_seconds: float
) -> Word:
    return Word(
        text="".join(chars),
        start=round(first * frame_seconds, 3),
        end=round((last + 1) * frame_seconds, 3),
        confidence=round(float(np.mean(conf)), 4),
    )


class GreedyDecoder:
    """Best-path decoding with word times and confidences.

    Args:
        labels: the character of each class, index = class id (blank's entry is
            ignored), e.g. ``CharTokenizer.labels``.
        blank: the blank index.
    """

    name = "greedy"

    def __init__(self, labels: list[str], blank: int = 0) -> None:
        self.labels = list(labels)
        self.blank = blank

    def settings(self) -> dict[str, Any]:
        return {"decoder": self.name}

    def decode(self, log_probs: np.ndarray, frame_seconds: float) -> Hypothesis:
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.labels):
            raise ValueError(
                f"log_probs must be (T, {len(self.labels)}), got {log_probs.shape}"
            )
        path = log_probs.argmax(axis=1)
        words = words_from_path(path, log_probs, self.labels, frame_seconds, self.blank)
        score = float(log_probs[np.arange(len(path)), path].sum())
        return Hypothesis(" ".join(w.text for w in words), words, score)

    def decode_batch(
        self, log_probs: list[np.ndarray], frame_seconds: float
    ) -> list[Hypothesis]:
        return [self.decode(lp, frame_seconds) for lp in log_probs]
