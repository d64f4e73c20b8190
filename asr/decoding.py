"""Decoding CTC outputs into words, with times and confidences.

Two decoders share one interface (:class:`Decoder`):
``decode(log_probs, frame_seconds)`` takes one utterance's ``(T, V)`` log-posteriors
as a NumPy array and returns a :class:`Hypothesis` -- the text and its words, each
with a start and end time in seconds and a confidence in [0, 1].

- :class:`GreedyDecoder`: best path (Graves et al. 2006, sec. 3.2): the most probable
  class per frame, repeats merged, blanks dropped. :func:`greedy_decode` is its batched
  tensor form for training-time validation.
- :class:`BeamSearchDecoder`: prefix beam search with an optional KenLM n-gram model
  (shallow fusion) and hot words, through pyctcdecode; see its docstring.

:func:`build_decoder` picks one from settings; :func:`save_decoder_settings` and
:func:`load_decoder_settings` keep tuned settings (``asr lm tune``) in ``decoder.json``
beside the checkpoint, and :func:`resolve_decoder_settings` merges them with the
command line's.

Word times from CTC: a character is emitted at the frames of its run in the best path,
so a word spans from the first frame of its first character to the last frame of its
last character (CTC peaks are sharp, so times are accurate to about one output frame,
30 ms for the demo model). Confidence: the mean over the word's character runs of the
posterior of the emitted character at its peak frame.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from asr.atomic import atomic_write_text

__all__ = [
    "DECODER_SETTINGS_FILE",
    "TUNABLE_SETTINGS",
    "BeamSearchDecoder",
    "Decoder",
    "DecoderError",
    "GreedyDecoder",
    "Hypothesis",
    "Word",
    "build_decoder",
    "greedy_decode",
    "load_decoder_settings",
    "make_decoder",
    "resolve_decoder_settings",
    "save_decoder_settings",
    "words_from_path",
]

log = logging.getLogger(__name__)


class DecoderError(ValueError):
    """Bad decoder settings or an unreadable ``decoder.json``, named in the message."""


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

    def shifted(self, offset: float, end: float | None = None) -> Hypothesis:
        """Word times moved by ``offset`` seconds (from a segment's start to the
        start of its file or stream) and, with ``end``, never past ``end`` in whole
        milliseconds: a word's last frame may end up to a frame beyond the last
        sample (the frame grid covers the audio's end)."""
        last = math.inf if end is None else math.floor(end * 1000) / 1000

        def at(t: float) -> float:
            return min(round(t + offset, 3), last)

        words = tuple(
            Word(w.text, at(w.start), at(w.end), w.confidence) for w in self.words
        )
        return Hypothesis(self.text, words, self.score)


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


# ------------------------------------------------------------------- beam search


def _char_confidences(
    segment: np.ndarray, ids: Sequence[int], blank: int
) -> np.ndarray:
    """Posterior of each character of a word at its best-aligned peak.

    The characters are aligned to the word's frames by CTC Viterbi (Graves et al.
    2006), first character at the first frame and last character at the last one
    (which is how pyctcdecode reports word frames), blanks optional between
    characters and required between two equal ones. A character's confidence is the
    maximum posterior of that character over its aligned frames: the same quantity
    :func:`words_from_path` reads off the greedy path, so both decoders agree when
    their paths do.

    Args:
        segment: ``(n, V)`` log-posteriors of the word's frames.
        ids: the word's ``L`` class ids.
        blank: the blank index.

    Returns:
        ``(L,)`` float64 probabilities in [0, 1].
    """
    best = _viterbi_peaks(segment, list(ids), blank)
    if best is None:
        # No alignment fits (cannot happen for pyctcdecode's own word frames):
        # each character's best posterior anywhere in the word.
        return np.array([np.exp(segment[:, c].max()) for c in ids], dtype=np.float64)
    return np.exp(np.array(best, dtype=np.float64))


def _viterbi_peaks(
    segment: np.ndarray, ids: list[int], blank: int
) -> list[float] | None:
    """:func:`_char_confidences`' alignment: the best log-posterior of each
    character over its aligned frames, or ``None`` when no alignment fits.

    States: char 0, blank, char 1, blank, ..., char L-1; at each frame a state is
    entered from itself, the state before, or (a character that differs from the
    one before it) the character before; ties go to the earlier of those three.
    Python floats on lists: a word is a few dozen frames and states, too small for
    numpy's per-call cost to pay off.
    """
    n, L = segment.shape[0], len(ids)
    if n < L:
        return None
    S = 2 * L - 1
    labels = [blank] * S
    labels[::2] = ids
    # Entering state s from s - 2 (skipping the blank between two characters).
    skip = [s >= 2 and s % 2 == 0 and labels[s] != labels[s - 2] for s in range(S)]
    emit = segment[:, labels].tolist()  # (n, S) float64 values
    inf = -math.inf
    delta = [inf] * S
    delta[0] = emit[0][0]
    back = [[0] * S]  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, n):
        prev, row, step = delta, emit[t], [0] * S
        delta = [0.0] * S
        for s in range(S):
            best, k = prev[s], 0
            if s >= 1 and prev[s - 1] > best:
                best, k = prev[s - 1], 1
            if skip[s] and prev[s - 2] > best:
                best, k = prev[s - 2], 2
            step[s] = k
            delta[s] = best + row[s]
        back.append(step)
    if not math.isfinite(delta[S - 1]):
        return None
    state = S - 1
    peaks = [inf] * L
    for t in range(n - 1, -1, -1):
        if state % 2 == 0:
            x = emit[t][state]
            if x > peaks[state // 2]:
                peaks[state // 2] = x
        state -= back[t][state]
    return peaks


# Set in each pool worker (a forked copy of the parent): the decoder to run.
_WORKER_DECODER: BeamSearchDecoder | None = None


def _init_worker(decoder: BeamSearchDecoder) -> None:
    global _WORKER_DECODER
    _WORKER_DECODER = decoder
    # Ctrl-C reaches the whole process group: the parent reports it in one line and
    # ends the pool; a worker's own KeyboardInterrupt would print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_decode(job: tuple[np.ndarray, float]) -> Hypothesis:
    assert _WORKER_DECODER is not None, "pool worker used without its initializer"
    return _WORKER_DECODER.decode(*job)


class BeamSearchDecoder:
    """CTC prefix beam search with an optional KenLM model: pyctcdecode's.

    Hypotheses are scored ``log P_ctc + alpha * ln P_lm + beta * words`` (shallow
    fusion, Hannun et al. 2014; pyctcdecode converts KenLM's log10 to natural log);
    a partial word that is no prefix of a known unigram costs ``unk_score_offset``.
    Without an LM it is a plain CTC prefix beam search (``alpha`` and ``beta`` then
    have no effect and :meth:`settings` reports them as ``None``); hot words work with
    or without an LM.

    The search is pyctcdecode 0.5.0's ``BeamSearchDecoderCTC.decode_beams`` (the
    version is pinned in pyproject.toml), its best beam, on the log-probs in
    float64 whatever the model's precision. It is used as is: the acoustic model
    dominates transcription time, so even a search 8-13x faster (a compiled copy of
    its frame loop, measured) makes ``asr transcribe`` only 1.2-2x faster
    (docs/benchmarks-decoding.md).

    Word times are pyctcdecode's word frames (first frame of the first character to
    the last frame of the last one) times ``frame_seconds``, as for the greedy
    decoder. Word confidence: the characters of the word are aligned to its frames
    by CTC Viterbi and each contributes the posterior of its character at its peak
    frame; the word's confidence is their mean (see :func:`_char_confidences`), the
    same definition as :func:`words_from_path`, so a word the LM changed away from
    what the acoustics say gets a low confidence. :meth:`decode_batch` spreads
    utterances over a fork-context process pool.

    Args:
        labels: the character of each class, index = class id, e.g.
            ``CharTokenizer.vocab``; the blank's entry is ignored.
        lm: a KenLM model (binary with its unigram list, or ARPA; see
            :func:`asr.lm.load_lm`), or ``None``.
        alpha: LM weight.
        beta: word insertion bonus (per word, added to the natural-log score).
        beam_width: hypotheses kept per frame.
        beam_prune_logp: drop hypotheses this far (natural log) below the best.
        token_min_logp: expand a class at a frame only if its log-posterior reaches
            this (the frame's argmax is always expanded).
        hotwords: words or phrases to favour (normalized like transcripts).
        hotword_weight: score bonus per hot word (and pro rata for a prefix).
        unk_score_offset: score of a word (or prefix) the LM does not know.
        workers: processes for :meth:`decode_batch` (default: the CPUs we may use).
        blank: the blank index.

    Raises:
        DecoderError: bad labels or settings.
        asr.lm.LMError: an LM that cannot be loaded.
    """

    name = "beam"

    def __init__(
        self,
        labels: Sequence[str],
        lm: str | os.PathLike[str] | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 32,
        beam_prune_logp: float = -10.0,
        token_min_logp: float = -5.0,
        hotwords: Iterable[str] | None = None,
        hotword_weight: float = 10.0,
        unk_score_offset: float = -10.0,
        workers: int | None = None,
        blank: int = 0,
    ) -> None:
        from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

        from asr.lm import load_kenlm, load_lm
        from asr.text import normalize

        self.labels = list(labels)
        self.blank = blank
        if not 0 <= blank < len(self.labels):
            raise DecoderError(f"blank index {blank} outside {len(self.labels)} labels")
        chars = [c for i, c in enumerate(self.labels) if i != blank]
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise DecoderError(
                f"labels must be distinct single characters besides the blank, "
                f"got {self.labels!r}"
            )
        if " " not in chars:
            raise DecoderError("labels need a space (the word separator)")
        if beam_width < 1:
            raise DecoderError(f"beam_width must be at least 1, got {beam_width}")
        if beam_prune_logp > 0 or token_min_logp > 0:
            raise DecoderError(
                "beam_prune_logp and token_min_logp are log-probabilities (<= 0), got "
                f"{beam_prune_logp} and {token_min_logp}"
            )
        self._ids = {c: i for i, c in enumerate(self.labels) if i != blank}
        self.lm = None if lm is None else Path(lm)
        self.alpha, self.beta = float(alpha), float(beta)
        self.beam_width = int(beam_width)
        self.beam_prune_logp = float(beam_prune_logp)
        self.token_min_logp = float(token_min_logp)
        self.hotwords = [h for h in (normalize(h) for h in hotwords or ()) if h]
        for h in self.hotwords:
            bad = sorted(set(h) - set(chars))
            if bad:
                raise DecoderError(
                    f"hot word {h!r} has characters the model cannot emit: {bad}"
                )
        self.hotword_weight = float(hotword_weight)
        self.unk_score_offset = float(unk_score_offset)
        self.workers = workers if workers else len(os.sched_getaffinity(0))
        self.n_unigrams = 0

        # pyctcdecode's labels: "" is its blank; the rest are ours.
        ctc_labels = ["" if i == blank else c for i, c in enumerate(self.labels)]
        language_model = None
        if self.lm is not None:
            files = load_lm(self.lm)
            self.n_unigrams = len(files.unigrams)
            # What build_ctcdecoder builds, with the KenLM model from our cache (a
            # LibriSpeech 4-gram takes seconds to load).
            language_model = LanguageModel(
                load_kenlm(files.path),
                files.unigrams,
                alpha=self.alpha,
                beta=self.beta,
                unk_score_offset=self.unk_score_offset,
            )
        # Alphabet(labels, is_bpe=False) directly: build_alphabet would only log
        # what it detected, and our labels are already in its normal form.
        self._decoder = BeamSearchDecoderCTC(
            Alphabet(ctc_labels, False), language_model
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus without reloading the LM (tuning)."""
        self.alpha, self.beta = float(alpha), float(beta)
        self._decoder.reset_params(alpha=self.alpha, beta=self.beta)

    def settings(self) -> dict[str, Any]:
        """Everything that determines the output, JSON-serializable (``workers``
        changes only the speed and is not included)."""
        has_lm = self.lm is not None
        return {
            "decoder": self.name,
            "lm": None if self.lm is None else str(self.lm),
            "unigrams": self.n_unigrams,
            "alpha": self.alpha if has_lm else None,
            "beta": self.beta if has_lm else None,
            "beam_width": self.beam_width,
            "beam_prune_logp": self.beam_prune_logp,
            "token_min_logp": self.token_min_logp,
            "unk_score_offset": self.unk_score_offset if has_lm else None,
            "hotwords": list(self.hotwords),
            "hotword_weight": self.hotword_weight if self.hotwords else None,
        }

    def close(self) -> None:
        """Release the LM from pyctcdecode's class-level registry (the kenlm model
        itself stays in :func:`asr.lm.load_kenlm`'s cache)."""
        decoder = getattr(self, "_decoder", None)
        if decoder is not None:
            decoder.cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: module globals may be gone
            pass

    def _beams(
        self, log_probs: np.ndarray
    ) -> tuple[str, list[tuple[str, int, int]], float]:
        """Best beam: text, words with ``[start, end)`` frames, combined score."""
        beams = self._decoder.decode_beams(
            log_probs.astype(np.float64),
            beam_width=self.beam_width,
            beam_prune_logp=self.beam_prune_logp,
            token_min_logp=self.token_min_logp,
            hotwords=self.hotwords,
            hotword_weight=self.hotword_weight,
        )
        text, _, word_frames, _, score = beams[0]
        return text, [(w, s, e) for w, (s, e) in word_frames], float(score)

    def decode(self, log_probs: np.ndarray, frame_seconds: float) -> Hypothesis:
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.labels):
            raise ValueError(
                f"log_probs must be (T, {len(self.labels)}), got {log_probs.shape}"
            )
        if log_probs.shape[0] == 0:
            return Hypothesis("", (), 0.0)
        text, frames, score = self._beams(log_probs)
        words = []
        for w, start, end in frames:
            conf = _char_confidences(
                log_probs[start:end], [self._ids[c] for c in w], self.blank
            )
            words.append(
                Word(
                    text=w,
                    start=round(start * frame_seconds, 3),
                    end=round(end * frame_seconds, 3),
                    confidence=round(float(conf.mean()), 4),
                )
            )
        return Hypothesis(text, tuple(words), score)

    def decode_batch(
        self, log_probs: list[np.ndarray], frame_seconds: float
    ) -> list[Hypothesis]:
        """Several utterances; in a fork-context process pool when there are several
        and ``workers > 1`` (pyctcdecode does not support spawn: kensho-technologies/
        pyctcdecode#65). The pool is made per call, so each worker is a copy of this
        decoder as it is now (after :meth:`set_weights`), LM included, with nothing
        pickled but the log-probs and the results."""
        workers = min(self.workers, len(log_probs))
        if workers <= 1:
            return [self.decode(lp, frame_seconds) for lp in log_probs]
        ctx = multiprocessing.get_context("fork")
        # Longest first, one at a time: the pool stays busy until the end.
        order = sorted(range(len(log_probs)), key=lambda i: -log_probs[i].shape[0])
        jobs = [(log_probs[i], frame_seconds) for i in order]
        with ctx.Pool(workers, initializer=_init_worker, initargs=(self,)) as pool:
            results = pool.map(_worker_decode, jobs, chunksize=1)
        out: list[Hypothesis] = [Hypothesis("")] * len(log_probs)
        for i, hyp in zip(order, results, strict=True):
            out[i] = hyp
        return out


# ------------------------------------------------------------------ settings

DECODER_SETTINGS_FILE = "decoder.json"
# What decoder.json sets for build_decoder; its "tuned" entry records how they were
# found (LM file, manifest, WER...).
TUNABLE_SETTINGS = (
    "alpha",
    "beta",
    "beam_width",
    "beam_prune_logp",
    "token_min_logp",
    "unk_score_offset",
)


def build_decoder(
    labels: Sequence[str],
    lm: str | os.PathLike[str] | None = None,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    beam_width: int | None = None,
    beam_prune_logp: float | None = None,
    token_min_logp: float | None = None,
    hotwords: Iterable[str] | None = None,
    hotword_weight: float | None = None,
    unk_score_offset: float | None = None,
    workers: int | None = None,
    blank: int = 0,
    tuned: dict[str, Any] | None = None,
) -> Decoder:
    """The decoder the settings ask for.

    Greedy when there is no LM, no hot words and ``beam_width`` is ``None`` or 1;
    otherwise :class:`BeamSearchDecoder`, with its defaults for settings left
    ``None``. ``build_decoder(labels, lm=lm, **load_decoder_settings(ckpt))`` works:
    the ``tuned`` record of ``decoder.json`` is accepted and ignored.

    Args:
        labels: the character of each class (e.g. ``CharTokenizer.vocab``).
        lm: a KenLM model file, or ``None``.
        alpha, beta, beam_width, beam_prune_logp, token_min_logp, hotwords,
            hotword_weight, unk_score_offset, workers: see
            :class:`BeamSearchDecoder`.
        blank: the blank index.
    """
    del tuned  # a record of how the settings were found, not a setting
    hotwords = list(hotwords or ())
    if lm is None and not hotwords and beam_width in (None, 1):
        if alpha is not None or beta is not None:
            log.warning("alpha and beta weigh a language model: ignored without one")
        return GreedyDecoder(list(labels), blank)
    given = {
        "alpha": alpha,
        "beta": beta,
        "beam_width": beam_width,
        "beam_prune_logp": beam_prune_logp,
        "token_min_logp": token_min_logp,
        "hotword_weight": hotword_weight,
        "unk_score_offset": unk_score_offset,
        "workers": workers,
    }
    kwargs = {k: v for k, v in given.items() if v is not None}
    return BeamSearchDecoder(labels, lm, hotwords=hotwords, blank=blank, **kwargs)


def _settings_path(checkpoint: str | os.PathLike[str]) -> Path:
    return Path(checkpoint).parent / DECODER_SETTINGS_FILE


def save_decoder_settings(
    checkpoint: str | os.PathLike[str], settings: dict[str, Any]
) -> Path:
    """Write ``settings`` to ``decoder.json`` in the checkpoint's directory, atomically
    (temporary file + rename). Returns its path."""
    path = _settings_path(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
    return path


def load_decoder_settings(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings :func:`save_decoder_settings` wrote beside ``checkpoint``, or
    ``{}`` if there are none.

    Raises:
        DecoderError: the file exists but is not a JSON object.
    """
    path = _settings_path(checkpoint)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as err:
        raise DecoderError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise DecoderError(f"{path}: expected a JSON object of decoder settings")
    for key in TUNABLE_SETTINGS:
        if key in settings and (problem := _setting_problem(key, settings[key])):
            raise DecoderError(f"{path}: bad decoder settings ({problem})")
    return settings


def _setting_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be decoder setting ``key`` (JSON gives no types), or
    ``None`` if it can: checked when decoder.json is read, not deep in a search."""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None:
        return None  # the decoder's default
    if key == "beam_width":
        if not (number and isinstance(value, int) and value >= 1):
            return f"beam_width must be a whole number >= 1, got {shown}"
    elif not (number and math.isfinite(value)):
        return f"{key} must be a finite number, got {shown}"
    return None


def resolve_decoder_settings(
    checkpoint: str | os.PathLike[str],
    lm: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for :func:`build_decoder`: tuned settings, then the command
    line's.

    With an ``lm``, the tuned ``alpha``, ``beta``, ``beam_width``... of the
    checkpoint's ``decoder.json`` (``asr lm tune``) apply (a warning if they were tuned
    with a different LM file); then every override that is not ``None`` (the command
    line's ``--alpha`` etc.) wins. Without an LM, only the overrides apply.

    Example::

        settings = resolve_decoder_settings(ckpt, args.lm, alpha=args.alpha)
        decoder = build_decoder(recognizer.tokenizer.vocab, **settings)
    """
    settings: dict[str, Any] = {}
    if lm is not None:
        saved = load_decoder_settings(checkpoint)
        if saved:
            tuned_lm = (saved.get("tuned") or {}).get("lm")
            if tuned_lm and Path(tuned_lm).resolve() != Path(lm).resolve():
                log.warning(
                    "%s: tuned with the LM %s, not %s; using its weights anyway",
                    _settings_path(checkpoint),
                    tuned_lm,
                    lm,
                )
            settings.update(
                {k: saved[k] for k in TUNABLE_SETTINGS if saved.get(k) is not None}
            )
        settings["lm"] = lm
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def make_decoder(
    labels: Sequence[str],
    checkpoint: str | os.PathLike[str] | None = None,
    lm: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Decoder:
    """The decoder that ``asr transcribe``, ``asr evaluate`` and the server use.

    Greedy when there is no language model and no decoder setting; otherwise
    :func:`build_decoder` with :func:`resolve_decoder_settings`: the settings tuned
    for ``checkpoint`` (its ``decoder.json``) when there is an LM, overridden by
    ``overrides`` (``alpha``, ``beta``, ``beam_width``...; ``None`` values are
    ignored).

    Raises:
        DecoderError: bad settings (the message names decoder.json when they came
            from it).
        asr.lm.LMError: an LM that cannot be loaded.
    """
    from asr.lm import LMError, load_lm

    given = {k: v for k, v in overrides.items() if v is not None}
    if lm is None and not given:
        return GreedyDecoder(list(labels))
    if lm is not None:
        load_lm(lm)  # a missing or broken LM is named as such, before the settings
    if checkpoint is not None:
        settings = resolve_decoder_settings(checkpoint, lm, **given)
    else:
        settings = {**given, **({"lm": lm} if lm is not None else {})}
    try:
        return build_decoder(list(labels), **settings)
    except (DecoderError, LMError):
        raise
    except (TypeError, ValueError) as err:
        # The command line's values are typed; a decoder.json beside the checkpoint
        # is only JSON, so a value of the wrong type ("alpha": "0.5") lands here.
        where = (
            f"{_settings_path(checkpoint)}: "
            if checkpoint is not None and lm is not None
            else ""
        )
        raise DecoderError(f"{where}bad decoder settings ({err})") from None
