"""The offline recipe end to end at toy size: every stage leaves what the next one
needs, the loss falls, and a second run skips what is done."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_recipe(data: Path, exp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        "bash",
        "recipes/synthetic/run.sh",
        "--hours",
        "0.01",
        "--data",
        str(data),
        "--exp",
        str(exp),
        "--config",
        "conf/synthetic/toy.yaml",
        "--corpus-opts",
        "--utts-per-speaker 3 --dev-voices 2 --test-voices 2",
        *extra,
        "--",
        "--trainer.max_epochs",
        "3",
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_synthetic_recipe_end_to_end(tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"
    done = run_recipe(data, exp)
    out = done.stdout
    # Lightning's messages once each, without its cloud-logger advertisement
    assert done.stderr.count("Seed set to 0") == 1, done.stderr[:2000]
    assert "litlogger" not in done.stderr
    assert "not empty" not in done.stderr  # a new run's log directory
    # no terminal: no progress bar, but a line per validation
    assert "\r" not in done.stderr
    assert done.stderr.count(": validation loss") == 3, done.stderr[-3000:]
    assert "epoch 3/3: validation loss" in done.stderr
    # stage 0: a LibriSpeech-format tree per split
    for split in ("train", "dev", "test"):
        assert list((data / "corpus" / split).rglob("*.flac"))
        assert list((data / "corpus" / split).rglob("*.trans.txt"))
    # stage 1: manifests that point at existing audio
    for split in ("train", "dev", "test"):
        lines = (data / f"{split}.jsonl").read_text().splitlines()
        assert lines
        first = json.loads(lines[0])
        assert (data / first["audio_filepath"]).is_file()
    # stage 2: a language model from the training text and WordNet's other examples
    # (none from a dev or test sentence's synset), with its unigram list
    assert (data / "lm.bin").stat().st_size > 0
    texts = {
        split: [
            json.loads(line)["text"]
            for line in (data / f"{split}.jsonl").read_text().splitlines()
        ]
        for split in ("train", "dev", "test")
    }
    lm_text = (data / "lm_text.txt").read_text().splitlines()
    assert lm_text[: len(set(texts["train"]))] == list(dict.fromkeys(texts["train"]))
    assert len(lm_text) > 10_000  # the toy corpus speaks a few dozen of them
    assert not set(lm_text) & (set(texts["dev"]) | set(texts["test"]))
    unigrams = set((data / "lm.bin.unigrams.txt").read_text().split())
    assert unigrams == {w for line in lm_text for w in line.split()}
    # stage 3: a trained, exported model, curves, and a loss that fell
    assert (exp / "model.ckpt").is_file()
    assert (exp / "logs" / "training_curves.png").is_file()
    with open(exp / "logs" / "metrics.csv", newline="") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]]
    assert len(losses) >= 4
    head, tail = losses[: len(losses) // 3], losses[-(len(losses) // 3) :]
    assert sum(tail) / len(tail) < sum(head) / len(head), losses
    # stage 4: tuned LM weights beside the model
    tuned = json.loads((exp / "decoder.json").read_text())
    assert {"alpha", "beta"} <= set(tuned)
    # stage 5: test results on held-out voices, greedy and with the LM
    for name in ("test_results.json", "test_results_lm.json"):
        result = json.loads((exp / name).read_text())
        assert result["utterances"] > 0 and 0 <= result["cer"]
    assert "test (held-out voices), greedy: WER" in out
    assert "test (held-out voices), with LM: WER" in out
    # a second run skips every finished stage and evaluates again
    again = run_recipe(data, exp).stdout
    assert again.count("skipping") == 5


def test_help_is_the_header_and_the_options():
    done = subprocess.run(
        ["bash", "recipes/synthetic/run.sh", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("The offline recipe:")
    assert "0 generate  1 manifests" in done.stdout and "--corpus-opts" in done.stdout
    assert "set -euo" not in done.stdout
    assert not [line for line in done.stdout.splitlines() if line.startswith("#")]
