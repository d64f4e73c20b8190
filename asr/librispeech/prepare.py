"""LibriSpeech prepared for training and scoring: manifests of the extracted
parts, the OpenSLR language models as our decoder reads them, and the results table.

The steps after :mod:`asr.librispeech.download`: :func:`write_manifests` (one
JSON Lines manifest per part, and the union of the training parts),
:func:`download_arpa_lm` / :func:`prepare_arpa_lm` (an OpenSLR 11 ARPA model,
lower-cased and binarized, with its unigram list), and :func:`results_table` /
:func:`write_results` (RESULTS.md from ``asr evaluate --json`` outputs).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asr.librispeech.corpus import (
    EVAL_PARTS,
    LM_ARPA,
    LM_RESOURCE,
    LM_VOCAB,
    OPENSLR,
    TRAIN_PARTS,
    ArchiveError,
    LibriSpeechError,
)
from asr.librispeech.download import CORRUPT_ERRORS, Checksums, fetch, human_size

__all__ = [
    "ANCHORS",
    "download_arpa_lm",
    "find_part",
    "prepare_arpa_lm",
    "results_table",
    "train_name",
    "write_manifests",
    "write_results",
]

log = logging.getLogger(__name__)

_PART_HOURS = {"train-clean-100": 100, "train-clean-360": 360, "train-other-500": 500}


# ---------------------------------------------------------------------------- parts


def train_name(parts: Sequence[str]) -> str:
    """The combined training manifest's stem: ``train-960`` for the three parts."""
    hours = sum(_PART_HOURS[p] for p in parts if p in _PART_HOURS)
    return f"train-{hours}"


def find_part(roots: Sequence[str | os.PathLike[str]], part: str) -> Path:
    """The directory of ``part`` under the first root that has it, as
    ``ROOT/LibriSpeech/<part>`` or ``ROOT/<part>``.

    Raises:
        LibriSpeechError: no root has it (the message lists where it looked).
    """
    tried = []
    for root in roots:
        for candidate in (Path(root) / "LibriSpeech" / part, Path(root) / part):
            if candidate.is_dir():
                return candidate
            tried.append(str(candidate))
    raise LibriSpeechError(
        f"LibriSpeech part {part!r} not found (looked for {', '.join(tried)})"
    )


# ------------------------------------------------------------------------ manifests


def write_manifests(
    roots: Sequence[str | os.PathLike[str]],
    parts: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> dict[str, Path]:
    """``<out_dir>/<part>.jsonl`` for each part (kept if present) and, when there are
    training parts, their union ``<out_dir>/train-<hours>.jsonl``.

    Args:
        roots: where to look for the parts (:func:`find_part`).
        parts: part names.
        out_dir: where the manifests go.

    Returns:
        Manifest paths by part name (and the union's stem).
    """
    from asr.manifest import librispeech_manifest, read_manifest, write_manifest

    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for part in parts:
        path = out_dir / f"{part}.jsonl"
        if path.is_file():
            log.info("%s: present, skipping", path)
        else:
            tree = find_part(roots, part)
            utts = librispeech_manifest(tree)
            write_manifest(path, utts)
            hours = sum(u.duration for u in utts) / 3600
            log.info("%s: %d utterances, %.1f h, from %s", path, len(utts), hours, tree)
        written[part] = path
    train = [p for p in parts if p in TRAIN_PARTS]
    if train:
        name = train_name(train)
        path = out_dir / f"{name}.jsonl"
        utts = [u for p in train for u in read_manifest(written[p])]
        write_manifest(path, utts)
        hours = sum(u.duration for u in utts) / 3600
        log.info(
            "%s: %d utterances, %.1f h (%s)", path, len(utts), hours, "+".join(train)
        )
        written[name] = path
    return written


# ------------------------------------------------------------------------------- LM


def prepare_arpa_lm(
    arpa_gz: str | os.PathLike[str],
    vocab: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    binary_type: str = "probing",
) -> Path:
    """An OpenSLR ARPA model as our decoder needs it: lower-cased (our vocabulary's
    letters), binarized with KenLM's ``build_binary``, with its unigram list beside it
    (from ``librispeech-vocab.txt``, else from the ARPA's 1-grams). Skipped if the
    model and its list exist.

    Raises:
        ArchiveError: the ``.gz`` is corrupt.
        LMError: ``build_binary`` is missing or fails.
    """
    from asr.atomic import atomic_write_text
    from asr.lm import (
        LMError,
        find_program,
        read_arpa_unigrams,
        unigrams_path,
    )
    from asr.text import VOCAB, normalize

    arpa_gz, output = Path(arpa_gz), Path(output)
    uni = unigrams_path(output)
    if output.is_file() and uni.is_file():
        log.info("%s: present, skipping", output)
        return output
    build_binary = find_program("build_binary")
    output.parent.mkdir(parents=True, exist_ok=True)
    spellable = frozenset(VOCAB[1:])
    with tempfile.TemporaryDirectory(prefix=".arpa-", dir=output.parent) as tmp:
        arpa = Path(tmp) / "lm.arpa"
        log.info("%s: lower-casing into %s", arpa_gz, arpa)
        try:
            with (
                gzip.open(arpa_gz, "rt", encoding="utf-8") as src,
                open(arpa, "w", encoding="utf-8") as dst,
            ):
                for line in src:
                    dst.write(line.lower())
        except (*CORRUPT_ERRORS, UnicodeDecodeError) as err:
            raise ArchiveError(
                f"{arpa_gz}: corrupt ({type(err).__name__}: {err}); delete it and "
                f"download it again"
            ) from None
        if vocab is not None and Path(vocab).is_file():
            words = [normalize(w) for w in Path(vocab).read_text("utf-8").split()]
            source = str(vocab)
        else:
            words = read_arpa_unigrams(arpa)
            source = f"{arpa_gz} (1-grams)"
        words = [w for w in words if w and " " not in w and set(w) <= spellable]
        if not words:
            raise LMError(f"{source}: no word our vocabulary can spell")
        atomic_write_text(uni, "".join(w + "\n" for w in words))
        tmp_out = Path(tmp) / "lm.bin"
        cmd = [build_binary, "-T", tmp, binary_type, str(arpa), str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise LMError(f"{output}: build_binary failed ({proc.returncode}):\n{tail}")
        os.replace(tmp_out, output)
    log.info("%s: %s (%d unigrams from %s)", output, human_size(output.stat().st_size),
             len(words), source)  # fmt: skip
    return output


def download_arpa_lm(
    kind: str,
    downloads: str | os.PathLike[str],
    output: str | os.PathLike[str],
    binary_type: str = "probing",
    mirror: str = OPENSLR,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 5.0,
) -> Path:
    """The OpenSLR 11 ARPA model ``kind`` (a key of :data:`LM_ARPA`) and the
    vocabulary, downloaded into ``downloads`` (see :func:`fetch`), then
    :func:`prepare_arpa_lm` into ``output``. Skipped, without a request, if
    ``output`` and its unigram list exist.

    Raises:
        DownloadError: naming the file.
        ArchiveError, LMError: as :func:`prepare_arpa_lm`.
    """
    from asr.lm import unigrams_path

    output = Path(output)
    if output.is_file() and unigrams_path(output).is_file():
        log.info("%s: present, skipping", output)
        return output
    sums = Checksums(mirror, LM_RESOURCE, downloads, timeout)
    arpa = fetch(LM_ARPA[kind], downloads, sums, retries, timeout, backoff)
    vocab = fetch(LM_VOCAB, downloads, sums, retries, timeout, backoff)
    return prepare_arpa_lm(arpa, vocab, output, binary_type)


# -------------------------------------------------------------------------- results

# What the anchors published (WER %, test sets), for the table's last column.
ANCHORS: dict[str, str] = {
    "test-clean": "10.5 greedy (deepspeech.pytorch V3); 5.33 with LM (DS2 paper)",
    "test-other": "13.25 with LM (DS2 paper)",
}


def _load_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise LibriSpeechError(f"{path}: not a JSON result ({err})") from None


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def results_table(
    results_dir: str | os.PathLike[str],
    sets: Sequence[str] = EVAL_PARTS,
    decoder_json: str | os.PathLike[str] | None = None,
    title: str = "LibriSpeech results",
    notes: Sequence[str] = (),
) -> str:
    """A markdown table from ``<results_dir>/<set>.{greedy,lm}.json`` (the
    ``asr evaluate --json`` outputs): WER and CER per set and decoder, the LM
    weights tuned on dev (``decoder.json``), and the anchors' published WER."""
    results_dir = Path(results_dir)
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    if decoder_json is not None and Path(decoder_json).is_file():
        d = json.loads(Path(decoder_json).read_text(encoding="utf-8"))
        t = d.get("tuned") or {}
        lines.append(
            f"- LM weights tuned on {Path(t.get('manifest', '?')).name}: alpha "
            f"{d.get('alpha')}, beta {d.get('beta')}, beam width "
            f"{d.get('beam_width')} (LM {t.get('lm', '?')})"
        )
    lines += [
        "",
        "| set | utterances | greedy WER % | greedy CER % | LM WER % | LM CER % "
        "| LM WER 95% CI | published (WER %) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in sets:
        g = _load_result(results_dir / f"{s}.greedy.json") or {}
        m = _load_result(results_dir / f"{s}.lm.json") or {}
        n = g.get("utterances", m.get("utterances", ""))
        ci = m.get("wer_ci") or [None, None]
        ci_text = f"{_pct(ci[0])} - {_pct(ci[1])}" if m else "n/a"
        lines.append(
            f"| {s} | {n} | {_pct(g.get('wer'))} | {_pct(g.get('cer'))} "
            f"| {_pct(m.get('wer'))} | {_pct(m.get('cer'))} | {ci_text} "
            f"| {ANCHORS.get(s, '')} |"
        )
    return "\n".join(lines) + "\n"


def write_results(
    output: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    sets: Sequence[str] = EVAL_PARTS,
    decoder_json: str | os.PathLike[str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """:func:`results_table` written to ``output`` (atomically); returns it."""
    from asr.atomic import atomic_write_text

    table = results_table(results_dir, sets, decoder_json, notes=notes)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, table)
    return table
