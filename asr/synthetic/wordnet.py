"""The text source: WordNet's usage examples, cleaned to what an engine says as
written.

The examples are the double-quoted strings after the ``|`` of each synset line in
``data.{noun,verb,adj,adv}`` (Debian's wordnet-base). About 46,000 are usable: 2-25
words, 5.8 on average. The same cleaning decides what the corpus speaks and what the
recipe's LM text holds (:mod:`asr.synthetic.lm_text`), so the two agree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr.synthetic.errors import CorpusError

__all__ = [
    "DEFAULT_WORDNET_DIR",
    "Sentence",
    "clean_sentence",
    "load_sentences",
    "synset_examples",
]

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")

# Words the engines expand or spell (we could not transcribe what they say).
_BLOCKED_WORDS = frozenset("etc vs mr mrs ms dr jr sr st ltd inc lbs mph ok".split())
_ALLOWED_RAW = re.compile(r"^[A-Za-z' ,;:!?.\-]+$")
_WORD = re.compile(r"[A-Za-z']+")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")


@dataclass(frozen=True)
class Sentence:
    """One WordNet example: what the engine reads and what the transcript says."""

    prompt: str  # original case and light punctuation, for the engine's prosody
    transcript: str  # upper case letters, apostrophes and single spaces

    @property
    def letters(self) -> int:
        """Number of letters and apostrophes (the planning length unit)."""
        return len(self.transcript.replace(" ", ""))


def clean_sentence(
    raw: str, min_words: int = 2, max_words: int = 25
) -> Sentence | None:
    """Turn one WordNet example into a :class:`Sentence`, or None to drop it.

    Kept: letters, apostrophes inside or closing a word ("boys'"), spaces and simple
    punctuation (a period only at the end), with ``min_words``..``max_words`` words.
    Dropped: digits and symbols, abbreviations ("Mr.", "etc"), all-capital words
    (acronyms, Roman numerals: the engines spell them), single letters other than
    "a"/"I", and words without a vowel ("hmm"): what the engine says must be what
    the transcript says. Hyphens and dashes become spaces, as in LibriSpeech.
    """
    text = " ".join(raw.split())
    if not text or not _ALLOWED_RAW.match(text):
        return None
    if "." in text.rstrip(".!?"):
        return None  # abbreviations, ellipses, initials
    prompt = " ".join(re.sub(r"-+", " ", text).split())
    words = _WORD.findall(prompt)
    if not min_words <= len(words) <= max_words:
        return None
    for word in words:
        bare = word.strip("'")
        if not bare or word.startswith("'") or "''" in word:
            return None
        if word.endswith("'") and not bare.lower().endswith("s"):
            return None  # a closing quote, not a plural possessive
        if len(bare) == 1 and bare.lower() not in ("a", "i"):
            return None
        if len(bare) > 1 and bare.isupper():
            return None
        if bare.lower() in _BLOCKED_WORDS or not _VOWEL.search(bare):
            return None
    if prompt[-1] not in ".!?":
        prompt += "."  # a full stop gives the engines a sentence-final intonation
    return Sentence(prompt=prompt, transcript=" ".join(w.upper() for w in words))


def synset_examples(
    wordnet_dir: Path = DEFAULT_WORDNET_DIR, min_words: int = 2, max_words: int = 25
) -> Iterator[tuple[Sentence, ...]]:
    """The usable usage examples of each WordNet synset, one tuple per synset line
    (empty when none is usable), in file order.

    Raises:
        CorpusError: a ``data.*`` file cannot be read (naming it and the package).
    """
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        try:
            lines = path.read_text(encoding="latin-1").splitlines()
        except OSError as e:
            raise CorpusError(
                f"{path}: cannot read WordNet data ({e.strerror}); "
                "install the Debian package wordnet-base or pass --wordnet-dir"
            ) from e
        for line in lines:
            if line.startswith(" ") or "|" not in line:
                continue  # the license header
            raws = re.findall(r'"([^"]*)"', line.split("|", 1)[1])
            yield tuple(
                s
                for s in (clean_sentence(raw, min_words, max_words) for raw in raws)
                if s is not None
            )


@functools.lru_cache(maxsize=4)
def load_sentences(
    wordnet_dir: Path = DEFAULT_WORDNET_DIR, min_words: int = 2, max_words: int = 25
) -> tuple[Sentence, ...]:
    """All usable WordNet usage examples, de-duplicated by transcript, sorted."""
    seen: dict[str, Sentence] = {}
    for examples in synset_examples(wordnet_dir, min_words, max_words):
        for sentence in examples:
            seen.setdefault(sentence.transcript, sentence)
    if not seen:
        raise CorpusError(f"{wordnet_dir}: no usable usage examples in data.*")
    return tuple(seen[t] for t in sorted(seen))
