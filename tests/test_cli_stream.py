"""``asr stream``: the final text of a stream is what ``asr transcribe`` gives for the
same file, checkpoint and decoder settings; raw PCM on standard input; bad input is
one line and a non-zero exit, after the finals of what arrived."""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.manifest import read_manifest

SR = 16000


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def waves(espeak_manifests) -> list[np.ndarray]:
    from asr.audio import load_audio

    utts = read_manifest(espeak_manifests["train"])
    return [load_audio(u.audio_filepath).numpy() for u in utts]


@pytest.fixture(scope="module")
def files(waves, tmp_path_factory) -> dict[str, str]:
    """``one``: a sentence; ``two``: two sentences with 1.5 s of faint noise between,
    at 22.05 kHz (resampled as asr transcribe does)."""
    import soxr

    root = tmp_path_factory.mktemp("stream_files")
    pause = np.random.default_rng(1).normal(0, 3e-4, SR * 3 // 2).astype(np.float32)
    two = np.concatenate([waves[1], pause, waves[10]])
    out = {"one": str(root / "one.wav"), "two": str(root / "two.flac")}
    sf.write(out["one"], waves[2], SR, subtype="PCM_16")
    sf.write(out["two"], soxr.resample(two, SR, 22050), 22050, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def sentences_lm(tmp_path_factory):
    from conftest import SENTENCES

    from asr.lm import build_lm

    root = tmp_path_factory.mktemp("stream_lm")
    (root / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    return build_lm(root / "corpus.txt", root / "lm.bin", order=3).path


def finals(out: str) -> str:
    return " ".join(out.split())


def test_the_final_text_is_asr_transcribes_greedy(streaming_checkpoint, files, capsys):
    ckpt = ["--checkpoint", str(streaming_checkpoint)]
    for name in ("one", "two"):
        code, out, err = run(capsys, "transcribe", files[name], *ckpt)
        assert code == 0, err
        want = out.strip()
        assert want
        for chunk_ms in ("10", "370"):
            code, out, err = run(
                capsys, "stream", files[name], *ckpt, "--chunk-ms", chunk_ms
            )
            assert code == 0, err
            assert finals(out) == want


def test_the_final_words_are_asr_transcribes_with_an_lm(
    streaming_checkpoint, files, sentences_lm, capsys
):
    """A file without an internal endpoint is one segment: beam search with the LM
    over the same log-probs gives the same words, times and confidences."""
    ckpt = ["--checkpoint", str(streaming_checkpoint), "--lm", str(sentences_lm)]
    code, out, err = run(capsys, "transcribe", files["one"], *ckpt, "--format", "json")
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    code, out, err = run(capsys, "stream", files["one"], *ckpt, "--format", "jsonl")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    (final,) = [e for e in events if e["type"] == "final"]
    assert final["text"] == result["text"]
    assert final["words"] == [
        {"word": w["text"], **{k: w[k] for k in ("start", "end", "confidence")}}
        for w in result["words"]
    ]
    partials = [e for e in events if e["type"] == "partial"]
    assert len(partials) > 5
    assert all(set(p) == {"type", "text", "start", "end"} for p in partials)
    assert events[-1] is not partials[-1]  # the final comes last


def stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_raw_pcm_on_stdin_streams_like_the_file(
    streaming_checkpoint, files, waves, monkeypatch, capsys
):
    ckpt = ["--checkpoint", str(streaming_checkpoint)]
    code, want, _ = run(capsys, "stream", files["one"], *ckpt)
    pcm = sf.read(files["one"], dtype="int16")[0].astype("<i2").tobytes()
    stdin(monkeypatch, pcm)
    code, out, err = run(capsys, "stream", "-", "--raw", *ckpt)
    assert code == 0, err
    assert out == want
    # at another rate, resampled on the way in
    import soxr

    slow = soxr.resample(sf.read(files["one"], dtype="float32")[0], SR, 8000)
    stdin(monkeypatch, (np.clip(slow, -1, 1) * 32767).astype("<i2").tobytes())
    code, out, err = run(capsys, "stream", "-", "--raw", "--sample-rate", "8000", *ckpt)
    assert code == 0, err
    assert out.strip()


def test_an_odd_byte_count_is_named_after_the_finals_of_what_came(
    streaming_checkpoint, files, monkeypatch, capsys
):
    ckpt = ["--checkpoint", str(streaming_checkpoint)]
    code, want, _ = run(capsys, "stream", files["one"], *ckpt)
    pcm = sf.read(files["one"], dtype="int16")[0].astype("<i2").tobytes()
    stdin(monkeypatch, pcm + b"\x01")
    code, out, err = run(capsys, "stream", "-", "--raw", *ckpt)
    assert code == 1
    assert out == want  # nothing that arrived is lost
    assert err.strip().splitlines() == [
        f"asr stream: error: standard input: {len(pcm) + 1} bytes is not a whole "
        "number of 16-bit samples (the last byte is left over)"
    ]


def test_bad_input_is_one_line(streaming_checkpoint, files, tmp_path, capsys):
    from asr.inference import save_model
    from asr.task import ASRTask

    ckpt = ["--checkpoint", str(streaming_checkpoint)]
    bi = save_model(ASRTask(model_preset="tiny"), tmp_path / "bi.ckpt")
    (tmp_path / "noise.wav").write_bytes(b"not audio at all" * 100)
    cases = {
        (str(tmp_path / "missing.wav"), *ckpt): "missing.wav: no such file",
        (files["one"], "--checkpoint", str(bi)): "bi.ckpt: a bidirectional model",
        (
            files["one"],
            "--checkpoint",
            str(tmp_path / "none.ckpt"),
        ): "none.ckpt: no such",
        (str(tmp_path / "noise.wav"), *ckpt): "noise.wav",
        ("-", *ckpt): "standard input is read as raw PCM: give --raw",
        (files["one"], *ckpt, "--chunk-ms", "0"): "--chunk-ms must be positive",
    }
    for argv, message in cases.items():
        code, out, err = run(capsys, "stream", *argv)
        assert code == 1, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, lines)
        assert lines[0].startswith("asr stream: error: ")


def test_realtime_paces_the_input(streaming_checkpoint, waves, tmp_path, capsys):
    path = tmp_path / "short.wav"
    sf.write(path, waves[0][: SR * 6 // 10], SR)
    start = time.monotonic()
    code, _, err = run(
        capsys, "stream", str(path), "--checkpoint", str(streaming_checkpoint),
        "--realtime", "--chunk-ms", "100",
    )  # fmt: skip
    assert code == 0, err
    assert time.monotonic() - start >= 0.6 - 0.01
