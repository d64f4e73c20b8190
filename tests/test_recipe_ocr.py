"""The OCR recipe end to end at toy size: every stage leaves what the next one needs,
the model it leaves reads images through `asr ocr recognize`, and a second run
skips what is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_recipe(data: Path, exp: Path, *stages: str) -> subprocess.CompletedProcess:
    cmd = [
        "bash", "recipes/ocr/run.sh", "--data", str(data), "--exp", str(exp),
        "--captcha-counts", "64 16 16", "--lines-counts", "32 8 8", *stages,
        "--", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
        "--data.batch_size", "16", "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_ocr_recipe_end_to_end(tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    done = run_recipe(data, exp)
    for kind, model_dir in (("captcha", exp), ("lines", Path(f"{exp}-lines"))):
        for split, n in zip(("train", "dev", "test"), (64, 16, 16), strict=True):
            manifest = data / kind / split / "manifest.jsonl"
            if kind == "lines":
                n = {"train": 32, "dev": 8, "test": 8}[split]
            assert len(manifest.read_text().splitlines()) == n
        assert (model_dir / "model.ckpt").is_file()
        assert (model_dir / "logs" / "checkpoints" / "last.ckpt").is_file()
        assert (model_dir / "logs" / "training_curves.png").is_file()
        result = json.loads((model_dir / "test_results.json").read_text())
        assert result["images"] == (16 if kind == "captcha" else 8)
        assert not result["failed"]
        assert 0 <= result["sequence_accuracy"] <= 1 and result["cer"] > 0
        assert f"{kind} test: sequence accuracy" in done.stdout
    assert "validation loss" in done.stderr  # progress lines without a terminal
    assert "training: 4 steps" in done.stderr
    # the model it left reads images
    images = sorted((data / "captcha" / "test").glob("*.png"))[:3]
    read = subprocess.run(
        [sys.executable, "-m", "asr", "ocr", "recognize", *map(str, images),
         "--checkpoint", str(exp / "model.ckpt")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-2000:]
    assert len(read.stdout.splitlines()) == 3
    # a second run does nothing again but evaluate
    again = run_recipe(data, exp, "--stop-stage", "1")
    assert again.stdout.count("already in") == 3
    assert "model already trained" in again.stdout
