"""The CUDA paths against the CPU's: training steps of the demo model in bf16-mixed,
and `asr transcribe --device cuda`. The checks are functions of the device, so each
also runs on the CPU here (bf16 autocast against float32, CPU against itself), which
keeps them honest where no GPU is; `make test-cuda` runs the CUDA ones.

They need only torch, numpy, soundfile and lightning (what `make cuda-wheels`
completes on a GPU machine), and torchaudio only for the mel frontend: without it
the demo model is checked with the spectrogram frontend.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.data import Batch
from asr.inference import load_model, save_model
from asr.task import ASRTask

SR = 16000
# The demo's model (conf/synthetic/demo.yaml).
DEMO_MODEL = {
    "conv": [
        {"channels": 32, "kernel": [11, 11], "stride": [2, 3]},
        {"channels": 32, "kernel": [11, 11], "stride": [2, 1]},
    ],
    "rnn_type": "gru",
    "rnn_layers": 3,
    "hidden_size": 256,
}


def demo_task() -> ASRTask:
    torch.manual_seed(0)
    mel = importlib.util.find_spec("torchaudio") is not None
    frontend = {"kind": "logmel", "n_mels": 64} if mel else {"kind": "spectrogram"}
    return ASRTask(model_preset="small", model=DEMO_MODEL, frontend=frontend)


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonic tones gliding under an envelope, with noise: features with structure,
    so the model's outputs are not near-ties everywhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 60 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t) ** 2
    x += 0.01 * rng.standard_normal(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def batch(task: ASRTask, device: str) -> Batch:
    waves = [torch.from_numpy(speechlike(s, i)) for i, s in enumerate((3.1, 2.4, 2.9))]
    lens = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    texts = ["the cat sat on the mat", "a quick brown fox", "good morning to you"]
    tokens = [task.tokenizer.encode(t) for t in texts]
    targets = torch.zeros(len(tokens), max(map(len, tokens)), dtype=torch.int64)
    for i, t in enumerate(tokens):
        targets[i, : len(t)] = torch.tensor(t)
    target_lens = torch.tensor([len(t) for t in tokens])
    return Batch(
        padded.to(device),
        lens.to(device),
        targets.to(device),
        target_lens.to(device),
        ["a", "b", "c"],
        texts,
    )


def loss_and_grads(task: ASRTask, device: str, bf16: bool):
    task = task.to(device).train()
    task.zero_grad()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        loss, _, _ = task._loss(batch(task, device))
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in task.named_parameters()}
    return float(loss), grads


def check_training_step(device: str) -> dict[str, float]:
    """One forward + backward of the demo model in bf16 autocast on ``device``
    against float32 on the CPU, the same weights and batch: the loss within 2% and
    every parameter's gradient pointing the same way (cosine > 0.98)."""
    reference = demo_task()
    loss_ref, grads_ref = loss_and_grads(reference, "cpu", bf16=False)
    task = demo_task()
    task.load_state_dict(reference.state_dict())
    loss, grads = loss_and_grads(task, device, bf16=True)
    assert np.isfinite(loss) and loss == pytest.approx(loss_ref, rel=0.02)
    worst = 1.0
    for name, g in grads.items():
        ref = grads_ref[name]
        if ref.norm() < 1e-12:
            continue
        cosine = float(
            torch.nn.functional.cosine_similarity(g.flatten(), ref.flatten(), dim=0)
        )
        worst = min(worst, cosine)
        assert torch.isfinite(g).all(), name
        assert cosine > 0.98, (name, cosine)
    return {"loss": loss, "loss_cpu": loss_ref, "worst_gradient_cosine": worst}


def test_the_demo_model_steps_alike_in_bf16_autocast_on_the_cpu():
    check_training_step("cpu")


@pytest.mark.cuda
def test_the_demo_model_steps_in_bf16_on_cuda_as_in_float32_on_the_cpu():
    check_training_step("cuda")


def check_transcribe(device: str, tmp_path, capsys) -> None:
    """`asr transcribe --device DEVICE` gives the CPU's text: its log-probs match to
    1e-3 and the greedy text is the same, except at frames where the CPU itself is
    undecided (its two best classes within 1e-3), named if any."""
    from asr.cli import main

    task = demo_task().eval()
    ckpt = save_model(task, tmp_path / "model.ckpt")
    wavs = []
    for i, seconds in enumerate((2.5, 4.0, 1.7)):
        wavs.append(tmp_path / f"{i}.wav")
        sf.write(wavs[-1], speechlike(seconds, 10 + i), SR)
    texts = {}
    for dev in ("cpu", device):
        argv = ["transcribe", *map(str, wavs), "--checkpoint", str(ckpt)]
        assert main([*argv, "--device", dev, "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        texts[dev] = [r["text"] for r in doc["results"]]
    if texts["cpu"] == texts[device]:
        return
    cpu, other = load_model(ckpt, "cpu"), load_model(ckpt, device)
    for path, a, b in zip(wavs, texts["cpu"], texts[device], strict=True):
        if a == b:
            continue
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
        lens = torch.tensor([wave.shape[1]])
        lp_cpu, _ = cpu.log_probs(wave, lens)
        lp_dev, _ = other.log_probs(wave, lens)
        lp_dev = lp_dev.cpu()
        torch.testing.assert_close(lp_dev, lp_cpu, atol=1e-3, rtol=0)
        top2 = lp_cpu[:, 0].topk(2, dim=-1).values
        differ = lp_cpu[:, 0].argmax(-1) != lp_dev[:, 0].argmax(-1)
        margins = (top2[:, 0] - top2[:, 1])[differ]
        assert (margins < 1e-3).all(), (path, a, b, margins)


def test_transcribe_on_the_cpu_is_its_own_reference(tmp_path, capsys):
    check_transcribe("cpu", tmp_path, capsys)


@pytest.mark.cuda
def test_transcribe_on_cuda_gives_the_cpus_text(tmp_path, capsys):
    check_transcribe("cuda", tmp_path, capsys)


def _cuda_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "cuda_check.py"
    spec = importlib.util.spec_from_file_location("cuda_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_make_test_cuda_without_a_gpu_says_so_and_exits_0():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "tools/cuda_check.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device here; skipped every check" in done.stdout
    assert "asr transcribe --device cuda vs cpu" in done.stdout
    assert "OCR CRNN: CUDA steps" in done.stdout


def test_the_cuda_summary_fails_on_a_failed_or_missing_check():
    check = _cuda_check()
    passed = {
        "test_ctc.py::test_cuda_matches_torch_native_cuda_loss[float32]": "passed",
        "test_ctc.py::test_cuda_graph_replays_give_the_eager_results_bitwise": "passed",
        "test_model.py::test_recurrent_layers_run_in_float32_on_cuda[gru]": "passed",
        "test_cuda.py::test_the_demo_model_steps_in_bf16_on_cuda": "passed",
        "test_probe.py::test_the_probe_measures_the_largest_batch_on_cuda": "passed",
        "test_cuda.py::test_transcribe_on_cuda_gives_the_cpus_text": "passed",
        "test_ocr.py::test_the_captcha_model_steps_on_cuda_with_our_ctc": "passed",
    }
    table, ok = check.summary(passed, (0, "tables"))
    assert ok and "FAIL" not in table and table.count(" ok ") >= 8
    failed = {**passed, "test_probe.py::test_the_probe_measures": "failed: OOM"}
    table, ok = check.summary(failed, (0, "tables"))
    assert not ok and "FAIL" in table and "OOM" in table
    _, ok = check.summary(passed, (1, "the benchmark ran past 120 s"))
    assert not ok
    missing = {k: v for k, v in passed.items() if "probe" not in k}
    table, ok = check.summary(missing, (0, "tables"))
    assert not ok and "not run" in table
