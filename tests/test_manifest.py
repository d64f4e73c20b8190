"""asr.manifest: JSONL round trips, error reports, LibriSpeech trees, validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.manifest import (
    CATEGORIES,
    ManifestError,
    ManifestScan,
    Utterance,
    ValidationReport,
    librispeech_manifest,
    read_manifest,
    scan_manifest,
    validate_manifest,
    validate_utterances,
    write_manifest,
)
from asr.text import CharTokenizer


def tone(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    """Write a quiet tone of ``seconds`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), sample_rate, subtype="PCM_16")
    return path


def jsonl(path: Path, *lines: str | bytes) -> Path:
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------- Utterance


def test_to_json_omits_defaults() -> None:
    u = Utterance("/a.wav", 1.5, "hi")
    assert u.to_json() == {"audio_filepath": "/a.wav", "duration": 1.5, "text": "hi"}
    full = Utterance("/a.wav", 1.5, "hi", offset=2.0, id="u1", speaker="s")
    assert full.to_json() == {
        "audio_filepath": "/a.wav",
        "duration": 1.5,
        "text": "hi",
        "offset": 2.0,
        "id": "u1",
        "speaker": "s",
    }
    assert list(full.to_json()) == [
        "audio_filepath",
        "duration",
        "text",
        "offset",
        "id",
        "speaker",
    ]
    with pytest.raises(AttributeError):
        u.text = "changed"  # type: ignore[misc]


# ------------------------------------------------------------------- read/write


def test_round_trip_relative_inside_absolute_outside(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    outside = tmp_path / "elsewhere" / "x.wav"
    utterances = [
        Utterance(str(corpus / "wav" / "a.wav"), 1.25, "hello world", id="a"),
        Utterance(str(outside), 0.5, "naïve café", offset=3.0, id="b", speaker="spk1"),
    ]
    manifest = corpus / "train.jsonl"  # the directory is created
    write_manifest(manifest, utterances)
    records = [json.loads(x) for x in manifest.read_text("utf-8").splitlines()]
    assert records[0]["audio_filepath"] == os.path.join("wav", "a.wav")
    assert records[1]["audio_filepath"] == str(outside)
    assert "naïve café" in manifest.read_text("utf-8")  # UTF-8, not \u escapes
    assert read_manifest(manifest) == utterances
    assert read_manifest(str(manifest)) == utterances


def test_relative_paths_resolve_against_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    manifest = jsonl(
        tmp_path / "m" / "dev.jsonl",
        '{"audio_filepath": "audio/1.flac", "duration": 2, "text": "a"}',
        '{"audio_filepath": "../other/2.flac", "duration": 1.5, "text": "b"}',
        '{"audio_filepath": "/abs/3.flac", "duration": 0, "text": "c"}',
    )
    paths = [u.audio_filepath for u in read_manifest(manifest)]
    assert paths == [
        str(tmp_path / "m" / "audio" / "1.flac"),
        str(tmp_path / "other" / "2.flac"),
        "/abs/3.flac",
    ]


def test_read_optional_fields_blank_lines_bom_crlf_extra_keys(tmp_path: Path) -> None:
    manifest = jsonl(
        tmp_path / "m.jsonl",
        b'\xef\xbb\xbf{"audio_filepath": "/a.wav", "duration": 1, "text": "x"}\r',
        "",
        "   ",
        '{"audio_filepath": "/b.wav", "duration": 2.5, "text": "y", "offset": 1.5,'
        ' "id": 7, "speaker": 103, "lang": "en"}',
        '{"audio_filepath": "/c.wav", "duration": 1, "text": "", "offset": null,'
        ' "id": null}',
    )
    assert read_manifest(manifest) == [
        Utterance("/a.wav", 1.0, "x"),
        Utterance("/b.wav", 2.5, "y", offset=1.5, id="7", speaker="103"),
        Utterance("/c.wav", 1.0, ""),
    ]


def test_read_reports_every_bad_line_at_once(tmp_path: Path) -> None:
    good = '{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"}'
    manifest = jsonl(
        tmp_path / "bad.jsonl",
        good,
        '{"audio_filepath": "a.wav", "duration": 1.0, "text": "ok"',  # 2: JSON
        b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "caf\xe9"}',  # 3
        '{"audio_filepath": "a.wav"}',  # 4: missing keys
        '{"audio_filepath": "a.wav", "duration": "1.0", "text": "x"}',  # 5
        '{"audio_filepath": "a.wav", "duration": -1, "text": "x"}',  # 6
        '{"audio_filepath": "a.wav", "duration": 1, "text": 42}',  # 7
        '["a.wav", 1.0, "x"]',  # 8: not an object
        good,
        '{"audio_filepath": "", "duration": NaN, "text": "x", "offset": -2}',  # 10
        '{"audio_filepath": "a.wav", "duration": true, "text": "x", "id": [1]}',  # 11
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{manifest}: 9 problems:"
    assert len(lines) == 10 and len(info.value.problems) == 9
    by_number = {int(x.split(":")[1]): x for x in lines[1:]}
    assert sorted(by_number) == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    for number, line in by_number.items():
        assert line.startswith(f"{manifest}:{number}: ")
    assert "invalid JSON" in by_number[2]
    assert "not valid UTF-8 (byte 0xe9" in by_number[3]
    assert "missing key(s) 'duration', 'text'" in by_number[4]
    assert "'duration' must be a number of seconds, got '1.0'" in by_number[5]
    assert "'duration' must be a finite number >= 0, got -1" in by_number[6]
    assert "'text' must be a string, got number" in by_number[7]
    assert "expected a JSON object, got array" in by_number[8]
    assert "'audio_filepath' must be a non-empty string" in by_number[10]
    assert "'duration' must be a finite number >= 0, got nan" in by_number[10]
    assert "'offset' must be a finite number >= 0, got -2" in by_number[10]
    assert "'duration' must be a number of seconds, got True" in by_number[11]
    assert "'id' must be a string, got array" in by_number[11]


def test_one_bad_line_is_one_line(tmp_path: Path) -> None:
    manifest = jsonl(tmp_path / "m.jsonl", '{"audio_filepath": "a.wav"', "")
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    assert str(info.value).startswith(f"{manifest}:1: invalid JSON")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_very_many_bad_lines_are_counted(tmp_path: Path) -> None:
    manifest = jsonl(tmp_path / "m.jsonl", *["nonsense"] * 150)
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    assert len(info.value.problems) == 150
    lines = str(info.value).splitlines()
    assert lines[0] == f"{manifest}: 150 problems:"
    assert lines[-1] == "... and 50 more"


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found") as info:
        read_manifest(tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in str(info.value)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path)


def test_empty_manifest_reads_as_empty(tmp_path: Path) -> None:
    assert read_manifest(jsonl(tmp_path / "m.jsonl")) == []


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [Utterance("/a.wav", 1.0, "old")])
    before = manifest.read_bytes()
    bad = [Utterance("/a.wav", 1.0, "new"), Utterance("/b.wav", float("nan"), "x")]
    with pytest.raises(ManifestError, match="cannot write the utterance") as info:
        write_manifest(manifest, bad)
    assert str(manifest) in str(info.value)
    assert manifest.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
    write_manifest(manifest, [])
    assert manifest.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_write_uses_the_umask_not_private_permissions(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [Utterance("/a.wav", 1.0, "x")])
    umask = os.umask(0)
    os.umask(umask)
    assert manifest.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_into_a_file_path_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ManifestError, match="cannot write manifest") as info:
        write_manifest(blocker / "m.jsonl", [Utterance("/a.wav", 1.0, "x")])
    assert str(blocker / "m.jsonl") in str(info.value)


# -------------------------------------------------------------------- LibriSpeech


def libri_tree(root: Path) -> Path:
    """Two speakers, three chapters, five utterances, like LibriSpeech/dev-clean."""
    chapters = {
        ("84", "121123"): {"0000": "GO DO YOU HEAR", "0001": "BUT IN LESS THAN FIVE"},
        ("84", "121550"): {"0000": "BUT WITH FULL RAVISHMENT THE HOURS OF PRIME"},
        ("1272", "128104"): {
            "0000": "MISTER QUILTER IS THE APOSTLE",
            "0001": "NOR IS MISTER QUILTER'S MANNER",
        },
    }
    for (spk, chapter), utterances in chapters.items():
        d = root / "dev-clean" / spk / chapter
        lines = []
        for i, (utt, text) in enumerate(utterances.items()):
            uid = f"{spk}-{chapter}-{utt}"
            tone(d / f"{uid}.flac", 0.25 + 0.125 * i)
            lines.append(f"{uid} {text}\n")
        (d / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return root


def test_manifest_and_validate_commands_do_not_load_torch(tmp_path: Path) -> None:
    """`asr manifest` and `asr validate` (no checkpoint) read headers only: torch's
    second of start-up is not theirs to pay; load_audio still returns a tensor."""
    import subprocess
    import sys

    root = libri_tree(tmp_path / "LibriSpeech")
    out = tmp_path / "dev.jsonl"
    code = (
        "import sys\n"
        "from asr.cli import main\n"
        f"assert main(['manifest', {str(root)!r}, '-o', {str(out)!r}]) == 0\n"
        f"assert main(['validate', {str(out)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from asr.audio import load_audio\n"
        "from asr.manifest import read_manifest\n"
        "import torch\n"
        f"wave = load_audio(read_manifest({str(out)!r})[0].audio_filepath)\n"
        "assert isinstance(wave, torch.Tensor) and wave.shape == (4000,)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "5 utterances" in done.stdout


def test_librispeech_manifest(tmp_path: Path) -> None:
    root = libri_tree(tmp_path / "LibriSpeech")
    utterances = librispeech_manifest(root)
    assert [u.id for u in utterances] == [
        "1272-128104-0000",
        "1272-128104-0001",
        "84-121123-0000",
        "84-121123-0001",
        "84-121550-0000",
    ]
    first, second = utterances[0], utterances[1]
    assert first.text == "mister quilter is the apostle"
    assert second.text == "nor is mister quilter's manner"
    assert first.speaker == "1272" and utterances[-1].speaker == "84"
    assert (first.duration, second.duration) == (0.25, 0.375)
    expected = root / "dev-clean" / "1272" / "128104" / "1272-128104-0000.flac"
    assert first.audio_filepath == str(expected)
    assert first.offset == 0.0
    # a split directory works the same, and the result survives a manifest round trip
    assert librispeech_manifest(root / "dev-clean") == utterances
    write_manifest(root / "dev.jsonl", utterances)
    assert read_manifest(root / "dev.jsonl") == utterances


def test_librispeech_phones_beside_the_audio_are_listed(tmp_path: Path) -> None:
    """A ``UTT.phones`` file next to the audio (the synthetic corpus writes them)
    becomes ``phones_filepath``, written relative to the manifest and read back
    absolute; utterances without one have none."""
    root = libri_tree(tmp_path / "LibriSpeech")
    chapter = root / "dev-clean" / "84" / "121123"
    (chapter / "84-121123-0000.phones").write_text("sil 0.0 0.1\ng 0.1 0.2\n")
    utterances = {u.id: u for u in librispeech_manifest(root)}
    assert utterances["84-121123-0000"].phones_filepath == str(
        chapter / "84-121123-0000.phones"
    )
    assert utterances["84-121123-0001"].phones_filepath is None
    manifest = root / "dev.jsonl"
    write_manifest(manifest, utterances.values())
    record = json.loads(manifest.read_text().splitlines()[2])
    assert record["phones_filepath"] == os.path.join(
        "dev-clean", "84", "121123", "84-121123-0000.phones"
    )
    assert read_manifest(manifest) == list(utterances.values())


def test_a_bad_phones_filepath_is_a_problem_of_its_line(tmp_path: Path) -> None:
    manifest = jsonl(
        tmp_path / "m.jsonl",
        '{"audio_filepath": "a.wav", "duration": 1, "text": "x", "phones_filepath": 3}',
    )
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: 'phones_filepath' must be"):
        read_manifest(manifest)


def test_librispeech_mismatches_are_all_listed(tmp_path: Path) -> None:
    root = libri_tree(tmp_path / "LibriSpeech")
    chapter = root / "dev-clean" / "84" / "121123"
    (chapter / "84-121123-0001.flac").unlink()  # transcript line without audio
    tone(chapter / "84-121123-0002.flac", 0.25)  # audio without transcript line
    other = root / "dev-clean" / "1272" / "128104"
    with open(other / "1272-128104.trans.txt", "a") as f:
        f.write("1272-128104-0009 NO AUDIO EITHER\n")
        f.write("1272-128104-0000 DUPLICATE LINE\n")
        f.write("garbage\n")
    (other / "1272-128104-0001.flac").write_text("not audio")
    with pytest.raises(ManifestError) as info:
        librispeech_manifest(root)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == f"{root}: 6 problems:"
    trans = other / "1272-128104.trans.txt"
    assert f"{trans}:4: duplicate transcript for '1272-128104-0000'" in message
    assert f"{trans}:5: 'garbage' is not an utterance id" in message
    assert f"{trans}:3: no audio file (.flac) for '1272-128104-0009'" in message
    assert f"{chapter / '84-121123.trans.txt'}:2: no audio file" in message
    assert f"{chapter / '84-121123-0002.flac'}: no transcript line" in message
    assert f"{other / '1272-128104-0001.flac'}: not an audio file" in message


def test_librispeech_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a directory"):
        librispeech_manifest(tmp_path / "missing")
    with pytest.raises(ManifestError, match=r"no LibriSpeech transcripts"):
        librispeech_manifest(tmp_path)


def test_librispeech_wav_copy(tmp_path: Path) -> None:
    d = tmp_path / "7" / "8"
    tone(d / "7-8-0000.wav", 0.5, sample_rate=8000)
    (d / "7-8.trans.txt").write_text("7-8-0000 HELLO-THERE\n")
    (u,) = librispeech_manifest(tmp_path, audio_extensions=(".wav",))
    assert (u.id, u.speaker, u.text, u.duration) == (
        "7-8-0000",
        "7",
        "hello there",
        0.5,
    )


# ---------------------------------------------------------------------- validation


def frames_10ms(seconds: float) -> int:
    """DeepSpeech2-like: 10 ms hop, time stride 2 -> 50 output frames per second."""
    return int(seconds * 100) // 2


def test_validation_categories(tmp_path: Path) -> None:
    ok = tone(tmp_path / "ok.wav", 1.0)
    short = tone(tmp_path / "short.wav", 0.1)
    whole = tone(tmp_path / "whole.wav", 1.0)
    utterances = [
        Utterance(str(ok), 1.0, "hello world", id="good"),
        Utterance(str(tmp_path / "missing.wav"), 1.0, "hello", id="missing"),
        Utterance(str(ok), 1.0, " ?! ", id="empty"),
        Utterance(str(ok), 1.0, "I paid 50%", id="digits"),
        # 0.1 s -> 5 frames; "aab" needs 3 labels + 1 repeat = 4: fits
        Utterance(str(short), 0.1, "aab", id="fits"),
        # "aabb" needs 4 labels + 2 repeats = 6 > 5
        Utterance(str(short), 0.1, "aabb", id="tight"),
        Utterance(str(short), 0.1, "far too long a transcript", id="long"),
        Utterance(str(ok), 1.0, "again", id="good"),
        Utterance(str(ok), 0.5, "beyond", offset=1.0, id="late"),
        Utterance(str(ok), 1.0, "unnamed"),
        # the manifest's duration against the audio's (tolerance 0.1 s)
        Utterance(str(whole), 0.5, "half", id="half"),
        # one of several utterances of a file is a segment of it, even at offset 0
        Utterance(str(ok), 0.4, "first", id="first"),
        Utterance(str(ok), 0.5, "segment", offset=0.4, id="segment"),
        Utterance(str(ok), 0.9, "past the end", offset=0.4, id="past"),
        Utterance(str(ok), 1e308, "forever", id="forever"),
    ]
    report = validate_utterances(utterances, CharTokenizer(), frames_10ms)
    assert isinstance(report, ValidationReport)
    assert report.total == 15 and not report.ok
    assert list(report.problems) == list(CATEGORIES)
    assert [u.id for u in report.kept] == ["good", "fits", None, "first", "segment"]
    p = report.problems
    assert p["unreadable audio"] == [
        f"missing ({tmp_path / 'missing.wav'}): file not found",
        f"late ({ok}): offset 1 s is at or beyond the end of the audio (1 s)",
    ]
    assert p["empty text"] == ["empty: ' ?! ' is empty once normalized"]
    assert p["unspellable characters"] == ["digits: '%', '0', '5' in 'i paid 50%'"]
    assert p["too short for its transcript"] == [
        "tight: 0.1 s gives 5 output frames, the transcript needs 6 "
        "(4 labels + 2 repeats)",
        "long: 0.1 s gives 5 output frames, the transcript needs 26 "
        "(25 labels + 1 repeats)",  # the "oo" of "too"
    ]
    assert p["duplicate id"] == [f"good: {ok} and {ok}"]
    assert p["duration mismatch"] == [
        f"half ({whole}): duration 0.5 s, but the audio holds 1 s",
        f"past ({ok}): duration 0.9 s, but the audio holds 0.6 s after the offset "
        "0.4 s",
        "forever: duration 1e+308 s is longer than any recording",
    ]

    summary = report.summary(max_examples=1)
    assert summary.splitlines()[0] == (
        "15 utterances checked: 5 kept, 10 with problems"
    )
    assert "  unreadable audio: 2" in summary
    assert "    missing (" in summary and "    ... and 1 more" in summary
    assert "  duplicate id: 1" in summary
    assert "late (" not in summary  # beyond max_examples


def test_validation_without_audio_or_length_checks(tmp_path: Path) -> None:
    utterances = [
        Utterance(str(tmp_path / "missing.wav"), 0.01, "a long transcript", id="x")
    ]
    report = validate_utterances(utterances, CharTokenizer(), check_audio=False)
    assert report.ok and report.kept == utterances
    assert report.summary() == "1 utterances checked: all usable"
    strict = validate_utterances(utterances, CharTokenizer(), frames_10ms)
    assert strict.problems["unreadable audio"]
    assert strict.problems["too short for its transcript"]
    assert strict.kept == []


def test_validation_reads_each_file_once(tmp_path: Path, monkeypatch) -> None:
    import asr.manifest as manifest_module

    path = tone(tmp_path / "long.wav", 1.25)
    calls = []
    real = manifest_module.audio_info

    def counting(p):
        calls.append(p)
        return real(p)

    monkeypatch.setattr(manifest_module, "audio_info", counting)
    # segments after the first quarter second (an utterance at offset 0 is the
    # whole file, as the loaders read it)
    segments = [Utterance(str(path), 0.25, "x", offset=i * 0.25) for i in range(1, 5)]
    report = validate_utterances(segments, CharTokenizer())
    assert report.ok and len(report.kept) == 4
    assert calls == [str(path)]


# ------------------------------------------------------- whole-manifest validation


def broken_manifest(tmp_path: Path) -> tuple[Path, Path]:
    """One problem of each kind, each on its own line, among good lines; and the
    good audio file."""
    ok = tone(tmp_path / "ok.wav", 1.0)
    tone(tmp_path / "short.wav", 0.1)
    good = {"audio_filepath": "ok.wav", "duration": 1.0, "text": "hello world"}
    return jsonl(
        tmp_path / "m.jsonl",
        json.dumps({**good, "id": "a"}),  # 1: fine
        '{"audio_filepath": "ok.wav", "duration": 1.0',  # 2: invalid JSON
        json.dumps({"audio_filepath": "ok.wav", "id": "b"}),  # 3: missing keys
        json.dumps({**good, "duration": "long", "id": "c"}),  # 4: wrong type
        b'{"audio_filepath": "ok.wav", "duration": 1.0, "text": "caf\xe9"}',  # 5
        json.dumps({**good, "text": "50% off", "id": "d"}),  # 6: vocabulary
        json.dumps({**good, "id": "a"}),  # 7: duplicate id
        json.dumps({**good, "audio_filepath": "gone.wav", "id": "e"}),  # 8: no file
        "",  # 9: blank, ignored
        "[" * 100_000 + "]" * 100_000,  # 10: nested too deeply to parse
        json.dumps(  # 11: too short for its transcript at 50 frames/s
            {"audio_filepath": "short.wav", "duration": 0.1, "text": "abcdefgh"}
        ),
        json.dumps({**good, "id": "f"}),  # 12: fine
    ), ok


def test_scan_collects_every_bad_line_and_read_stays_strict(tmp_path: Path) -> None:
    manifest, _ = broken_manifest(tmp_path)
    scan = scan_manifest(manifest)
    assert isinstance(scan, ManifestScan)
    assert scan.lines == [1, 6, 7, 8, 11, 12]
    assert [int(p.split(":")[1]) for p in scan.problems] == [2, 3, 4, 5, 10]
    assert "nested too deeply" in scan.problems[-1]
    assert scan.locations[0] == f"{manifest}:1"
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    assert info.value.problems == scan.problems


def test_validate_manifest_reports_everything_with_line_numbers(tmp_path: Path) -> None:
    manifest, ok = broken_manifest(tmp_path)
    report = validate_manifest(manifest, output_frames=frames_10ms)
    assert report.total == 11 and [u.id for u in report.kept] == ["a", "f"]
    p = report.problems
    m = str(manifest)
    assert [x.split(": ")[0] for x in p["malformed line"]] == [
        f"{m}:{n}" for n in (2, 3, 4, 5, 10)
    ]
    assert p["unspellable characters"] == [f"{m}:6: d: '%', '0', '5' in '50% off'"]
    assert p["duplicate id"] == [f"{m}:7: a: {ok} and {ok} (first at {m}:1)"]
    gone = tmp_path / "gone.wav"
    assert p["unreadable audio"] == [f"{m}:8: e ({gone}): file not found"]
    assert p["too short for its transcript"] == [
        f"{m}:11: {tmp_path / 'short.wav'}: 0.1 s gives 5 output frames, the "
        "transcript needs 8 (8 labels + 0 repeats)"
    ]
    assert report.count == 9 and not report.ok
    everything = report.summary(max_examples=None)
    assert (
        everything.splitlines()[0] == "11 utterances checked: 2 kept, 9 with problems"
    )
    assert "... and" not in everything


def test_validate_command_lists_all_problems_and_exits_non_zero(
    tmp_path: Path, capsys
) -> None:
    from asr.cli import main

    manifest, _ = broken_manifest(tmp_path)
    assert main(["validate", str(manifest), "--frames-per-second", "50"]) == 1
    out = capsys.readouterr().out
    for line in (2, 3, 4, 5, 6, 7, 8, 10, 11):
        assert f"{manifest}:{line}: " in out, line
    assert f"{manifest}:1: " not in out and f"{manifest}:12: " not in out
    # Without a frame rate there is no length check; a clean manifest exits 0.
    assert main(["validate", str(manifest)]) == 1
    assert f"{manifest}:11: " not in capsys.readouterr().out
    clean = jsonl(tmp_path / "clean.jsonl", *manifest.read_bytes().splitlines()[11:])
    assert main(["validate", str(clean)]) == 0
    assert capsys.readouterr().out == f"{clean}: 1 utterances checked: all usable\n"
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"asr validate: error: {tmp_path / 'nope.jsonl'}: manifest not found\n"
    )


def test_validate_command_with_a_checkpoint_uses_its_frame_rate(
    tmp_path: Path, capsys
) -> None:
    from asr.cli import main
    from asr.inference import save_model
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 40})
    ckpt = save_model(task, tmp_path / "model.ckpt")
    manifest, _ = broken_manifest(tmp_path)
    assert main(["validate", str(manifest), "--checkpoint", str(ckpt)]) == 1
    out = capsys.readouterr().out
    frames = task.output_frames(0.1)
    assert f"{manifest}:11: " in out and f"gives {frames} output frames" in out


def test_manifest_json_cannot_run_anything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tone(tmp_path / "ok.wav", 0.5)
    hostile = [
        {"audio_filepath": "ok.wav", "duration": 0.5, "text": "x", "__class__": "os"},
        {"audio_filepath": "ok.wav", "duration": 0.5, "text": "__import__('os')"},
        {"audio_filepath": "ok.wav", "duration": 0.5, "text": "y", "id": "$(touch P)"},
    ]
    manifest = jsonl(tmp_path / "m.jsonl", *map(json.dumps, hostile))
    utts = read_manifest(manifest)
    assert [u.text for u in utts] == ["x", "__import__('os')", "y"]
    assert utts[2].id == "$(touch P)"
    assert sorted(os.listdir(tmp_path)) == ["m.jsonl", "ok.wav"]


def test_an_invalid_json_message_reads_as_english(tmp_path: Path) -> None:
    """json's "Unterminated string starting at" is not followed by another "at"."""
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b'{"audio_filepath": "a.wav')  # cut mid-string, no newline
    (problem,) = scan_manifest(cut).problems
    assert problem == (
        f"{cut}:1: invalid JSON (Unterminated string starting at column 20)"
    )
