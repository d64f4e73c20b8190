"""Self-describing checkpoints -> a ready-to-use recognizer.

A checkpoint is either a Lightning training checkpoint of :class:`asr.task.ASRTask` or
the slim file :func:`save_model` writes (``model.ckpt``: the description and the
weights only). Both load with ``torch.load(weights_only=True)``, which cannot run code
from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asr.atomic import atomic_save
from asr.decoding import greedy_decode
from asr.features import build_frontend
from asr.model import DeepSpeech2, ModelConfig
from asr.text import CharTokenizer

__all__ = [
    "CheckpointError",
    "Recognizer",
    "load_model",
    "save_model",
]


class CheckpointError(ValueError):
    """A file that is not a usable asr checkpoint; the message names it."""


@dataclass
class Recognizer:
    """Frontend + model + tokenizer, in eval mode, on one device."""

    frontend: nn.Module
    model: DeepSpeech2
    tokenizer: CharTokenizer
    description: dict[str, Any]

    @property
    def sample_rate(self) -> int:
        """The rate the model takes audio at: the frontend's (one source of truth;
        :func:`load_model` refuses a checkpoint whose description disagrees)."""
        return int(self.frontend.sample_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame: the frontend's hop times the convolutions'
        time strides (10 ms x 3 = 30 ms for the demo model)."""
        return self.frontend.hop_length * self.model.frame_stride() / self.sample_rate

    def output_frames(self, duration: float) -> int:
        """Model output frames for ``duration`` seconds of audio (for validation)."""
        samples = torch.tensor([round(duration * self.sample_rate)])
        frames = torch.as_tensor(self.frontend.frames(samples)).reshape(1)
        return int(self.model.output_lengths(frames)[0])

    def to(self, device: str | torch.device) -> Recognizer:
        self.frontend.to(device)
        self.model.to(device)
        return self

    @torch.inference_mode()
    def log_probs(self, waves: Tensor, wave_lens: Tensor) -> tuple[Tensor, Tensor]:
        """``(waves (B, N), wave_lens (B,))`` -> ``(log_probs (T, B, V), out_lens)``."""
        waves, wave_lens = waves.to(self.device), wave_lens.to(self.device)
        feats, feat_lens = self.frontend(waves, wave_lens)
        return self.model(feats, feat_lens)

    def transcribe_batch(self, waves: Tensor, wave_lens: Tensor) -> list[str]:
        """Greedy transcripts of a padded batch of waveforms at ``sample_rate``."""
        log_probs, out_lens = self.log_probs(waves, wave_lens)
        ids = greedy_decode(log_probs, out_lens, self.tokenizer.blank)
        return [self.tokenizer.decode(x) for x in ids]


def save_model(task: Any, path: str | Path) -> Path:
    """Write the slim inference checkpoint of an :class:`ASRTask`, atomically: a
    kill or a full disk leaves any previous file whole.

    Raises:
        asr.atomic.WriteError: the file cannot be written (the message names it and
            says why, e.g. that the disk is full).
    """
    path = Path(path)
    state = {
        "asr": task.describe(),
        "frontend": task.frontend.state_dict(),
        "model": task.model.state_dict(),
    }
    atomic_save(state, path)
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """Load a slim or Lightning checkpoint; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, foreign objects
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path}: not a loadable asr checkpoint ({reason})"
        ) from None
    if not isinstance(ckpt, dict) or "asr" not in ckpt:
        raise CheckpointError(f"{path}: not an asr checkpoint (no 'asr' description)")
    desc = ckpt["asr"]
    if "model" in ckpt and "frontend" in ckpt:
        model_state, frontend_state = ckpt["model"], ckpt["frontend"]
    elif "state_dict" in ckpt:  # Lightning: task.model.*, task.frontend.*
        sd = ckpt["state_dict"]
        model_state = {k[6:]: v for k, v in sd.items() if k.startswith("model.")}
        frontend_state = {k[9:]: v for k, v in sd.items() if k.startswith("frontend.")}
    else:
        raise CheckpointError(f"{path}: the checkpoint holds no weights")
    if not isinstance(desc, dict):
        raise CheckpointError(
            f"{path}: not an asr checkpoint (its description is no dict)"
        )
    try:
        frontend = build_frontend(desc["frontend"])
        model = DeepSpeech2(ModelConfig.from_dict(desc["model"]))
        tokenizer = CharTokenizer.from_dict(desc["tokenizer"])
        frontend.load_state_dict(frontend_state)
        model.load_state_dict(model_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: inconsistent asr checkpoint ({err})") from None
    if desc.get("sample_rate", frontend.sample_rate) != frontend.sample_rate:
        raise CheckpointError(
            f"{path}: inconsistent asr checkpoint (sample_rate "
            f"{desc['sample_rate']!r} but its frontend's is {frontend.sample_rate!r})"
        )
    frontend.eval()
    model.eval()
    return Recognizer(frontend, model, tokenizer, desc).to(device)
