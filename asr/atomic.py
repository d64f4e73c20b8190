"""Writing files so that a crash or a full disk never leaves a torn one.

The files the tools write (model checkpoints, transcripts, manifests, LM word lists)
go through :func:`atomic_write_bytes` (or :func:`atomic_write_text`,
:func:`atomic_save`): the bytes go to a temporary file in the target's directory, are
flushed to the disk (``fsync``), and the temporary file is renamed over the target
(``os.replace``, atomic on POSIX file systems). A kill at any moment leaves the old
file or the new one, never part of one; a failure (a full disk, a quota, a read-only
file system) removes the temporary file, leaves any old file as it was, and raises
:class:`WriteError`, whose message names the file and says what went wrong in words.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import uuid
from typing import Any

__all__ = [
    "WriteError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_error",
]

# errno -> what to tell the user (strerror alone, "No space left on device", leaves
# them to guess that the previous file survived and what to do).
_REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large for the file system",
    errno.ENAMETOOLONG: "the file name is too long",
}


class WriteError(OSError):
    """A file that could not be written; ``str(e)`` is ``"<path>: <reason>"``, one
    line, and says that any previous version of the file is unchanged.

    A subclass of OSError (``errno`` is the cause's), so callers that handle write
    failures as OSError keep working.

    Attributes:
        path: the file that was to be written.
        reason: what went wrong, one line.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, code: int = 0):
        super().__init__(code, reason)
        self.path = os.fspath(path)
        self.reason = " ".join(reason.split())
        self.filename = self.path

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self) -> tuple[type[WriteError], tuple[str, str, int]]:
        return (type(self), (self.path, self.reason, self.errno or 0))


def write_error(path: str | os.PathLike[str], err: OSError) -> WriteError:
    """The :class:`WriteError` for ``err`` raised while writing ``path``."""
    if isinstance(err, WriteError):
        return err
    code = err.errno or 0
    what = _REASONS.get(code) or err.strerror or str(err) or type(err).__name__
    return WriteError(
        path, f"cannot write: {what}; any previous version of it is unchanged", code
    )


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a seam for tests that fill the
    disk halfway)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable; not every file system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes | memoryview, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically, creating parent directories.

    ``durable=False`` skips the flushes to the disk (``fsync``): the file is still
    whole or absent for every reader and after a kill, but a power cut may lose it;
    for files that are cheap to make again (a generated corpus's thousands of
    utterances, which a rerun completes).

    A reader sees the old file or the new one, never part of one; a kill at any
    moment leaves one of the two; on failure the temporary file is removed and the
    old file is untouched. A file that replaces another keeps the other's
    permissions (a private ``0600`` file stays private); a new file's follow the
    umask (``0o666`` less the umask), as for any new file.

    Raises:
        WriteError: the directory or the file cannot be written (a full disk...).
    """
    p = os.fspath(path)
    target = os.path.abspath(p)
    directory = os.path.dirname(target)
    tmp = os.path.join(
        directory,
        f".{os.path.basename(target)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp",
    )
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise write_error(p, e) from e
    try:
        try:
            try:
                os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
            except FileNotFoundError:
                pass
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise write_error(p, e) from e
        raise
    if durable:
        _fsync_directory(directory)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, durable: bool = True
) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (newlines kept as given).

    File names that are not valid UTF-8 reach Python as lone surrogates
    (``os.fsdecode``'s surrogate escapes); written back with the same escapes they
    become the name's original bytes again, so a transcript names such a file
    exactly as the file system does."""
    if not isinstance(text, str):
        raise TypeError(f"expected text (str), got {type(text).__name__}")
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), durable)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    The checkpoint is serialized in memory first: torch's zip writer turns an error
    of the underlying file (a full disk) into an unhelpful ``RuntimeError``, while
    here the disk is written by :func:`atomic_write_bytes`, which names the problem.

    Raises:
        WriteError: as :func:`atomic_write_bytes`, or serialization failed with an
            OSError.
    """
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except OSError as e:
        raise write_error(path, e) from e
    atomic_write_bytes(path, buffer.getbuffer())
