"""Manifests: the :class:`Utterance` record, JSON Lines read/write, validation, and
building a manifest from a LibriSpeech tree.

A manifest is a JSON Lines file, one utterance per line, with the keys used across
the field (NeMo, ESPnet, lhotse exports)::

    {"audio_filepath": "train/1-2-0001.flac", "duration": 3.21, "text": "hello world"}

plus optional ``offset`` (seconds into the file), ``id`` and ``speaker``. Relative
audio paths are relative to the manifest's own directory, so a corpus directory can
be moved as a whole. Other keys are ignored.

Bad input is reported all at once: :class:`ManifestError` lists every bad line as
``"<manifest>:<line>: <problem>"``, so one run shows everything there is to fix.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr.atomic import WriteError, atomic_write_text
from asr.audio import AudioError, AudioInfo, audio_info
from asr.text import CharTokenizer, normalize

__all__ = [
    "CATEGORIES",
    "DURATION_TOLERANCE",
    "ManifestError",
    "ManifestScan",
    "Utterance",
    "ValidationReport",
    "librispeech_manifest",
    "read_manifest",
    "scan_manifest",
    "validate_manifest",
    "validate_utterances",
    "write_manifest",
]

# At most this many problems are spelled out in one error message; all of them are in
# ``ManifestError.problems``. (A binary file passed as a manifest would otherwise
# produce a message of a million lines.)
_MAX_LISTED = 100
_LIBRISPEECH_ID = re.compile(r"\d+-\d+-\d+")

# The problem categories of :func:`validate_utterances`, in report order.
# How far a manifest's duration may be from the audio's (seconds; and 1% of it):
# headers of compressed formats (MP3) only estimate their length.
DURATION_TOLERANCE = 0.1
# Durations beyond this (seconds: a year) are not converted to frames: no audio is
# that long, and the conversion would overflow.
_LONGEST = 3.2e7

CATEGORIES: tuple[str, ...] = (
    "malformed line",
    "unreadable audio",
    "empty text",
    "unspellable characters",
    "too short for its transcript",
    "duration mismatch",
    "too long",
    "duplicate id",
)


class ManifestError(ValueError):
    """Bad manifest or corpus tree.

    ``str(e)`` is ``"<path>:<line>: <problem>"`` for one problem; for several, a
    heading line followed by one problem per line.

    Attributes:
        problems: every problem, one string each, in file order.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]

    @classmethod
    def listing(cls, source: str, problems: Sequence[str]) -> ManifestError:
        """One error for all of ``problems`` found in ``source``."""
        if len(problems) == 1:
            return cls(problems[0], problems)
        shown = list(problems[:_MAX_LISTED])
        if len(problems) > _MAX_LISTED:
            shown.append(f"... and {len(problems) - _MAX_LISTED} more")
        heading = f"{source}: {len(problems)} problems:"
        return cls("\n".join([heading, *shown]), problems)


@dataclass(frozen=True)
class Utterance:
    """One utterance: a file (or a segment of one) and its transcript.

    Attributes:
        audio_filepath: the audio file (absolute once read from a manifest).
        duration: length of the utterance in seconds.
        text: the transcript.
        offset: start of the utterance in the file, in seconds.
        id: a unique name, e.g. LibriSpeech's ``"84-121123-0000"``.
        speaker: the speaker's label.
        phones_filepath: optional time-aligned phones of the utterance (a text file,
            one ``label start end`` line per phone, seconds from the start of the
            utterance; :func:`asr.data.read_phones`), e.g. what a text-to-speech
            engine said it spoke; training can use them as frame targets.
    """

    audio_filepath: str
    duration: float
    text: str
    offset: float = 0.0
    id: str | None = None
    speaker: str | None = None
    phones_filepath: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest record: the three required keys, then ``offset`` (if not
        zero), ``id``, ``speaker`` and ``phones_filepath`` (if not None)."""
        record: dict[str, Any] = {
            "audio_filepath": self.audio_filepath,
            "duration": self.duration,
            "text": self.text,
        }
        if self.offset:
            record["offset"] = self.offset
        if self.id is not None:
            record["id"] = self.id
        if self.speaker is not None:
            record["speaker"] = self.speaker
        if self.phones_filepath is not None:
            record["phones_filepath"] = self.phones_filepath
        return record


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _json_type(x: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    if x is None:
        return "null"
    if _is_number(x):
        return "number"
    return names.get(type(x), type(x).__name__)


def _parse_record(obj: object, base: str) -> tuple[Utterance | None, list[str]]:
    """One decoded JSON line -> (Utterance or None, its problems)."""
    if not isinstance(obj, dict):
        return None, [f"expected a JSON object, got {_json_type(obj)}"]
    problems = []
    missing = [k for k in ("audio_filepath", "duration", "text") if k not in obj]
    if missing:
        problems.append("missing key(s) " + ", ".join(repr(k) for k in missing))
    path = obj.get("audio_filepath")
    if "audio_filepath" in obj and (not isinstance(path, str) or not path):
        problems.append(
            f"'audio_filepath' must be a non-empty string, got {_json_type(path)}"
        )
    for key, required in (("duration", True), ("offset", False)):
        value = obj.get(key)
        if key not in obj or (value is None and not required):
            continue
        if not _is_number(value):
            problems.append(f"{key!r} must be a number of seconds, got {value!r}")
        elif not math.isfinite(value) or value < 0:
            problems.append(f"{key!r} must be a finite number >= 0, got {value!r}")
    text = obj.get("text")
    if "text" in obj and not isinstance(text, str):
        problems.append(f"'text' must be a string, got {_json_type(text)}")
    labels: dict[str, str | None] = {}
    for key in ("id", "speaker"):
        value = obj.get(key)
        if value is None or isinstance(value, str):
            labels[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            labels[key] = str(value)  # numeric speaker/utterance ids are common
        else:
            problems.append(f"{key!r} must be a string, got {_json_type(value)}")
    phones = obj.get("phones_filepath")
    if phones is not None and (not isinstance(phones, str) or not phones):
        problems.append(
            f"'phones_filepath' must be a non-empty string, got {_json_type(phones)}"
        )
    if problems:
        return None, problems
    assert isinstance(path, str) and isinstance(text, str), obj
    return (
        Utterance(
            audio_filepath=os.path.normpath(os.path.join(base, path)),
            duration=float(obj["duration"]),
            text=text,
            offset=float(obj.get("offset") or 0.0),
            id=labels["id"],
            speaker=labels["speaker"],
            phones_filepath=(
                os.path.normpath(os.path.join(base, phones)) if phones else None
            ),
        ),
        [],
    )


@dataclass
class ManifestScan:
    """Everything :func:`scan_manifest` found in a manifest, good and bad.

    Attributes:
        path: the manifest, as given.
        utterances: the well-formed lines' utterances, in file order.
        lines: the line number (from 1) of each utterance.
        problems: one ``"<manifest>:<line>: <problem>"`` per malformed line.
    """

    path: str
    utterances: list[Utterance] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def locations(self) -> list[str]:
        """``"<manifest>:<line>"`` of each utterance."""
        return [f"{self.path}:{n}" for n in self.lines]


def _decode_line(p: str, lineno: int, raw: bytes) -> tuple[object, str | None]:
    """One raw line -> (decoded JSON value or None for a blank line, problem)."""
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, (
            f"{p}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} "
            f"at column {e.start + 1})"
        )
    if not line.strip():
        return None, None
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        # Some of json's messages end in "at" ("Unterminated string starting at")
        what = e.msg.removesuffix(" at")
        return None, f"{p}:{lineno}: invalid JSON ({what} at column {e.colno})"
    except RecursionError:  # "[[[[..." thousands deep: hostile or broken
        return None, f"{p}:{lineno}: invalid JSON (nested too deeply)"


def scan_manifest(path: str | os.PathLike[str]) -> ManifestScan:
    """Read a JSON Lines manifest, collecting every malformed line instead of
    stopping at the first (see :func:`read_manifest` for the format).

    Nothing in a manifest is executed or used as more than data: lines are parsed
    with :func:`json.loads` (no object hooks), and a line nested too deeply to
    parse is a problem like any other.

    Args:
        path: the manifest.

    Returns:
        The utterances of the good lines with their line numbers, and one problem
        per bad line: invalid JSON, bytes that are not UTF-8, missing keys, wrong
        types (``duration`` must be a number >= 0, ``text`` a string).

    Raises:
        ManifestError: the file is missing or cannot be read at all.
    """
    p = os.fspath(path)
    base = os.path.dirname(os.path.abspath(p))
    scan = ManifestScan(p)
    try:
        with open(p, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                obj, problem = _decode_line(p, lineno, raw)
                if problem is not None:
                    scan.problems.append(problem)
                    continue
                if obj is None:
                    continue
                utterance, line_problems = _parse_record(obj, base)
                if line_problems:
                    scan.problems.append(f"{p}:{lineno}: " + "; ".join(line_problems))
                elif utterance is not None:
                    scan.utterances.append(utterance)
                    scan.lines.append(lineno)
    except FileNotFoundError as e:
        raise ManifestError(f"{p}: manifest not found") from e
    except OSError as e:
        raise ManifestError(f"{p}: cannot read manifest: {e.strerror or e}") from e
    return scan


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """Read a JSON Lines manifest, strictly.

    Blank lines are skipped; keys other than the six known ones are ignored;
    integer ``id``/``speaker`` values become strings. Relative audio paths are resolved
    against the manifest's directory (an absolute path is kept as is).

    Args:
        path: the manifest.

    Returns:
        The utterances in file order.

    Raises:
        ManifestError: a missing or unreadable file, or bad lines: invalid JSON, bytes
            that are not UTF-8, missing keys, wrong types (``duration`` must be a
            number >= 0, ``text`` a string). All bad lines are listed in one error
            (:func:`scan_manifest` collects them; :func:`validate_manifest` checks
            the utterances' contents too).
    """
    scan = scan_manifest(path)
    if scan.problems:
        raise ManifestError.listing(scan.path, scan.problems)
    return scan.utterances


def _relative_if_inside(audio: str, directory: str) -> str:
    """``audio`` relative to ``directory`` if it lies inside it, else absolute."""
    absolute = os.path.abspath(audio)
    try:
        relative = os.path.relpath(absolute, directory)
    except ValueError:  # another drive on Windows
        return absolute
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return absolute
    return relative


def write_manifest(
    path: str | os.PathLike[str], utterances: Iterable[Utterance]
) -> None:
    """Write a JSON Lines manifest atomically.

    The lines go to a temporary file in the same directory, which then replaces
    ``path`` (``os.replace``), so a reader never sees a half-written manifest and a
    failure leaves any previous file untouched. Audio paths inside the manifest's
    directory are written relative to it, others absolute (a relative
    ``audio_filepath`` in an Utterance is taken relative to the working directory).
    Missing parent directories are created.

    Args:
        path: the manifest to write.
        utterances: the records, written in order, one per line (UTF-8).

    Raises:
        ManifestError: an utterance that cannot be written as JSON (a NaN duration),
            or a directory that cannot be written to.
    """
    p = os.fspath(path)
    # The temporary file and the target share one (lexically normalized) directory,
    # so os.replace is a rename within it.
    target = os.path.abspath(p)
    directory = os.path.dirname(target)
    lines = []
    for u in utterances:
        record = u.to_json()
        for key in ("audio_filepath", "phones_filepath"):
            if record.get(key) is not None:
                record[key] = _relative_if_inside(record[key], directory)
        try:
            lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ManifestError(
                f"{p}: cannot write the utterance {u.id or u.audio_filepath!r}: {e}"
            ) from e
    try:
        atomic_write_text(target, "".join(line + "\n" for line in lines))
    except WriteError as e:
        reason = e.reason.removeprefix("cannot write: ")
        raise ManifestError(f"{p}: cannot write manifest: {reason}") from e


def librispeech_manifest(
    tree: str | os.PathLike[str], audio_extensions: Sequence[str] = (".flac",)
) -> list[Utterance]:
    """Utterances of a LibriSpeech-format tree.

    The layout is ``SPK/CHAPTER/SPK-CHAPTER-UTT.flac`` with transcripts in
    ``SPK/CHAPTER/SPK-CHAPTER.trans.txt``, lines ``SPK-CHAPTER-UTT TEXT``; both are
    searched recursively under ``tree``, so a split directory (``dev-clean``) or
    ``LibriSpeech/`` holding several splits both work.

    Args:
        tree: the directory to search.
        audio_extensions: the audio files' extensions (a converted copy may use
            ``(".wav",)``).

    Returns:
        One Utterance per transcript line, sorted by id: absolute ``audio_filepath``,
        ``duration`` from the audio header (seconds), ``text`` normalized,
        ``id`` = the utterance id, ``speaker`` = its SPK part, and
        ``phones_filepath`` when a ``SPK-CHAPTER-UTT.phones`` file lies beside the
        audio (the synthetic corpus writes them).

    Raises:
        ManifestError: listing every problem at once: transcript lines without audio,
            audio files without a transcript line, duplicate ids, malformed lines,
            unreadable audio, no transcripts at all, or ``tree`` not a directory.
    """
    root = os.fspath(tree)
    if not os.path.isdir(root):
        raise ManifestError(f"{root}: not a directory")
    problems: list[str] = []
    audio: dict[str, Path] = {}
    for ext in audio_extensions:
        for a in sorted(Path(root).rglob(f"*{ext}")):
            uid = a.name[: -len(ext)]
            if uid in audio:
                problems.append(f"{a}: duplicate audio for {uid!r} (also {audio[uid]})")
            else:
                audio[uid] = a
    texts: dict[str, tuple[str, str]] = {}  # id -> (text, "file:line")
    transcripts = sorted(Path(root).rglob("*.trans.txt"))
    for t in transcripts:
        try:
            content = t.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            problems.append(f"{t}: not valid UTF-8 (byte offset {e.start})")
            continue
        except OSError as e:
            problems.append(f"{t}: cannot read: {e.strerror or e}")
            continue
        for lineno, line in enumerate(content.splitlines(), 1):
            where = f"{t}:{lineno}"
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not _LIBRISPEECH_ID.fullmatch(uid):
                problems.append(
                    f"{where}: {uid!r} is not an utterance id SPEAKER-CHAPTER-UTTERANCE"
                )
            elif not text.strip():
                problems.append(f"{where}: no transcript after the id {uid!r}")
            elif uid in texts:
                problems.append(
                    f"{where}: duplicate transcript for {uid!r} (first at "
                    f"{texts[uid][1]})"
                )
            else:
                texts[uid] = (text, where)
    if not transcripts:
        problems.append(f"{root}: no LibriSpeech transcripts (*.trans.txt) found")
    for uid in sorted(texts.keys() - audio.keys()):
        exts = "/".join(audio_extensions)
        problems.append(f"{texts[uid][1]}: no audio file ({exts}) for {uid!r}")
    for uid in sorted(audio.keys() - texts.keys()):
        problems.append(f"{audio[uid]}: no transcript line for {uid!r}")
    utterances = []
    for uid in sorted(texts.keys() & audio.keys()):
        try:
            info = audio_info(audio[uid])
        except AudioError as e:
            problems.append(str(e))
            continue
        phones = audio[uid].with_name(f"{uid}.phones")
        utterances.append(
            Utterance(
                audio_filepath=os.path.abspath(audio[uid]),
                duration=info.duration,
                text=normalize(texts[uid][0]),
                id=uid,
                speaker=uid.split("-", 1)[0],
                phones_filepath=os.path.abspath(phones) if phones.is_file() else None,
            )
        )
    if problems:
        raise ManifestError.listing(root, problems)
    return utterances


@dataclass
class ValidationReport:
    """What :func:`validate_utterances` (or :func:`validate_manifest`) found.

    Attributes:
        total: utterances checked (for a manifest: its non-blank lines).
        problems: category (one of :data:`CATEGORIES`, all present) -> one line per
            affected utterance, ``"<id or path>: <detail>"``, prefixed with
            ``"<manifest>:<line>: "`` when the utterances came from a manifest.
        kept: the utterances with no problem, in input order.
    """

    total: int
    problems: dict[str, list[str]] = field(
        default_factory=lambda: {c: [] for c in CATEGORIES}
    )
    kept: list[Utterance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no utterance has a problem."""
        return not any(self.problems.values())

    @property
    def count(self) -> int:
        """Problems found (an utterance may have more than one)."""
        return sum(len(items) for items in self.problems.values())

    def summary(self, max_examples: int | None = 5) -> str:
        """A readable report: counts per category, each with up to ``max_examples``
        example lines (``None``: all of them)."""
        if self.ok:
            return f"{self.total} utterances checked: all usable"
        dropped = self.total - len(self.kept)
        lines = [
            f"{self.total} utterances checked: {len(self.kept)} kept, "
            f"{dropped} with problems"
        ]
        for category, items in self.problems.items():
            if not items:
                continue
            lines.append(f"  {category}: {len(items)}")
            shown = items if max_examples is None else items[:max_examples]
            lines.extend(f"    {item}" for item in shown)
            if len(items) > len(shown):
                lines.append(f"    ... and {len(items) - len(shown)} more")
        return "\n".join(lines)


def _transcript_frames(tokenizer: CharTokenizer, text: str) -> tuple[int, int]:
    """(labels, repeats) of a normalized transcript: CTC needs ``labels + repeats``
    output frames at least (a blank between each pair of equal labels)."""
    labels = tokenizer.encode(text, normalize_text=False)
    repeats = sum(a == b for a, b in zip(labels[:-1], labels[1:], strict=True))
    return len(labels), repeats


def validate_utterances(
    utterances: Iterable[Utterance],
    tokenizer: CharTokenizer,
    output_frames: Callable[[float], int] | None = None,
    check_audio: bool = True,
    max_duration: float | None = None,
    locations: Sequence[str] | None = None,
) -> ValidationReport:
    """Find the utterances that would fail or poison training, before training.

    Categories (see :data:`CATEGORIES`):

    - "unreadable audio": :func:`asr.audio.audio_info` fails (the AudioError's
      reason is given: missing, empty, not audio, truncated...), or ``offset``
      lies at or beyond the end of the file.
    - "empty text": nothing left after :func:`asr.text.normalize`.
    - "unspellable characters": characters the tokenizer lacks (named).
    - "too short for its transcript": ``output_frames(duration)`` is below the CTC
      minimum, the number of labels plus the number of adjacent equal labels (each
      repeat needs a blank between). CTC then has no valid alignment and the loss is
      infinite, the usual cause of inf/NaN losses in DeepSpeech2 training.
    - "duration mismatch": the ``duration`` is not what the audio holds (the whole
      file's length for an utterance without ``offset``; no more than what follows
      the offset for a segment: an utterance with an offset, or one of several of
      the same file), beyond :data:`DURATION_TOLERANCE` (and 1%): batches
      are planned from the durations, so a wrong one misleads the sampler.
    - "too long": ``duration`` above ``max_duration`` (an hour-long recording in a
      training set would make a batch of its own too large for the device).
    - "duplicate id": an ``id`` already seen; the first occurrence is kept.

    ("malformed line" is for :func:`validate_manifest`.)

    Args:
        utterances: the records to check.
        tokenizer: the tokenizer training will use; texts are normalized as its
            ``encode`` does by default.
        output_frames: model output frames for an input of that many seconds, e.g.
            ``lambda s: model.output_lengths(frames(s))``; ``None`` skips the
            length check.
        check_audio: read each audio header (once per distinct file).
        max_duration: the longest usable utterance, in seconds; ``None``: no limit.
        locations: where each utterance comes from (``"<manifest>:<line>"``),
            prefixed to its problems.

    Returns:
        The report; ``report.kept`` is the clean subset.
    """
    utterances = list(utterances)
    shared = Counter(u.audio_filepath for u in utterances)
    report = ValidationReport(total=0)
    seen: dict[str, tuple[int, Utterance]] = {}  # id -> (index, utterance)
    headers: dict[str, AudioInfo | AudioError] = {}
    for i, u in enumerate(utterances):
        report.total += 1
        where = f"{locations[i]}: " if locations is not None else ""
        name = u.id if u.id is not None else u.audio_filepath
        if u.id is None and u.offset:
            name = f"{u.audio_filepath}@{u.offset:g}s"
        found: list[tuple[str, str]] = []
        seconds = u.duration  # what the length check believes
        if u.duration > _LONGEST:
            found.append(
                (
                    "duration mismatch",
                    f"{name}: duration {u.duration:g} s is longer than any recording",
                )
            )
        if check_audio:
            if u.audio_filepath not in headers:
                try:
                    headers[u.audio_filepath] = audio_info(u.audio_filepath)
                except AudioError as e:
                    headers[u.audio_filepath] = e
            header = headers[u.audio_filepath]
            named = name if name == u.audio_filepath else f"{name} ({u.audio_filepath})"
            if isinstance(header, AudioError):
                found.append(("unreadable audio", f"{named}: {header.reason}"))
            elif u.offset >= header.duration:
                found.append(
                    (
                        "unreadable audio",
                        f"{named}: offset {u.offset:g} s is at or beyond the end of "
                        f"the audio ({header.duration:g} s)",
                    )
                )
            else:
                available = header.duration - u.offset
                slack = max(DURATION_TOLERANCE, 0.01 * available)
                # Several utterances of one file are segments of it (a Kaldi
                # segments file), the first possibly at offset 0.
                segment = bool(u.offset) or shared[u.audio_filepath] > 1
                wrong = u.duration <= _LONGEST and (
                    u.duration > available + slack
                    if segment
                    else abs(u.duration - available) > slack
                )
                if wrong:
                    found.append(
                        (
                            "duration mismatch",
                            f"{named}: duration {u.duration:g} s, but the audio "
                            f"holds {available:g} s"
                            + (f" after the offset {u.offset:g} s" if u.offset else ""),
                        )
                    )
                if wrong or u.duration > _LONGEST:
                    seconds = min(u.duration, available)
        text = normalize(u.text)
        unknown = tokenizer.unknown_characters(text, normalize_text=False)
        if not text:
            found.append(("empty text", f"{name}: {u.text!r} is empty once normalized"))
        elif unknown:
            shown = ", ".join(repr(c) for c in unknown)
            found.append(("unspellable characters", f"{name}: {shown} in {text!r}"))
        elif output_frames is not None:
            labels, repeats = _transcript_frames(tokenizer, text)
            needed = labels + repeats
            frames = int(output_frames(seconds)) if seconds < _LONGEST else needed
            if frames < needed:
                found.append(
                    (
                        "too short for its transcript",
                        f"{name}: {seconds:g} s gives {frames} output frames, "
                        f"the transcript needs {needed} ({labels} labels + "
                        f"{repeats} repeats)",
                    )
                )
        if max_duration is not None and u.duration > max_duration:
            found.append(
                (
                    "too long",
                    f"{name}: {u.duration:g} s is longer than the limit of "
                    f"{max_duration:g} s",
                )
            )
        if u.id is not None:
            if u.id in seen:
                j, first = seen[u.id]
                detail = f"{name}: {first.audio_filepath} and {u.audio_filepath}"
                if locations is not None:
                    detail += f" (first at {locations[j]})"
                found.append(("duplicate id", detail))
            else:
                seen[u.id] = (i, u)
        for category, detail in found:
            report.problems[category].append(where + detail)
        if not found:
            report.kept.append(u)
    return report


def validate_manifest(
    path: str | os.PathLike[str],
    tokenizer: CharTokenizer | None = None,
    output_frames: Callable[[float], int] | None = None,
    check_audio: bool = True,
    max_duration: float | None = None,
) -> ValidationReport:
    """Every problem of a manifest in one pass, each with its line number.

    Malformed lines (:func:`scan_manifest`: invalid JSON, not UTF-8, missing keys,
    wrong types) are the "malformed line" category; the well-formed lines' utterances
    are checked by :func:`validate_utterances` (audio that does not exist or cannot
    be read, characters outside the vocabulary, duplicate ids, audio too short for
    its transcript when ``output_frames`` is given...), each problem prefixed with
    ``"<manifest>:<line>: "``.

    Args:
        path: the manifest.
        tokenizer: the model's (default: :class:`asr.text.CharTokenizer`).
        output_frames, check_audio, max_duration: see :func:`validate_utterances`.

    Returns:
        The report: ``total`` counts the non-blank lines, ``kept`` the usable
        utterances.

    Raises:
        ManifestError: the manifest is missing or cannot be read at all.
    """
    scan = scan_manifest(path)
    report = validate_utterances(
        scan.utterances,
        tokenizer or CharTokenizer(),
        output_frames=output_frames,
        check_audio=check_audio,
        max_duration=max_duration,
        locations=scan.locations,
    )
    report.problems["malformed line"] = list(scan.problems)
    report.total += len(scan.problems)
    return report
