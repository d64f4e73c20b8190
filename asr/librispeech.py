"""LibriSpeech for the recipe: download (resumable, checksummed), safe extraction,
manifests, the OpenSLR language models, and the results table.

The corpus is OpenSLR resource 12 (Panayotov et al., 2015), one ``<part>.tar.gz``
per part, each holding ``LibriSpeech/<part>/<speaker>/<chapter>/`` with FLAC files
and a ``<speaker>-<chapter>.trans.txt``. Its language models are resource 11:
ARPA n-grams (upper case, like the LM text) and ``librispeech-vocab.txt``, or the
normalized text ``librispeech-lm-norm.txt.gz`` to build one from.

Downloads (:func:`fetch`) go to ``<name>.part`` and are resumed with an HTTP
``Range`` request after an interrupted transfer (the same run retries; a later run
resumes too), checked against the published MD5 and renamed into place only then,
so a file under its final name is always complete. A ``.<name>.verified`` stamp
(size, mtime, md5) beside it lets a later run skip it without re-hashing 60 GB or
asking the network anything. Checksums come from the host's ``md5sum.txt`` (cached
beside the downloads) and, for the corpus archives, from :data:`PUBLISHED_MD5`: the
official list, used when a host publishes none and cross-checked against what
www.openslr.org publishes.

Extraction (:func:`extract`) streams the archive and refuses any member that is not
a plain file or directory inside the target (absolute paths, ``..``, links, devices),
extracts into a temporary directory and renames ``LibriSpeech/<part>`` into place.

Every failure names the file: :class:`DownloadError` (HTTP errors, MD5 mismatches,
interrupted transfers) and :class:`ArchiveError` (corrupt or unsafe archives).
``asr data librispeech ...`` (or ``python -m asr.librispeech ...``) runs the steps;
``recipes/librispeech/run.sh`` sequences them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

__all__ = [
    "ArchiveError",
    "Checksums",
    "DownloadError",
    "EVAL_PARTS",
    "LM_ARPA",
    "LibriSpeechError",
    "OPENSLR",
    "PARTS",
    "PUBLISHED_MD5",
    "TRAIN_HOURS",
    "extract",
    "fetch",
    "find_part",
    "main",
    "prepare_arpa_lm",
    "resolve_parts",
    "results_table",
    "write_manifests",
]

log = logging.getLogger(__name__)

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
_PART_HOURS = {"train-clean-100": 100, "train-clean-360": 360, "train-other-500": 500}

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

# Resource 11's ARPA models (--lm NAME), upper case like the LM corpus.
LM_ARPA: dict[str, str] = {
    "3-gram.pruned.1e-7": "3-gram.pruned.1e-7.arpa.gz",  # 34 MB: the default
    "3-gram.pruned.3e-7": "3-gram.pruned.3e-7.arpa.gz",  # 13 MB
    "3-gram": "3-gram.arpa.gz",  # 759 MB
    "4-gram": "4-gram.arpa.gz",  # 1.3 GB; binarizing it needs ~16 GB of memory
}
LM_VOCAB = "librispeech-vocab.txt"
LM_TEXT = "librispeech-lm-norm.txt.gz"

_CHUNK = 1 << 20
_MD5_LINE = re.compile(r"^([0-9a-fA-F]{32})\s+\*?(\S.*)$")


class LibriSpeechError(Exception):
    """A corpus step that cannot go on; the message names the file and the fix."""


class DownloadError(LibriSpeechError):
    """An HTTP error, an interrupted transfer that ran out of retries, or a file
    whose MD5 is not the published one."""


class ArchiveError(LibriSpeechError):
    """A corrupt archive, one with unsafe members, or not the expected part."""


# ---------------------------------------------------------------------------- parts


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


# ------------------------------------------------------------------------ checksums


def parse_md5sum(text: str, source: str) -> dict[str, str]:
    """``md5sum`` output (``<md5>  <name>`` per line) -> ``{name: md5}``.

    Raises:
        DownloadError: a line that is not of that form (the source is no md5 list:
            an HTML error page, say).
    """
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _MD5_LINE.match(line.strip())
        if not m:
            raise DownloadError(
                f"{source}:{number}: not an md5sum line ({line.strip()[:60]!r})"
            )
        out[Path(m.group(2).strip()).name] = m.group(1).lower()
    return out


class Checksums:
    """The expected MD5 of each file of one OpenSLR resource on one host.

    The host's ``<base>/<resource>/md5sum.txt`` is fetched the first time a
    checksum is needed and cached in ``cache_dir``; for a mirror its list wins over
    :data:`PUBLISHED_MD5` (a mirror may serve other data under the same names, as
    the tests' does); for www.openslr.org a disagreement with it is an error.
    Without a list, :data:`PUBLISHED_MD5` applies to the corpus archives; other
    files are then checked only by decompressing them.
    """

    def __init__(
        self,
        base: str,
        resource: int,
        cache_dir: str | os.PathLike[str],
        timeout: float = 60.0,
    ) -> None:
        self.base = base.rstrip("/")
        self.resource = resource
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self.url = f"{self.base}/{resource}/md5sum.txt"
        self._table: dict[str, str] | None = None

    @property
    def official(self) -> bool:
        return self.base == OPENSLR or self.base == OPENSLR.replace("https:", "http:")

    def _cache(self) -> Path:
        tag = hashlib.sha1(self.base.encode()).hexdigest()[:8]
        return self.cache_dir / f".md5sum-{self.resource}-{tag}.txt"

    def _listing(self) -> dict[str, str]:
        cache = self._cache()
        if cache.is_file():
            return parse_md5sum(cache.read_text(encoding="utf-8"), str(cache))
        try:
            with urlopen(_request(self.url), timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8", errors="replace")
        except HTTPError as err:
            log.warning(
                "%s: HTTP %d %s: no checksum list", self.url, err.code, err.reason
            )
            return {}
        except (URLError, OSError, http.client.HTTPException) as err:
            log.warning("%s: cannot fetch the checksum list (%s)", self.url, err)
            return {}
        listing = parse_md5sum(text, self.url)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(cache, text.encode("utf-8"))
        log.info("%s: %d checksums (cached in %s)", self.url, len(listing), cache)
        return listing

    def table(self) -> dict[str, str]:
        if self._table is None:
            listing = self._listing()
            builtin = PUBLISHED_MD5 if self.resource == CORPUS_RESOURCE else {}
            for name, md5 in listing.items():
                known = builtin.get(name)
                if known and known != md5:
                    if self.official:
                        raise DownloadError(
                            f"{self.url}: lists md5 {md5} for {name}, but the "
                            f"published value is {known}; refusing to guess which "
                            f"is right (delete {self._cache()} to fetch the list again)"
                        )
                    log.warning(
                        "%s: lists md5 %s for %s (www.openslr.org: %s); using the "
                        "mirror's",
                        self.url,
                        md5,
                        name,
                        known,
                    )
            self._table = {**builtin, **listing}
        return self._table

    def get(self, name: str) -> str | None:
        return self.table().get(name)


# ------------------------------------------------------------------------- download


def _request(url: str, headers: dict[str, str] | None = None) -> Request:
    return Request(url, headers={"User-Agent": "asr-librispeech/1", **(headers or {})})


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def md5_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.verified")


def _write_stamp(dest: Path, md5: str | None) -> None:
    st = dest.stat()
    record = {"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _write_atomic(_stamp_path(dest), json.dumps(record).encode())


def _stamp_ok(dest: Path) -> bool:
    """True if ``dest`` was verified and has not changed since (size and mtime)."""
    try:
        record = json.loads(_stamp_path(dest).read_text())
        st = dest.stat()
    except (OSError, ValueError):
        return False
    return record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns


class _Interrupted(Exception):
    """The server closed the connection before sending everything it announced."""


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def _transfer(url: str, part: Path, timeout: float) -> None:
    """One request: append to ``part`` from where it ends (``Range``), or start over
    if the server does not resume. Raises :class:`_Interrupted` on a short read."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with urlopen(_request(url, headers), timeout=timeout) as resp:
        mode = "wb"
        if have and resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink()  # the next attempt starts over
                raise _Interrupted(
                    f"asked for bytes {have}- but got Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            mode = "ab"
            log.info("%s: resuming at %s", part.name, _human(have))
        elif have:
            log.info("%s: the server does not resume (HTTP %d); from the start",
                     part.name, resp.status)  # fmt: skip
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        size, last = have, time.monotonic()
        with open(part, mode) as f:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                size += len(chunk)
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    done = f" ({100 * size / total:.0f}%)" if total else ""
                    log.info("%s: %s%s", part.name, _human(size), done)
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")


def fetch(
    name: str,
    dest_dir: str | os.PathLike[str],
    checksums: Checksums,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 5.0,
) -> Path:
    """Download ``<base>/<resource>/<name>`` into ``dest_dir``, resuming and verified.

    A file already in place is skipped: without any request if its stamp says it was
    verified and has not changed, else after checking its MD5. A transfer that
    breaks off is resumed (``Range: bytes=N-``) up to ``retries`` times, waiting
    ``backoff * attempt`` seconds between; the partial ``<name>.part`` is kept for
    a later run when they run out.

    Returns:
        The downloaded (or present) file.

    Raises:
        DownloadError: naming the file: an HTTP error (no retry for 4xx), retries
            exhausted, or an MD5 mismatch (the bad download is deleted; a file that
            was already present is kept and must be deleted by hand).
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / name
    if _stamp_ok(dest):
        log.info("%s: present and verified, skipping", dest)
        return dest
    url = f"{checksums.base}/{checksums.resource}/{name}"
    expected = checksums.get(name)
    if dest.is_file():
        if expected is None:
            log.warning("%s: present; no published checksum to verify it", dest)
        else:
            got = md5_file(dest)
            if got != expected:
                raise DownloadError(
                    f"{dest}: md5 mismatch: the file present has {got}, the "
                    f"published md5 is {expected} ({checksums.url}); it is "
                    f"corrupt or another file: delete it to download it again"
                )
            log.info("%s: present, md5 verified", dest)
        _write_stamp(dest, expected)
        return dest

    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("%s: downloading %s", dest, url)
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout)
            break
        except HTTPError as err:
            have = part.stat().st_size if part.exists() else 0
            if err.code == 416 and have:  # nothing past the end: the part is whole
                log.info("%s: already complete (HTTP 416 for bytes %d-)", part, have)
                break
            if err.code < 500 and err.code != 429:
                raise DownloadError(
                    f"{name}: HTTP {err.code} {err.reason} from {url}"
                ) from None
            problem = f"HTTP {err.code} {err.reason}"
        except (_Interrupted, URLError, OSError, http.client.HTTPException) as err:
            problem = str(getattr(err, "reason", None) or err) or type(err).__name__
        attempt += 1
        have = part.stat().st_size if part.exists() else 0
        if attempt > retries:
            raise DownloadError(
                f"{name}: download from {url} failed after {attempt} attempts "
                f"({problem}); the {have} bytes received are kept in {part}: run "
                f"again to resume"
            )
        wait = backoff * attempt
        log.warning("%s: %s; resuming at byte %d in %.0f s (retry %d of %d)",
                    name, problem, have, wait, attempt, retries)  # fmt: skip
        time.sleep(wait)

    got = md5_file(part)
    if expected is not None and got != expected:
        part.unlink()
        raise DownloadError(
            f"{name}: md5 mismatch: downloaded {got}, published {expected} "
            f"({checksums.url}); the download from {url} is corrupt or not the "
            f"published file. It was deleted: run again to download it afresh"
        )
    if expected is None:
        log.warning("%s: no published checksum (%s has none for it); md5 %s",
                    name, checksums.url, got)  # fmt: skip
    os.replace(part, dest)
    _write_stamp(dest, got)
    log.info("%s: %s, md5 %s%s", dest, _human(dest.stat().st_size), got,
             " verified" if expected else "")  # fmt: skip
    return dest


# -------------------------------------------------------------------------- extract


_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse what could write outside the target: absolute names, ``..``, links,
    devices. LibriSpeech holds only directories and regular files."""
    name = member.name
    parts = Path(name).parts
    if (
        name.startswith(("/", "\\"))
        or os.path.isabs(name)
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise ArchiveError(f"{archive}: refusing member {name!r}: an absolute path")
    if ".." in parts:
        raise ArchiveError(f"{archive}: refusing member {name!r}: it leaves the target")
    if not (member.isfile() or member.isdir()):
        kind = (
            "a symbolic link" if member.issym() else
            "a hard link" if member.islnk() else
            "a device or fifo"
        )  # fmt: skip
        raise ArchiveError(f"{archive}: refusing member {name!r}: {kind}")


def extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], part: str
) -> Path:
    """Extract ``<part>.tar.gz`` to ``dest/LibriSpeech/<part>`` (skipped if there).

    The archive is streamed into ``dest/.<part>.extracting/`` and its
    ``LibriSpeech/<part>`` renamed into place, so the target exists only complete;
    the top-level notes (``SPEAKERS.TXT``...) are kept beside it.

    Raises:
        ArchiveError: naming the archive: corrupt (truncated, not gzip), an unsafe
            member, or no ``LibriSpeech/<part>/`` inside.
    """
    archive, dest = Path(archive), Path(dest)
    target = dest / "LibriSpeech" / part
    if target.is_dir():
        log.info("%s: already extracted, skipping", target)
        return target
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive (run the download stage)")
    tmp = dest / f".{part}.extracting"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log.info("%s: extracting into %s", archive, target)
    files = 0
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                _check_member(member, archive)
                tar.extract(member, tmp, set_attrs=False, filter="data")
                files += member.isfile()
    except tarfile.FilterError as err:  # tarfile's own "data" filter
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(f"{archive}: refusing an unsafe member ({err})") from None
    except _CORRUPT as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"{archive}: corrupt archive ({type(err).__name__}: {err}); delete it "
            f"and run the download stage again"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    src = tmp / "LibriSpeech" / part
    if not src.is_dir():
        found = sorted(str(p.relative_to(tmp)) for p in tmp.glob("*/*"))[:5]
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"{archive}: no LibriSpeech/{part}/ inside (found {found or 'nothing'}): "
            f"not the LibriSpeech {part} archive"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, target)
    for note in (tmp / "LibriSpeech").iterdir():
        if note.is_file() and not (target.parent / note.name).exists():
            os.replace(note, target.parent / note.name)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d files", target, files)
    return target


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
    from asr.lm import (
        LMError,
        find_program,
        read_arpa_unigrams,
        unigrams_path,
        write_text_atomic,
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
        except (*_CORRUPT, UnicodeDecodeError) as err:
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
        write_text_atomic(uni, "".join(w + "\n" for w in words))
        tmp_out = Path(tmp) / "lm.bin"
        cmd = [build_binary, "-T", tmp, binary_type, str(arpa), str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise LMError(f"{output}: build_binary failed ({proc.returncode}):\n{tail}")
        os.replace(tmp_out, output)
    log.info("%s: %s (%d unigrams from %s)", output, _human(output.stat().st_size),
             len(words), source)  # fmt: skip
    return output


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


# ---------------------------------------------------------------------------- CLI


def _add_host(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mirror",
        default=OPENSLR,
        help=f"base URL replacing {OPENSLR}: files are fetched from "
        "MIRROR/12/<part>.tar.gz and MIRROR/11/<file> (default: %(default)s)",
    )
    p.add_argument("--retries", type=int, default=5, help="resumes per file")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout, s")
    p.add_argument("--backoff", type=float, default=5.0, help="wait * attempt, s")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr data librispeech",
        description="LibriSpeech (OpenSLR 12) and its language models (OpenSLR 11).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "download",
        help="download parts and LM files, resumable, MD5-checked",
        description="Download into DEST; a file already there and verified is "
        "skipped without a request; an interrupted download resumes (HTTP Range).",
    )
    p.add_argument("--parts", nargs="*", default=[], help="100|460|960 or part names")
    p.add_argument("--lm-files", nargs="*", default=[], help="OpenSLR 11 file names")
    p.add_argument("--dest", type=Path, required=True, help="the downloads directory")
    _add_host(p)

    p = sub.add_parser("extract", help="extract downloaded parts, safely")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--downloads", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True, help="gets LibriSpeech/<part>")

    p = sub.add_parser("manifests", help="JSON Lines manifests per part + training")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument(
        "--corpus",
        type=Path,
        action="append",
        required=True,
        help="a directory holding LibriSpeech/<part> or <part> (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser(
        "lm", help="download an OpenSLR 11 ARPA model; lower-case and binarize it"
    )
    p.add_argument("--kind", choices=sorted(LM_ARPA), default="3-gram.pruned.1e-7")
    p.add_argument("--downloads", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, help="e.g. lm.bin")
    p.add_argument("--binary-type", choices=("probing", "trie"), default="probing")
    _add_host(p)

    p = sub.add_parser("results", help="RESULTS.md from asr evaluate --json files")
    p.add_argument("--results", type=Path, required=True, help="<set>.<dec>.json dir")
    p.add_argument("--sets", nargs="+", default=list(EVAL_PARTS))
    p.add_argument("--decoder-json", type=Path, help="decoder.json (asr lm tune)")
    p.add_argument("--note", action="append", default=[], help="a line of notes")
    p.add_argument("-o", "--output", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``asr data librispeech {download,extract,manifests,lm,results} ...``."""
    from asr.lm import LMError, unigrams_path
    from asr.manifest import ManifestError

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "download":
            parts = resolve_parts(args.parts)
            if not parts and not args.lm_files:
                raise LibriSpeechError(
                    "nothing to download: give --parts or --lm-files"
                )
            for resource, names in (
                (CORPUS_RESOURCE, [f"{p}.tar.gz" for p in parts]),
                (LM_RESOURCE, list(args.lm_files)),
            ):
                sums = Checksums(args.mirror, resource, args.dest, args.timeout)
                for name in names:
                    fetch(
                        name, args.dest, sums, args.retries, args.timeout, args.backoff
                    )
        elif args.command == "extract":
            for part in resolve_parts(args.parts):
                extract(args.downloads / f"{part}.tar.gz", args.dest, part)
        elif args.command == "manifests":
            write_manifests(args.corpus, resolve_parts(args.parts), args.out)
        elif args.command == "lm":
            sums = Checksums(args.mirror, LM_RESOURCE, args.downloads, args.timeout)
            if args.output.is_file() and unigrams_path(args.output).is_file():
                log.info("%s: present, skipping", args.output)
                return 0
            arpa = fetch(LM_ARPA[args.kind], args.downloads, sums, args.retries,
                         args.timeout, args.backoff)  # fmt: skip
            vocab = fetch(LM_VOCAB, args.downloads, sums, args.retries, args.timeout,
                          args.backoff)  # fmt: skip
            prepare_arpa_lm(arpa, vocab, args.output, args.binary_type)
        elif args.command == "results":
            table = results_table(
                args.results, args.sets, args.decoder_json, notes=args.note
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(args.output, table.encode("utf-8"))
            print(table, end="")
    except (LibriSpeechError, LMError, ManifestError) as err:
        print(f"asr data librispeech {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
