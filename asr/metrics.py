"""Word and character error rates, S/D/I counts, alignments and confidence intervals.

The alignment is a minimum edit distance (Levenshtein, unit costs) computed by
rapidfuzz's C implementation, on tokens mapped to integers first, exactly as jiwer
does it, so that among equally short alignments the same one is chosen and the
substitution/deletion/insertion counts agree with jiwer's (tested), not only the
totals. Rates are errors over reference length, as in jiwer and every published WER.

:class:`Alignment` renders an aligned pair the way NIST sclite's ``pralign`` reports
do: correct words in lower case, errors in upper case, ``*`` filling the gap of a
deleted or inserted word, and an S/D/I marker under each error::

    REF: the CAT sat on the mat **
    HYP: the BAT sat on the mat ON
    OPS:     S                  I

:func:`bootstrap_ci` gives a confidence interval for a corpus error rate by
resampling utterances (Bisani & Ney 2004, "Bootstrap estimates for confidence
intervals in ASR performance evaluation").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import Levenshtein

__all__ = [
    "Alignment",
    "ErrorCounts",
    "align",
    "align_words",
    "bootstrap_ci",
    "char_errors",
    "error_rates",
    "word_errors",
]


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations between a reference and a hypothesis (or summed over many)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors over reference length (inf for errors against an empty reference)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


# One aligned position: (op, reference token, hypothesis token); op is "C" (correct),
# "S" (substitution), "D" (deletion: no hypothesis token) or "I" (insertion: no
# reference token).
AlignedToken = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Alignment:
    """A minimum-edit-distance alignment of a reference and a hypothesis.

    Attributes:
        ops: the aligned positions in order, each ``(op, ref, hyp)`` with ``op`` in
            ``"C"``, ``"S"``, ``"D"``, ``"I"``; ``ref`` is None for an insertion and
            ``hyp`` None for a deletion.
    """

    ops: tuple[AlignedToken, ...]

    @property
    def counts(self) -> ErrorCounts:
        tags = [op for op, _, _ in self.ops]
        return ErrorCounts(
            substitutions=tags.count("S"),
            deletions=tags.count("D"),
            insertions=tags.count("I"),
            reference_length=len(tags) - tags.count("I"),
        )

    def lines(self) -> tuple[str, str, str]:
        """``(ref, hyp, ops)`` lines, column-aligned (sclite style, no labels).

        Errors are upper-cased, correct words kept as they are; a missing word is
        ``*`` repeated to the width of the word facing it; ``ops`` has S, D or I
        under each error. Trailing spaces are stripped.
        """
        ref_cols, hyp_cols, op_cols = [], [], []
        for op, r, h in self.ops:
            if op == "C":
                r_txt = h_txt = r or ""
            else:
                r_txt = (r or "").upper()
                h_txt = (h or "").upper()
            width = max(len(r_txt), len(h_txt), 1)
            ref_cols.append((r_txt or "*" * width).ljust(width))
            hyp_cols.append((h_txt or "*" * width).ljust(width))
            op_cols.append(("" if op == "C" else op).ljust(width))
        return (
            " ".join(ref_cols).rstrip(),
            " ".join(hyp_cols).rstrip(),
            " ".join(op_cols).rstrip(),
        )


def _as_ints(ref: Sequence[str], hyp: Sequence[str]) -> tuple[list[int], list[int]]:
    """Tokens -> integer ids (as jiwer does), so rapidfuzz compares ids, not hashes."""
    ids: dict[str, int] = {}
    return (
        [ids.setdefault(t, len(ids)) for t in ref],
        [ids.setdefault(t, len(ids)) for t in hyp],
    )


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Align two token sequences (words, characters...) by minimum edit distance."""
    ref_ids, hyp_ids = _as_ints(ref, hyp)
    ops: list[AlignedToken] = []
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(ref_ids, hyp_ids):
        if tag == "equal":
            ops.extend(
                ("C", ref[i], hyp[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
        elif tag == "replace":  # rapidfuzz's replace blocks are of equal lengths
            ops.extend(
                ("S", ref[i], hyp[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
        elif tag == "delete":
            ops.extend(("D", ref[i], None) for i in range(i1, i2))
        elif tag == "insert":
            ops.extend(("I", None, hyp[j]) for j in range(j1, j2))
        else:  # pragma: no cover - rapidfuzz has only these four tags
            raise AssertionError(f"unknown opcode {tag!r}")
    return Alignment(tuple(ops))


def align_words(reference: str, hypothesis: str) -> Alignment:
    """Word alignment; words are split on white space."""
    return align(reference.split(), hypothesis.split())


def _counts(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    ref_ids, hyp_ids = _as_ints(ref, hyp)
    tags = [op.tag for op in Levenshtein.editops(ref_ids, hyp_ids)]
    return ErrorCounts(
        substitutions=tags.count("replace"),
        deletions=tags.count("delete"),
        insertions=tags.count("insert"),
        reference_length=len(ref),
    )


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word-level counts; words are split on white space."""
    return _counts(reference.split(), hypothesis.split())


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character-level counts over the space-normalised strings (spaces count)."""
    return _counts(
        list(" ".join(reference.split())), list(" ".join(hypothesis.split()))
    )


def error_rates(
    references: Sequence[str], hypotheses: Sequence[str]
) -> tuple[ErrorCounts, ErrorCounts]:
    """Corpus-level ``(word counts, char counts)``, summed over utterances."""
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses"
        )
    words, chars = ErrorCounts(), ErrorCounts()
    for ref, hyp in zip(references, hypotheses, strict=True):
        words += word_errors(ref, hyp)
        chars += char_errors(ref, hyp)
    return words, chars


def bootstrap_ci(
    errors: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of a corpus error rate.

    Utterances are drawn with replacement ``resamples`` times; each draw's rate is
    ``sum(errors) / sum(lengths)`` over the drawn utterances (the corpus rate, not a
    mean of utterance rates). Resampling utterances rather than words keeps the
    correlation of errors within an utterance (Bisani & Ney 2004).

    Args:
        errors: ``(N,)`` errors per utterance (S + D + I).
        lengths: ``(N,)`` reference length per utterance (words or characters).
        resamples: number of bootstrap draws.
        level: coverage of the interval, e.g. 0.95.
        seed: the random generator's seed (the interval is reproducible).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no utterances or no reference tokens.
    """
    e = np.asarray(errors, dtype=np.float64)
    n = np.asarray(lengths, dtype=np.float64)
    if e.shape != n.shape or e.ndim != 1:
        raise ValueError(f"errors {e.shape} and lengths {n.shape} must be (N,)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(e) == 0 or n.sum() == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Each resample draws N utterance indices; its rate is the corpus rate of the
    # draw. Chunks of resamples bound the memory to about 8 MB of indices.
    N = len(e)
    chunk = max(1, 1_000_000 // N)
    rates = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, N, size=(min(chunk, resamples - start), N))
        err_sum, len_sum = e[idx].sum(axis=1), n[idx].sum(axis=1)
        ok = len_sum > 0  # a draw of only empty references has no rate
        rates.append(err_sum[ok] / len_sum[ok])
    all_rates = np.concatenate(rates)
    if len(all_rates) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(all_rates, [tail, 100 - tail])
    return float(low), float(high)
