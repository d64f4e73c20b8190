"""`asr train` end to end on real (generated) speech: checkpoints, the exported model,
the curves, exact resumption, and `asr evaluate` on the result."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asr.cli import main
from asr.inference import CheckpointError, evaluate_manifest, load_model
from asr.train import run_training

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "conf" / "synthetic" / "toy.yaml"


def train_args(manifests, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "--config",
        str(TOY),
        "--data.train_manifest",
        str(manifests["train"]),
        "--data.val_manifest",
        str(manifests["dev"]),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def train(manifests, out: Path, epochs: int, *extra: str) -> Path:
    run_training(train_args(manifests, out, epochs, *extra))
    return out / "logs"


@pytest.fixture(scope="module")
def trained(espeak_manifests, tmp_path_factory) -> Path:
    return train(espeak_manifests, tmp_path_factory.mktemp("run"), 2)


def test_training_leaves_checkpoints_model_and_curves(trained):
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert list((trained / "checkpoints").glob("best-*.ckpt"))
    assert (trained / "model.ckpt").is_file()
    assert (trained / "training_curves.png").stat().st_size > 5000
    metrics = (trained / "metrics.csv").read_text()
    for key in ("train_loss", "val_loss", "val_wer", "val_cer"):
        assert key in metrics


def test_checkpoints_are_self_describing(trained):
    for path in (trained / "model.ckpt", trained / "checkpoints" / "last.ckpt"):
        rec = load_model(path)
        assert rec.sample_rate == 16000
        assert len(rec.tokenizer) == 29
        assert rec.description["frontend"]["kind"] == "logmel"
        waves = torch.zeros(2, 16000)
        texts = rec.transcribe_batch(waves, torch.tensor([16000, 8000]))
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_killed_run_resumes_to_the_same_weights(espeak_manifests, trained, tmp_path):
    """SIGKILL as soon as the first last.ckpt exists, resume, compare with `trained`."""
    last = tmp_path / "logs" / "checkpoints" / "last.ckpt"
    args = train_args(espeak_manifests, tmp_path, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asr", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 1, "the run finished before it could be interrupted"
    resumed = train(espeak_manifests, tmp_path, 2, "--ckpt_path", str(last))
    a = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_evaluate_command(trained, espeak_manifests, capsys):
    code = main(
        [
            "evaluate",
            str(espeak_manifests["dev"]),
            "--checkpoint",
            str(trained / "model.ckpt"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("wer", "cer", "substitutions", "deletions", "insertions", "words"):
        assert key in result
    assert result["utterances"] == 6 and result["words"] == 29
    direct = evaluate_manifest(espeak_manifests["dev"], trained / "model.ckpt")
    assert direct["wer"] == result["wer"]
    errors = result["substitutions"] + result["deletions"] + result["insertions"]
    assert result["wer"] == pytest.approx(errors / result["words"])


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_checkpoints_that_run_code_or_are_not_ours_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"asr": _Exploit()}))
    with pytest.raises(CheckpointError, match="evil.ckpt: not a loadable"):
        load_model(evil)
    assert not (tmp_path / "PWNED").exists()
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.ckpt: not an asr checkpoint"):
        load_model(other)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint"):
        load_model(tmp_path / "missing.ckpt")


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "x.jsonl"), "--checkpoint", "nope.ckpt"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "nope.ckpt" in err
