"""LibriSpeech for the recipe, in two steps:

- :mod:`asr.librispeech.download`: the parts and their OpenSLR archives, downloads
  (resumable, checksummed) and safe extraction;
- :mod:`asr.librispeech.prepare`: manifests, the OpenSLR language models as our
  decoder reads them, and the results table.

``asr data librispeech {download,extract,manifests,lm,results} ...`` runs the steps
(:mod:`asr.cli`); ``recipes/librispeech/run.sh`` sequences them.
"""

from __future__ import annotations

from asr.librispeech.download import (
    EVAL_PARTS,
    LM_ARPA,
    LM_TEXT,
    LM_VOCAB,
    OPENSLR,
    PARTS,
    PUBLISHED_MD5,
    TRAIN_HOURS,
    TRAIN_PARTS,
    ArchiveError,
    Checksums,
    DownloadError,
    LibriSpeechError,
    download,
    extract,
    fetch,
    resolve_parts,
)
from asr.librispeech.prepare import (
    download_arpa_lm,
    find_part,
    prepare_arpa_lm,
    results_table,
    write_manifests,
    write_results,
)

__all__ = [
    "EVAL_PARTS",
    "LM_ARPA",
    "LM_TEXT",
    "LM_VOCAB",
    "OPENSLR",
    "PARTS",
    "PUBLISHED_MD5",
    "TRAIN_HOURS",
    "TRAIN_PARTS",
    "ArchiveError",
    "Checksums",
    "DownloadError",
    "LibriSpeechError",
    "download",
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
