"""A callback for tests/test_librispeech.py's DDP test: what each rank saw and ended
with, written to ``<out_dir>/rank<R>.json``.

Loaded by ``asr train`` in a subprocess by class path (``ddp_probe.RankProbe``, with
``tests/`` on ``PYTHONPATH``); it is not part of the package.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RankProbe(L.Callback):
    """Record, per rank: every training batch's utterance ids and loss, per-epoch
    batch counts, and digests of the parameters and buffers at the start and end."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {"epochs": {}}

    def _digests(self, module: L.LightningModule) -> dict[str, str]:
        params = {n: p for n, p in module.named_parameters()}
        buffers = {n: b for n, b in module.named_buffers()}
        return {"parameters": state_digest(params), "buffers": state_digest(buffers)}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["rank"] = trainer.global_rank
        self.record["world_size"] = trainer.world_size
        self.record["start"] = self._digests(pl_module)
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        self.record["sampler"] = {
            "num_replicas": getattr(sampler, "num_replicas", None),
            "rank": getattr(sampler, "rank", None),
        }

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        epoch = self.record["epochs"].setdefault(
            str(trainer.current_epoch), {"batches": [], "losses": [], "seconds": []}
        )
        epoch["batches"].append(list(batch.ids))
        value = float(loss.detach()) if loss is not None else math.nan
        epoch["losses"].append(value if math.isfinite(value) else str(value))
        sr = pl_module.hparams.sample_rate
        longest = float(batch.wave_lens.max()) if batch.ids else 0.0
        epoch["seconds"].append(longest / sr)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["end"] = self._digests(pl_module)
        self.record["global_step"] = trainer.global_step
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record, indent=1))
