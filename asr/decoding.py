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

# pyctcdecode's clipping of log-probabilities (its MIN_TOKEN_CLIP_P = 1e-15).
_MIN_LOGP = math.log(1e-15)
# pyctcdecode's frames of a partial word not started yet (its NULL_FRAMES).
_NULL_FRAMES = (-1, -1)
# pyctcdecode's LOG_BASE_CHANGE_FACTOR: KenLM's log10 to natural log.
_LOG10_TO_LN = 1.0 / math.log10(math.e)
# Memo key of every word outside the LM's vocabulary: KenLM scores them all as
# <unk> (same score, same state) and pyctcdecode adds its unknown-word offset.
_OOV = "\0<oov>"


def _candidates(log_probs: np.ndarray, token_min_logp: float) -> np.ndarray:
    """``(T, V)`` bool: the classes pyctcdecode expands at each frame, those that
    reach ``token_min_logp`` and the argmax (its ``_decode_logits``)."""
    strong = log_probs >= token_min_logp
    strong[np.arange(len(log_probs)), log_probs.argmax(axis=1)] = True
    return strong


def _compact_blank_runs(
    log_probs: np.ndarray, token_min_logp: float, blank: int, compact: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each frame's candidate classes (:func:`_candidates`, as int64 bit masks),
    and each run of "blank-only" frames merged into its first frame.

    A frame is blank-only when the blank is the only class pyctcdecode expands
    there (its argmax, and no other class reaches ``token_min_logp``): every beam
    is then extended by the blank alone. After the first frame of a run all beams
    end in a blank, so the following frames add the same constant to every beam:
    nothing merges, ranks and relative pruning do not change. Decoding one frame
    whose blank log-prob is the run's sum, expanding the blank alone, is therefore
    the same search (texts and word frames identical, scores equal up to float
    rounding). The merged frame keeps the run's candidate set ({blank}); computed
    from the summed log-prob it could differ: over a long run the sum can fall
    below another class's log-prob and make that class the argmax.

    On the demo model this removes 15% of the frames (5834 -> 4988 on 100 test
    utterances); the search's time is linear in frames.

    Args:
        log_probs: ``(T, V)`` float64 natural-log posteriors (already clipped),
            ``V <= 62``.
        token_min_logp: pyctcdecode's threshold for expanding a class.
        blank: the blank index.
        compact: merge the runs (else only the masks).

    Returns:
        ``(compact (T', V), starts (T',), masks (T',))``: ``starts[j]`` is the
        original index of compact frame ``j`` (non-blank-only frames map one to
        one), ``masks[j]`` has bit ``c`` set when class ``c`` is expanded there.
    """
    return _jit(_compact_frames)(log_probs, token_min_logp, blank, compact)


def _compact_frames(
    log_probs: np.ndarray, token_min_logp: float, blank: int, compact: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_compact_blank_runs`, compiled by numba (its blank sums add in frame
    order from 0.0, as ``np.bincount`` does)."""
    T, V = log_probs.shape
    masks = np.zeros(T, dtype=np.int64)
    keep = np.ones(T, dtype=np.bool_)
    n = 0
    for t in range(T):
        argmax = 0
        best = log_probs[t, 0]
        mask = 0
        for c in range(V):
            x = log_probs[t, c]
            if x > best:
                best = x
                argmax = c
            if x >= token_min_logp:
                mask |= 1 << c
        mask |= 1 << argmax
        masks[t] = mask
        if compact and t > 0 and mask == 1 << blank and masks[t - 1] == 1 << blank:
            keep[t] = False
        else:
            n += 1
    out = np.empty((n, V))
    starts = np.empty(n, dtype=np.int64)
    out_masks = np.empty(n, dtype=np.int64)
    j = -1
    for t in range(T):
        if keep[t]:
            j += 1
            out[j] = log_probs[t]
            out[j, blank] = 0.0 + log_probs[t, blank]
            starts[j] = t
            out_masks[j] = masks[t]
        else:
            out[j, blank] += log_probs[t, blank]
    return out, starts, out_masks


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
    best = _jit(_viterbi_peaks)(segment, np.asarray(ids, dtype=np.int64), blank)
    if best is None:
        # No alignment fits (cannot happen for pyctcdecode's own word frames):
        # each character's best posterior anywhere in the word.
        return np.array([np.exp(segment[:, c].max()) for c in ids], dtype=np.float64)
    return np.exp(best)


def _viterbi_peaks(
    segment: np.ndarray, ids: np.ndarray, blank: int
) -> np.ndarray | None:
    """:func:`_char_confidences`' alignment (compiled by numba): the best
    log-posterior of each character over its aligned frames, or ``None`` when no
    alignment fits.

    States: char 0, blank, char 1, blank, ..., char L-1; at each frame a state is
    entered from itself, the state before, or (a character that differs from the
    one before it) the character before; ties go to the earlier of those three.
    """
    n, L = segment.shape[0], ids.shape[0]
    S = 2 * L - 1
    labels = np.full(S, blank, dtype=np.int64)
    for k in range(L):
        labels[2 * k] = ids[k]
    back = np.zeros((n, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    delta = np.full(S, -np.inf)
    prev = np.empty(S)
    delta[0] = segment[0, labels[0]]
    for t in range(1, n):
        prev[:] = delta
        for s in range(S):
            best = prev[s]
            k = 0
            if s >= 1 and prev[s - 1] > best:
                best = prev[s - 1]
                k = 1
            if s >= 2 and s % 2 == 0 and labels[s] != labels[s - 2]:
                if prev[s - 2] > best:
                    best = prev[s - 2]
                    k = 2
            back[t, s] = k
            delta[s] = best + np.float64(segment[t, labels[s]])
    if n < L or not np.isfinite(delta[S - 1]):
        return None
    state = S - 1
    peaks = np.full(L, -np.inf)
    for t in range(n - 1, -1, -1):
        if state % 2 == 0:
            x = np.float64(segment[t, labels[state]])
            if x > peaks[state // 2]:
                peaks[state // 2] = x
        state -= back[t, state]
    return peaks


def _prefixes(words: Iterable[str]) -> dict[str, int]:
    """Every non-empty prefix of ``words`` -> the length of the shortest word with
    that prefix."""
    out: dict[str, int] = {}
    for w in words:
        n = len(w)
        for i in range(1, n + 1):
            p = w[:i]
            if out.get(p, n + 1) > n:
                out[p] = n
    return out


def _fast_language_model(base: type) -> type:
    """pyctcdecode's ``LanguageModel`` with the partial-word test done in a set.

    pyctcdecode asks, for every hypothesis at every frame, whether its unfinished
    word is a prefix of a known unigram, through a pygtrie ``CharTrie``: a third of
    the decoding time in our profile. A set of all prefixes answers the same
    question (``CharTrie.has_node(p) != 0`` iff ``p`` is a prefix of a unigram) in
    one hash lookup. ``score`` skips KenLM's vocabulary lookup for words in the
    unigram set (pyctcdecode keeps only unigrams the model has). Same values: the
    tests compare the whole search with pyctcdecode's own ``LanguageModel``.
    """

    import kenlm
    from pyctcdecode.constants import AVG_TOKEN_LEN, LOG_BASE_CHANGE_FACTOR

    class PrefixSetLanguageModel(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._prefix_set = frozenset(_prefixes(self._unigram_set))

        def score(
            self, prev_state: Any, word: str, is_last_word: bool = False
        ) -> tuple[float, Any]:
            # pyctcdecode's LanguageModel.score, minus a KenLM vocabulary lookup for
            # known words: the unigram set holds only words of the model.
            end_state = kenlm.State()
            lm_score = self._kenlm_model.BaseScore(prev_state, word, end_state)
            unigrams = self._unigram_set
            if word not in unigrams and (
                len(unigrams) > 0 or word not in self._kenlm_model
            ):
                lm_score += self.unk_score_offset
            if is_last_word:
                lm_score = lm_score + self._get_raw_end_score(end_state)
            lm_score = self.alpha * lm_score * LOG_BASE_CHANGE_FACTOR + self.beta
            return lm_score, end_state

        def score_partial_token(self, partial_token: str) -> float:
            if self._char_trie is None:  # no unigrams: every prefix is unknown
                unk = self.unk_score_offset
            else:
                unk = (
                    0.0 if partial_token in self._prefix_set else self.unk_score_offset
                )
            if len(partial_token) > AVG_TOKEN_LEN:
                unk = unk * len(partial_token) / AVG_TOKEN_LEN
            return unk

    return PrefixSetLanguageModel


def _fast_hotword_scorer(base: type) -> type:
    """pyctcdecode's ``HotwordScorer`` with prefix tests in a dict, not a pygtrie.

    Without hot words pyctcdecode still walks an empty trie for every hypothesis
    and frame (15% of the time in our profile). ``score_partial_token`` keeps its
    definition: weight x len(prefix) / len(shortest hot word with that prefix) (its
    trie is filled shortest first, so the first key it finds is the shortest).
    """

    class PrefixDictHotwordScorer(base):  # type: ignore[misc,valid-type]
        def __init__(self, hotwords: Sequence[str], weight: float) -> None:
            scorer = base.build_scorer(hotwords, weight=weight)
            super().__init__(scorer._match_ptn, scorer._char_trie, weight)
            words = [w for h in hotwords for w in h.split()]
            self._shortest = _prefixes(words)
            self._any = bool(words)

        def __contains__(self, item: str) -> bool:
            return item in self._shortest

        def score(self, text: str) -> float:
            if not self._any:
                return 0.0
            return super().score(text)

        def score_partial_token(self, token: str) -> float:
            n = self._shortest.get(token)
            return 0.0 if n is None else self._weight * len(token) / n

    return PrefixDictHotwordScorer


# The search kernel's status codes, modes, and the columns of its integer tables.
_DONE, _NEED_WORDS, _GROW_PREFIXES, _GROW_CHAIN, _GROW_TEXTS, _GROW_CHARS = range(6)
# How the kernel scores a text a space has just finished: ask Python for all of
# them (hot words: their score needs the text), ask only for those that might
# survive the frame (an LM), or score them itself (neither: every text scores
# the same).
_EAGER, _LAZY, _SELF = range(3)
# Prefix table columns: text id, word-part length, node in the unigram-prefix trie
# (-1: no unigram starts so), node in the hot-word trie (-1: none), parent prefix,
# last character, prefix after a space (-1: not made yet).
_P_TID, _P_LEN, _P_NODE, _P_HOT, _P_PARENT, _P_CHAR, _P_SPACE = range(7)
# Text table columns: the text before the last word, the prefix whose partial word
# is the last word.
_T_PARENT, _T_WORD = range(2)
# Beam columns: prefix, last class (V: none yet), last word-frame record, partial
# word's first and end frame (pyctcdecode's part_frames).
_B_PREFIX, _B_LAST, _B_CHAIN, _B_START, _B_END = range(5)
# Texts for Python to score: prefix, its text, the word's node in the
# unigram-prefix trie, (node -1) the word's classes in chars[start:end], and the
# frame's entry waiting for the score.
_N_PREFIX, _N_TEXT, _N_NODE, _N_START, _N_END, _N_ENTRY = range(6)
# Counters shared with the kernel.
_C_PREFIXES, _C_CHAIN, _C_BEAMS, _C_NEEDS, _C_FRAME, _C_STAMP, _C_TEXTS, _C_ENTRIES = (
    range(8)
)


def _search_frames(
    logits: np.ndarray,
    cls_table: np.ndarray,
    cls_len: np.ndarray,
    cls_row: np.ndarray,
    beam_width: int,
    beam_prune_logp: float,
    mode: int,
    has_lm: bool,
    beta: float,
    beta_unknown: float,
    plain_val: float,
    blank: int,
    space: int,
    beams: np.ndarray,
    scores: np.ndarray,
    new_beams: np.ndarray,
    new_scores: np.ndarray,
    prefixes: np.ndarray,
    prefix_vals: np.ndarray,
    children: np.ndarray,
    texts: np.ndarray,
    text_vals: np.ndarray,
    lm_off: np.ndarray,
    lm_chars: np.ndarray,
    lm_next: np.ndarray,
    lm_words: np.ndarray,
    hot_off: np.ndarray,
    hot_chars: np.ndarray,
    hot_next: np.ndarray,
    hot_partial: np.ndarray,
    dead_partial: np.ndarray,
    chain: np.ndarray,
    counts: np.ndarray,
    needs: np.ndarray,
    need_chars: np.ndarray,
    slot_stamp: np.ndarray,
    slot_entry: np.ndarray,
    e_key: np.ndarray,
    e_score: np.ndarray,
    e_made: np.ndarray,
    e_total: np.ndarray,
) -> int:
    """pyctcdecode's per-frame loop (``_decode_logits``) from frame
    ``counts[_C_FRAME]`` on, compiled by numba; :class:`_PrefixSearch` drives it
    and documents the correspondence.

    Returns ``_DONE`` after the last frame; ``_GROW_*`` when a table might
    overflow this frame (Python grows it and calls again: the frame starts over);
    ``_NEED_WORDS`` when a space this frame finishes partial words into texts
    whose score is needed and unknown: it has made the texts (``texts``) and their
    prefixes and listed them in ``needs``; Python fills their ``text_vals`` and
    calls again, and the frame goes on from its entries, kept in the scratch arrays
    (``e_*``; ``counts[_C_ENTRIES]`` of them).
    """
    V = logits.shape[1]
    NL = V + 1
    T = logits.shape[0]
    mask = slot_stamp.shape[0] - 1
    n_beams = counts[_C_BEAMS]
    for t in range(counts[_C_FRAME], T):
        classes = cls_table[cls_row[t]]
        n_classes = cls_len[cls_row[t]]
        counts[_C_FRAME] = t
        if counts[_C_NEEDS] > 0:
            # Python has scored the texts we asked for: finish this frame's entries
            # where we left them (the entries that waited become their texts').
            n_entries = counts[_C_ENTRIES]
            for i in range(counts[_C_NEEDS]):
                root = prefixes[needs[i, _N_PREFIX], _P_SPACE]
                prefix_vals[root, 0] = text_vals[prefixes[root, _P_TID]]
                prefix_vals[root, 1] = 0.0 if has_lm else hot_partial[0]
                e = needs[i, _N_ENTRY]
                e_key[e] = root * NL + space
                total = e_score[e] + prefix_vals[root, 0]
                if not has_lm:
                    total = total + prefix_vals[root, 1]
                e_total[e] = total
            counts[_C_NEEDS] = 0
            best = -np.inf
            for e in range(n_entries):
                if e_key[e] >= 0 and e_total[e] > best:
                    best = e_total[e]
            floor = best + beam_prune_logp
            pending = 0
        else:
            # Room for this frame's worst case.
            if counts[_C_PREFIXES] + (n_classes + 1) * n_beams > prefixes.shape[0]:
                return _GROW_PREFIXES
            if counts[_C_CHAIN] + n_beams > chain.shape[0]:
                return _GROW_CHAIN
            if counts[_C_TEXTS] + n_beams > texts.shape[0]:
                return _GROW_TEXTS
            # Extend every beam by every candidate class, merging equal prefixes in
            # pyctcdecode's order (classes outer, beams inner) with its log-add; a
            # merged entry keeps the frames of the last extension that made it. A
            # space after a partial word whose finished text is not made yet gets a
            # provisional key, -1 - prefix (no other extension can reach that text).
            stamp = counts[_C_STAMP] + 1
            counts[_C_STAMP] = stamp
            n_entries = 0
            n_provisional = 0
            for j in range(n_classes):
                c = classes[j]
                p = logits[t, c]
                for b in range(n_beams):
                    q = beams[b, _B_PREFIX]
                    last = beams[b, _B_LAST]
                    if c == blank or c == last:
                        key = q * NL + c
                    elif c == space:
                        q2 = prefixes[q, _P_SPACE]
                        if q2 >= 0:
                            key = q2 * NL + c
                        else:
                            key = -1 - q
                    else:
                        q2 = children[q, c]
                        if q2 < 0:  # a new prefix: the partial word plus c
                            q2 = counts[_C_PREFIXES]
                            counts[_C_PREFIXES] = q2 + 1
                            children[q, c] = q2
                            tid = prefixes[q, _P_TID]
                            length = prefixes[q, _P_LEN] + 1
                            node = prefixes[q, _P_NODE]
                            if node >= 0:
                                nxt = -1
                                for k in range(lm_off[node], lm_off[node + 1]):
                                    if lm_chars[k] == c:
                                        nxt = lm_next[k]
                                        break
                                node = nxt
                            hot = prefixes[q, _P_HOT]
                            if hot >= 0:
                                nxt = -1
                                for k in range(hot_off[hot], hot_off[hot + 1]):
                                    if hot_chars[k] == c:
                                        nxt = hot_next[k]
                                        break
                                hot = nxt
                            prefixes[q2, _P_TID] = tid
                            prefixes[q2, _P_LEN] = length
                            prefixes[q2, _P_NODE] = node
                            prefixes[q2, _P_HOT] = hot
                            prefixes[q2, _P_PARENT] = q
                            prefixes[q2, _P_CHAR] = c
                            prefixes[q2, _P_SPACE] = -1
                            for k in range(V):
                                children[q2, k] = -1
                            # _get_lm_beams: the text's score plus the partial word's
                            # (a hot-word prefix's, else the LM's: 0 for a prefix of a
                            # unigram, else the unknown-word offset, by length).
                            if hot >= 0:
                                partial = hot_partial[hot]
                            elif node >= 0 or not has_lm:
                                partial = 0.0
                            else:
                                partial = dead_partial[length]
                            if has_lm:
                                prefix_vals[q2, 0] = text_vals[tid] + partial
                                prefix_vals[q2, 1] = 0.0
                            else:
                                prefix_vals[q2, 0] = text_vals[tid]
                                prefix_vals[q2, 1] = partial
                        key = q2 * NL + c
                    s = scores[b] + p
                    h = (key * 2654435761) & mask
                    while True:
                        if slot_stamp[h] != stamp:
                            slot_stamp[h] = stamp
                            slot_entry[h] = n_entries
                            e_key[n_entries] = key
                            e_score[n_entries] = s
                            e_made[n_entries] = b
                            n_entries += 1
                            if key < 0:
                                n_provisional += 1
                            break
                        e = slot_entry[h]
                        if e_key[e] == key:
                            old = e_score[e]  # pyctcdecode's _sum_log_scores(old, s)
                            if old >= s:
                                e_score[e] = old + math.log(1 + math.exp(s - old))
                            else:
                                e_score[e] = s + math.log(1 + math.exp(old - s))
                            e_made[e] = b
                            break
                        h = (h + 1) & mask
            # Score with the LM (_get_lm_beams) what can be scored.
            best = -np.inf
            for e in range(n_entries):
                key = e_key[e]
                if key < 0:
                    continue
                q2 = key // NL
                if has_lm:
                    total = e_score[e] + prefix_vals[q2, 0]
                else:
                    total = (e_score[e] + prefix_vals[q2, 0]) + prefix_vals[q2, 1]
                e_total[e] = total
                if total > best:
                    best = total
            floor = best + beam_prune_logp
            pending = n_provisional
        # Drop those beam_prune_logp below the best, keep the best beam_width: a
        # stable sort by total, best first (heapq.nlargest's order), of the kept
        # entries in e_made[n_entries:] (bottom-up merge sort, no allocation).
        a = n_entries
        while True:
            n_kept = 0
            for e in range(n_entries):
                if e_key[e] >= 0 and e_total[e] >= floor:
                    e_made[a + n_kept] = e  # kept entries, in order
                    n_kept += 1
            z = a + n_kept
            width = 1
            while width < n_kept:
                for lo in range(0, n_kept, 2 * width):
                    i = lo
                    mid = min(lo + width, n_kept)
                    j = mid
                    hi = min(lo + 2 * width, n_kept)
                    for k in range(lo, hi):
                        if j >= hi or (
                            i < mid and e_total[e_made[a + i]] >= e_total[e_made[a + j]]
                        ):
                            e_made[z + k] = e_made[a + i]
                            i += 1
                        else:
                            e_made[z + k] = e_made[a + j]
                            j += 1
                for k in range(n_kept):
                    e_made[a + k] = e_made[z + k]
                width *= 2
            if pending == 0:
                break
            pending = 0
            # Texts the space finishes (provisional entries). _LAZY: an entry whose
            # total cannot reach the others' floor, or the beam_width-th best of the
            # others, is pruned whatever its LM score (then the others set the floor
            # and fill the beam, and their order stands): the text's score is at
            # most the text before's plus beta, and for a word outside the unigrams
            # plus beta_unknown (alpha x unk_score_offset in natural log + beta), as
            # the LM's log-prob is <= 0, alpha >= 0, unk_score_offset <= 0 (float
            # rounding is monotonic). The rest must be scored.
            cut = floor
            if mode == _LAZY and n_kept >= beam_width:
                cut = max(cut, e_total[e_made[a + beam_width - 1]])
            n_chars = 0
            for e in range(n_entries):
                key = e_key[e]
                if key < 0:
                    q = -1 - key
                    node = prefixes[q, _P_NODE]
                    gain = beta if node >= 0 and lm_words[node] else beta_unknown
                    bound = e_score[e] + (text_vals[prefixes[q, _P_TID]] + gain)
                    if mode != _LAZY or bound >= cut:
                        if prefixes[q, _P_NODE] < 0:
                            n_chars += prefixes[q, _P_LEN]
            if mode != _SELF and n_chars > need_chars.shape[0]:
                return _GROW_CHARS
            n_needs = 0
            n_chars = 0
            for e in range(n_entries):
                key = e_key[e]
                if key >= 0:
                    continue
                q = -1 - key
                node = prefixes[q, _P_NODE]
                gain = beta if node >= 0 and lm_words[node] else beta_unknown
                bound = e_score[e] + (text_vals[prefixes[q, _P_TID]] + gain)
                if mode == _LAZY and bound < cut:
                    e_total[e] = -np.inf  # pruned
                    continue
                # pyctcdecode's merge_tokens(text, word): a new text, and its
                # prefix with no partial word.
                tid = counts[_C_TEXTS]
                counts[_C_TEXTS] = tid + 1
                texts[tid, _T_PARENT] = prefixes[q, _P_TID]
                texts[tid, _T_WORD] = q
                root = counts[_C_PREFIXES]
                counts[_C_PREFIXES] = root + 1
                prefixes[root, _P_TID] = tid
                prefixes[root, _P_LEN] = 0
                prefixes[root, _P_NODE] = 0
                prefixes[root, _P_HOT] = 0
                prefixes[root, _P_PARENT] = -1
                prefixes[root, _P_CHAR] = -1
                prefixes[root, _P_SPACE] = root
                for k in range(V):
                    children[root, k] = -1
                prefixes[q, _P_SPACE] = root
                if mode == _SELF:  # its score is known: the entry is that prefix's
                    text_vals[tid] = plain_val
                    prefix_vals[root, 0] = plain_val
                    prefix_vals[root, 1] = hot_partial[0]
                    e_key[e] = root * NL + space
                    total = (e_score[e] + plain_val) + hot_partial[0]
                    e_total[e] = total
                    if total > best:
                        best = total
                    continue
                node = prefixes[q, _P_NODE]
                needs[n_needs, _N_PREFIX] = q
                needs[n_needs, _N_TEXT] = prefixes[q, _P_TID]
                needs[n_needs, _N_NODE] = node
                needs[n_needs, _N_START] = n_chars
                if node < 0:  # not a unigram prefix: spell it out
                    length = prefixes[q, _P_LEN]
                    r = q
                    for k in range(length - 1, -1, -1):
                        need_chars[n_chars + k] = prefixes[r, _P_CHAR]
                        r = prefixes[r, _P_PARENT]
                    n_chars += length
                needs[n_needs, _N_END] = n_chars
                needs[n_needs, _N_ENTRY] = e
                n_needs += 1
            if n_needs > 0:
                counts[_C_NEEDS] = n_needs
                counts[_C_ENTRIES] = n_entries
                return _NEED_WORDS
            floor = best + beam_prune_logp
            if mode != _SELF:
                break  # the provisional entries were all pruned
        n_new = min(beam_width, n_kept)
        for r in range(n_new):
            e = e_made[a + r]
            key = e_key[e]
            q2 = key // NL
            c = key - q2 * NL
            b = e_made[e]
            link = beams[b, _B_CHAIN]
            start = beams[b, _B_START]
            end = beams[b, _B_END]
            if c == blank:
                pass
            elif c == beams[b, _B_LAST]:
                end = t + 1
            elif c == space:
                if prefixes[beams[b, _B_PREFIX], _P_LEN] > 0:  # a word ends
                    n = counts[_C_CHAIN]
                    chain[n, 0] = start
                    chain[n, 1] = end
                    chain[n, 2] = link
                    counts[_C_CHAIN] = n + 1
                    link = n
                start = -1
                end = -1
            elif start < 0:
                start = t
                end = t + 1
            else:
                end = t + 1
            new_beams[r, _B_PREFIX] = q2
            new_beams[r, _B_LAST] = c
            new_beams[r, _B_CHAIN] = link
            new_beams[r, _B_START] = start
            new_beams[r, _B_END] = end
            new_scores[r] = e_score[e]
        for r in range(n_new):
            for k in range(5):
                beams[r, k] = new_beams[r, k]
            scores[r] = new_scores[r]
        n_beams = n_new
        counts[_C_BEAMS] = n_beams
    counts[_C_FRAME] = T
    return _DONE


_JITTED: dict[Any, Any] = {}


def _jit(fn: Any) -> Any:
    """``fn`` compiled by numba, on first use (importing numba takes a second and
    compiling a few; the machine code is cached on disk beside this module, or in
    the user's cache directory when that is not writable)."""
    jitted = _JITTED.get(fn)
    if jitted is None:
        import numba

        jitted = _JITTED[fn] = numba.njit(cache=True, nogil=True)(fn)
    return jitted


class _Trie:
    """A character trie of ``words`` as CSR arrays for the kernel: node 0 is the
    empty prefix; the children of node ``n`` are ``next[off[n]:off[n + 1]]``, by
    class ``chars[...]`` (``index``: character -> class); ``word[n]``: node ``n``
    spells one of the words. Characters outside ``index`` end a word there (no
    class can spell it further)."""

    def __init__(self, words: Iterable[str], index: dict[str, int]) -> None:
        child: dict[int, int] = {}
        parent, char, word = [-1], [-1], [False]
        for w in words:
            node = 0
            for ch in w:
                c = index.get(ch)
                if c is None:
                    break
                key = node << 16 | c
                nxt = child.get(key)
                if nxt is None:
                    nxt = child[key] = len(parent)
                    parent.append(node)
                    char.append(c)
                    word.append(False)
                node = nxt
            else:
                word[node] = True
        n = len(parent)
        parents = np.array(parent[1:], dtype=np.int64)
        self.off = np.zeros(n + 1, dtype=np.int64)
        self.off[1:] = np.cumsum(np.bincount(parents, minlength=n))
        self.next = np.argsort(parents, kind="stable").astype(np.int64) + 1
        self.chars = np.array(char, dtype=np.int64)[self.next]
        self.word = np.array(word, dtype=np.bool_)
        self._parent, self._char = parent, char
        self._text: dict[int, str] = {0: ""}

    def __len__(self) -> int:
        return len(self._parent)

    def text(self, node: int, spell: Sequence[str]) -> str:
        """The prefix node ``node`` spells (``spell``: class -> character)."""
        out = self._text.get(node)
        if out is None:
            out = self._text[node] = (
                self.text(self._parent[node], spell) + spell[self._char[node]]
            )
        return out


def _check_bound(score: float, lm: Any, word: str) -> None:
    """The search skips texts by a bound that holds when KenLM's log-probs are
    <= 0 (any normalized n-gram model, e.g. lmplz's): check each one it computes."""
    if lm.alpha >= 0 and lm.unk_score_offset <= 0 and score > lm.beta:
        path = os.fsdecode(lm._kenlm_model.path)
        raise DecoderError(
            f"{path}: KenLM scored {word!r} above probability 1 (a model that is "
            f"not normalized); the beam search needs one that is"
        )


class _PrefixSearch:
    """pyctcdecode 0.5.0's search, ``BeamSearchDecoderCTC._decode_logits`` for
    character labels with ``prune_history=False``, with its per-frame loop compiled.

    The search is the same step for step, and so are its outputs (texts, word
    frames, LM states, scores bit for bit; tests/test_decoding.py compares them
    with pyctcdecode's ``_decode_logits`` and ``decode_beams``, built from its own
    ``LanguageModel`` and ``HotwordScorer``, on random and real log-probabilities):

    - at each frame every beam is extended by each class that reaches
      ``token_min_logp`` or is the argmax, in the order pyctcdecode iterates its
      ``set`` of them (:meth:`_class_rows`), beams in their order;
    - extensions with equal (text, partial word, last character) are merged in that
      order with pyctcdecode's log-add; the merged entry keeps the last extension's
      frames (as ``_merge_beams`` does);
    - each is scored as ``_get_lm_beams`` scores it: acoustic score + (LM and
      hot-word score of the text + partial-word score); without an LM, (acoustic +
      hot-word score of the text) + hot-word score of the partial word;
    - those ``beam_prune_logp`` below the best are dropped, the best
      ``beam_width`` kept, ties in order (``heapq.nlargest``);
    - the end of the utterance as pyctcdecode ends it (:meth:`_last_step`).

    What differs is the bookkeeping. pyctcdecode builds and hashes strings and
    7-tuples for every (beam, class) pair and frame, and scores every merged beam
    through dictionaries: 7-9 times flashlight's C++ decoder in tools/
    bench_decode.py. Here a prefix is a row of integers (text id, partial-word
    length, its node in a trie of the unigrams and in one of the hot words, parent,
    character), transitions are memoized per (prefix, class), and the partial-word
    score is a table lookup by trie node (pyctcdecode's rule: 0 for a prefix of a
    unigram, else ``unk_score_offset``, scaled by the length beyond 6 characters;
    a hot-word prefix's score computed by the ``HotwordScorer`` itself). The frame
    loop runs in numba (:func:`_search_frames`). Python does what needs strings or
    KenLM: when a space finishes partial words into texts whose score is needed,
    the kernel returns and :meth:`_score_texts` scores them with the
    ``LanguageModel``, memoized across utterances by (kenlm state, word) -- kenlm
    states compare by their context words, which determine the score; every word
    outside the LM's vocabulary scores as ``<unk>``, so they share one key.

    Fewer LM calls than pyctcdecode, same result: a text's score is needed only if
    its entry can survive the frame. With ``alpha >= 0`` and ``unk_score_offset <=
    0`` it is at most the text before's plus ``beta`` (plus the unknown-word
    penalty for a word outside the unigrams), so an entry whose bound is below the
    others' floor, or below the ``beam_width``-th best of the others, is dropped
    unscored (see the kernel); this skips 55-60% of them on the demo model.
    """

    # Cross-utterance memos are dropped (between utterances) past this many entries.
    MAX_MEMO = 500_000

    def __init__(self, decoder: Any, hotword_scorer: Any) -> None:
        from pyctcdecode.decoder import BeamSearchDecoderCTC

        assert isinstance(decoder, BeamSearchDecoderCTC) and not decoder._is_bpe, (
            "character-label pyctcdecode decoder expected",
            decoder,
        )
        vocab = decoder._idx2vocab
        self._chars: list[str] = [vocab[i] for i in range(len(vocab))]
        self._decoder = decoder
        self._hot = hotword_scorer
        self.V = len(self._chars)
        self.blank = self._chars.index("")
        self.space = self._chars.index(" ")
        index = {ch: i for i, ch in enumerate(self._chars) if ch not in ("", " ")}
        lm = decoder._language_model
        # The unigrams' prefixes, as pyctcdecode's LanguageModel knows them.
        unigrams = sorted(lm._unigram_set) if lm is not None else []
        self._lm_trie = _Trie(unigrams, index)
        # Hot words: their trie, shortest first as pyctcdecode fills its own, and the
        # partial-word score of each node, from the scorer itself.
        words = sorted(hotword_scorer._char_trie.keys(), key=len)
        self._hot_words = bool(words)
        self._hot_trie = hot = _Trie(words, index)
        self._hot_partial = np.array(
            [
                float(hotword_scorer.score_partial_token(hot.text(n, self._chars)))
                for n in range(len(hot))
            ]
        )
        self._dead_partial = np.zeros(0)
        # Candidate sets -> their row in _cls_table (see _class_rows).
        self._cls_rows: dict[Any, int] = {}
        self._cls_table = np.zeros((64, self.V), dtype=np.int64)
        self._cls_len = np.zeros(64, dtype=np.int64)
        self.reset()
        self._alloc(1 << 12, 1 << 10, 1 << 8, 8)

    def reset(self) -> None:
        """Forget the cross-utterance memos (after an LM weight changes)."""
        self._lm_word: dict[tuple[Any, str], tuple[float, Any]] = {}
        self._lm_end: dict[tuple[Any, str], tuple[float, Any]] = {}

    def _alloc(self, n_prefixes: int, n_chain: int, n_texts: int, width: int) -> None:
        V = self.V
        self._prefixes = np.zeros((n_prefixes, 7), dtype=np.int64)
        self._prefix_vals = np.zeros((n_prefixes, 2))
        self._children = np.full((n_prefixes, V), -1, dtype=np.int32)
        self._chain = np.zeros((n_chain, 3), dtype=np.int64)
        self._texts = np.zeros((n_texts, 2), dtype=np.int64)
        self._text_vals = np.zeros(n_texts)
        self._width = width
        self._beams = np.zeros((width, 5), dtype=np.int64)
        self._scores = np.zeros(width)
        self._new_beams = np.zeros((width, 5), dtype=np.int64)
        self._new_scores = np.zeros(width)
        self._needs = np.zeros((width, 6), dtype=np.int64)
        self._need_chars = np.zeros(1 << 10, dtype=np.int64)
        n = V * width
        self._slot_stamp = np.zeros(1 << (2 * n).bit_length(), dtype=np.int64)
        self._slot_entry = np.zeros_like(self._slot_stamp)
        self._e_key = np.zeros(n, dtype=np.int64)
        self._e_score = np.zeros(n)
        self._e_made = np.zeros(3 * n, dtype=np.int64)
        self._e_total = np.zeros(n)
        self._stamp = 0  # the hash table's generation, kept across utterances

    def _grow(self, name: str, n: int) -> None:
        old = getattr(self, name)
        new = np.zeros((max(n, 2 * len(old)), *old.shape[1:]), dtype=old.dtype)
        new[: len(old)] = old
        setattr(self, name, new)

    def _class_rows(self, candidates: np.ndarray) -> np.ndarray:
        """Each frame's candidate classes in the order pyctcdecode iterates them,
        ``set(np.where(col >= token_min_logp)[0]) | {col.argmax()}``.

        That is the iteration order of a CPython set of small integers, a function
        of the set alone (when any class reaches the threshold the argmax is one of
        them and the union adds nothing; numpy integers hash as Python ints), so it
        is computed once per distinct set, the same way, and kept in a table.

        Args:
            candidates: ``(T, V)`` bool (:func:`_candidates`), or ``(T,)`` int64
                bit masks (:func:`_compact_blank_runs`).

        Returns:
            ``(T,)`` int64: frame ``t``'s classes are
            ``_cls_table[row[t], :_cls_len[row[t]]]``.
        """
        V = self.V
        if candidates.ndim == 1:
            keys: list[Any] = candidates.tolist()
        else:
            packed = np.packbits(candidates, axis=1, bitorder="little")
            keys = [row.tobytes() for row in packed]
        rows = list(map(self._cls_rows.get, keys))
        if None in rows:
            for t, key in enumerate(keys):
                if rows[t] is None:
                    rows[t] = self._cls_rows.get(key)
                if rows[t] is None:
                    if isinstance(key, int):
                        present = [c for c in range(V) if key >> c & 1]
                    else:
                        bits = np.unpackbits(
                            np.frombuffer(key, dtype=np.uint8), bitorder="little"
                        )
                        present = np.flatnonzero(bits[:V]).tolist()
                    order = list(set(present) | {present[0]})
                    k = rows[t] = self._cls_rows[key] = len(self._cls_rows)
                    if k >= len(self._cls_table):
                        self._grow("_cls_table", k + 1)
                        self._grow("_cls_len", k + 1)
                    self._cls_table[k, : len(order)] = order
                    self._cls_len[k] = len(order)
        return np.array(rows, dtype=np.int64)

    def decode_logits(
        self,
        logits: np.ndarray,
        beam_width: int,
        beam_prune_logp: float,
        token_min_logp: float,
        candidates: np.ndarray | None = None,
        n_best: int | None = None,
    ) -> list[Any]:
        """pyctcdecode's ``_decode_logits(logits, beam_width, beam_prune_logp,
        token_min_logp, prune_history=False, hotword_scorer)``.

        Args:
            logits: ``(T, V)`` float64 log-posteriors, clipped as pyctcdecode clips
                them.
            beam_width, beam_prune_logp, token_min_logp: pyctcdecode's.
            candidates: the classes to expand at each frame, ``(T, V)`` bool or
                ``(T,)`` int64 bit masks; default: pyctcdecode's rule on
                ``logits`` (:func:`_candidates`). Blank-run compaction passes the
                original frames' sets.
            n_best: return only this many beams.

        Returns:
            Its output beams ``(text, LM state, [(word, (first frame, end
            frame))], acoustic score, combined score)``, best first.
        """
        if len(self._lm_word) + len(self._lm_end) > self.MAX_MEMO:
            self.reset()
        lm = self._decoder._language_model
        hot = self._hot
        V = self.V
        logits = np.ascontiguousarray(logits, dtype=np.float64)
        T = logits.shape[0]
        if beam_width > self._width:
            self._alloc(
                len(self._prefixes), len(self._chain), len(self._text_vals), beam_width
            )
        if len(self._dead_partial) < T + 2:
            # The LM's score of a partial word no unigram starts with, by length.
            dead = [
                lm.score_partial_token("\0" * n) if lm is not None else 0.0
                for n in range(2 * T + 2)
            ]
            self._dead_partial = np.array(dead, dtype=np.float64)
        if candidates is None:
            candidates = _candidates(logits, token_min_logp)
        cls_row = self._class_rows(candidates)

        # Texts (the words before the partial word), by id: in the kernel's tables
        # the text before the last word, the last word, and its score as
        # _get_lm_beams adds it (LM + hot-word score; without an LM, the hot-word
        # score); here pyctcdecode's raw LM score and kenlm state of it (with an
        # LM), and the text itself (with hot words, whose score needs it).
        has_lm = lm is not None
        if has_lm:
            self._t_raw, self._t_state = [0.0], [lm.get_start_state()]
            self._text_vals[0] = 0.0
        else:
            self._t_raw, self._t_state = [], []
            self._text_vals[0] = hot.score("")
        self._t_text = [""]
        self._texts[0] = (-1, -1)
        if self._hot_words:
            mode, beta = _EAGER, 0.0
        elif has_lm and lm.alpha >= 0 and lm.unk_score_offset <= 0:
            mode, beta = _LAZY, float(lm.beta)
        elif has_lm:
            mode, beta = _EAGER, 0.0
        else:
            mode, beta = _SELF, 0.0
        # The most a word outside the unigrams can add (LanguageModel.score with a
        # KenLM log-prob of 0); with no unigrams, pyctcdecode may not add the offset.
        beta_unknown = beta
        if mode == _LAZY and lm._unigram_set:
            beta_unknown = lm.alpha * lm.unk_score_offset * _LOG10_TO_LN + lm.beta
        # Prefix 0: the empty text, no partial word; beam 0 extends it.
        self._prefixes[0] = (0, 0, 0, 0, -1, -1, 0)
        self._prefix_vals[0] = (
            self._text_vals[0],
            0.0 if has_lm else self._hot_partial[0],
        )
        self._children[0] = -1
        self._beams[0] = (0, V, -1, -1, -1)
        self._scores[0] = 0.0
        counts = np.zeros(8, dtype=np.int64)
        counts[_C_PREFIXES] = counts[_C_BEAMS] = counts[_C_TEXTS] = 1
        counts[_C_STAMP] = self._stamp
        kernel = _jit(_search_frames)
        lm_trie, hot_trie = self._lm_trie, self._hot_trie
        args = None
        while True:
            if args is None:  # (again after a table grew)
                args = (
                    logits, self._cls_table, self._cls_len, cls_row,
                    beam_width, beam_prune_logp, mode, has_lm, beta, beta_unknown,
                    float(self._text_vals[0]), self.blank, self.space,
                    self._beams, self._scores, self._new_beams, self._new_scores,
                    self._prefixes, self._prefix_vals, self._children,
                    self._texts, self._text_vals,
                    lm_trie.off, lm_trie.chars, lm_trie.next, lm_trie.word,
                    hot_trie.off, hot_trie.chars, hot_trie.next, self._hot_partial,
                    self._dead_partial, self._chain, counts,
                    self._needs, self._need_chars,
                    self._slot_stamp, self._slot_entry,
                    self._e_key, self._e_score, self._e_made, self._e_total,
                )  # fmt: skip
            status = kernel(*args)
            if status == _DONE:
                break
            if status == _NEED_WORDS:
                self._score_texts(counts)
                continue
            args = None
            if status == _GROW_PREFIXES:
                n = int(counts[_C_PREFIXES]) + (V + 1) * self._width
                self._grow("_prefixes", n)
                self._grow("_prefix_vals", n)
                self._grow("_children", n)
            elif status == _GROW_CHAIN:
                self._grow("_chain", int(counts[_C_CHAIN]) + self._width)
            elif status == _GROW_TEXTS:
                self._grow("_texts", int(counts[_C_TEXTS]) + self._width)
                self._grow("_text_vals", int(counts[_C_TEXTS]) + self._width)
            else:
                self._grow("_need_chars", self._width * (T + 1))
        self._stamp = int(counts[_C_STAMP])

        self._text_cache: dict[int, str] = {0: ""}
        self._word_cache: dict[int, str] = {}
        return self._last_step(
            int(counts[_C_BEAMS]), beam_width, beam_prune_logp, n_best, mode == _LAZY
        )

    def _last_step(
        self,
        n_beams: int,
        beam_width: int,
        beam_prune_logp: float,
        n_best: int | None,
        bounded: bool,
    ) -> list[Any]:
        """pyctcdecode's end of ``_decode_logits``, step for step: finish each
        beam's partial word, merge equal texts (``_merge_beams``: log-add in order,
        the last one's fields), score them with the LM and sentence end
        (``_get_lm_beams`` with ``is_eos``: the merged beam's own text and last
        word, as pyctcdecode does; KenLM scores memoized), prune, keep the best,
        format.

        Texts are compared by id (a text and partial word is the text its space
        leads to, or, not made yet, no other beam's). With ``n_best == 1`` and
        ``bounded`` (the kernel's ``_LAZY`` conditions: a text's score is at most
        the text before's plus beta), the beams are scored best bound first until
        none left can reach the best score: the same winner, fewer LM calls.
        Strings and word frames are built for the beams returned only."""
        from pyctcdecode.decoder import (
            _normalize_whitespace,
            _sort_and_trim_beams,
            _sum_log_scores,
        )

        lm = self._decoder._language_model
        hot = self._hot
        prefixes = self._prefixes
        beams = self._beams[:n_beams].tolist()
        scores = self._scores[:n_beams].tolist()
        rows = prefixes[[row[_B_PREFIX] for row in beams]].tolist()
        merged: dict[int, list[Any]] = {}  # text id -> [beam, acoustic score]
        for b, row in enumerate(rows):
            if row[_P_LEN] == 0:
                key = row[_P_TID]
            elif row[_P_SPACE] >= 0:
                key = int(prefixes[row[_P_SPACE], _P_TID])
            else:
                key = -1 - beams[b][_B_PREFIX]
            entry = merged.get(key)
            if entry is None:
                merged[key] = [b, scores[b]]
            else:
                entry[0] = b
                entry[1] = _sum_log_scores(entry[1], scores[b])
        entries = list(merged.values())
        scorer = hot.score if self._hot_words else None
        partial = hot.score_partial_token("")

        def word_of(b: int) -> str:
            node = rows[b][_P_NODE]
            if node >= 0:
                return self._lm_trie.text(node, self._chars)
            return self._word_of(beams[b][_B_PREFIX])

        def new_text(b: int) -> str:
            text = self._text_of(rows[b][_P_TID])
            word = word_of(b)
            return text + " " + word if text and word else text or word

        def score(i: int) -> tuple[Any, float]:
            """Entry i's LM end state and combined score (_get_lm_beams)."""
            b, logit = entries[i]
            if lm is None:
                text_score = scorer(new_text(b)) if scorer else 0.0
                return None, logit + text_score + partial
            tid = rows[b][_P_TID]
            state = self._t_state[tid]
            word = word_of(b)
            key = (state, word if word in lm._kenlm_model else _OOV)
            hit = self._lm_end.get(key)
            if hit is None:
                hit = self._lm_end[key] = lm.score(state, word, is_last_word=True)
                _check_bound(hit[0], lm, word)
            raw = self._t_raw[tid] + hit[0]
            lm_score = raw + (scorer(new_text(b)) if scorer else 0.0)
            return hit[1], logit + lm_score

        if n_best == 1 and bounded and lm is not None and scorer is None:
            beta = lm.beta
            bounds = [
                logit + (self._t_raw[rows[b][_P_TID]] + beta) for b, logit in entries
            ]
            order = sorted(range(len(entries)), key=bounds.__getitem__, reverse=True)
            best = best_total = None
            for i in order:
                if best_total is not None and bounds[i] < best_total:
                    break  # no entry left can reach the best
                state, total = score(i)
                if best is None or (total, -i) > (best_total, -best[0]):
                    best, best_total = (i, state), total
            assert best is not None
            kept = [(best[0], best[1], best_total)]
        else:
            scored = [(i, *score(i)) for i in range(len(entries))]
            max_score = max([x[-1] for x in scored])
            scored = [x for x in scored if x[-1] >= max_score + beam_prune_logp]
            kept = _sort_and_trim_beams(scored, beam_width)[:n_best]  # type: ignore[arg-type]
        out = []
        for i, state, total in kept:
            b, logit = entries[i]
            text = new_text(b)
            _, _, link, start, end = beams[b]
            frames = self._frames(link)
            if rows[b][_P_LEN] > 0:
                frames.append((start, end))
            words = list(zip(text.split(), frames))  # noqa: B905 (as pyctcdecode)
            out.append((_normalize_whitespace(text), state, words, logit, total))
        return out

    def _word_of(self, q: int) -> str:
        """Prefix ``q``'s partial word (memoized per utterance)."""
        word = self._word_cache.get(q)
        if word is None:
            _, length, node, _, parent, char, _ = self._prefixes[q].tolist()
            if node >= 0:
                word = self._lm_trie.text(node, self._chars)
            elif length == 0:
                word = ""
            else:
                word = self._word_of(parent) + self._chars[char]
            self._word_cache[q] = word
        return word

    def _text_of(self, tid: int) -> str:
        """Text ``tid`` (words before a partial word), memoized per utterance."""
        text = self._text_cache.get(tid)
        if text is None:
            parent, word = self._texts[tid].tolist()
            before = self._text_of(parent)
            word = self._word_of(word)
            text = self._text_cache[tid] = before + " " + word if before else word
        return text

    def _frames(self, link: int) -> list[tuple[int, int]]:
        """The finished words' ``(first, end)`` frames from chain record ``link``."""
        out = []
        while link >= 0:
            start, end, link = self._chain[link].tolist()
            out.append((start, end))
        out.reverse()
        return out

    def _score_texts(self, counts: np.ndarray) -> None:
        """Score the texts the kernel made (``needs``: a text and the word that
        finishes it), as ``_get_lm_beams`` scores a new text: (KenLM score of the
        word in the text's state, memoized) + text's score + hot-word score."""
        lm = self._decoder._language_model
        scorer = self._hot.score if self._hot_words else None
        n = int(counts[_C_NEEDS])
        first = int(counts[_C_TEXTS]) - n  # the kernel numbered them in order
        needs = self._needs[:n].tolist()
        chars = self._need_chars[: needs[-1][_N_END]].tolist()
        spell, node_text = self._chars, self._lm_trie.text
        t_text = self._t_text
        vals = []
        add_val = vals.append
        if lm is None:  # hot words: score the texts
            for _, tid, node, start, end, _ in needs:
                if node >= 0:
                    word = node_text(node, spell)
                else:
                    word = "".join([spell[c] for c in chars[start:end]])
                text = t_text[tid]
                text2 = text + " " + word if text else word
                t_text.append(text2)
                add_val(scorer(text2))  # type: ignore[misc]
            self._text_vals[first : first + n] = vals
            return
        memo = self._lm_word
        get = memo.get
        score = lm.score
        vocab = lm._kenlm_model
        t_raw, t_state = self._t_raw, self._t_state
        add_raw, add_state = t_raw.append, t_state.append
        for _, tid, node, start, end, _ in needs:
            if node >= 0:
                key = word = node_text(node, spell)
            else:  # no unigram starts so: most likely not in the LM at all
                word = "".join([spell[c] for c in chars[start:end]])
                key = word if word in vocab else _OOV
            state = t_state[tid]
            hit = get((state, key))
            if hit is None:
                hit = memo[(state, key)] = score(state, word, False)
                _check_bound(hit[0], lm, word)
            raw = t_raw[tid] + hit[0]
            add_raw(raw)
            add_state(hit[1])
            if scorer is None:
                add_val(raw + 0.0)
            else:
                text = t_text[tid]
                text2 = text + " " + word if text else word
                t_text.append(text2)
                add_val(raw + scorer(text2))
        self._text_vals[first : first + n] = vals


# Set in each pool worker (a forked copy of the parent): the decoder to run.
_WORKER_DECODER: BeamSearchDecoder | None = None


def _init_worker(decoder: BeamSearchDecoder) -> None:
    global _WORKER_DECODER
    _WORKER_DECODER = decoder


def _worker_decode(job: tuple[np.ndarray, float]) -> Hypothesis:
    assert _WORKER_DECODER is not None, "pool worker used without its initializer"
    return _WORKER_DECODER.decode(*job)


class BeamSearchDecoder:
    """CTC prefix beam search with an optional KenLM model, through pyctcdecode.

    Hypotheses are scored ``log P_ctc + alpha * ln P_lm + beta * words`` (shallow
    fusion, Hannun et al. 2014; pyctcdecode converts KenLM's log10 to natural log);
    a partial word that is no prefix of a known unigram costs ``unk_score_offset``.
    Without an LM it is a plain CTC prefix beam search (``alpha`` and ``beta`` then
    have no effect and :meth:`settings` reports them as ``None``); hot words work with
    or without an LM.

    Word times are pyctcdecode's word frames (first frame of the first character to
    the last frame of the last one) times ``frame_seconds``, as for the greedy
    decoder. Word confidence: the characters of the word are aligned to its frames
    by CTC Viterbi and each contributes the posterior of its character at its peak
    frame; the word's confidence is their mean (see :func:`_char_confidences`), the
    same definition as :func:`words_from_path`, so a word the LM changed away from
    what the acoustics say gets a low confidence.

    The search is pyctcdecode 0.5.0's (``BeamSearchDecoderCTC._decode_logits``; the
    version is pinned in pyproject.toml) with its per-frame loop compiled
    (:class:`_PrefixSearch`, numba): the same beams, texts, word frames and scores,
    bit for bit (tests/test_decoding.py compares with pyctcdecode's own classes).
    pyctcdecode's pure-Python loop took 7-9 times as long as flashlight's C++
    decoder (tools/bench_decode.py); this one takes about as long. The input is
    prepared as pyctcdecode's ``decode_beams`` prepares it (log-softmax, clip),
    in float64. Runs of blank-only frames are merged before the search
    (:func:`_compact_blank_runs`: the same texts and word frames, scores equal up
    to float rounding; ``compact_blanks=False`` keeps every frame, and is then
    ``decode_beams``' best beam exactly). :meth:`decode_batch` spreads utterances
    over a fork-context process pool. The first beam search in a fresh checkout
    compiles the loop (seconds; cached on disk after that).

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
        compact_blanks: merge blank-only frame runs (faster, same result up to
            float rounding of the scores).

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
        compact_blanks: bool = True,
    ) -> None:
        from pyctcdecode.alphabet import Alphabet
        from pyctcdecode.decoder import BeamSearchDecoderCTC
        from pyctcdecode.language_model import HotwordScorer, LanguageModel

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
        self.compact_blanks = compact_blanks
        self.n_unigrams = 0

        # pyctcdecode's labels: "" is its blank; the rest are ours.
        ctc_labels = ["" if i == blank else c for i, c in enumerate(self.labels)]
        language_model = None
        if self.lm is not None:
            files = load_lm(self.lm)
            self.n_unigrams = len(files.unigrams)
            language_model = _fast_language_model(LanguageModel)(
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
        self._hotword_scorer = _fast_hotword_scorer(HotwordScorer)(
            self.hotwords, self.hotword_weight
        )
        self._search = _PrefixSearch(self._decoder, self._hotword_scorer)

    def set_weights(self, alpha: float, beta: float) -> None:
        """Change the LM weight and word bonus without reloading the LM (tuning)."""
        self.alpha, self.beta = float(alpha), float(beta)
        self._decoder.reset_params(alpha=self.alpha, beta=self.beta)
        self._search.reset()  # its KenLM memo holds weighted scores

    def settings(self) -> dict[str, Any]:
        """Everything that determines the output, JSON-serializable (``workers``
        and ``compact_blanks`` change only the speed and are not included)."""
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
        # pyctcdecode's own input preparation (decode_beams): log-softmax, then clip;
        # in float64, whatever the model's precision.
        from pyctcdecode.decoder import _log_softmax

        lp = np.clip(_log_softmax(log_probs.astype(np.float64), axis=1), _MIN_LOGP, 0)
        if len(self.labels) <= 62:
            lp, starts, candidates = _compact_blank_runs(
                lp, self.token_min_logp, self.blank, self.compact_blanks
            )
        else:  # (no bit masks: not compacted)
            candidates = _candidates(lp, self.token_min_logp)
            starts = np.arange(lp.shape[0])
        beams = self._search.decode_logits(
            lp,
            self.beam_width,
            self.beam_prune_logp,
            self.token_min_logp,
            candidates,
            n_best=1,
        )
        text, _, word_frames, _, score = beams[0]
        # The last frame of a word is one where its last character was emitted,
        # never a merged blank run: map it, then make the end exclusive again.
        words = [
            (w, int(starts[s]), int(starts[e - 1]) + 1) for w, (s, e) in word_frames
        ]
        return text, words, float(score)

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
