"""``asr transcribe`` under a hostile user: names that are not UTF-8, runs where
every input fails, unwritable targets, read-only destinations, Ctrl-C, silence and
near-silence, a missing LM. Each test reproduces a failure an adversarial pass found
(docs/reliability.md lists them) and holds the fix."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import soundfile as sf

from asr.audio import audio_info
from asr.cli import main
from asr.manifest import read_manifest

SR = 16000


@pytest.fixture(scope="module")
def train(espeak_manifests):
    return read_manifest(espeak_manifests["train"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ckpt(path) -> list[str]:
    return ["--checkpoint", str(path)]


# -- names ----------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_transcribed_and_written_losslessly(
    train, fitted_checkpoint, tmp_path, capsysbinary
):
    good = tmp_path / "x.wav"
    shutil.copy(train[0].audio_filepath, good)
    odd = os.path.join(os.fsencode(tmp_path), b"b\xff.wav")
    shutil.copy(train[1].audio_filepath, odd)
    odd_name = os.fsdecode(odd)

    out = tmp_path / "o.json"
    code = main(["transcribe", odd_name, str(good), *ckpt(fitted_checkpoint),
                 "--format", "json", "-o", str(out)])  # fmt: skip
    assert code == 0, capsysbinary.readouterr().err
    doc = json.loads(out.read_bytes().decode("utf-8"))  # valid UTF-8 JSON
    paths = [os.fsencode(r["path"]) for r in doc["results"]]
    assert paths == [odd, os.fsencode(good)]
    assert doc["results"][0]["text"] == train[1].text

    # standard output: JSON stays valid; text gives the name's own bytes
    code = main(["transcribe", odd_name, str(good), *ckpt(fitted_checkpoint),
                 "--format", "json"])  # fmt: skip
    stdout = capsysbinary.readouterr().out
    assert code == 0 and json.loads(stdout.decode("utf-8"))["results"][0]["path"]
    code = main(["transcribe", odd_name, str(good), *ckpt(fitted_checkpoint)])
    stdout = capsysbinary.readouterr().out
    assert stdout.startswith(odd + b"\t" + train[1].text.encode()), stdout
    for fmt in ("ctm", "srt"):
        target = tmp_path / f"o.{fmt}"
        assert main(["transcribe", odd_name, *ckpt(fitted_checkpoint),
                     "--format", fmt, "-o", str(target)]) == 0  # fmt: skip
        if fmt == "ctm":
            assert target.read_bytes().startswith(odd)


# -- nothing lost ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "ctm"])
def test_a_run_where_every_input_fails_keeps_the_old_output(
    fitted_checkpoint, tmp_path, capsys, fmt
):
    out = tmp_path / f"o.{fmt}"
    out.write_text("keep\n")
    missing = tmp_path / "missing.wav"
    code, _, err = run(capsys, "transcribe", str(missing), *ckpt(fitted_checkpoint),
                       "--format", fmt, "-o", str(out))  # fmt: skip
    assert code == 1
    assert out.read_text() == "keep\n"
    assert "wrote" not in err and "nothing written" in err, err


def test_one_unwritable_target_in_a_directory_fails_alone(
    train, fitted_checkpoint, tmp_path, capsys
):
    inputs = []
    for name in ("a", "b", "c"):
        inputs.append(tmp_path / f"{name}.wav")
        shutil.copy(train[len(inputs)].audio_filepath, inputs[-1])
    out = tmp_path / "out"
    (out / "b.json").mkdir(parents=True)  # a directory where b.json would go
    code, _, err = run(capsys, "transcribe", *map(str, inputs),
                       *ckpt(fitted_checkpoint), "--format", "json",
                       "-o", f"{out}/")  # fmt: skip
    assert code == 1
    assert (out / "a.json").is_file() and (out / "c.json").is_file()
    assert "b.json" in err and "1 of 3 inputs failed" in err, err


def test_writing_over_a_private_file_keeps_it_private(
    train, fitted_checkpoint, tmp_path, capsys
):
    out = tmp_path / "o.txt"
    out.write_text("old\n")
    out.chmod(0o600)
    code, _, _ = run(capsys, "transcribe", train[0].audio_filepath,
                     *ckpt(fitted_checkpoint), "-o", str(out))  # fmt: skip
    assert code == 0 and out.read_text() == train[0].text + "\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("target", ["file", "directory"])
def test_an_unwritable_destination_fails_before_any_work(
    train, tmp_path, capsys, target
):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    output = blocker / ("o.txt" if target == "file" else "out/")
    # a checkpoint that does not exist: the destination is checked before it is
    # loaded, so its error is the one reported
    code, _, err = run(capsys, "transcribe", train[0].audio_filepath,
                       "--checkpoint", str(tmp_path / "none.ckpt"),
                       "-o", str(output))  # fmt: skip
    assert code == 1
    assert "cannot write" in err and "blocker" in err and "none.ckpt" not in err, err


def test_ctrl_c_keeps_the_files_already_written(
    train, fitted_checkpoint, tmp_path, capsys, monkeypatch
):
    from asr import decoding

    calls = 0
    decode_batch = decoding.GreedyDecoder.decode_batch

    def interrupted(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return decode_batch(self, *args, **kwargs)

    monkeypatch.setattr(decoding.GreedyDecoder, "decode_batch", interrupted)
    out = tmp_path / "out"
    code, _, err = run(capsys, "transcribe", *(u.audio_filepath for u in train),
                       *ckpt(fitted_checkpoint), "--batch-seconds", "1",
                       "-o", f"{out}/")  # fmt: skip
    assert code == 130
    lines = err.strip().splitlines()
    assert lines[-1].startswith("asr transcribe: interrupted; the 1 file")
    assert "Traceback" not in err
    assert len(list(out.iterdir())) == 1


# -- times ----------------------------------------------------------------------------


def test_word_and_cue_times_end_within_the_audio(
    train, fitted_checkpoint, tmp_path, capsys
):
    # speech cut just after its last word: the frame grid runs past the end
    trimmed = []
    for u in train[:6]:
        x, rate = sf.read(u.audio_filepath, dtype="float32")
        loud = np.flatnonzero(np.abs(x) > 0.01)
        path = tmp_path / f"{u.id}.wav"
        sf.write(path, x[: loud[-1] + 1], rate)
        trimmed.append(path)
    out = tmp_path / "o.json"
    code, _, err = run(capsys, "transcribe", *map(str, trimmed),
                       *ckpt(fitted_checkpoint), "--format", "json",
                       "-o", str(out))  # fmt: skip
    assert code == 0, err
    for r in json.loads(out.read_text())["results"]:
        duration = audio_info(r["path"]).duration
        assert r["words"], r
        bad = [w for w in r["words"] if not 0 <= w["start"] <= w["end"] <= duration]
        assert not bad, (duration, bad)
    srt = tmp_path / "o.srt"
    assert main(["transcribe", str(trimmed[0]), *ckpt(fitted_checkpoint),
                 "--format", "srt", "-o", str(srt)]) == 0  # fmt: skip
    last_cue_end = srt.read_text().strip().splitlines()[-2].split(" --> ")[1]
    h, m, s = last_cue_end.replace(",", ".").split(":")
    end = int(h) * 3600 + int(m) * 60 + float(s)
    assert end <= audio_info(trimmed[0]).duration + 1e-9


# -- silence --------------------------------------------------------------------------


def _silences(tmp_path) -> dict[str, object]:
    rng = np.random.default_rng(0)
    n = 5 * SR
    files = {
        "digital silence": np.zeros(n, np.int16),
        # what `sox -n -r 16000 -b 16 s.wav trim 0 5` writes: +-1 LSB of dither
        "sox's near-silence": rng.integers(-1, 2, n).astype(np.int16),
        "faint noise (-70 dBFS)": np.clip(
            rng.standard_normal(n) * 10 ** (-70 / 20) * 32768, -32768, 32767
        ).astype(np.int16),
    }
    paths = {}
    for name, x in files.items():
        path = tmp_path / (name.split()[0] + ".wav")
        sf.write(path, x, SR, subtype="PCM_16")
        paths[name] = path
    return paths


def test_silence_and_near_silence_transcribe_as_nothing(
    fitted_checkpoint, tmp_path, capsys
):
    for name, path in _silences(tmp_path).items():
        code, out, err = run(capsys, "transcribe", str(path), *ckpt(fitted_checkpoint))
        assert code == 0, err
        assert out == "\n", (name, out)


def test_the_silence_gate_leaves_speech_alone(train, fitted_checkpoint, capsys):
    files = [u.audio_filepath for u in train]
    code, gated, _ = run(capsys, "transcribe", *files, *ckpt(fitted_checkpoint))
    code2, open_, _ = run(capsys, "transcribe", *files, *ckpt(fitted_checkpoint),
                          "--no-silence-gate")  # fmt: skip
    assert code == code2 == 0
    assert gated == open_
    assert gated.splitlines() == [f"{u.audio_filepath}\t{u.text}" for u in train]


# -- the language model ---------------------------------------------------------------


def test_a_missing_lm_is_named_as_such(train, fitted_checkpoint, tmp_path, capsys):
    missing = tmp_path / "missing.bin"
    code, _, err = run(capsys, "transcribe", train[0].audio_filepath,
                       *ckpt(fitted_checkpoint), "--lm", str(missing))  # fmt: skip
    assert code == 1
    assert f"{missing}: no such language model file" in err, err
    assert "decoder.json" not in err


def test_ctrl_c_on_the_command_is_one_line(train, fitted_checkpoint, tmp_path):
    """A real SIGINT to a running `asr transcribe`: exit 130, one line, no
    traceback, and the files already written stay."""
    import signal
    import subprocess
    import sys
    import time

    inputs = []
    for i in range(40):
        inputs.append(tmp_path / f"in{i:02d}.wav")
        shutil.copy(train[i % len(train)].audio_filepath, inputs[-1])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "asr", "transcribe", *map(str, inputs),
         *ckpt(fitted_checkpoint), "--batch-seconds", "2", "-o", f"{out}/"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("asr transcribe: interrupted"), err
    assert 1 <= len(list(out.iterdir())) < 40


def test_decoding_workers_leave_ctrl_c_to_the_parent():
    import signal

    from asr.decoding import _init_worker

    before = signal.getsignal(signal.SIGINT)
    try:
        _init_worker(None)  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
