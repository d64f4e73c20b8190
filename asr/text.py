"""Text in: LibriSpeech-style normalization and the character tokenizer.

The vocabulary is the CTC blank (index 0), space, apostrophe and ``a``-``z``: the
characters of the LibriSpeech transcripts and LM text once lower-cased.

:func:`normalize` never drops a character it cannot map (digits, ``%``, ``&``,
non-Latin letters...): it leaves them in so that :func:`unspellable` and the manifest
validation can flag the utterance, rather than training on a transcript that silently
lost words ("50 %" becoming "").
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "PHONES",
    "VOCAB",
    "CharTokenizer",
    "TextError",
    "normalize",
    "unspellable",
]

VOCAB: tuple[str, ...] = ("<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz")
_CHARS = frozenset(VOCAB[1:])  # what VOCAB can spell

# The phone labels of time-aligned phone files (Utterance.phones_filepath): silence,
# the 39 ARPAbet phones of CMUdict without stress, and schwa (ax). Training can
# predict them frame by frame as an auxiliary task (ASRTask.phone_loss_weight).
PHONES: tuple[str, ...] = tuple(
    "sil aa ae ah ao aw ax ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy "
    "p r s sh t th uh uw v w y z zh".split()
)

# Single quotes, primes, backticks and modifier letters used as apostrophes -> "'".
_APOSTROPHES = "'`\u2018\u2019\u201a\u201b\u2032\u2035\u02bc\u02b9\u02bb\uff07"
# Hyphens and dashes -> space ("well-known" -> "well known", as in LibriSpeech).
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d"
# Punctuation that is not spoken -> space. Spoken symbols (% & $ @ + = #) are kept,
# and flagged as unspellable, because dropping them would lose words.
_PUNCTUATION = (
    '.,;:!?"()[]{}/\u2026'
    "\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a\u00a1\u00bf\u00b7"
)
_TABLE = str.maketrans(
    {
        **{c: "'" for c in _APOSTROPHES},
        **{c: " " for c in _DASHES + _PUNCTUATION},
    }
)


# Text already written as a transcript: one case of ASCII letters, apostrophes,
# spaces (LibriSpeech's trans.txt and LM text; our normalized manifests).
_TRANSCRIPT_FORM = re.compile(r"[A-Z' ]+|[a-z' ]+")


class TextError(ValueError):
    """Text the tokenizer cannot encode, ids it cannot decode, or a bad tokenizer."""


def normalize(text: str) -> str:
    """Normalize a transcript the way the LibriSpeech transcripts are written.

    Steps: lower-case; Unicode NFKD with combining marks removed (``"é"`` -> ``"e"``,
    ``"ﬁ"`` -> ``"fi"``); invisible format characters (zero-width space, BOM, soft
    hyphen) removed; curly quotes and backticks -> ``'``; hyphens, dashes and
    punctuation ``.,;:!?"()[]{}/…`` -> space; whitespace collapsed and stripped.

    Apostrophes: inside a word they are kept (``"don't"``). At a word's edge they
    are kept when the text is already in transcript form -- letters of one case,
    apostrophes and spaces, as LibriSpeech's transcripts and LM text are written
    (``"'TWAS THE FATHERS' DOG"`` -> ``"'twas the fathers' dog"``: the references
    spell those words so, and a model must learn to); in free text they are taken
    for quotation marks and removed (``"'Don't,' she said"`` -> ``"don't she
    said"``). A "word" of apostrophes alone is dropped either way.

    Characters outside the vocabulary are kept (see :func:`unspellable`).

    Args:
        text: any transcript.

    Returns:
        The normalized transcript (possibly ``""``).
    """
    # Lower-case before NFKD so that the combining dot of "İ".lower() is removed too.
    decomposed = unicodedata.normalize("NFKD", text.lower())
    kept = "".join(
        c
        for c in decomposed
        if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )
    words = kept.translate(_TABLE).split()
    if not _TRANSCRIPT_FORM.fullmatch(text.strip()):
        words = [w.strip("'") for w in words]
    return " ".join(w for w in words if w.strip("'"))


def unspellable(text: str) -> list[str]:
    """Characters of ``normalize(text)`` that :data:`VOCAB` cannot spell.

    Args:
        text: any transcript.

    Returns:
        Sorted unique characters, e.g. ``["%", "5"]`` for ``"50%"``; ``[]`` if none.
    """
    return sorted(set(normalize(text)) - _CHARS)


def _show(chars: Iterable[str]) -> str:
    """``"'1', '%'"``: characters quoted with repr, so spaces and controls show."""
    return ", ".join(repr(c) for c in chars)


class CharTokenizer:
    """Characters <-> integer ids, with index 0 the CTC blank.

    Args:
        vocab: the tokens in id order; ``vocab[0]`` is the blank symbol and every
            other entry is a single character. Defaults to :data:`VOCAB`.

    Raises:
        TextError: a vocabulary with duplicate entries or multi-character tokens.
    """

    blank: int = 0

    def __init__(self, vocab: Sequence[str] = VOCAB) -> None:
        vocab = tuple(vocab)
        if len(vocab) < 2:
            raise TextError(f"a vocabulary needs a blank and a symbol, got {vocab!r}")
        bad = [t for t in vocab[1:] if not isinstance(t, str) or len(t) != 1]
        if bad:
            raise TextError(
                f"every token after the blank must be one character, got {bad!r}"
            )
        duplicates = sorted({t for t in vocab if vocab.count(t) > 1})
        if duplicates:
            raise TextError(f"duplicate tokens in the vocabulary: {duplicates!r}")
        self.vocab: tuple[str, ...] = vocab
        self._ids: dict[str, int] = {c: i for i, c in enumerate(vocab) if i != 0}

    def __len__(self) -> int:
        """Number of output classes, blank included (the model's last dimension)."""
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.vocab == other.vocab

    def __hash__(self) -> int:
        return hash(self.vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self)} tokens: {''.join(self.vocab[1:])!r})"

    def unknown_characters(self, text: str, normalize_text: bool = True) -> list[str]:
        """Sorted unique characters of ``text`` (normalized first) not in the vocab."""
        if normalize_text:
            text = normalize(text)
        return sorted(set(text) - self._ids.keys())

    def encode(self, text: str, normalize_text: bool = True) -> list[int]:
        """Text -> ids.

        Args:
            text: a transcript.
            normalize_text: apply :func:`normalize` first.

        Returns:
            ``(len(text),)`` ids in ``1 .. len(self) - 1`` (never the blank).

        Raises:
            TextError: characters outside the vocabulary; the message names them
                and the text.
        """
        normalized = normalize(text) if normalize_text else text
        try:
            return [self._ids[c] for c in normalized]
        except KeyError:
            pass
        bad = self.unknown_characters(normalized, normalize_text=False)
        shown = repr(text) if normalized == text else f"{text!r} (as {normalized!r})"
        raise TextError(
            f"cannot encode {shown}: characters outside the vocabulary: {_show(bad)}"
        )

    def _ints(self, ids: Iterable[int]) -> list[int]:
        if hasattr(ids, "tolist"):  # torch.Tensor or numpy array: one conversion
            ids = ids.tolist()
        out = []
        for i in ids:
            if isinstance(i, (list, tuple)):
                raise TextError("expected a 1-D sequence of ids, got a nested one")
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise TextError(
                    f"id {i} is outside the vocabulary (0..{len(self) - 1})"
                )
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, one character per id, blanks dropped (no CTC collapsing).

        Args:
            ids: ``(N,)`` ids: a list, or a 1-D tensor or array.

        Raises:
            TextError: an id outside ``0 .. len(self) - 1``.
        """
        return "".join(self.vocab[i] for i in self._ints(ids) if i != self.blank)

    def ctc_collapse(self, ids: Iterable[int]) -> list[int]:
        """CTC's many-to-one map: merge runs of the same id, then drop blanks.

        ``[a, a, blank, a, b, b]`` -> ``[a, a, b]``: a blank between two equal labels
        is what lets CTC emit a doubled letter.

        Args:
            ids: ``(T,)`` per-frame ids (e.g. the argmax of the log-probs).

        Returns:
            The label sequence, ``(L,)`` with ``L <= T``.
        """
        return [i for i, _ in itertools.groupby(self._ints(ids)) if i != self.blank]

    def ctc_decode(self, ids: Iterable[int]) -> str:
        """Per-frame ids -> text: :meth:`ctc_collapse` then :meth:`decode`."""
        return self.decode(self.ctc_collapse(ids))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: ``{"type": "char", "vocab": [...]}``."""
        return {"type": "char", "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CharTokenizer:
        """Rebuild a tokenizer from :meth:`to_dict`'s output.

        Raises:
            TextError: not a mapping, a ``type`` other than ``"char"``, or a missing
                or invalid ``vocab``.
        """
        if not isinstance(d, Mapping):
            raise TextError(
                f"a tokenizer description is a dict, got {type(d).__name__}"
            )
        kind = d.get("type")
        if kind != "char":
            raise TextError(
                f"unknown tokenizer type {kind!r}: this version reads only 'char'"
            )
        vocab = d.get("vocab")
        if not isinstance(vocab, (list, tuple)):
            raise TextError(f"a 'char' tokenizer needs a 'vocab' list, got {vocab!r}")
        return cls(vocab)
