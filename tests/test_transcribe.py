"""asr transcribe on real speech: the fitted espeak model, real files in several
formats, bad files among good ones, and hour-style windowing of a long recording."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from asr.audio import AudioError, audio_info, load_audio, stream_audio
from asr.cli import main
from asr.data import SpeechDataset, collate
from asr.decoding import make_decoder
from asr.inference import load_model
from asr.manifest import (
    Utterance,
    read_manifest,
    validate_utterances,
    write_manifest,
)
from asr.metrics import error_rates
from asr.text import CharTokenizer
from asr.transcribe import (
    Failure,
    Source,
    Transcriber,
    Transcript,
    collect_sources,
)

SR = 16000
# How close a word's time must be to where its sound is (seconds): CTC emits a
# character within a few frames of it (20 ms frames for the test models).
TIME_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def train(espeak_manifests) -> list[Utterance]:
    return read_manifest(espeak_manifests["train"])


@pytest.fixture(scope="module")
def recognizer(fitted_checkpoint):
    return load_model(fitted_checkpoint)


class _Example(NamedTuple):  # what asr.data.collate reads from an item
    wave: torch.Tensor
    tokens: list[int]
    id: str
    text: str
    phones: torch.Tensor | None = None


@pytest.fixture(scope="module")
def sturdy_checkpoint(fitted_checkpoint, train, tmp_path_factory) -> Path:
    """The fitted model fine-tuned for real recordings: the training sentences alone
    and in runs of one to five separated by pauses, with leading silence, a noise
    floor and, half the time, telephone bandwidth (8 kHz and back). The fitted model
    has only seen isolated, clean sentences and fails on a second of silence, a
    narrowband file or a minute of speech; this one recognizes them, and its
    posteriors depend little on context seconds away (runs of up to five sentences),
    as a model trained on real utterances does (about a minute on 2 cores)."""
    from asr.inference import save_model
    from asr.task import ASRTask

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [{"channels": 8, "kernel": [11, 11], "stride": [2, 2]}],
            "rnn_layers": 2,
            "hidden_size": 96,
        },
        frontend={"kind": "logmel", "n_mels": 40},
        ctc_impl="torch",
    )
    state = torch.load(fitted_checkpoint, weights_only=True)
    task.model.load_state_dict(state["model"])
    task.frontend.load_state_dict(state["frontend"])
    waves = [load_audio(u.audio_filepath, SR).numpy() for u in train]

    def pause(lo: float, hi: float) -> np.ndarray:
        return np.zeros(int(rng.uniform(lo, hi) * SR), np.float32)

    def example() -> _Example:
        if rng.random() < 0.4:
            picked = [int(rng.integers(len(train)))]
            x = waves[picked[0]]
        else:
            picked = list(rng.choice(len(train), int(rng.integers(1, 6)), False))
            parts = [pause(0.05, 0.8)]
            for i in picked:
                parts += [waves[i], pause(0.1, 0.8)]
            x = np.concatenate(parts)
            x = x + 10 ** (rng.uniform(-70, -50) / 20) * rng.standard_normal(len(x))
        if rng.random() < 0.5:
            x = soxr.resample(soxr.resample(x, SR, 8000), 8000, SR)
        text = " ".join(train[i].text for i in picked)
        wave = torch.from_numpy(np.asarray(x, np.float32))
        return _Example(wave, task.tokenizer.encode(text), "x", text)

    steps, lr = 160, 5e-3
    opt = torch.optim.AdamW(task.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    task.train()
    for _ in range(steps):
        batch = collate([example() for _ in range(8)])
        opt.zero_grad()
        loss, _, _ = task._loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
        opt.step()
        schedule.step()
    task.eval()
    return save_model(task, tmp_path_factory.mktemp("sturdy") / "model.ckpt")


@pytest.fixture(scope="module")
def sturdy(sturdy_checkpoint):
    return load_model(sturdy_checkpoint)


def transcriber(recognizer, **kw) -> Transcriber:
    return Transcriber(recognizer, make_decoder(recognizer.tokenizer.vocab), **kw)


def speech_span(path: str | Path) -> tuple[float, float]:
    """First and last 10 ms frame whose energy is within 35 dB of the loudest."""
    x = load_audio(path, SR).numpy()
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames**2).mean(1) + 1e-12)
    loud = np.flatnonzero(db > db.max() - 35)
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- recognition and timing ---------------------------------------------------------


def test_training_sentences_are_transcribed_exactly(
    train, recognizer, espeak_manifests
):
    sources, failures = collect_sources([espeak_manifests["train"]])
    assert failures == [] and len(sources) == len(train) == 18
    results = transcriber(recognizer).transcribe(sources)
    for u, r in zip(train, results, strict=True):
        assert isinstance(r, Transcript), r
        assert r.source.name == u.id and r.source.path == u.audio_filepath
        assert r.text == u.text
        assert [w.text for w in r.words] == u.text.split()
        assert r.duration == pytest.approx(u.duration, abs=1e-3)


def test_word_times_are_ordered_inside_the_audio_and_on_the_speech(train, recognizer):
    sources = [Source(u.audio_filepath, u.id, u.id) for u in train]
    for r in transcriber(recognizer).transcribe(sources):
        assert isinstance(r, Transcript)
        onset, offset = speech_span(r.source.path)
        words = r.words
        for w in words:
            assert 0 <= w.start < w.end <= r.duration + 1e-6
            assert 0 < w.confidence <= 1
        for a, b in zip(words, words[1:], strict=False):
            assert a.end <= b.start
        assert words[0].start >= onset - TIME_TOLERANCE, (words[0], onset)
        assert words[-1].end <= offset + TIME_TOLERANCE, (words[-1], offset)
        assert words[-1].end - words[0].start > 0.5 * (offset - onset)


@pytest.mark.slow
def test_leading_silence_shifts_the_word_times(train, sturdy, tmp_path):
    """The same speech after 1 s of near silence (-80 dB noise): the same words, 1 s
    later (to 0.1 s: the per-utterance normalization sees the extra second, and
    without silence before it the first character cannot be emitted early). And a
    manifest segment starting after that second (exactly the original samples) gives
    the original words at the original times plus the offset: times are in the file."""
    rng = np.random.default_rng(1)
    sources, padded, segments = [], [], []
    for u in train[:6:2]:
        x = load_audio(u.audio_filepath, SR).numpy()
        noise = (1e-4 * rng.standard_normal(SR)).astype(np.float32)
        path = tmp_path / f"{u.id}.wav"
        sf.write(path, np.concatenate([noise, x]), SR, subtype="FLOAT")
        sources.append(Source(u.audio_filepath, u.id, u.id))
        padded.append(Source(str(path), u.id, u.id))
        segments.append(Utterance(str(path), len(x) / SR, u.text, 1.0, u.id + "-seg"))
    write_manifest(tmp_path / "segments.jsonl", segments)
    segment_sources, _ = collect_sources([tmp_path / "segments.jsonl"])
    results = transcriber(sturdy).transcribe(sources + padded + segment_sources)
    original, shifted, segment = results[:3], results[3:6], results[6:]
    for u, a, b, c in zip(train[:6:2], original, shifted, segment, strict=True):
        assert a.text == b.text == c.text == u.text
        assert b.words[0].start >= 1.0 - TIME_TOLERANCE
        for wa, wb, wc in zip(a.words, b.words, c.words, strict=True):
            assert abs(wb.start - (wa.start + 1.0)) <= TIME_TOLERANCE
            assert abs(wb.end - (wa.end + 1.0)) <= TIME_TOLERANCE
            assert wc.start == pytest.approx(wa.start + 1.0, abs=1e-6)
            assert wc.end == pytest.approx(wa.end + 1.0, abs=1e-6)
        assert c.source.offset == 1.0


# -- inputs -------------------------------------------------------------------------


@pytest.mark.slow
def test_other_rates_and_channels(train, sturdy, tmp_path):
    """8 kHz stereo WAV, 44.1 kHz stereo FLAC and 48 kHz stereo float WAV of the
    same speech: the wideband ones recognized exactly, the narrowband ones (which
    lose everything above 4 kHz) to within a few characters."""
    sources, refs = [], []
    formats = [(8000, "wav"), (44100, "flac"), (48000, "wav")] * 2
    utts = train[1::3]
    for u, (rate, ext) in zip(utts, formats, strict=True):
        x = load_audio(u.audio_filepath, SR).numpy()
        y = soxr.resample(x, SR, rate)
        stereo = np.stack([y, 0.6 * y], axis=1)  # (frames, channels)
        path = tmp_path / f"{u.id}.{ext}"
        sf.write(path, stereo, rate)
        assert sf.info(path).channels == 2 and sf.info(path).samplerate == rate
        sources.append(Source(str(path), str(path), u.id))
        refs.append(u.text)
    results = transcriber(sturdy).transcribe(sources)
    for r, u in zip(results, utts, strict=True):
        assert r.duration == pytest.approx(u.duration, abs=1e-3)
    rated = list(zip(results, refs, formats, strict=True))
    wide = [(r.text, ref) for r, ref, (rate, _) in rated if rate > SR]
    assert [hyp for hyp, _ in wide] == [ref for _, ref in wide]
    narrow = [(r.text, ref) for r, ref, (rate, _) in rated if rate < SR]
    _, chars = error_rates([ref for _, ref in narrow], [hyp for hyp, _ in narrow])
    assert chars.rate <= 0.05, narrow


def test_directory_input_is_searched_recursively(
    train, fitted_checkpoint, tmp_path, capsys
):
    root = tmp_path / "audio"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(train[0].audio_filepath, root / "a.flac")
    shutil.copy(train[1].audio_filepath, root / "sub" / "b.FLAC")
    x = load_audio(train[2].audio_filepath, SR).numpy()
    sf.write(root / "sub" / "deeper" / "c.wav", x, SR)
    shutil.copy(train[3].audio_filepath, root / ".hidden" / "d.flac")
    (root / "notes.txt").write_text("not audio")
    code, out, err = run(
        capsys, "transcribe", str(root), "--checkpoint", str(fitted_checkpoint)
    )
    assert code == 0, err
    assert err == ""
    lines = [line.split("\t") for line in out.splitlines()]
    assert [name for name, _ in lines] == [
        str(root / "a.flac"),
        str(root / "sub" / "b.FLAC"),
        str(root / "sub" / "deeper" / "c.wav"),
    ]
    assert [text for _, text in lines] == [u.text for u in train[:3]]


def test_manifest_input_names_lines_by_id(
    espeak_manifests, train, fitted_checkpoint, capsys
):
    code, out, err = run(
        capsys,
        "transcribe",
        str(espeak_manifests["train"]),
        "--checkpoint",
        str(fitted_checkpoint),
    )
    assert code == 0, err
    assert out.splitlines() == [f"{u.id}\t{u.text}" for u in train]


def test_one_file_prints_just_its_text(train, fitted_checkpoint, capsys):
    path = train[4].audio_filepath
    code, out, _ = run(
        capsys, "transcribe", path, "--checkpoint", str(fitted_checkpoint)
    )
    assert (code, out) == (0, train[4].text + "\n")


def test_collect_sources_reports_inputs_that_cannot_be_expanded(tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "a.wav"}\nnot json\n')
    sources, failures = collect_sources([tmp_path / "empty", bad, tmp_path / "x.wav"])
    assert [s.path for s in sources] == [str(tmp_path / "x.wav")]
    assert [f.source.path for f in failures] == [str(tmp_path / "empty"), str(bad)]
    assert "no audio files" in failures[0].reason
    assert "2 problems" in failures[1].reason and "\n" not in failures[1].reason


# -- formats through the CLI --------------------------------------------------------


def test_json_output(train, fitted_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    paths = [u.audio_filepath for u in train[:3]]
    code, stdout, err = run(
        capsys,
        "transcribe",
        *paths,
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        "json",
        "-o",
        str(out),
    )
    assert code == 0 and stdout == ""
    assert f"wrote {out}" in err
    doc = json.loads(out.read_text())
    assert set(doc) == {"model", "decoder", "results", "failed"}
    assert doc["model"]["checkpoint"] == str(fitted_checkpoint)
    assert re.fullmatch(r"[0-9a-f]{64}", doc["model"]["sha256"])
    assert doc["model"]["parameters"] > 0 and doc["model"]["sample_rate"] == SR
    assert doc["decoder"]["decoder"] == "greedy"
    assert doc["decoder"]["window_seconds"] == 30.0
    assert doc["failed"] == []
    for r, u in zip(doc["results"], train[:3], strict=True):
        assert set(r) == {"path", "duration", "text", "score", "words"}
        assert r["path"] == u.audio_filepath and r["text"] == u.text
        assert r["duration"] == pytest.approx(u.duration, abs=1e-3)
        for w in r["words"]:
            assert set(w) == {"text", "start", "end", "confidence"}
            assert 0 <= w["start"] < w["end"] <= r["duration"]


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_one_file_per_input(train, fitted_checkpoint, tmp_path, capsys, fmt):
    out = tmp_path / "subs"
    paths = [u.audio_filepath for u in train[:3]]
    code, _, err = run(
        capsys,
        "transcribe",
        *paths,
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        fmt,
        "-o",
        str(out),
    )
    assert code == 0, err
    sep = "," if fmt == "srt" else r"\."
    stamp = rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d)"
    for u in train[:3]:
        text = (out / f"{Path(u.audio_filepath).stem}.{fmt}").read_text()
        if fmt == "vtt":
            assert text.startswith("WEBVTT\n\n")
            text = text[len("WEBVTT\n\n") :]
        cue = r"(?:\d+\n)?" if fmt == "srt" else ""
        blocks = re.findall(rf"{cue}{stamp} --> {stamp}\n(.+)\n", text)
        assert " ".join(b[-1] for b in blocks) == u.text
        for b in blocks:
            start = int(b[0]) * 3600 + int(b[1]) * 60 + int(b[2]) + int(b[3]) / 1000
            end = int(b[4]) * 3600 + int(b[5]) * 60 + int(b[6]) + int(b[7]) / 1000
            assert 0 <= start < end <= u.duration + 1e-3


def test_subtitles_of_several_inputs_need_a_directory(train, fitted_checkpoint, capsys):
    paths = [u.audio_filepath for u in train[:2]]
    code, out, err = run(
        capsys,
        "transcribe",
        *paths,
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        "srt",
    )
    assert code == 1 and out == ""
    assert "-o DIR" in err


def test_ctm_output(train, espeak_manifests, fitted_checkpoint, capsys):
    code, out, err = run(
        capsys,
        "transcribe",
        str(espeak_manifests["train"]),
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        "ctm",
    )
    assert code == 0, err
    lines = [line.split(" ") for line in out.splitlines()]
    assert all(len(f) == 6 for f in lines)
    assert [f[4] for f in lines] == " ".join(u.text for u in train).split()
    by_utt: dict[str, list[list[str]]] = {}
    for f in lines:
        by_utt.setdefault(f[0], []).append(f)
    assert list(by_utt) == [u.id for u in train]
    for u in train:
        previous_end = 0.0
        for _, channel, start, dur, _, conf in by_utt[u.id]:
            assert channel == "1"
            assert float(start) >= previous_end and float(dur) > 0
            previous_end = float(start) + float(dur)
            assert 0 < float(conf) <= 1
        assert previous_end <= u.duration + 1e-3


# -- failures -----------------------------------------------------------------------


def test_bad_files_are_reported_and_the_others_written(
    train, fitted_checkpoint, tmp_path, capsys
):
    missing = tmp_path / "missing.wav"
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a RIFF file at all" * 10)
    good = [u.audio_filepath for u in train[:2]]
    out = tmp_path / "subs"
    argv = [good[0], str(missing), str(empty), good[1], str(garbage)]
    code, _, err = run(
        capsys,
        "transcribe",
        *argv,
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        "srt",
        "-o",
        str(out),
    )
    assert code == 1
    lines = err.splitlines()
    assert f"asr transcribe: error: {missing}: file not found" in lines
    assert any(
        line.startswith(f"asr transcribe: error: {empty}: empty") for line in lines
    )
    assert any(
        line.startswith(f"asr transcribe: error: {garbage}: not an audio file")
        for line in lines
    )
    assert "3 of 5 inputs failed" in err
    assert sorted(os.listdir(out)) == sorted(f"{Path(g).stem}.srt" for g in good)

    json_out = tmp_path / "out.json"
    code, _, _ = run(
        capsys,
        "transcribe",
        *argv,
        "--checkpoint",
        str(fitted_checkpoint),
        "--format",
        "json",
        "-o",
        str(json_out),
    )
    doc = json.loads(json_out.read_text())
    assert code == 1
    assert [r["text"] for r in doc["results"]] == [u.text for u in train[:2]]
    assert [f["path"] for f in doc["failed"]] == [
        str(missing),
        str(empty),
        str(garbage),
    ]
    assert doc["failed"][0]["error"] == "file not found"


def test_a_missing_checkpoint_is_one_line(train, tmp_path, capsys):
    code, out, err = run(
        capsys,
        "transcribe",
        train[0].audio_filepath,
        "--checkpoint",
        str(tmp_path / "no.ckpt"),
    )
    assert code == 1 and out == ""
    assert err.strip().startswith("asr transcribe: error:") and "no.ckpt" in err
    assert len(err.strip().splitlines()) == 1


# -- long recordings ----------------------------------------------------------------


@pytest.fixture(scope="module")
def long_recording(train, tmp_path_factory) -> tuple[Path, str]:
    """About 60 s: the training sentences twice over, separated by 0.2-0.8 s pauses,
    over a -60 dB noise floor."""
    rng = np.random.default_rng(0)
    parts, texts = [], []
    for _ in range(2):
        for u in train:
            parts.append(load_audio(u.audio_filepath, SR).numpy())
            parts.append(np.zeros(int(rng.uniform(0.2, 0.8) * SR), np.float32))
            texts.append(u.text)
    x = np.concatenate(parts)
    x += (1e-3 * rng.standard_normal(len(x))).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, x, SR)
    return path, " ".join(texts)


def test_stream_reads_what_load_audio_reads(long_recording, tmp_path):
    path, _ = long_recording
    whole = load_audio(path, SR).numpy()
    blocks = list(stream_audio(str(path), SR, block_seconds=3.0))
    assert len(blocks) > 10
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    part = load_audio(path, SR, offset=7.3, duration=11.1).numpy()
    streamed = np.concatenate(list(stream_audio(str(path), SR, 7.3, 11.1, 2.0)))
    np.testing.assert_array_equal(streamed, part)
    # Resampled as a stream: the same samples up to float rounding.
    low = tmp_path / "low.wav"
    sf.write(low, soxr.resample(whole[: 20 * SR], SR, 8000), 8000)
    ref = load_audio(low, SR).numpy()
    streamed = np.concatenate(list(stream_audio(str(low), SR, block_seconds=1.7)))
    assert len(streamed) == len(ref)
    np.testing.assert_allclose(streamed, ref, atol=1e-4)


@pytest.mark.slow
def test_long_audio_in_windows_equals_one_pass(long_recording, sturdy):
    """Windows of 10 s (7 of them) or 12 s overlapping by 3 or 4 s: the words of one
    pass over the whole minute, at the same times to within a frame.

    Exact equality holds only for a model whose posteriors ignore context beyond the
    overlap; a bidirectional RNN trained in 80 steps does not quite (its state carries
    further), so up to 1% of the words may differ. Every word both runs agree on
    must be at the same time to within a frame: the join never shifts or doubles one.
    """
    import difflib

    path, _ = long_recording
    source = [Source(str(path), str(path), "long")]
    assert sf.info(path).duration > 55
    one_pass = transcriber(sturdy, window_seconds=120).transcribe(source)[0]
    assert len(one_pass.words) > 150
    fs = sturdy.frame_seconds
    for window, overlap in [(10, 3), (12, 4)]:
        t = transcriber(sturdy, window_seconds=window, overlap_seconds=overlap)
        windowed = t.transcribe(source)[0]
        assert isinstance(windowed, Transcript), windowed
        words, _ = error_rates([one_pass.text], [windowed.text])
        assert words.rate <= 0.01, (window, windowed.text, one_pass.text)
        a_words, b_words = windowed.words, one_pass.words
        match = difflib.SequenceMatcher(
            a=[w.text for w in a_words], b=[w.text for w in b_words], autojunk=False
        )
        same = 0
        for block in match.get_matching_blocks():
            for k in range(block.size):
                a, b = a_words[block.a + k], b_words[block.b + k]
                assert abs(a.start - b.start) <= fs + 1e-6, (a, b)
                assert abs(a.end - b.end) <= fs + 1e-6, (a, b)
                same += 1
        assert same >= 0.99 * len(b_words)
        assert windowed.duration == pytest.approx(one_pass.duration, abs=1e-6)


@pytest.mark.slow
def test_long_audio_is_recognized(long_recording, sturdy):
    """The windowed path on a recording 7 windows long gives the sentences back."""
    path, reference = long_recording
    t = transcriber(sturdy, window_seconds=10, overlap_seconds=3)
    (r,) = t.transcribe([Source(str(path), str(path), "long")])
    words, _ = error_rates([reference], [r.text])
    assert words.rate <= 0.03, r.text
    ws = r.words
    assert all(a.end <= b.start for a, b in zip(ws, ws[1:], strict=False))
    assert 0 <= ws[0].start and ws[-1].end <= r.duration


def test_a_corrupt_long_file_fails_alone(long_recording, train, recognizer, tmp_path):
    path, _ = long_recording
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])  # the header still promises 60 s
    results = transcriber(recognizer, window_seconds=10, overlap_seconds=3).transcribe(
        [Source(str(cut), str(cut), "cut"), Source(train[0].audio_filepath, "a", "a")]
    )
    assert isinstance(results[0], Failure) and "truncated" in results[0].reason
    assert isinstance(results[1], Transcript) and results[1].text == train[0].text


# -- the bad-audio table ------------------------------------------------------------
# Every kind of audio file a user may hand us, and what happens to it: it works, or
# it is one line naming the file (asr.audio.AudioError), in `asr transcribe` as in
# training, where the run goes on without it and says so. docs/reliability.md's table
# lists them.


def _speech(train) -> np.ndarray:
    return load_audio(train[0].audio_filepath, SR).numpy()


def _write(path: Path, x: np.ndarray, rate: int = SR, **kw) -> Path:
    sf.write(path, x, rate, **kw)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _noise(x: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(len(x))


def _hour_long(path: Path) -> Path:
    """An hour of 16 kHz 16-bit PCM, written lazily: a WAV header and a sparse file
    of zeros (silence), so it takes no time and no disk space to make."""
    n = 3600 * SR * 2
    header = b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16)
    header += b"data" + struct.pack("<I", n)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)
    return path


def _nan(path: Path, x: np.ndarray) -> Path:
    x = x.copy()
    x[len(x) // 2] = np.nan
    return _write(path, x, subtype="FLOAT")


# name -> (make(directory, speech) -> file, None if it works else words of the error)
BAD_AUDIO = {
    "empty file": (lambda d, x: _write_bytes(d / "empty.wav", b""), "empty file"),
    "zero length": (lambda d, x: _write(d / "zero.wav", x[:0]), "no audio frames"),
    "truncated wav": (
        lambda d, x: _cut(_write(d / "cut.wav", x, subtype="PCM_16"), 0.6),
        "truncated",
    ),
    "truncated flac": (
        lambda d, x: _cut(_write(d / "cut.flac", x + 0.01 * _noise(x)), 0.5),
        "corrupt or truncated",
    ),
    "wrong extension (flac named .wav)": (
        lambda d, x: _write(d / "flac.wav", x, format="FLAC"),
        None,
    ),
    "text renamed to .wav": (
        lambda d, x: _write_bytes(d / "notes.wav", b"not audio, a transcript\n" * 9),
        "not an audio file",
    ),
    "8-bit": (lambda d, x: _write(d / "u8.wav", x, subtype="PCM_U8"), None),
    "24-bit": (lambda d, x: _write(d / "s24.wav", x, subtype="PCM_24"), None),
    "32-bit float": (lambda d, x: _write(d / "f32.wav", x, subtype="FLOAT"), None),
    "8 kHz": (
        lambda d, x: _write(d / "8k.wav", soxr.resample(x, SR, 8000), 8000),
        None,
    ),
    "48 kHz": (
        lambda d, x: _write(d / "48k.flac", soxr.resample(x, SR, 48000), 48000),
        None,
    ),
    "6 channels": (lambda d, x: _write(d / "six.wav", np.tile(x[:, None], 6)), None),
    "clipping": (
        lambda d, x: _write(d / "loud.wav", 8 * x, subtype="FLOAT"),  # peaks > 1
        None,
    ),
    "pure silence": (lambda d, x: _write(d / "silence.flac", np.zeros(2 * SR)), None),
    "NaN samples": (lambda d, x: _nan(d / "nan.wav", x), "NaN"),
    "an hour long": (lambda d, x: _hour_long(d / "hour.wav"), None),
}


@pytest.mark.parametrize(
    "case",
    [
        # An hour through the model (streamed, windowed) takes seconds on 2 cores.
        pytest.param(c, marks=pytest.mark.slow) if c == "an hour long" else c
        for c in BAD_AUDIO
    ],
)
def test_bad_audio_works_or_is_one_line_naming_the_file(
    case, train, fitted_checkpoint, tmp_path, capsys, caplog
):
    make, error = BAD_AUDIO[case]
    path = make(tmp_path, _speech(train))
    hour = case == "an hour long"

    # 1. The library: audio, or one AudioError line naming the file.
    try:
        if hour:  # header and the first blocks of the stream: never an hour in memory
            assert audio_info(path).duration == 3600
            blocks = stream_audio(str(path), SR, block_seconds=10)
            wave = torch.from_numpy(np.concatenate([next(blocks), next(blocks)]))
        else:
            wave = load_audio(path, SR)
    except AudioError as err:
        assert error is not None, f"{case}: {err}"
        assert str(err) == f"{path}: {err.reason}" and "\n" not in str(err)
        assert error in err.reason, (case, str(err))
    else:
        assert error is None, f"{case}: loaded, expected an error ({error})"
        assert wave.dtype == torch.float32 and wave.ndim == 1 and len(wave) > 0
        assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0

    # 2. Training: the manifest check names it before training (or it is too long
    # for a batch), else the dataset skips it with a warning naming it.
    # The manifest's duration is the header's, as `asr manifest` writes it.
    try:
        seconds = audio_info(path).duration
    except AudioError:
        seconds = 1.0
    utt = Utterance(str(path), seconds, "hello", id=case)
    report = validate_utterances([utt], CharTokenizer(), max_duration=120.0)
    found = [p for items in report.problems.values() for p in items]
    if hour:
        assert report.problems["too long"] == [
            f"{case}: 3600 s is longer than the limit of 120 s"
        ]
    elif error is not None and found:
        assert found == [f"{case} ({path}): " + found[0].split(": ", 1)[1]]
        assert error in found[0]
    else:
        with caplog.at_level(logging.WARNING, logger="asr.data"):
            item = SpeechDataset([utt], CharTokenizer())[0]
        if error is None:
            assert item is not None and item.id == case
        else:
            assert item is None
            assert f"skipping unreadable audio {path}: " in caplog.text
            assert error in caplog.text

    # 3. `asr transcribe` with a good file after it: the bad one is named on stderr
    # (one line) and listed as failed, the good one is transcribed; exit status 1.
    out = tmp_path / "out.json"
    good = train[1].audio_filepath
    argv = ["transcribe", str(path), good, "--checkpoint", str(fitted_checkpoint)]
    code, _, err = run(capsys, *argv, "--format", "json", "-o", str(out))
    doc = json.loads(out.read_text())
    results = {r["path"]: r for r in doc["results"]}
    assert results[good]["text"] == train[1].text
    if error is None:
        assert code == 0, err
        assert str(path) in results and not doc["failed"]
        if hour:
            assert results[str(path)]["duration"] == 3600
    else:
        assert code == 1
        assert [f["path"] for f in doc["failed"]] == [str(path)]
        (line,) = [x for x in err.splitlines() if x.startswith("asr transcribe: error")]
        assert line.startswith(f"asr transcribe: error: {path}: ") and error in line
        assert "1 of 2 inputs failed" in err


# -- hostile names and full disks ---------------------------------------------------


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_manifest_ids_cannot_make_transcribe_or_evaluate_write_elsewhere(
    train, fitted_checkpoint, tmp_path, capsys
):
    """Ids like ``../../x`` name the output files of ``asr transcribe -o DIR/`` and
    appear in ``asr evaluate``'s report: every file written stays in DIR (and the
    report where it belongs, beside the checkpoint)."""
    work = tmp_path / "work"
    work.mkdir()
    ckpt = work / "model" / "model.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(fitted_checkpoint, ckpt)
    ids = ["../../escaped", "/etc/cron.d/x", "..", "ok/../../../up", "a\x00b"]
    manifest = work / "data" / "m.jsonl"
    utts = [dataclasses.replace(u, id=i) for u, i in zip(train, ids, strict=False)]
    write_manifest(manifest, utts)
    before = _tree(tmp_path)
    out = work / "out"
    code, _, err = run(
        capsys, "transcribe", str(manifest), "--checkpoint", str(ckpt), "-o", f"{out}/"
    )
    assert code == 0, err
    new = _tree(tmp_path) - before
    assert new and all(p.resolve().is_relative_to(out.resolve()) for p in new), new
    assert len([p for p in new if p.is_file()]) == len(ids)

    before = _tree(tmp_path)
    code, _, err = run(capsys, "evaluate", str(manifest), "--checkpoint", str(ckpt))
    assert code == 0, err
    assert _tree(tmp_path) - before == {ckpt.parent / "m.greedy.report.txt"}


def test_a_full_disk_when_writing_the_output_is_one_line(
    train, fitted_checkpoint, tmp_path, capsys, monkeypatch
):
    import asr.atomic

    out = tmp_path / "out.txt"
    argv = [
        "transcribe",
        train[0].audio_filepath,
        "--checkpoint",
        str(fitted_checkpoint),
    ]
    code, _, _ = run(capsys, *argv, "-o", str(out))
    assert code == 0 and out.read_text() == train[0].text + "\n"

    def half(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(asr.atomic, "_write_all", half)
    argv[1] = train[1].audio_filepath
    code, _, err = run(capsys, *argv, "-o", str(out))
    assert code == 1
    assert err.startswith(
        f"asr transcribe: error: {out}: cannot write: the disk is full"
    ), err
    assert len(err.strip().splitlines()) == 1
    assert out.read_text() == train[0].text + "\n"  # the previous output is kept
    assert os.listdir(tmp_path) == ["out.txt"]
