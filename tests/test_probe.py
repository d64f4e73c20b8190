"""asr.probe: the largest training batch runs before the first step, so a run that
cannot hold it fails in its first minute, saying what to lower; the run itself is
left as it was."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from asr.manifest import Utterance
from asr.probe import MemoryProbe, MemoryProbeError, largest_batch
from asr.task import ASRTask


def corpus() -> list[Utterance]:
    """Durations from 1 to 12 s; the longer, the longer the transcript."""
    return [
        Utterance(
            f"/x/{i}.flac", 1.0 + i * 0.5, "hello world " * (1 + i // 4), id=str(i)
        )
        for i in range(23)
    ]


def test_the_largest_batch_is_the_costliest_of_the_packing():
    utts = corpus()
    probe = largest_batch(utts, max_batch_seconds=20, max_batch_size=8)
    assert probe.seconds <= 20 and len(probe.utterances) <= 8
    assert probe.longest == max(u.duration for u in probe.utterances)
    assert probe.seconds == len(probe.utterances) * probe.longest
    # no batch of the packing costs more
    from asr.data import DurationBatchSampler

    sampler = DurationBatchSampler([u.duration for u in utts], 20, 8, shuffle=False)
    costs = [len(b) * max(utts[i].duration for i, _ in b) for b in sampler]
    assert probe.seconds == max(costs)
    assert probe.characters == max(len(u.text) for u in probe.utterances)


@pytest.fixture
def task_and_trainer():
    torch.manual_seed(0)
    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, precision=32
    )
    return task, trainer


def test_the_probe_leaves_weights_gradients_and_statistics_as_they_were(
    task_and_trainer,
):
    task, trainer = task_and_trainer
    task.eval()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    probe = largest_batch(corpus(), max_batch_seconds=20, max_batch_size=8)
    MemoryProbe(enabled=True).run(trainer, task, probe)
    after = task.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in task.parameters())
    assert not task.training  # its mode is given back too


def test_running_out_of_memory_names_the_batch_and_the_setting(
    task_and_trainer, monkeypatch
):
    task, trainer = task_and_trainer

    def out_of_memory(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(task, "_loss", out_of_memory)
    probe = largest_batch(corpus(), max_batch_seconds=20, max_batch_size=8)
    with pytest.raises(MemoryProbeError) as info:
        MemoryProbe(enabled=True).run(trainer, task, probe)
    message = str(info.value)
    n = len(probe.utterances)
    assert f"the largest training batch ({n} utterances of up to" in message
    assert "feature frames" in message and "characters" in message
    assert (
        "data.max_batch_seconds" in message and "data.max_utterance_seconds" in message
    )
    assert "\n" not in message


def test_the_probe_is_off_on_the_cpu_by_default(task_and_trainer, monkeypatch):
    task, trainer = task_and_trainer
    ran = []
    monkeypatch.setattr(MemoryProbe, "run", lambda *args: ran.append(args))
    MemoryProbe().on_train_start(trainer, task)
    assert not ran


@pytest.mark.cuda
def test_the_probe_measures_the_largest_batch_on_cuda(task_and_trainer):
    task, trainer = task_and_trainer
    task = task.cuda()
    probe = largest_batch(corpus(), max_batch_seconds=20, max_batch_size=8)
    memory = MemoryProbe()
    memory.run(trainer, task, probe)
    assert memory.peak_bytes and memory.peak_bytes > 0
