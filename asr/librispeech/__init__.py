"""LibriSpeech for the recipe:

- :mod:`asr.librispeech.corpus`: what the corpus is on OpenSLR (parts, files,
  published checksums) and the errors of the steps below;
- :mod:`asr.librispeech.download`: downloads (resumable, checksummed) and safe
  extraction;
- :mod:`asr.librispeech.prepare`: manifests, the OpenSLR language models as our
  decoder reads them, and the results table.

``asr data librispeech {download,extract,manifests,lm,results} ...`` runs the steps
(:mod:`asr.cli`); ``recipes/librispeech/run.sh`` sequences them. The names below are
loaded on first use, so that ``asr`` reads the corpus's names for its options
without importing the HTTP and archive code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asr.librispeech.corpus import (
        EVAL_PARTS,
        LM_ARPA,
        LM_TEXT,
        LM_VOCAB,
        OPENSLR,
        PARTS,
        PUBLISHED_LM_MD5,
        PUBLISHED_MD5,
        TRAIN_HOURS,
        TRAIN_PARTS,
        ArchiveError,
        DownloadError,
        LibriSpeechError,
        resolve_parts,
    )
    from asr.librispeech.download import Checksums, download_files, extract, fetch
    from asr.librispeech.prepare import (
        download_arpa_lm,
        find_part,
        prepare_arpa_lm,
        results_table,
        write_manifests,
        write_results,
    )

__all__ = [
    "ArchiveError",
    "Checksums",
    "DownloadError",
    "EVAL_PARTS",
    "LM_ARPA",
    "LM_TEXT",
    "LM_VOCAB",
    "LibriSpeechError",
    "OPENSLR",
    "PARTS",
    "PUBLISHED_LM_MD5",
    "PUBLISHED_MD5",
    "TRAIN_HOURS",
    "TRAIN_PARTS",
    "download_files",
    "download_arpa_lm",
    "extract",
    "fetch",
    "find_part",
    "prepare_arpa_lm",
    "resolve_parts",
    "results_table",
    "write_manifests",
    "write_results",
]

# Name -> the module that defines it.
_HOMES = {
    "ArchiveError": "corpus",
    "Checksums": "download",
    "DownloadError": "corpus",
    "EVAL_PARTS": "corpus",
    "LM_ARPA": "corpus",
    "LM_TEXT": "corpus",
    "LM_VOCAB": "corpus",
    "LibriSpeechError": "corpus",
    "OPENSLR": "corpus",
    "PARTS": "corpus",
    "PUBLISHED_LM_MD5": "corpus",
    "PUBLISHED_MD5": "corpus",
    "TRAIN_HOURS": "corpus",
    "TRAIN_PARTS": "corpus",
    "download_files": "download",
    "download_arpa_lm": "prepare",
    "extract": "download",
    "fetch": "download",
    "find_part": "prepare",
    "prepare_arpa_lm": "prepare",
    "resolve_parts": "corpus",
    "results_table": "prepare",
    "write_manifests": "prepare",
    "write_results": "prepare",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module = importlib.import_module(f"asr.librispeech.{_HOMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'asr.librispeech' has no attribute {name!r}")
