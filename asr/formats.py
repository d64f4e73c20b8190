"""Output formats of ``asr transcribe``, and writing them atomically.

- ``text``: the transcript. One input: its text on one line. Several inputs: one line
  per transcribed input, ``name<TAB>text`` (the name is the manifest's ``id`` if it
  has one, else the audio path).
- ``json``: one JSON document (not JSON Lines: a header describing how the results
  were made belongs once at the top)::

      {"model": {"checkpoint": ..., "sha256": ..., "parameters": ..., ...},
       "decoder": {"decoder": "greedy", "batch_seconds": ..., ...},
       "results": [{"path": ..., "id": ..., "offset": ..., "duration": 3.2,
                    "text": "...", "score": -1.5,
                    "words": [{"text": ..., "start": 0.4, "end": 0.72,
                               "confidence": 0.98}, ...]}, ...],
       "failed": [{"path": ..., "error": "..."}]}

  ``id`` and ``offset`` appear for manifest entries that have them; times and
  durations are seconds.
- ``srt`` (SubRip) and ``vtt`` (WebVTT): subtitle cues of consecutive words, a new
  cue when a cue would exceed :data:`CUE_SECONDS` or :data:`CUE_CHARACTERS`, or
  after a pause longer than :data:`CUE_PAUSE`. Timestamps ``00:01:02,500`` (SRT)
  and ``00:01:02.500`` (WebVTT, after a ``WEBVTT`` header). One input per file.
- ``ctm``: NIST CTM, one line per word, ``utterance channel start duration word
  confidence`` (channel ``1``; the utterance is the input's name with any
  whitespace replaced by ``_``).

Where results go (:func:`output_plan`): standard output, or ``-o FILE`` (all inputs
in one file), or ``-o DIR`` (one file per input, ``DIR/<stem>.<ext>``: the stem is
the file's name without extension, its path inside a directory given as input, or
a manifest's ``id``). ``-o`` is a directory when it exists as one or ends with a
path separator, and always for SRT/WebVTT with several inputs (created if needed),
since a subtitle file holds one recording. SRT/WebVTT of several inputs without
``-o`` is refused before any work. Every file is written atomically (a temporary
file in the same directory, then a rename), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.atomic import WriteError, atomic_write_text
from asr.decoding import Word
from asr.transcribe import Failure, Source, Transcript

__all__ = [
    "CUE_CHARACTERS",
    "CUE_PAUSE",
    "CUE_SECONDS",
    "EXTENSIONS",
    "FORMATS",
    "Cue",
    "DirectoryWriter",
    "OutputError",
    "cues",
    "output_plan",
    "render",
    "srt_timestamp",
    "to_json",
    "vtt_timestamp",
    "write_results",
]

FORMATS = ("text", "json", "srt", "vtt", "ctm")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}
EXTENSIONS["ctm"] = ".ctm"
# Subtitle cues: at most this long (seconds) and this many characters (Netflix's
# and the BBC's guidelines: 42 characters a line, 7 seconds a subtitle), and a
# pause longer than CUE_PAUSE seconds starts a new cue.
CUE_SECONDS = 7.0
CUE_CHARACTERS = 42
CUE_PAUSE = 1.5
_SUBTITLES = ("srt", "vtt")


class OutputError(ValueError):
    """An output that cannot be produced as asked; the message says why."""


@dataclass(frozen=True)
class Cue:
    """A subtitle: start and end in seconds, and one line of text."""

    start: float
    end: float
    text: str


def _timestamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def srt_timestamp(seconds: float) -> str:
    """``3723.5`` -> ``"01:02:03,500"`` (SubRip)."""
    return _timestamp(seconds, ",")


def vtt_timestamp(seconds: float) -> str:
    """``3723.5`` -> ``"01:02:03.500"`` (WebVTT)."""
    return _timestamp(seconds, ".")


def cues(
    words: Sequence[Word],
    max_seconds: float = CUE_SECONDS,
    max_characters: int = CUE_CHARACTERS,
    max_pause: float = CUE_PAUSE,
) -> list[Cue]:
    """Group consecutive words into subtitle cues.

    A word starts a new cue when adding it would make the cue last longer than
    ``max_seconds`` or hold more than ``max_characters`` characters, or when it
    follows a pause longer than ``max_pause`` seconds. A single word longer than
    the limits makes a cue of its own.
    """
    out: list[Cue] = []
    group: list[Word] = []

    def flush() -> None:
        if group:
            text = " ".join(w.text for w in group)
            out.append(Cue(group[0].start, group[-1].end, text))

    for w in words:
        if group:
            length = sum(len(g.text) + 1 for g in group) + len(w.text)
            if (
                w.end - group[0].start > max_seconds
                or length > max_characters
                or w.start - group[-1].end > max_pause
            ):
                flush()
                group = []
        group.append(w)
    flush()
    return out


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{srt_timestamp(c.start)} --> {srt_timestamp(c.end)}\n{c.text}\n"
        for i, c in enumerate(cues(transcript.words), 1)
    ]
    return "\n".join(blocks)


def render_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{vtt_timestamp(c.start)} --> {vtt_timestamp(c.end)}\n{_vtt_escape(c.text)}\n"
        for c in cues(transcript.words)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def _ctm_name(name: str) -> str:
    return re.sub(r"\s", "_", name) or "_"


def render_ctm(transcripts: Sequence[Transcript]) -> str:
    lines = []
    for t in transcripts:
        utt = _ctm_name(t.source.name)
        for w in t.words:
            lines.append(
                f"{utt} 1 {w.start:.3f} {w.end - w.start:.3f} {w.text} "
                f"{w.confidence:.4f}"
            )
    return "".join(line + "\n" for line in lines)


def render_text(transcripts: Sequence[Transcript], names: bool) -> str:
    if names:
        return "".join(f"{t.source.name}\t{t.text}\n" for t in transcripts)
    return "".join(f"{t.text}\n" for t in transcripts)


def _json_result(t: Transcript) -> dict[str, Any]:
    record: dict[str, Any] = {"path": t.source.path}
    if t.source.id is not None:
        record["id"] = t.source.id
    if t.source.offset:
        record["offset"] = t.source.offset
    record["duration"] = round(t.duration, 6)
    record.update(
        {
            "text": t.text,
            "score": t.hypothesis.score,
            "words": [w.to_dict() for w in t.words],
        }
    )
    return record


def _json_failure(f: Failure) -> dict[str, Any]:
    record: dict[str, Any] = {"path": f.source.path}
    if f.source.id is not None:
        record["id"] = f.source.id
    record["error"] = f.reason
    return record


# A file name that is not valid UTF-8 reaches Python with its odd bytes as lone
# surrogates (os.fsdecode's surrogate escapes, U+DC80-U+DCFF).
_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(document: Any) -> str:
    """JSON text of ``document``, UTF-8 safe: other characters are kept as they are,
    lone surrogates become ``\\udcXX`` escapes. That is valid JSON; ``json.load``
    gives the same string back and ``os.fsencode`` of it the name's original bytes,
    so a file whose name is not UTF-8 is named losslessly."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render_json(results: Sequence[Transcript | Failure], header: dict[str, Any]) -> str:
    document = {
        **header,
        "results": [_json_result(r) for r in results if isinstance(r, Transcript)],
        "failed": [_json_failure(r) for r in results if isinstance(r, Failure)],
    }
    return to_json(document) + "\n"


def render(
    fmt: str,
    results: Sequence[Transcript | Failure],
    header: dict[str, Any] | None = None,
    names: bool | None = None,
) -> str:
    """The text of ``results`` in format ``fmt`` (one of :data:`FORMATS`).

    Args:
        fmt: the format.
        results: transcripts and failures, in input order (failures appear only in
            JSON's ``failed`` list).
        header: JSON's top-level ``model`` and ``decoder`` entries.
        names: text format: prefix each line with the input's name; by default when
            there are several results.

    Raises:
        OutputError: an unknown format, or SRT/WebVTT of several transcripts.
    """
    transcripts = [r for r in results if isinstance(r, Transcript)]
    if fmt == "text":
        return render_text(transcripts, len(results) > 1 if names is None else names)
    if fmt == "json":
        return render_json(results, header or {})
    if fmt == "ctm":
        return render_ctm(transcripts)
    if fmt in _SUBTITLES:
        if len(transcripts) > 1:
            raise OutputError(f"{fmt} holds one recording, got {len(transcripts)}")
        if not transcripts:
            return "WEBVTT\n" if fmt == "vtt" else ""
        return (render_srt if fmt == "srt" else render_vtt)(transcripts[0])
    raise OutputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def output_plan(fmt: str, n_inputs: int, output: str | os.PathLike[str] | None) -> str:
    """Where results go: ``"stdout"``, ``"file"`` or ``"directory"`` (see the module
    docstring). Call it before transcribing, so an impossible request fails first:
    the destination is tried (a file created and removed in its directory, or in the
    nearest directory that exists), so a read-only place is found before any work.

    Raises:
        OutputError: an unknown format, SRT/WebVTT of several inputs without ``-o``,
            ``-o`` naming an existing file where a directory is needed, or a
            destination that cannot be written.
    """
    if fmt not in FORMATS:
        raise OutputError(
            f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    if output is None:
        if fmt in _SUBTITLES and n_inputs > 1:
            raise OutputError(
                f"{n_inputs} inputs: {fmt} holds one recording per file, so give "
                "-o DIR to write one file per input"
            )
        return "stdout"
    out = os.fspath(output)
    is_dir = os.path.isdir(out) or out.endswith(("/", os.sep))
    if is_dir or (fmt in _SUBTITLES and n_inputs > 1):
        if os.path.exists(out) and not os.path.isdir(out):
            raise OutputError(
                f"{out}: is a file; {fmt} of {n_inputs} inputs needs a directory "
                "(one file per input)"
            )
        _check_writable(out, out)
        return "directory"
    if os.path.isdir(out):
        raise OutputError(f"{out}: is a directory")
    _check_writable(os.path.dirname(os.path.abspath(out)), out)
    return "file"


def _check_writable(directory: str, shown: str) -> None:
    """Create and remove a file in ``directory`` (or in its nearest existing
    ancestor, where the directory would be created), so a destination that
    cannot be written fails now, not after the work."""
    probe_in = os.path.abspath(directory)
    while not os.path.exists(probe_in):
        parent = os.path.dirname(probe_in)
        if parent == probe_in:
            break
        probe_in = parent
    if not os.path.isdir(probe_in):
        raise OutputError(f"{shown}: cannot write: {probe_in} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".asr-probe-", dir=probe_in)
    except OSError as e:
        raise OutputError(
            f"{shown}: cannot write in {probe_in}: {e.strerror or e}"
        ) from None
    os.close(fd)
    os.unlink(probe)


# A file name component at most this many bytes (file systems allow 255; room is
# left for "-2" suffixes, the extension and the temporary file's decoration).
_MAX_COMPONENT_BYTES = 180
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _safe_component(part: str) -> str:
    """One path component that every POSIX file system accepts: no control
    characters (a NUL byte would make ``open`` raise), at most
    :data:`_MAX_COMPONENT_BYTES` bytes (a longer one is cut and given a hash of the
    whole, so that different long names stay different)."""
    part = _CONTROL.sub("_", part)
    raw = part.encode("utf-8", "surrogateescape")
    if len(raw) <= _MAX_COMPONENT_BYTES:
        return part
    digest = hashlib.sha1(raw).hexdigest()[:12]
    head = raw[: _MAX_COMPONENT_BYTES - 13].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def _inside(path: str, directory: str) -> bool:
    """True if ``path`` lies in ``directory`` once symbolic links are resolved."""
    real = os.path.realpath(path)
    root = os.path.realpath(directory)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _output_paths(
    directory: str | os.PathLike[str], sources: Sequence[Source], ext: str
) -> list[Path]:
    """One file per source in ``directory``: ``<stem><ext>``, made unique by
    appending ``-2``, ``-3``... to repeats (in input order, so a file's name does
    not depend on which other inputs could be read).

    A stem comes from input names (a manifest's ``id`` among them), so it is not
    trusted: absolute paths, ``..`` and empty parts are dropped, control characters
    replaced and long parts shortened; a stem whose subdirectory resolves outside
    ``directory`` through a symbolic link is flattened into one file name
    (``sub_name``) directly in ``directory``. Every file stays inside it."""
    out = os.fspath(directory)
    seen: set[str] = set()
    paths = []
    for src in sources:
        parts = re.split(r"[/\\]", src.stem)
        kept = [_safe_component(p) for p in parts if p not in ("", ".", "..")]
        stem = "/".join(kept) or "audio"
        if not _inside(os.path.join(out, stem), out):
            stem = _safe_component("_".join(kept))
        candidate, k = stem, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{stem}-{k}"
        seen.add(candidate.lower())
        paths.append(Path(out) / (candidate + ext))
    return paths


class DirectoryWriter:
    """``-o DIR``: one file per transcript, written as soon as it is ready, so work
    already done survives an interruption; a file that cannot be written fails
    alone.

    Args:
        directory: the ``-o`` directory (created if needed).
        fmt: one of :data:`FORMATS`.
        sources: every input, in input order (names are made unique over them).
        header: JSON's ``model`` and ``decoder`` entries.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fmt: str,
        sources: Sequence[Source],
        header: dict[str, Any],
    ) -> None:
        self.fmt = fmt
        self.header = header
        self.paths = _output_paths(directory, sources, EXTENSIONS[fmt])
        self.written: list[Path] = []

    def write(self, index: int, transcript: Transcript) -> Path:
        """Write the transcript of source ``index``.

        Raises:
            OutputError: the file cannot be written (named, with the reason).
        """
        path = self.paths[index]
        try:
            atomic_write_text(path, render(self.fmt, [transcript], self.header, False))
        except OSError as e:
            raise _output_error(e, path) from None
        self.written.append(path)
        return path


def _output_error(e: OSError, path: str | os.PathLike[str]) -> OutputError:
    if isinstance(e, WriteError):
        return OutputError(str(e))
    return OutputError(f"{e.filename or path}: cannot write: {e.strerror or e}")


def write_results(
    results: Sequence[Transcript | Failure],
    fmt: str,
    output: str | os.PathLike[str] | None,
    header: dict[str, Any],
    n_inputs: int | None = None,
) -> list[Path] | str:
    """Write results to standard output or one file (``-o DIR`` is
    :class:`DirectoryWriter`'s, as they come).

    Args:
        results: transcripts and failures in input order.
        fmt: one of :data:`FORMATS`.
        output: ``-o`` FILE, or ``None`` for standard output.
        header: JSON's ``model`` and ``decoder`` entries.
        n_inputs: how many inputs there were (default ``len(results)``).

    Returns:
        The file written (none for a subtitle format without a transcript), or for
        standard output the text to print.

    Raises:
        OutputError: as :func:`output_plan`, or the file cannot be written.
    """
    n = len(results) if n_inputs is None else n_inputs
    plan = output_plan(fmt, n, output)
    if plan == "stdout":
        return render(fmt, results, header)
    if plan == "directory":
        raise OutputError(f"{output}: a directory: write with DirectoryWriter")
    assert output is not None
    path = Path(output)
    if fmt in _SUBTITLES and not any(isinstance(r, Transcript) for r in results):
        return []  # no recording, no subtitle file
    try:
        atomic_write_text(path, render(fmt, results, header, names=n > 1))
    except OSError as e:
        raise _output_error(e, path) from None
    return [path]
