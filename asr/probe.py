"""Out of memory in the first minute, not hours in: the largest batch, tried first.

SortaGrad (DS2 sec. 3.1) sorts the first epoch from the shortest batch to the
longest, so the batch that needs the most memory comes at the end of the first
epoch, hours into a LibriSpeech run. :class:`MemoryProbe` runs that batch (the
utterances the sampler packs into its costliest batch: forward, loss, backward, in
the training precision) before the first step, and stops a run that cannot hold it
with the batch's seconds, frames and characters, the memory, and the setting to
lower. The weights, their gradients and the batch-norm statistics are left as they
were; each training step reseeds its own randomness, so the run is the same as
without the probe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import lightning as L
import torch

from asr.data import Batch, DurationBatchSampler
from asr.manifest import Utterance

__all__ = ["MemoryProbe", "MemoryProbeError", "ProbeBatch", "largest_batch"]

log = logging.getLogger(__name__)

_GIB = 1 << 30


class MemoryProbeError(RuntimeError):
    """The largest training batch does not fit the device; the message says which
    setting to lower."""


@dataclass(frozen=True)
class ProbeBatch:
    """The costliest batch of a training set: its utterances, padded seconds
    (``len(utterances) * longest``) and longest transcript."""

    utterances: tuple[Utterance, ...]
    seconds: float
    longest: float
    characters: int


def largest_batch(
    utterances: list[Utterance], max_batch_seconds: float, max_batch_size: int | None
) -> ProbeBatch:
    """The batch of the sorted packing (:class:`asr.data.DurationBatchSampler`, the
    first epoch's under SortaGrad) with the most padded audio."""
    sampler = DurationBatchSampler(
        [u.duration for u in utterances],
        max_batch_seconds,
        max_batch_size,
        shuffle=False,
    )
    best: list[int] = []
    cost = -1.0
    for batch in sampler:
        indices = [i for i, _ in batch]
        longest = max(utterances[i].duration for i in indices)
        if len(indices) * longest > cost:
            best, cost = indices, len(indices) * longest
    chosen = tuple(utterances[i] for i in best)
    return ProbeBatch(
        chosen,
        cost,
        max(u.duration for u in chosen),
        max(len(u.text) for u in chosen),
    )


class MemoryProbe(L.Callback):
    """Run the largest training batch before the first step (see the module).

    Args:
        enabled: ``None`` (default): on CUDA devices only (a CPU runs out of memory
            by being killed, which no probe can report); ``True``: on any device.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self.peak_bytes: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        if self.enabled is False or (self.enabled is None and device.type != "cuda"):
            return
        datamodule = getattr(trainer, "datamodule", None)
        sets = getattr(datamodule, "_sets", {})
        if "train" not in sets:
            return
        hp = datamodule.hparams
        probe = largest_batch(sets["train"], hp.max_batch_seconds, hp.max_batch_size)
        self.run(trainer, pl_module, probe)

    def run(
        self, trainer: L.Trainer, pl_module: L.LightningModule, probe: ProbeBatch
    ) -> None:
        """Forward, loss and backward of ``probe`` on the module's device.

        Raises:
            MemoryProbeError: the device ran out of memory.
        """
        device = pl_module.device
        batch = _synthetic_batch(pl_module, probe, device)
        frames = int(pl_module.frontend.frames(batch.waves.shape[1]))
        what = (
            f"the largest training batch ({len(probe.utterances)} utterances of up "
            f"to {probe.longest:.1f} s: {probe.seconds:.0f} s of padded audio, "
            f"{frames} feature frames, {probe.characters} characters)"
        )
        saved = [b.detach().clone() for b in pl_module.buffers()]
        was_training = pl_module.training
        # once-only warnings of the task are the real batches' to give
        warned = (
            getattr(pl_module, "_warned_no_phones", None),
            set(getattr(pl_module, "_infeasible_reported", ())),
        )
        pl_module._warned_no_phones = True
        start = time.perf_counter()
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        try:
            pl_module.train()
            with trainer.precision_plugin.forward_context():
                loss, _, _ = pl_module._loss(batch)
            loss.backward()
            if cuda:
                torch.cuda.synchronize(device)
                self.peak_bytes = torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            raise MemoryProbeError(_advice(what, device, trainer)) from None
        finally:
            for p in pl_module.parameters():
                p.grad = None
            with torch.no_grad():
                for b, before in zip(pl_module.buffers(), saved, strict=True):
                    b.copy_(before)
            pl_module.train(was_training)
            pl_module._warned_no_phones = warned[0]
            if hasattr(pl_module, "_infeasible_reported"):
                pl_module._infeasible_reported = warned[1]
            if cuda:
                torch.cuda.empty_cache()
        peak = "" if self.peak_bytes is None else f", {self.peak_bytes / _GIB:.2f} GiB"
        log.info(
            "memory probe: %s fits (%.1f s%s)",
            what,
            time.perf_counter() - start,
            peak,
        )


def _synthetic_batch(
    pl_module: L.LightningModule, probe: ProbeBatch, device: torch.device
) -> Batch:
    """The probe's utterances as a padded batch: quiet noise of each one's length
    (the memory does not depend on the samples) and its real transcript."""
    rate = pl_module.hparams.sample_rate
    gen = torch.Generator().manual_seed(0)
    lens = torch.tensor([round(u.duration * rate) for u in probe.utterances])
    waves = 0.01 * torch.randn(len(lens), int(lens.max()), generator=gen)
    waves *= torch.arange(waves.shape[1])[None, :] < lens[:, None]
    tokens = [pl_module.tokenizer.encode(u.text) for u in probe.utterances]
    targets = torch.zeros(len(tokens), max(map(len, tokens)), dtype=torch.int64)
    for i, t in enumerate(tokens):
        targets[i, : len(t)] = torch.tensor(t, dtype=torch.int64)
    return Batch(
        waves.to(device),
        lens.to(device),
        targets.to(device),
        torch.tensor([len(t) for t in tokens]).to(device),
        [u.id or u.audio_filepath for u in probe.utterances],
        [u.text for u in probe.utterances],
    )


def _advice(what: str, device: torch.device, trainer: L.Trainer) -> str:
    total = free = 0.0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free_b, total_b = torch.cuda.mem_get_info(device)
        total, free = total_b / _GIB, free_b / _GIB
    hp = getattr(getattr(trainer, "datamodule", None), "hparams", None)
    now = (
        f" (now {hp.max_batch_seconds:g} s and {hp.max_batch_size})"
        if hp is not None
        else ""
    )
    return (
        f"{what} does not fit in the memory of {device} ({total:.1f} GiB, "
        f"{free:.1f} GiB free): lower data.max_batch_seconds or "
        f"data.max_batch_size{now} and raise trainer.accumulate_grad_batches to "
        "keep the effective batch, or leave out long utterances with "
        "data.max_utterance_seconds (deepspeech.pytorch trains on utterances of "
        "up to 15 s)"
    )
