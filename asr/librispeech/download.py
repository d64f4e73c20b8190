"""LibriSpeech from OpenSLR (:mod:`asr.librispeech.corpus`): resumable
checksummed downloads, and safe extraction.

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
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from asr.atomic import atomic_write_bytes
from asr.librispeech.corpus import (
    CORPUS_RESOURCE,
    LM_RESOURCE,
    OPENSLR,
    PUBLISHED_LM_MD5,
    PUBLISHED_MD5,
    ArchiveError,
    DownloadError,
    LibriSpeechError,
)

__all__ = [
    "CORRUPT_ERRORS",
    "Checksums",
    "DiskSpaceError",
    "check_free_space",
    "download_files",
    "extract",
    "fetch",
    "human_size",
    "md5_file",
    "parse_md5sum",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MD5_LINE = re.compile(r"^([0-9a-fA-F]{32})\s+\*?(\S.*)$")
# What reading a truncated or non-gzip archive raises.
CORRUPT_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


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
    Without a list, :data:`PUBLISHED_MD5` applies to the corpus archives and
    :data:`PUBLISHED_LM_MD5` to the language models, their vocabulary and text.
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
        """True for www.openslr.org itself, whose list must agree with ours."""
        return self.base == OPENSLR or self.base == OPENSLR.replace("https:", "http:")

    def _cache(self) -> Path:
        """Where this host's list is cached (one file per host and resource)."""
        tag = hashlib.sha1(self.base.encode()).hexdigest()[:8]
        return self.cache_dir / f".md5sum-{self.resource}-{tag}.txt"

    def _listing(self) -> dict[str, str]:
        """The host's list, from the cache or fetched once; ``{}`` if it has none."""
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
        atomic_write_bytes(cache, text.encode("utf-8"))
        log.info("%s: %d checksums (cached in %s)", self.url, len(listing), cache)
        return listing

    def table(self) -> dict[str, str]:
        """File name -> expected MD5: the host's list over the published one."""
        if self._table is None:
            listing = self._listing()
            builtin = {
                CORPUS_RESOURCE: PUBLISHED_MD5,
                LM_RESOURCE: PUBLISHED_LM_MD5,
            }.get(self.resource, {})
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
        """The expected MD5 of ``name``, or None if nobody publishes one."""
        return self.table().get(name)


# ------------------------------------------------------------------------- download


def _request(url: str, headers: dict[str, str] | None = None) -> Request:
    return Request(url, headers={"User-Agent": "asr-librispeech/1", **(headers or {})})


def md5_file(path: str | os.PathLike[str]) -> str:
    """The MD5 of a file as hex, read in 1 MiB blocks."""
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
    atomic_write_bytes(_stamp_path(dest), json.dumps(record).encode())


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


def human_size(n: float) -> str:
    """``n`` bytes for a log line: ``"337.9 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


# Kept free beyond what a download or an extraction needs: a disk filled to the
# last byte fails the next writer (a checkpoint, a log) in ways no one expects.
_FREE_MARGIN = 1 << 30
# An extracted LibriSpeech part is about its archive's size (FLAC does not
# compress further: train-960's 59.3 GB of archives extract to 62 GB).
_EXTRACTED_PER_ARCHIVE_BYTE = 1.1


# tarfile's extraction filters came with Python 3.12 and the security releases
# 3.10.12 and 3.11.4; before them _check_member's checks stand alone.
_TAR_FILTERS = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if _TAR_FILTERS else ()
)


class DiskSpaceError(LibriSpeechError):
    """Not enough free space for a download or an extraction."""


def check_free_space(directory: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` unless ``directory``'s file system has
    ``needed`` bytes free beyond a margin of 1 GiB (checked before the work, so a
    full disk is found in seconds, not hours in)."""
    directory = Path(directory)
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + _FREE_MARGIN:
        raise DiskSpaceError(
            f"{directory}: {what} needs {human_size(needed)} (and "
            f"{human_size(_FREE_MARGIN)} to spare), but its disk has "
            f"{human_size(free)} free; free some space "
            "or give a directory on a larger disk (run.sh --data DIR)"
        )


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
            log.info("%s: resuming at %s", part.name, human_size(have))
        elif have:
            log.info("%s: the server does not resume (HTTP %d); from the start",
                     part.name, resp.status)  # fmt: skip
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if length is not None:
            check_free_space(
                part.parent, int(length), f"downloading {url.rsplit('/', 1)[-1]}"
            )
        size, last = have, time.monotonic()
        with open(part, mode) as f:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                size += len(chunk)
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    done = f" ({100 * size / total:.0f}%)" if total else ""
                    log.info("%s: %s%s", part.name, human_size(size), done)
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
    log.info("%s: %s, md5 %s%s", dest, human_size(dest.stat().st_size), got,
             " verified" if expected else "")  # fmt: skip
    return dest


def download_files(
    parts: Sequence[str],
    lm_files: Sequence[str],
    dest: str | os.PathLike[str],
    mirror: str = OPENSLR,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 5.0,
) -> list[Path]:
    """:func:`fetch` the archives of ``parts`` (resource 12) and the resource 11
    files ``lm_files`` from ``mirror`` into ``dest``; ``retries``, ``timeout``
    (seconds) and ``backoff`` (seconds) as for :func:`fetch`.

    Returns:
        The downloaded (or present) files.

    Raises:
        LibriSpeechError: nothing asked for.
        DownloadError: naming the file (see :func:`fetch`).
    """
    if not parts and not lm_files:
        raise LibriSpeechError("nothing to download: give --parts or --lm-files")
    got = []
    for resource, names in (
        (CORPUS_RESOURCE, [f"{p}.tar.gz" for p in parts]),
        (LM_RESOURCE, list(lm_files)),
    ):
        sums = Checksums(mirror, resource, dest, timeout)
        for name in names:
            got.append(fetch(name, dest, sums, retries, timeout, backoff))
    return got


# -------------------------------------------------------------------------- extract


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
    check_free_space(
        dest,
        int(archive.stat().st_size * _EXTRACTED_PER_ARCHIVE_BYTE),
        f"extracting {archive.name}",
    )
    tmp.mkdir(parents=True)
    log.info("%s: extracting into %s", archive, target)
    files = 0
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                _check_member(member, archive)
                if _TAR_FILTERS:
                    tar.extract(member, tmp, set_attrs=False, filter="data")
                else:  # our own checks above refuse everything "data" would
                    tar.extract(member, tmp, set_attrs=False)
                files += member.isfile()
    except _FILTER_ERRORS as err:  # tarfile's own "data" filter
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(f"{archive}: refusing an unsafe member ({err})") from None
    except CORRUPT_ERRORS as err:
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
