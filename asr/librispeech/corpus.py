"""What LibriSpeech is on OpenSLR: its parts, files and published checksums, and
the errors of the steps that fetch and prepare it.

The corpus is OpenSLR resource 12 (Panayotov et al., 2015), one ``<part>.tar.gz``
per part, each holding ``LibriSpeech/<part>/<speaker>/<chapter>/`` with FLAC files
and a ``<speaker>-<chapter>.trans.txt``. Its language models are resource 11:
ARPA n-grams (upper case, like the LM text) and ``librispeech-vocab.txt``, or the
normalized text ``librispeech-lm-norm.txt.gz`` to build one from.

No imports beyond the basics: ``asr`` builds its options from these names for
every command it parses.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CORPUS_RESOURCE",
    "EVAL_PARTS",
    "LM_ARPA",
    "LM_RESOURCE",
    "LM_TEXT",
    "LM_VOCAB",
    "OPENSLR",
    "PARTS",
    "PUBLISHED_LM_MD5",
    "PUBLISHED_MD5",
    "TRAIN_HOURS",
    "TRAIN_PARTS",
    "ArchiveError",
    "DownloadError",
    "LibriSpeechError",
    "resolve_parts",
]

OPENSLR = "https://www.openslr.org/resources"
CORPUS_RESOURCE = 12
LM_RESOURCE = 11

TRAIN_PARTS = ("train-clean-100", "train-clean-360", "train-other-500")
EVAL_PARTS = ("dev-clean", "dev-other", "test-clean", "test-other")
PARTS = TRAIN_PARTS + EVAL_PARTS
# --parts 100|460|960: hours of training speech -> the training parts.
TRAIN_HOURS: dict[str, tuple[str, ...]] = {
    "100": TRAIN_PARTS[:1],
    "460": TRAIN_PARTS[:2],
    "960": TRAIN_PARTS,
}

# https://www.openslr.org/resources/12/md5sum.txt, as published (and as PaddlePaddle
# DeepSpeech, TensorFlow Datasets and others pin them; dev-clean's also matches the
# byte count 337926286 reported with it). Used when a host publishes no md5sum.txt,
# and to cross-check the list www.openslr.org serves.
PUBLISHED_MD5: dict[str, str] = {
    "train-clean-100.tar.gz": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360.tar.gz": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500.tar.gz": "d1a0fd59409feb2c614ce4d30c387708",
    "dev-clean.tar.gz": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other.tar.gz": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean.tar.gz": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other.tar.gz": "fb5a50374b501bb3bac4815ee91d3135",
}

# https://www.openslr.org/resources/11/md5sum.txt, as published: the language
# models, their vocabulary and the LM corpus are checked as the audio archives are.
PUBLISHED_LM_MD5: dict[str, str] = {
    "3-gram.pruned.1e-7.arpa.gz": "9a0f1325bcaf3a0f7b7be4be10823c2a",
    "3-gram.pruned.3e-7.arpa.gz": "8f67ec741827742eee05799ab7605b50",
    "3-gram.arpa.gz": "74cbb837e582378c26c602e1c8cbcb9c",
    "4-gram.arpa.gz": "6abdcd5b055bd482e4f9defe91d40408",
    "librispeech-vocab.txt": "bf3cc7a50112831ed8b0afa40cae96a5",
    "librispeech-lm-norm.txt.gz": "c83c64c726a1aedfe65f80aa311de402",
}

# Resource 11's ARPA models (--lm NAME), upper case like the LM corpus.
LM_ARPA: dict[str, str] = {
    "3-gram.pruned.1e-7": "3-gram.pruned.1e-7.arpa.gz",  # 34 MB: the default
    "3-gram.pruned.3e-7": "3-gram.pruned.3e-7.arpa.gz",  # 13 MB
    "3-gram": "3-gram.arpa.gz",  # 759 MB
    "4-gram": "4-gram.arpa.gz",  # 1.3 GB; binarizing it needs ~16 GB of memory
}
LM_VOCAB = "librispeech-vocab.txt"
LM_TEXT = "librispeech-lm-norm.txt.gz"


class LibriSpeechError(Exception):
    """A corpus step that cannot go on; the message names the file and the fix."""


class DownloadError(LibriSpeechError):
    """An HTTP error, an interrupted transfer that ran out of retries, or a file
    whose MD5 is not the published one."""


class ArchiveError(LibriSpeechError):
    """A corrupt archive, one with unsafe members, or not the expected part."""


def resolve_parts(spec: Iterable[str], with_eval: bool = True) -> list[str]:
    """Part names from ``--parts``: ``100``/``460``/``960`` (hours of training
    speech: its training parts, plus the four dev/test parts if ``with_eval``) or
    part names. Order: as in :data:`PARTS`, without repeats.

    Raises:
        LibriSpeechError: an unknown name.
    """
    wanted: set[str] = set()
    for item in spec:
        for word in item.replace(",", " ").split():
            if word in TRAIN_HOURS:
                wanted.update(TRAIN_HOURS[word])
                if with_eval:
                    wanted.update(EVAL_PARTS)
            elif word in PARTS:
                wanted.add(word)
            else:
                known = ", ".join([*TRAIN_HOURS, *PARTS])
                raise LibriSpeechError(
                    f"unknown LibriSpeech part {word!r}; know: {known}"
                )
    return [p for p in PARTS if p in wanted]
