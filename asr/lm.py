"""KenLM n-gram language models: build and load.

Build (:func:`build_lm`): the corpus is normalized exactly like the training
transcripts (:func:`asr.text.normalize`), so the LM's words are spelled with the
acoustic model's characters; lines with characters the vocabulary cannot spell are
skipped and reported with counts (never silently kept: KenLM would learn words the
decoder can never produce). KenLM's ``lmplz`` estimates a modified Kneser-Ney ARPA
model (Heafield et al. 2013) and ``build_binary`` turns it into a binary that loads in
milliseconds. Beside the model we write its unigram list, ``<model>.unigrams.txt``,
one word per line: pyctcdecode scores partial words against it (a prefix of no known
word costs ``unk_score_offset``), and it cannot read the list from a binary file --
without it the decoder runs "blind" and accepts any character string as a word.

Load (:func:`load_lm`): the model path and its unigrams, from the unigram file or,
for an ARPA model without one, from the ARPA ``\\1-grams:`` section.

Their decoding weights are tuned by :mod:`asr.tune`.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asr.atomic import atomic_write_text
from asr.text import VOCAB, normalize

if TYPE_CHECKING:
    import kenlm

__all__ = [
    "CorpusStats",
    "LMBuild",
    "LMError",
    "LanguageModelFiles",
    "build_lm",
    "find_program",
    "load_kenlm",
    "load_lm",
    "normalize_corpus",
    "read_arpa_unigrams",
    "unigrams_path",
]

log = logging.getLogger(__name__)

_SPELLABLE = frozenset(VOCAB[1:])
# Symbols KenLM reserves; lmplz refuses them in the corpus and they are not words.
_SPECIAL = frozenset({"<s>", "</s>", "<unk>"})
# Below this corpus size (bytes) lmplz gets --discount_fallback from the start: a few
# thousand sentences lack the singletons/doubletons the closed-form Kneser-Ney
# discounts need. Larger corpora get it only on a retry after a discount error.
SMALL_CORPUS_BYTES = 5_000_000
_BINARY_MAGIC = b"mmap lm "  # KenLM binary header: "mmap lm http://kheafield.com/..."


class LMError(ValueError):
    """A language model that cannot be built or loaded; the message names the file."""


# ----------------------------------------------------------------------------- build


@dataclass
class CorpusStats:
    """What normalization did to a corpus.

    ``unspellable`` counts, per character outside the vocabulary, the lines that
    were skipped because of it (a line with two bad characters counts for both);
    ``examples`` are the first few skipped lines as ``(line number, text)``.
    """

    lines: int = 0
    kept: int = 0
    words: int = 0
    empty: int = 0
    skipped: int = 0
    unspellable: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.lines} lines read, {self.kept} kept ({self.words} words), "
            f"{self.empty} empty after normalization"
        )
        if self.skipped:
            chars = ", ".join(f"{c!r} ({n})" for c, n in self.unspellable.most_common())
            shown = "; ".join(f"line {n}: {t[:60]!r}" for n, t in self.examples)
            text += (
                f", {self.skipped} skipped for characters outside the vocabulary: "
                f"{chars} (e.g. {shown})"
            )
        return text


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")  # type: ignore[return-value]
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115


def normalize_corpus(
    lines: Iterator[str] | Sequence[str], stats: CorpusStats, max_examples: int = 5
) -> Iterator[str]:
    """Yield the normalized, spellable, non-empty lines; fill ``stats`` as it goes.

    Args:
        lines: raw text lines (newlines are stripped).
        stats: updated in place.
        max_examples: how many skipped lines to keep as examples.
    """
    for number, raw in enumerate(lines, start=1):
        stats.lines += 1
        text = normalize(raw)
        if not text:
            stats.empty += 1
            continue
        bad = set(text) - _SPELLABLE
        if bad:
            stats.skipped += 1
            stats.unspellable.update(bad)
            if len(stats.examples) < max_examples:
                stats.examples.append((number, raw.strip()))
            continue
        stats.kept += 1
        stats.words += text.count(" ") + 1
        yield text


def find_program(name: str) -> str:
    """The path of a KenLM program: the venv's bin directory (next to the Python
    running us, where ``make setup`` builds it), then ``PATH``.

    Raises:
        LMError: not found; the message names the program and ``make setup``.
    """
    # Not resolved: a venv's python is a symlink to the system one, and the venv's
    # bin directory is the symlink's parent.
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise LMError(
        f"KenLM's {name!r} is not in {here.parent} nor on PATH: run `make setup`, "
        f"which builds lmplz and build_binary into .venv/bin"
    )


def unigrams_path(lm_path: str | os.PathLike[str]) -> Path:
    """Where a model's unigram list lives: ``lm.bin`` -> ``lm.bin.unigrams.txt``."""
    lm_path = Path(lm_path)
    return lm_path.with_name(lm_path.name + ".unigrams.txt")


@dataclass(frozen=True)
class LMBuild:
    """The result of :func:`build_lm`."""

    path: Path
    unigrams_path: Path
    order: int
    unigrams: int
    stats: CorpusStats
    discount_fallback: bool
    seconds: float

    def summary(self) -> str:
        fallback = ", --discount_fallback" if self.discount_fallback else ""
        return (
            f"{self.path}: {self.order}-gram, {self.unigrams} words "
            f"(list in {self.unigrams_path.name}){fallback}, {self.seconds:.1f} s; "
            f"corpus: {self.stats.summary()}"
        )


def _tail(text: str, lines: int = 12) -> str:
    # Drop lmplz's progress bars ("----5---10..." and "****"), keep the message.
    kept = [
        ln
        for ln in text.strip().splitlines()
        if ln.strip() and not set(ln.strip()) <= set("*-0123456789")
    ]
    return "\n".join(kept[-lines:])


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise LMError(
            f"{what}: {Path(cmd[0]).name} failed (exit {proc.returncode}):\n"
            f"{_tail(proc.stderr)}"
        )
    return proc


def build_lm(
    corpus: str | os.PathLike[str],
    output: str | os.PathLike[str],
    order: int = 4,
    memory: str = "1G",
    tmp_dir: str | os.PathLike[str] | None = None,
    discount_fallback: bool | None = None,
    binary_type: str = "probing",
) -> LMBuild:
    """Build a KenLM model from a text corpus, one sentence per line.

    Args:
        corpus: a UTF-8 text file (``.gz`` is read transparently).
        output: the model to write: a binary (any name, e.g. ``lm.bin``) or, if
            the name ends in ``.arpa``, the ARPA text itself. The unigram list is
            written beside it (:func:`unigrams_path`).
        order: the n-gram order (``-o``); at most 6 with ``make setup``'s build.
        memory: lmplz's sorting memory (``-S``), e.g. ``"1G"``, ``"50%"``.
        tmp_dir: where lmplz's sort files and the normalized corpus go (default: a
            temporary directory beside ``output``, which is where there is room).
        discount_fallback: pass lmplz ``--discount_fallback``; ``None`` = when the
            corpus is under :data:`SMALL_CORPUS_BYTES`, or on a retry when lmplz fails
            to estimate its Kneser-Ney discounts (logged).
        binary_type: ``build_binary``'s data structure, ``"probing"`` (fastest) or
            ``"trie"`` (smallest).

    Returns:
        An :class:`LMBuild`; the files appear atomically (temporary name + rename),
        the unigram list first.

    Raises:
        LMError: missing or empty corpus, a missing program, lmplz or build_binary
            failing (with the tail of its stderr).
    """
    corpus, output = Path(corpus), Path(output)
    start = time.perf_counter()
    if not corpus.is_file():
        raise LMError(f"{corpus}: no such corpus file")
    if order < 1:
        raise LMError(f"the n-gram order must be at least 1, got {order}")
    if binary_type not in ("probing", "trie"):
        raise LMError(f"binary_type must be 'probing' or 'trie', got {binary_type!r}")
    arpa_out = output.suffix == ".arpa"
    lmplz = find_program("lmplz")
    build_binary = None if arpa_out else find_program("build_binary")
    output.parent.mkdir(parents=True, exist_ok=True)
    if discount_fallback is None:
        fallback = corpus.stat().st_size < SMALL_CORPUS_BYTES
        retry = True
    else:
        fallback, retry = discount_fallback, False

    with tempfile.TemporaryDirectory(
        prefix=".lmplz-", dir=tmp_dir or output.parent
    ) as tmp:
        tmp_path = Path(tmp)
        text_path = tmp_path / "corpus.txt"
        stats = CorpusStats()
        with _open_text(corpus) as src, open(text_path, "w", encoding="utf-8") as dst:
            for line in normalize_corpus(src, stats):
                dst.write(line)
                dst.write("\n")
        if stats.skipped:
            log.warning("%s: %s", corpus, stats.summary())
        if stats.kept == 0:
            raise LMError(f"{corpus}: no usable text ({stats.summary()})")

        arpa = tmp_path / "lm.arpa"
        cmd = [lmplz, "-o", str(order), "-S", memory, "-T", f"{tmp_path}{os.sep}"]
        cmd += ["--text", str(text_path), "--arpa", str(arpa)]
        try:
            _run(cmd + (["--discount_fallback"] if fallback else []), str(corpus))
        except LMError as err:
            if not (retry and not fallback and "discount" in str(err)):
                raise
            log.warning(
                "%s: lmplz could not estimate Kneser-Ney discounts (small or "
                "repetitive corpus); retrying with --discount_fallback",
                corpus,
            )
            fallback = True
            _run(cmd + ["--discount_fallback"], str(corpus))

        words = read_arpa_unigrams(arpa)
        uni = unigrams_path(output)
        atomic_write_text(uni, "".join(w + "\n" for w in words))
        if arpa_out:
            tmp_out = output.with_name(f".{output.name}.{os.getpid()}.tmp")
            shutil.move(str(arpa), tmp_out)  # across file systems if tmp_dir is
        else:
            assert build_binary is not None
            tmp_out = output.with_name(f".{output.name}.{os.getpid()}.tmp")
            try:
                _run(
                    [build_binary, "-T", str(tmp_path), binary_type, str(arpa),
                     str(tmp_out)],
                    str(output),
                )  # fmt: skip
            except LMError:
                tmp_out.unlink(missing_ok=True)
                raise
        os.replace(tmp_out, output)
    result = LMBuild(
        path=output,
        unigrams_path=uni,
        order=order,
        unigrams=len(words),
        stats=stats,
        discount_fallback=fallback,
        seconds=time.perf_counter() - start,
    )
    return result


# ------------------------------------------------------------------------------ load


def read_arpa_unigrams(path: str | os.PathLike[str]) -> list[str]:
    """The words of an ARPA model's ``\\1-grams:`` section, in file order, without
    ``<s>``, ``</s>`` and ``<unk>``.

    Raises:
        LMError: no such file, or no ``\\1-grams:`` section / no words in it.
    """
    path = Path(path)
    words: list[str] = []
    in_unigrams = False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line == "\\1-grams:":
                    in_unigrams = True
                    continue
                if not in_unigrams:
                    continue
                if line.startswith("\\"):  # \2-grams: or \end\
                    break
                parts = line.split("\t")
                if len(parts) in (2, 3) and parts[1] not in _SPECIAL:
                    words.append(parts[1])
    except FileNotFoundError:
        raise LMError(f"{path}: no such ARPA file") from None
    if not words:
        raise LMError(f"{path}: no unigrams found (not an ARPA language model?)")
    return words


@dataclass(frozen=True)
class LanguageModelFiles:
    """What pyctcdecode needs: the KenLM model file and its unigram list."""

    path: Path
    unigrams: tuple[str, ...]

    @property
    def is_arpa(self) -> bool:
        return not _is_binary(self.path)


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_BINARY_MAGIC)) == _BINARY_MAGIC


def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    p = Path(path).resolve()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise LMError(f"{path}: no such language model file") from None
    return str(p), st.st_mtime_ns, st.st_size


def load_lm(path: str | os.PathLike[str]) -> LanguageModelFiles:
    """The model path and its unigrams, ready for :func:`pyctcdecode.build_ctcdecoder`.

    The unigrams come from ``<path>.unigrams.txt`` when it exists, else (ARPA only)
    from the model's ``\\1-grams:`` section. Cached per file (path, mtime, size).

    Raises:
        LMError: no such file; a binary model without its unigram list (pyctcdecode
            cannot read unigrams from a binary and would decode without a
            vocabulary); an empty unigram list; not a KenLM model.
    """
    return _load_lm(_file_key(path), str(path))


@functools.lru_cache(maxsize=8)
def _load_lm(key: tuple[str, int, int], shown: str) -> LanguageModelFiles:
    path = Path(key[0])
    if not path.is_file():
        raise LMError(f"{shown}: not a file")
    uni = unigrams_path(path)
    if uni.is_file():
        with open(uni, encoding="utf-8") as f:
            words = tuple(w for w in f.read().split() if w not in _SPECIAL)
        if not words:
            raise LMError(f"{uni}: the unigram list of {shown} is empty")
        return LanguageModelFiles(path, words)
    if _is_binary(path):
        raise LMError(
            f"{shown}: a binary KenLM model needs its unigram list {uni.name} beside "
            f"it (one word per line; `asr lm build` writes it); without it pyctcdecode "
            f"cannot tell words from non-words. Rebuild with `asr lm build`, write the "
            f"list, or use the ARPA file"
        )
    try:
        words = tuple(read_arpa_unigrams(path))
    except LMError:
        raise LMError(
            f"{shown}: neither a KenLM binary nor an ARPA model (no \\1-grams: section)"
        ) from None
    return LanguageModelFiles(path, words)


def load_kenlm(path: str | os.PathLike[str]) -> kenlm.Model:
    """A ``kenlm.Model``, cached per file (path, mtime, size): a LibriSpeech 4-gram
    takes seconds to load, and decoders are built per command and per tuning run.

    Raises:
        LMError: no such file or KenLM cannot read it.
    """
    return _load_kenlm(_file_key(path), str(path))


@functools.lru_cache(maxsize=2)
def _load_kenlm(key: tuple[str, int, int], shown: str) -> kenlm.Model:
    import kenlm

    try:
        return kenlm.Model(key[0])
    except (OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise LMError(f"{shown}: KenLM cannot load it ({reason})") from None
