"""asr.layouts: each corpus layout built from espeak-ng speech and imported with
``asr manifest``; bad sources refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speak

from asr.audio import audio_info, load_audio
from asr.cli import main
from asr.layouts import detect_layout, import_corpus, read_layout
from asr.manifest import ManifestError, read_manifest

CLIPS = {
    "one": "the cat sat on the mat",
    "two": "good morning to you",
    "three": "we went home late",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Three short espeak-ng utterances (16 kHz FLAC), made once for this module."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.fail("espeak-ng and sox are required (make setup installs them)")
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for name, text in CLIPS.items():
        out[name] = root / f"{name}.flac"
        speak(text, "en-us", out[name])
    return out


def convert(src: Path, dst: Path, **kwargs) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    wave, rate = sf.read(src)
    sf.write(dst, wave, rate, **kwargs)
    return dst


def manifest(source: Path, out: Path, *extra: str) -> list:
    assert main(["manifest", str(source), "-o", str(out), *extra]) == 0
    return read_manifest(out)


def durations_match(utts, clips) -> None:
    for u in utts:
        assert u.duration == pytest.approx(audio_info(clips[Path(u.id).name]).duration)


def test_a_folder_of_audio_files_with_same_named_transcripts(clips, tmp_path):
    root = tmp_path / "mine"
    convert(clips["one"], root / "one.wav")
    (root / "day2").mkdir()
    shutil.copy(clips["two"], root / "day2" / "two.flac")
    (root / "one.wav").with_suffix(".txt").write_text("The cat sat, on the mat!\n")
    (root / "day2" / "two.txt").write_text("Good morning\nto you.\n")
    assert detect_layout(root) == "folder"
    utts = manifest(root, tmp_path / "m.jsonl")
    assert [(u.id, u.text) for u in utts] == [
        ("day2/two", "good morning to you"),
        ("one", "the cat sat on the mat"),
    ]
    durations_match(utts, clips)


def test_a_folder_with_a_file_missing_its_partner_is_refused(clips, tmp_path):
    root = tmp_path / "mine"
    convert(clips["one"], root / "one.wav")
    (root / "one.txt").write_text("the cat sat on the mat")
    convert(clips["two"], root / "two.wav")  # no two.txt
    (root / "three.txt").write_text("no audio here")
    with pytest.raises(ManifestError) as info:
        read_layout(root, "folder")
    message = str(info.value)
    assert "two.wav: no transcript (two.txt beside it)" in message
    assert "three.txt: no audio file beside it" in message


def test_ljspeech_takes_the_normalized_column(clips, tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    for name in CLIPS:
        convert(clips[name], root / "wavs" / f"{name}.wav", subtype="PCM_16")
    (root / "metadata.csv").write_text(
        "one|The cat sat on the mat.|The cat sat on the mat.\n"
        "two|Good morning 2 you|Good morning to you\n"
        "three|We went home late.\n",  # the two-field form
        encoding="utf-8",
    )
    for source in (root, root / "metadata.csv"):
        assert detect_layout(source) == "ljspeech"
        utts = manifest(source, tmp_path / "m.jsonl")
        assert {u.id: u.text for u in utts} == CLIPS
        durations_match(utts, clips)


def test_common_voice_tsv_with_mp3_clips(clips, tmp_path):
    root = tmp_path / "cv-corpus" / "en"
    for name in CLIPS:
        convert(clips[name], root / "clips" / f"common_voice_en_{name}.mp3")
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\n"
    rows = [
        f"spk{i}\tcommon_voice_en_{name}.mp3\t{text.capitalize()}.\t2\t0\t\t\n"
        for i, (name, text) in enumerate(CLIPS.items())
    ]
    rows[0] = rows[0].replace("The cat", '"The cat')  # a stray quote: not CSV quoting
    (root / "train.tsv").write_text(header + "".join(rows), encoding="utf-8")
    assert detect_layout(root / "train.tsv") == "commonvoice"
    with pytest.raises(ManifestError, match="name one of its .tsv files"):
        detect_layout(root)
    utts = manifest(root / "train.tsv", tmp_path / "m.jsonl")
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        (f"common_voice_en_{name}", f"spk{i}", text)
        for i, (name, text) in enumerate(CLIPS.items())
    ]
    for u, name in zip(utts, CLIPS, strict=True):  # MP3 frames pad a little
        assert u.duration == pytest.approx(audio_info(clips[name]).duration, abs=0.1)
        assert load_audio(u.audio_filepath).abs().max() > 0.01


def test_kaldi_segments_point_into_a_longer_recording(clips, tmp_path):
    root = tmp_path / "data" / "train"
    root.mkdir(parents=True)
    waves = [sf.read(clips[name])[0] for name in CLIPS]
    gap = np.zeros(8000)
    joined = np.concatenate([waves[0], gap, waves[1], gap, waves[2]])
    sf.write(tmp_path / "session.wav", joined, 16000, subtype="PCM_16")
    convert(clips["three"], tmp_path / "alone.flac")
    starts = [0, len(waves[0]) + 8000, len(waves[0]) + len(waves[1]) + 16000]
    (root / "wav.scp").write_text(
        f"sess {tmp_path / 'session.wav'}\nalone {tmp_path / 'alone.flac'}\n"
    )
    segments = [
        f"sess-{name} sess {s / 16000} {(s + len(w)) / 16000}\n"
        for name, s, w in zip(CLIPS, starts, waves, strict=True)
    ]
    (root / "segments").write_text("".join(segments))
    (root / "text").write_text(
        "".join(f"sess-{name} {text.upper()}\n" for name, text in CLIPS.items())
    )
    (root / "utt2spk").write_text("".join(f"sess-{name} spk1\n" for name in CLIPS))
    assert detect_layout(root) == "kaldi"
    utts = manifest(root, tmp_path / "m.jsonl")
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        (f"sess-{name}", "spk1", text) for name, text in CLIPS.items()
    ]
    for u, wave in zip(utts, waves, strict=True):
        got = load_audio(u.audio_filepath, offset=u.offset, duration=u.duration)
        n = min(len(got), len(wave))
        assert abs(len(got) - len(wave)) <= 2
        np.testing.assert_allclose(got[:n].numpy(), wave[:n], atol=2e-4)


def test_kaldi_without_segments_and_with_relative_paths(clips, tmp_path):
    root = tmp_path / "train"
    for name in CLIPS:
        convert(clips[name], root / "wav" / f"{name}.wav")
    (root / "wav.scp").write_text("".join(f"{n} wav/{n}.wav\n" for n in CLIPS))
    (root / "text").write_text("".join(f"{n} {t}\n" for n, t in CLIPS.items()))
    utts = manifest(root, tmp_path / "m.jsonl")
    assert {u.id: u.text for u in utts} == CLIPS
    assert all(u.offset == 0 for u in utts)
    durations_match(utts, clips)


def test_a_command_in_wav_scp_is_refused_and_nothing_written(clips, tmp_path, capsys):
    root = tmp_path / "train"
    convert(clips["one"], root / "one.wav")
    (root / "wav.scp").write_text(
        f"one {root / 'one.wav'}\ntwo sox {clips['two']} -t wav - |\n"
    )
    (root / "text").write_text("one the cat sat on the mat\ntwo good morning\n")
    out = tmp_path / "m.jsonl"
    assert main(["manifest", str(root), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{root / 'wav.scp'}:2: 'two' is a command" in err
    assert not out.exists()


def test_a_source_in_no_known_layout_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.md").write_text("hello")
    for source in (tmp_path, tmp_path / "notes.md", tmp_path / "nothing"):
        assert main(["manifest", str(source), "-o", str(tmp_path / "m.jsonl")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(source) in err, err
        assert "layout" in err or "no such file" in err


def test_unusable_utterances_are_named_counted_and_left_out(clips, tmp_path, capsys):
    """Each file is checked as `asr validate` checks it: the usable ones are
    written, the others named, characters outside the vocabulary counted."""
    root = tmp_path / "mine"
    convert(clips["one"], root / "one.wav")
    (root / "one.txt").write_text("the cat sat on the mat")
    convert(clips["two"], root / "two.wav")
    (root / "two.txt").write_text("5 cats and 50 % of 5 dogs")
    convert(clips["three"], root / "three.wav")
    (root / "three.txt").write_text("")
    (root / "four.wav").write_bytes(b"RIFF not really")
    (root / "four.txt").write_text("broken")
    out = tmp_path / "m.jsonl"
    assert main(["manifest", str(root), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "4 utterances checked: 1 kept, 3 with problems" in err
    assert "unreadable audio: 1" in err and "four" in err
    assert "empty text: 1" in err
    assert "'5' x3, '0' x1, '%' x1" in err
    assert [u.id for u in read_manifest(out)] == ["one"]
    found = import_corpus(root)
    assert found.unknown == {"5": 3, "0": 1, "%": 1}


def test_an_explicit_layout_that_does_not_fit_is_one_line(clips, tmp_path):
    root = tmp_path / "mine"
    convert(clips["one"], root / "one.wav")
    (root / "one.txt").write_text("the cat sat on the mat")
    with pytest.raises(ManifestError, match="the commonvoice layout takes a .tsv"):
        read_layout(root, "commonvoice")
    with pytest.raises(ManifestError, match=r"wav\.scp: .*not found|No such file"):
        read_layout(root, "kaldi")
