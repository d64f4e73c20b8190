"""Word and character error rates with substitution, deletion and insertion counts.

The alignment is a minimum edit distance (Levenshtein, unit costs) computed by
rapidfuzz's C implementation; rates are errors over reference length, as in jiwer and
in every published WER.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

__all__ = ["ErrorCounts", "char_errors", "error_rates", "word_errors"]


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


def _counts(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    ops = Levenshtein.editops(ref, hyp)
    tags = [op.tag for op in ops]
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
