"""Shared fixtures: a tiny real-speech corpus made with espeak-ng (seconds of audio)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

SENTENCES = [
    "the cat sat on the mat",
    "a quick brown fox jumps",
    "she sells sea shells",
    "good morning to you",
    "the rain falls on the plain",
    "we went home late",
]


def speak(text: str, voice: str, path: Path) -> None:
    wav = path.with_suffix(".tmp.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", "-D", str(wav), "-r", "16000", "-c", "1", str(path)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    wav.unlink()


# Process-wide state as the session starts, before any fixture.
_BASELINE = (torch.get_num_threads(), signal.getsignal(signal.SIGINT))


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Commands run in-process by a test (`asr ocr train --threads`, the server's
    app, a decoding pool's initializer) may set process-wide state: torch's intra-op
    threads, the SIGINT handler, the environment. Put it back after each test, so
    that the next one and the subprocesses it starts see the state the first did:
    a kill-and-resume test compares bitwise weights with an in-process run, and the
    Ctrl-C test needs a child that does not inherit an ignored SIGINT."""
    threads, sigint = _BASELINE  # a module fixture may have changed them already
    environ = dict(os.environ)
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if signal.getsignal(signal.SIGINT) is not sigint:
        signal.signal(signal.SIGINT, sigint)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="session")
def espeak_corpus(tmp_path_factory) -> Path:
    """LibriSpeech-format ``train/`` (3 voices) and ``dev/`` (1 held-out voice)."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.fail("espeak-ng and sox are required (make setup installs them)")
    root = tmp_path_factory.mktemp("espeak_corpus")
    splits = {"train": ["en-us", "en-gb", "en-us+f3"], "dev": ["en-gb-scotland"]}
    for split, voices in splits.items():
        for s, voice in enumerate(voices):
            spk = str(100 + s)
            chapter = root / split / spk / "1"
            chapter.mkdir(parents=True)
            lines = []
            for u, text in enumerate(SENTENCES):
                uid = f"{spk}-1-{u:04d}"
                speak(text, voice, chapter / f"{uid}.flac")
                lines.append(f"{uid} {text.upper()}")
            (chapter / f"{spk}-1.trans.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def espeak_manifests(espeak_corpus) -> dict[str, Path]:
    from asr.manifest import librispeech_manifest, write_manifest

    out = {}
    for split in ("train", "dev"):
        path = espeak_corpus / f"{split}.jsonl"
        write_manifest(path, librispeech_manifest(espeak_corpus / split))
        out[split] = path
    return out


FIT_STEPS = 150
FIT_LR = 1e-2


@pytest.fixture(scope="session")
def fitted_checkpoint(espeak_corpus, espeak_manifests, tmp_path_factory) -> Path:
    """A slim ``model.ckpt`` that has memorized the espeak training sentences.

    A small DeepSpeech2 trained with full-batch AdamW until greedy decoding of the
    training set is nearly exact, so decoding, transcription and evaluation tests
    see real words with real timings (not the empty output of an untrained model).
    """
    import torch

    from asr.manifest import read_manifest
    from asr.task import ASRTask

    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [{"channels": 8, "kernel": [11, 11], "stride": [2, 2]}],
            "rnn_layers": 2,
            "hidden_size": 96,
        },
        frontend={"kind": "logmel", "n_mels": 40},
    )
    utts = read_manifest(espeak_manifests["train"])
    return _memorize(task, utts, tmp_path_factory.mktemp("fitted"))


def _memorize(task, utts, out: Path) -> Path:
    """Train ``task`` on all of ``utts`` as one batch for FIT_STEPS steps and save it
    as ``out/model.ckpt``."""
    import torch

    from asr.data import SpeechDataset, collate
    from asr.inference import save_model

    data = SpeechDataset(utts, task.tokenizer, 16000)
    batch = collate([data[(i, 0)] for i in range(len(utts))])
    opt = torch.optim.AdamW(task.parameters(), lr=FIT_LR)
    task.train()
    for _ in range(FIT_STEPS):
        opt.zero_grad()
        loss, _, _ = task._loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 5.0)
        opt.step()
    task.eval()
    return save_model(task, out / "model.ckpt")


@pytest.fixture(scope="session")
def streaming_checkpoint(espeak_corpus, espeak_manifests, tmp_path_factory) -> Path:
    """A slim ``model.ckpt`` of a streaming model that has memorized the espeak
    training sentences: unidirectional GRU layers with a lookahead convolution and
    global feature statistics fitted on the training audio (what
    :mod:`asr.streaming` needs), trained like :func:`fitted_checkpoint`."""
    import torch

    from asr.manifest import read_manifest
    from asr.task import ASRTask

    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [{"channels": 8, "kernel": [11, 5], "stride": [2, 2]}],
            "rnn_layers": 2,
            "hidden_size": 96,
            "bidirectional": False,
            "lookahead": 2,
        },
        frontend={"kind": "logmel", "n_mels": 40, "normalize": "global"},
    )
    utts = read_manifest(espeak_manifests["train"])
    task.fit_global_stats(utts)
    return _memorize(task, utts, tmp_path_factory.mktemp("streaming"))


# Fixtures that generate a corpus or train a model: a test that uses one (directly or
# through another fixture) is slow, whatever its own body does.
SLOW_FIXTURES = frozenset(
    {
        "espeak_corpus",
        "fitted_checkpoint",
        "streaming_checkpoint",
        "sturdy_checkpoint",
        "trained",
    }
)


def pytest_collection_modifyitems(config, items):
    """Tests that use a corpus-making or training fixture are marked ``slow``
    (``make test-fast`` leaves them out; ``make test`` runs them). Tests marked
    ``cuda`` run only where a CUDA device is (``make test-cuda``)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    cuda_tests = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make test-cuda)")
    for item in cuda_tests:
        item.add_marker(skip)
