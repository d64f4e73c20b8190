"""The corpus layouts people have, read into :class:`asr.manifest.Utterance` records.

``asr manifest SOURCE -o OUT.jsonl`` detects the layout of ``SOURCE`` (or takes it
from ``--layout``) and writes our JSON Lines manifest:

- ``librispeech``: ``SPK/CHAPTER/SPK-CHAPTER-UTT.flac`` with ``*.trans.txt``
  (:func:`asr.manifest.librispeech_manifest`).
- ``folder``: audio files (``.wav .flac .mp3 .ogg .opus``), each with a same-named
  ``.txt`` transcript beside it, searched recursively.
- ``ljspeech``: ``metadata.csv`` with ``id|text`` or ``id|text|normalized`` lines
  (the normalized text, which spells out numbers, is taken when present) and the
  audio in ``wavs/ID.wav``.
- ``commonvoice``: a Common Voice ``.tsv`` (``train.tsv``, ``validated.tsv``...)
  with ``path`` and ``sentence`` columns (``client_id`` becomes the speaker) and
  the MP3 clips in ``clips/`` beside it.
- ``kaldi``: a Kaldi data directory: ``wav.scp`` (``REC PATH``), ``text`` (``UTT
  TRANSCRIPT``), optional ``segments`` (``UTT REC START END``: offsets into longer
  recordings) and ``utt2spk``. A ``wav.scp`` entry that is a command (``REC sox ...
  |``) is refused: asr reads files, it does not run what a data file says.

Problems of the layout itself (a transcript without audio, a malformed line, a
command in ``wav.scp``) are listed all at once in a :class:`ManifestError` and
nothing is written. Every utterance read is then checked as ``asr validate`` checks
a manifest (:func:`asr.manifest.validate_utterances`); :func:`import_corpus` keeps
the usable ones and reports the others, with the characters outside the vocabulary
counted over the whole corpus.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from asr.audio import AudioError, AudioInfo, audio_info
from asr.manifest import (
    ManifestError,
    Utterance,
    ValidationReport,
    librispeech_manifest,
    validate_utterances,
)
from asr.text import CharTokenizer, normalize

__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "CorpusImport",
    "detect_layout",
    "import_corpus",
    "read_layout",
    "unknown_character_counts",
]

LAYOUTS: tuple[str, ...] = ("librispeech", "folder", "ljspeech", "commonvoice", "kaldi")
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".opus")


def detect_layout(source: str | os.PathLike[str]) -> str:
    """The layout of ``source`` (one of :data:`LAYOUTS`).

    A file: ``metadata.csv`` is LJSpeech, a ``.tsv`` Common Voice. A directory: one
    holding ``metadata.csv`` is LJSpeech; ``wav.scp`` and ``text``, Kaldi;
    ``*.trans.txt`` anywhere below, LibriSpeech; an audio file with a same-named
    ``.txt``, a folder of transcribed files.

    Raises:
        ManifestError: ``source`` is missing or in none of these layouts (one line,
            naming it and what was looked for).
    """
    p = Path(source)
    if not p.exists():
        raise ManifestError(f"{p}: no such file or directory")
    if p.is_file():
        if p.name == "metadata.csv":
            return "ljspeech"
        if p.suffix == ".tsv":
            return "commonvoice"
        raise ManifestError(
            f"{p}: not a corpus in a known layout (a file must be an LJSpeech "
            "metadata.csv or a Common Voice .tsv)"
        )
    if (p / "metadata.csv").is_file():
        return "ljspeech"
    if (p / "wav.scp").is_file() and (p / "text").is_file():
        return "kaldi"
    if next(p.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    for audio in _audio_files(p):
        if audio.with_suffix(".txt").is_file():
            return "folder"
    tsvs = sorted(x.name for x in p.glob("*.tsv"))
    if tsvs:
        raise ManifestError(
            f"{p}: a Common Voice directory? name one of its .tsv files "
            f"({', '.join(tsvs[:5])})"
        )
    raise ManifestError(
        f"{p}: not a corpus in a known layout (looked for metadata.csv, wav.scp + "
        "text, *.trans.txt, audio files with same-named .txt transcripts)"
    )


def _audio_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            yield path


class _Headers:
    """Audio headers read once per file; a failure is kept as its AudioError."""

    def __init__(self) -> None:
        self._seen: dict[str, AudioInfo | AudioError] = {}

    def __call__(self, path: str) -> AudioInfo | AudioError:
        if path not in self._seen:
            try:
                self._seen[path] = audio_info(path)
            except AudioError as e:
                self._seen[path] = e
        return self._seen[path]


@dataclass
class _Read:
    """What a layout reader found: the utterances, the layout's problems (fatal),
    and the utterances whose audio could not be read (reported, skipped)."""

    utterances: list[Utterance]
    problems: list[str]
    unreadable: list[str]


def _read_lines(path: Path, problems: list[str]) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not valid UTF-8 (byte offset {e.start})")
        return []
    except OSError as e:
        problems.append(f"{path}: cannot read: {e.strerror or e}")
        return []
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _whole_file(
    read: _Read,
    headers: _Headers,
    audio: Path,
    text: str,
    uid: str,
    speaker: str | None = None,
) -> None:
    """Append the utterance of a whole audio file, or note its unreadable audio."""
    info = headers(os.path.abspath(audio))
    if isinstance(info, AudioError):
        read.unreadable.append(f"{uid} ({info.path}): {info.reason}")
        return
    read.utterances.append(
        Utterance(info.path, info.duration, text, id=uid, speaker=speaker)
    )


def _read_folder(root: Path) -> _Read:
    read, headers = _Read([], [], []), _Headers()
    seen: dict[str, Path] = {}
    for audio in _audio_files(root):
        uid = audio.relative_to(root).with_suffix("").as_posix()
        transcript = audio.with_suffix(".txt")
        if uid in seen:
            read.problems.append(
                f"{audio}: duplicate audio for {uid!r} (also {seen[uid]})"
            )
            continue
        seen[uid] = audio
        if not transcript.is_file():
            read.problems.append(
                f"{audio}: no transcript ({transcript.name} beside it)"
            )
            continue
        lines = _read_lines(transcript, read.problems)
        text = " ".join(line.strip() for _, line in lines)
        _whole_file(read, headers, audio, text, uid)
    stems = {a.with_suffix("") for a in seen.values()}
    for transcript in sorted(root.rglob("*.txt")):
        if transcript.with_suffix("") not in stems:
            read.problems.append(f"{transcript}: no audio file beside it")
    if not seen:
        read.problems.append(f"{root}: no audio files ({' '.join(AUDIO_EXTENSIONS)})")
    return read


def _read_ljspeech(source: Path) -> _Read:
    metadata = source if source.is_file() else source / "metadata.csv"
    wavs = metadata.parent / "wavs"
    read, headers = _Read([], [], []), _Headers()
    seen: dict[str, int] = {}
    for lineno, line in _read_lines(metadata, read.problems):
        where = f"{metadata}:{lineno}"
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            read.problems.append(
                f"{where}: expected 'id|text' or 'id|text|normalized', got "
                f"{len(fields)} field(s)"
            )
            continue
        uid = fields[0].strip()
        text = fields[2] if len(fields) == 3 and fields[2].strip() else fields[1]
        if uid in seen:
            read.problems.append(
                f"{where}: duplicate id {uid!r} (first at line {seen[uid]})"
            )
            continue
        seen[uid] = lineno
        audio = wavs / f"{uid}.wav"
        if not audio.is_file():
            read.problems.append(f"{where}: no audio file {audio}")
            continue
        _whole_file(read, headers, audio, text.strip(), uid)
    if not seen and not read.problems:
        read.problems.append(f"{metadata}: no utterances")
    return read


def _read_commonvoice(tsv: Path) -> _Read:
    clips = tsv.parent / "clips"
    read, headers = _Read([], [], []), _Headers()
    try:
        with open(tsv, encoding="utf-8-sig", newline="") as f:
            # QUOTE_NONE: sentences hold quotation marks that are not CSV quoting
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as e:
        return _Read([], [f"{tsv}: not valid UTF-8 (byte offset {e.start})"], [])
    except OSError as e:
        return _Read([], [f"{tsv}: cannot read: {e.strerror or e}"], [])
    header = rows[0] if rows else []
    missing = [c for c in ("path", "sentence") if c not in header]
    if missing:
        return _Read(
            [],
            [f"{tsv}:1: not a Common Voice .tsv (no {', '.join(missing)} column)"],
            [],
        )
    col = {name: i for i, name in enumerate(header)}
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{tsv}:{lineno}"
        if len(row) <= max(col["path"], col["sentence"]):
            read.problems.append(
                f"{where}: {len(row)} columns, the header has {len(header)}"
            )
            continue
        name = row[col["path"]].strip()
        if name in seen:
            read.problems.append(
                f"{where}: duplicate clip {name!r} (first at line {seen[name]})"
            )
            continue
        seen[name] = lineno
        audio = clips / name
        if not audio.is_file():
            read.problems.append(f"{where}: no audio file {audio}")
            continue
        speaker = row[col["client_id"]].strip() if "client_id" in col else None
        uid = Path(name).stem
        _whole_file(read, headers, audio, row[col["sentence"]].strip(), uid, speaker)
    if not seen and not read.problems:
        read.problems.append(f"{tsv}: no clips listed")
    return read


def _kaldi_table(
    path: Path, problems: list[str], what: str
) -> dict[str, tuple[str, str]]:
    """``KEY VALUE...`` lines -> key -> (value, "file:line"); a duplicate key is
    a problem."""
    table: dict[str, tuple[str, str]] = {}
    for lineno, line in _read_lines(path, problems):
        where = f"{path}:{lineno}"
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if not value:
            problems.append(f"{where}: {key!r} has no {what}")
        elif key in table:
            problems.append(f"{where}: duplicate {key!r} (first at {table[key][1]})")
        else:
            table[key] = (value, where)
    return table


def _kaldi_path(root: Path, value: str) -> Path:
    """A ``wav.scp`` path: absolute, or relative to the data directory when the file
    is there, else to the working directory (where Kaldi's scripts run)."""
    path = Path(value)
    if path.is_absolute() or not (root / path).exists():
        return path
    return root / path


def _read_kaldi(root: Path) -> _Read:
    read, headers = _Read([], [], []), _Headers()
    recordings: dict[str, Path] = {}
    commands: set[str] = set()
    for rec, (value, where) in _kaldi_table(
        root / "wav.scp", read.problems, "path"
    ).items():
        if value.endswith("|"):
            read.problems.append(
                f"{where}: {rec!r} is a command ('... |'); asr reads audio files and "
                "runs no commands from a data directory: write the audio to files "
                "(e.g. with wav-copy) and list their paths"
            )
            commands.add(rec)
        else:
            recordings[rec] = _kaldi_path(root, value)
    texts = _kaldi_table(root / "text", read.problems, "transcript")
    speakers = {}
    if (root / "utt2spk").is_file():
        speakers = {
            k: v
            for k, (v, _) in _kaldi_table(
                root / "utt2spk", read.problems, "speaker"
            ).items()
        }
    segments: dict[str, tuple[str, float, float]] = {}
    if (root / "segments").is_file():
        for uid, (value, where) in _kaldi_table(
            root / "segments", read.problems, "recording"
        ).items():
            parts = value.split()
            try:
                rec, start, end = parts[0], float(parts[1]), float(parts[2])
                if len(parts) != 3:
                    raise ValueError
            except (IndexError, ValueError):
                read.problems.append(f"{where}: expected 'UTT REC START END'")
                continue
            if not 0 <= start < end:
                read.problems.append(
                    f"{where}: segment {start:g}-{end:g} s is empty or negative"
                )
            elif rec not in recordings:
                if rec not in commands:
                    read.problems.append(
                        f"{where}: recording {rec!r} is not in wav.scp"
                    )
            else:
                segments[uid] = (rec, start, end)
    for uid, (text, where) in texts.items():
        if segments:
            if uid not in segments:
                read.problems.append(f"{where}: {uid!r} has no line in segments")
                continue
            rec, start, end = segments[uid]
        elif uid in recordings:
            rec, start, end = uid, 0.0, -1.0
        else:
            if uid not in commands:
                read.problems.append(f"{where}: {uid!r} is not in wav.scp")
            continue
        info = headers(os.path.abspath(recordings[rec]))
        if isinstance(info, AudioError):
            read.unreadable.append(f"{uid} ({info.path}): {info.reason}")
            continue
        duration = info.duration if end < 0 else end - start
        read.utterances.append(
            Utterance(info.path, duration, text, start, uid, speakers.get(uid))
        )
    if not texts and not read.problems:
        read.problems.append(f"{root / 'text'}: no utterances")
    return read


_READERS: dict[str, Callable[[Path], _Read]] = {
    "folder": _read_folder,
    "ljspeech": _read_ljspeech,
    "commonvoice": _read_commonvoice,
    "kaldi": _read_kaldi,
}


def _read(source: Path, layout: str) -> _Read:
    if layout not in LAYOUTS:
        raise ManifestError(f"unknown layout {layout!r}; choose: {', '.join(LAYOUTS)}")
    if not source.exists():
        raise ManifestError(f"{source}: no such file or directory")
    wants_file = layout == "commonvoice"
    if wants_file != source.is_file() and layout != "ljspeech":
        kind = "a .tsv file" if wants_file else "a directory"
        raise ManifestError(f"{source}: the {layout} layout takes {kind}")
    if layout == "librispeech":
        # the LibriSpeech reader reports unreadable audio as a problem of the tree
        return _Read(librispeech_manifest(source), [], [])
    return _READERS[layout](source)


def read_layout(
    source: str | os.PathLike[str], layout: str | None = None
) -> tuple[list[Utterance], list[str]]:
    """Read a corpus in one of :data:`LAYOUTS` (``None``: :func:`detect_layout`).

    Returns:
        The utterances (absolute audio paths, durations from the audio headers,
        texts as written) and one line per utterance whose audio could not be
        read, ``"<id> (<path>): <reason>"``.

    Raises:
        ManifestError: every problem of the layout itself at once (missing audio or
            transcripts, malformed lines, duplicate ids, commands in wav.scp).
    """
    p = Path(source)
    read = _read(p, layout or detect_layout(p))
    if read.problems:
        raise ManifestError.listing(str(p), read.problems)
    return read.utterances, read.unreadable


def unknown_character_counts(
    utterances: Iterable[Utterance], tokenizer: CharTokenizer
) -> Counter[str]:
    """How often each character outside the vocabulary occurs in the normalized
    transcripts (``"5"``: 12 times...), the most frequent first."""
    counts: Counter[str] = Counter()
    for u in utterances:
        text = normalize(u.text)
        bad = set(tokenizer.unknown_characters(text, normalize_text=False))
        counts.update(c for c in text if c in bad)
    return counts


@dataclass
class CorpusImport:
    """What :func:`import_corpus` found.

    Attributes:
        layout: the layout read.
        utterances: the usable utterances, texts normalized, in the layout's order.
        report: the checks of every utterance (``report.kept`` is ``utterances``).
        unknown: characters outside the vocabulary -> occurrences.
    """

    layout: str
    utterances: list[Utterance]
    report: ValidationReport
    unknown: Counter[str]

    def summary(self, max_examples: int | None = 5) -> str:
        lines = [self.report.summary(max_examples)]
        if self.unknown:
            shown = ", ".join(f"{c!r} x{n}" for c, n in self.unknown.most_common())
            lines.append(f"  characters outside the vocabulary: {shown}")
        return "\n".join(lines)


def import_corpus(
    source: str | os.PathLike[str],
    layout: str | None = None,
    tokenizer: CharTokenizer | None = None,
    output_frames: Callable[[float], int] | None = None,
) -> CorpusImport:
    """Read a corpus (:func:`read_layout`) and check every utterance as ``asr
    validate`` checks a manifest: readable audio, durations, empty text, characters
    outside ``tokenizer``'s vocabulary, duplicate ids, and audio too short for its
    transcript when ``output_frames`` is given.

    Raises:
        ManifestError: the layout's own problems (see :func:`read_layout`).
    """
    p = Path(source)
    layout = layout or detect_layout(p)
    utterances, unreadable = read_layout(p, layout)
    tokenizer = tokenizer or CharTokenizer()
    report = validate_utterances(utterances, tokenizer, output_frames=output_frames)
    report.problems["unreadable audio"] = (
        unreadable + report.problems["unreadable audio"]
    )
    report.total += len(unreadable)
    kept = [
        Utterance(
            u.audio_filepath,
            u.duration,
            normalize(u.text),
            u.offset,
            u.id,
            u.speaker,
            u.phones_filepath,
        )
        for u in report.kept
    ]
    report.kept = kept
    unknown = unknown_character_counts(utterances, tokenizer)
    return CorpusImport(layout, kept, report, unknown)
