"""asr.formats: timestamps, subtitle cues, every format's syntax, output plans and
atomic writes (no model needed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from asr.decoding import Hypothesis, Word
from asr.formats import (
    CUE_CHARACTERS,
    CUE_SECONDS,
    DirectoryWriter,
    OutputError,
    cues,
    output_plan,
    render,
    srt_timestamp,
    vtt_timestamp,
    write_results,
)
from asr.transcribe import Failure, Source, Transcript

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"
SRT_CUE = re.compile(rf"^(\d+)\n({SRT_TIME}) --> ({SRT_TIME})\n(.+)\n$")
VTT_CUE = re.compile(rf"^({VTT_TIME}) --> ({VTT_TIME})\n(.+)\n$")


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def transcript(stem: str, words: list[tuple[str, float, float]], **kw) -> Transcript:
    ws = tuple(Word(t, s, e, 0.9) for t, s, e in words)
    src = Source(path=f"/data/{stem}.wav", name=kw.pop("name", stem), stem=stem, **kw)
    end = max((e for _, _, e in words), default=1.0)
    return Transcript(src, end + 0.5, Hypothesis(" ".join(w.text for w in ws), ws))


def talk(
    n: int, gap: float = 0.1, length: float = 0.4
) -> list[tuple[str, float, float]]:
    """``n`` words of 4-9 letters, each ``length`` s long, ``gap`` s apart."""
    out, t = [], 0.5
    for i in range(n):
        out.append(("word" + "x" * (i % 6), round(t, 3), round(t + length, 3)))
        t += length + gap
    return out


@pytest.mark.parametrize(
    ("value", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.0, "00:00:01,000", "00:00:01.000"),
        (3723.5, "01:02:03,500", "01:02:03.500"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (0.0404, "00:00:00,040", "00:00:00.040"),
        (36000.001, "10:00:00,001", "10:00:00.001"),
    ],
)
def test_timestamps(value, srt, vtt):
    assert srt_timestamp(value) == srt
    assert vtt_timestamp(value) == vtt


def test_cues_respect_the_limits_and_keep_every_word_once():
    words = [Word(t, s, e, 1.0) for t, s, e in talk(60)]
    cs = cues(words)
    assert " ".join(c.text for c in cs).split() == [w.text for w in words]
    for c in cs:
        assert len(c.text) <= CUE_CHARACTERS
        assert c.end - c.start <= CUE_SECONDS
        assert c.end > c.start
    assert all(a.end <= b.start for a, b in zip(cs, cs[1:], strict=False))
    assert len(cs) > 5  # 60 words cannot fit a few cues


def test_a_long_pause_starts_a_new_cue_and_a_huge_word_stands_alone():
    words = [
        Word("one", 0.0, 0.3, 1),
        Word("two", 0.4, 0.7, 1),
        Word("three", 5, 5.3, 1),
    ]
    assert [c.text for c in cues(words)] == ["one two", "three"]
    long = Word("x" * 60, 1.0, 9.5, 1.0)
    cs = cues([Word("a", 0.0, 0.5, 1), long, Word("b", 9.6, 9.8, 1)])
    assert [c.text for c in cs] == ["a", long.text, "b"]


def test_srt_parses():
    text = render("srt", [transcript("a", talk(30))])
    blocks = text.split("\n\n")
    assert len(blocks) > 1
    previous_end = 0.0
    for i, block in enumerate(blocks, 1):
        block = block if block.endswith("\n") else block + "\n"
        m = SRT_CUE.match(block)
        assert m, block
        assert int(m.group(1)) == i
        start, end = seconds(m.group(2)), seconds(m.group(3))
        assert previous_end <= start < end
        previous_end = end
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_vtt_parses():
    text = render("vtt", [transcript("a", talk(30))])
    assert text.startswith("WEBVTT\n\n")
    blocks = text[len("WEBVTT\n\n") :].split("\n\n")
    for block in blocks:
        block = block if block.endswith("\n") else block + "\n"
        m = VTT_CUE.match(block)
        assert m, block
        assert seconds(m.group(1)) < seconds(m.group(2))
    assert render("vtt", [transcript("a", [])]) == "WEBVTT\n"


def test_vtt_escapes_markup():
    text = render("vtt", [transcript("a", [("a<b>&", 0.0, 0.5)])])
    assert "a&lt;b&gt;&amp;" in text


def test_ctm_fields():
    ts = [transcript("a b", talk(3), name="a b"), transcript("c", talk(2))]
    lines = render("ctm", ts).splitlines()
    assert len(lines) == 5
    for line, (w_text, start, end) in zip(lines, talk(3) + talk(2), strict=True):
        utt, channel, s, d, word, conf = line.split(" ")
        assert channel == "1"
        assert float(s) == pytest.approx(start, abs=5e-4)
        assert float(d) == pytest.approx(end - start, abs=1e-3)
        assert word == w_text and 0 <= float(conf) <= 1
        assert re.fullmatch(r"\d+\.\d{3}", s) and re.fullmatch(r"\d+\.\d{3}", d)
    assert lines[0].startswith("a_b 1 ") and lines[3].startswith("c 1 ")


def test_text_names_lines_only_for_several_inputs():
    a, b = transcript("a", talk(2)), transcript("b", talk(1))
    assert render("text", [a]) == f"{a.text}\n"
    assert render("text", [a, b]) == f"{a.source.name}\t{a.text}\nb\t{b.text}\n"
    # A failure still counts as an input: the shape does not depend on what failed.
    failed = Failure(Source("/x.wav", "/x.wav", "x"), "file not found")
    assert render("text", [a, failed]) == f"{a.source.name}\t{a.text}\n"


def test_json_document():
    a = transcript("a", talk(2), id="utt-1", offset=2.0)
    failed = Failure(Source("/x.wav", "/x.wav", "x"), "file not found")
    header = {"model": {"checkpoint": "m.ckpt"}, "decoder": {"decoder": "greedy"}}
    doc = json.loads(render("json", [a, failed], header))
    assert set(doc) == {"model", "decoder", "results", "failed"}
    assert doc["model"] == {"checkpoint": "m.ckpt"}
    (r,) = doc["results"]
    assert set(r) == {"path", "id", "offset", "duration", "text", "score", "words"}
    assert r["id"] == "utt-1" and r["offset"] == 2.0 and r["text"] == a.text
    assert r["words"][0] == {
        "text": "word",
        "start": 0.5,
        "end": 0.9,
        "confidence": 0.9,
    }
    assert doc["failed"] == [{"path": "/x.wav", "error": "file not found"}]


def test_output_plan(tmp_path):
    assert output_plan("text", 3, None) == "stdout"
    assert output_plan("srt", 1, None) == "stdout"
    assert output_plan("json", 3, tmp_path / "out.json") == "file"
    assert output_plan("srt", 1, tmp_path / "a.srt") == "file"
    assert output_plan("srt", 2, tmp_path / "subs") == "directory"
    assert output_plan("text", 2, str(tmp_path / "new") + os.sep) == "directory"
    assert output_plan("ctm", 2, tmp_path) == "directory"  # an existing directory
    with pytest.raises(OutputError, match="-o DIR"):
        output_plan("vtt", 2, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        output_plan("srt", 2, tmp_path / "file")
    with pytest.raises(OutputError, match="unknown format"):
        output_plan("docx", 1, None)


def write_directory(results, fmt: str, out) -> list:
    """What `asr transcribe -o DIR/` does with the results, as they come."""
    writer = DirectoryWriter(out, fmt, [r.source for r in results], {})
    for i, r in enumerate(results):
        if isinstance(r, Transcript):
            writer.write(i, r)
    return writer.written


def test_one_file_per_input_with_unique_names_inside_the_directory(tmp_path):
    ts = [
        transcript("a", talk(2)),
        transcript("a", talk(3)),
        transcript("../../evil", talk(1)),
        transcript("sub/b", talk(1)),
    ]
    failed = Failure(Source("/x.wav", "/x.wav", "x"), "file not found")
    out = tmp_path / "subs"
    written = write_directory([*ts, failed], "srt", out)
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == ["a-2.srt", "a.srt", "evil.srt", "sub/b.srt"]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert (out / "a-2.srt").read_text() == render("srt", [ts[1]])
    assert not (out / "x.srt").exists()
    assert sorted(os.listdir(out)) == ["a-2.srt", "a.srt", "evil.srt", "sub"]


def test_stdout_and_single_file(tmp_path):
    ts = [transcript("a", talk(2)), transcript("b", talk(2))]
    assert write_results(ts, "text", None, {}) == render("text", ts)
    path = tmp_path / "deep" / "out.ctm"
    assert write_results(ts, "ctm", path, {}) == [path]
    assert path.read_text() == render("ctm", ts)


def test_unwritable_output_is_an_output_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(OutputError, match="cannot write"):
        write_results([transcript("a", talk(1))], "text", blocker / "x.txt", {})
    assert Path(blocker).read_text().startswith("a file")


def test_hostile_names_cannot_write_outside_the_directory(tmp_path):
    """Stems come from manifest ids and file names: absolute paths, "..", NUL bytes,
    control characters, names too long for the file system, and a subdirectory that
    is a symbolic link out of the output directory all end up inside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    stems = [
        "../../etc/passwd",
        "/abs/path",
        "..",
        "a\x00b",
        "new\nline",
        "x" * 1000,
        "y" * 1000,
        "link/escape",
        "link/../../escape2",
        "C:\\windows\\system32",
    ]
    ts = [transcript(s, talk(1)) for s in stems]
    written = write_directory(ts, "text", out)
    assert len(written) == len(stems)
    root = out.resolve()
    for p in written:
        assert p.resolve().is_relative_to(root), p
        assert len(p.name.encode()) <= 255
    assert os.listdir(outside) == []
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert "etc/passwd.txt" in names and "abs/path.txt" in names
    assert "audio.txt" in names and "a_b.txt" in names and "new_line.txt" in names
    assert "link_escape.txt" in names and "link_escape2.txt" in names
    assert "C:/windows/system32.txt" in names
    longs = [n for n in names if n.startswith(("xxx", "yyy"))]
    assert len(longs) == 2 and longs[0][:150] != longs[1][:150]


def test_a_full_disk_is_named_and_the_previous_output_kept(tmp_path, monkeypatch):
    import errno

    import asr.atomic

    path = tmp_path / "out.txt"
    write_results([transcript("a", talk(2))], "text", path, {})
    before = path.read_bytes()

    def half(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asr.atomic, "_write_all", half)
    with pytest.raises(OutputError) as info:
        write_results([transcript("b", talk(5))], "text", path, {})
    assert str(info.value).startswith(f"{path}: cannot write: the disk is full")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.txt"]
