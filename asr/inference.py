"""Self-describing checkpoints -> a ready-to-use recognizer.

A checkpoint is either a Lightning training checkpoint of :class:`asr.task.ASRTask` or
the slim file :func:`save_model` writes (``model.ckpt``: the description and the
weights only). Both load with ``torch.load(weights_only=True)``, which cannot run code
from the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asr.atomic import atomic_save
from asr.decoding import greedy_decode
from asr.features import build_frontend
from asr.model import DeepSpeech2, ModelConfig, count_parameters
from asr.runtime import (
    ExportedModel,
    ExportedModelError,
    exported_format,
    probe,
    read_exported,
    state_from_json,
)
from asr.text import CharTokenizer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "Recognizer",
    "load_model",
    "check_description",
    "save_model",
]


# The layout of the self-description (ASRTask.describe); a file of another format
# was written by another version.
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A file that is not a usable asr checkpoint; the message names it."""


@dataclass
class Recognizer:
    """Frontend + model + tokenizer, in eval mode, on one device."""

    frontend: nn.Module
    model: DeepSpeech2 | ExportedModel
    tokenizer: CharTokenizer
    description: dict[str, Any]

    @property
    def backend(self) -> str:
        """What runs the model: ``"torch"``, ``"onnxruntime"`` or ``"torchscript"``."""
        return getattr(self.model, "backend", "torch")

    @property
    def n_parameters(self) -> int:
        if isinstance(self.model, ExportedModel):
            return self.model.n_parameters
        return count_parameters(self.model)

    @property
    def sample_rate(self) -> int:
        """The rate the model takes audio at: the frontend's (one source of truth;
        :func:`load_model` refuses a checkpoint whose description disagrees)."""
        return int(self.frontend.sample_rate)

    @property
    def device(self) -> torch.device:
        """Where features are computed and the model runs (the frontend's buffers
        are there; an exported model may have no torch parameters)."""
        return self.frontend.window.device

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


# What a checkpoint may describe. The bounds are far outside any model we train
# (the DeepSpeech2 paper's: 7 x 1280 GRU, 3 convolutions) but keep a crafted file from
# asking for a division by zero, a terabyte or an hour of set-up.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "sample_rate": (1000, 384_000),
    "n_fft": (8, 65_536),
    "win_length": (1, 65_536),
    "hop_length": (1, 65_536),
    "n_mels": (1, 1024),
    "n_mfcc": (1, 1024),
    "n_features": (1, 8192),
    "vocab_size": (2, 100_000),
    "rnn_layers": (1, 64),
    "hidden_size": (1, 16_384),
    "lookahead": (0, 10_000),
    "channels": (1, 4096),
    "kernel": (1, 512),
    "stride": (1, 64),
}
_FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "eps": (1e-30, 1.0),
    "f_min": (0.0, 192_000.0),
    "f_max": (1.0, 192_000.0),
    "dropout": (0.0, 1.0),
    "clip": (1e-6, 1e6),
}
_MAX_CONV_LAYERS = 16


def _check_int(field: str, value: Any, bounds: str | None = None) -> None:
    lo, hi = _INT_BOUNDS[bounds or field.rsplit(".", 1)[-1].split("[")[0]]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(
            f"{field} must be a whole number in [{lo}, {hi}], got {value!r}"
        )


def _check_float(field: str, value: Any) -> None:
    lo, hi = _FLOAT_BOUNDS[field.rsplit(".", 1)[-1]]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{field} must be a number in [{lo:g}, {hi:g}], got {value!r}")


def check_description(desc: Any) -> None:
    """Check every field of a checkpoint's self-description before anything is built
    from it: types, and values within :data:`_INT_BOUNDS`/:data:`_FLOAT_BOUNDS`.

    Raises:
        ValueError: one line naming the first bad field and its value.
    """
    if not isinstance(desc, dict):
        raise ValueError(f"the description must be a dict, got {type(desc).__name__}")
    if desc.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise ValueError(
            f"format {desc['format']!r}: this version reads format {CHECKPOINT_FORMAT}"
        )
    for key in ("frontend", "model", "tokenizer"):
        if not isinstance(desc.get(key), dict):
            raise ValueError(f"{key} must be a dict, got {desc.get(key)!r}")
    if "sample_rate" in desc:
        _check_int("sample_rate", desc["sample_rate"])
    fe = desc["frontend"]
    for key, value in fe.items():
        if key in _INT_BOUNDS:
            _check_int(f"frontend.{key}", value)
        elif key in _FLOAT_BOUNDS:
            _check_float(f"frontend.{key}", value)
        elif key in ("kind", "normalize", "mel_scale") and not isinstance(value, str):
            raise ValueError(f"frontend.{key} must be a string, got {value!r}")
    if "f_min" in fe and "f_max" in fe and not fe["f_min"] < fe["f_max"]:
        raise ValueError(f"frontend.f_min {fe['f_min']!r} >= f_max {fe['f_max']!r}")
    m = desc["model"]
    for key in ("n_features", "vocab_size", "rnn_layers", "hidden_size", "lookahead"):
        if key in m:
            _check_int(f"model.{key}", m[key])
    for key in ("dropout", "clip"):
        if key in m:
            _check_float(f"model.{key}", m[key])
    if "bidirectional" in m and not isinstance(m["bidirectional"], bool):
        raise ValueError(
            f"model.bidirectional must be true or false, got {m['bidirectional']!r}"
        )
    conv = m.get("conv", [])
    if not isinstance(conv, list) or not 1 <= len(conv) <= _MAX_CONV_LAYERS:
        raise ValueError(
            f"model.conv must be a list of 1 to {_MAX_CONV_LAYERS} layers, got {conv!r}"
        )
    for i, c in enumerate(conv):
        if not isinstance(c, dict):
            raise ValueError(f"model.conv[{i}] must be a dict, got {c!r}")
        _check_int(f"model.conv[{i}].channels", c.get("channels"), "channels")
        for key in ("kernel", "stride"):
            pair = c.get(key)
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(
                    f"model.conv[{i}].{key} must be 2 numbers, got {pair!r}"
                )
            for v in pair:
                _check_int(f"model.conv[{i}].{key}", v, key)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    """Load a model; never executes pickled code from the file.

    ``path`` is a slim or Lightning checkpoint, or a model ``asr export`` wrote:
    ``.onnx`` (run by onnxruntime, on the CPU) or a TorchScript archive (``.pt``).
    Every form gives the same :class:`Recognizer` (see :mod:`asr.runtime`).

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    kind = exported_format(path)
    if kind is not None:
        return _load_exported(path, kind, device)
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

    def check(config: ModelConfig) -> None:
        # On the meta device (nothing allocated): a description that does not
        # match the weights is refused before a model is built for it.
        with torch.device("meta"):
            described = DeepSpeech2(config).state_dict()
        _check_shapes(described, model_state)

    def build(config: ModelConfig) -> DeepSpeech2:
        model = DeepSpeech2(config)
        model.load_state_dict(model_state)
        return model.eval()

    return _recognizer(path, desc, frontend_state, build, device, check)


def _load_exported(path: Path, kind: str, device: str | torch.device) -> Recognizer:
    """An exported model (:mod:`asr.runtime`) -> a :class:`Recognizer`."""
    try:
        meta, runner = read_exported(path, kind, device)
    except ExportedModelError as err:
        raise CheckpointError(str(err)) from None
    backend = "onnxruntime" if kind == "onnx" else "torchscript"

    def build(config: ModelConfig) -> ExportedModel:
        model = ExportedModel(config, backend, runner, torch.device(device))
        probe(model, config.n_features, config.vocab_size)
        return model

    try:
        frontend_state = state_from_json(meta.get("frontend_state", {}))
    except ValueError as err:
        raise CheckpointError(f"{path}: bad asr model description ({err})") from None
    return _recognizer(path, meta["description"], frontend_state, build, device)


def _recognizer(
    path: Path,
    desc: Any,
    frontend_state: Any,
    build: Callable[[ModelConfig], Any],
    device: str | torch.device,
    check: Callable[[ModelConfig], None] | None = None,
) -> Recognizer:
    """Check a description, build the frontend, tokenizer and (with ``build``) the
    model it describes, and put them together; ``check`` sees the model's
    configuration first."""
    try:
        check_description(desc)
    except ValueError as err:
        raise CheckpointError(
            f"{path}: bad asr checkpoint description ({err})"
        ) from None
    try:
        tokenizer = CharTokenizer.from_dict(desc["tokenizer"])
        config = ModelConfig.from_dict(desc["model"])
        if check is not None:
            check(config)
        frontend = build_frontend(desc["frontend"])
        if frontend.n_features != config.n_features:
            raise ValueError(
                f"the frontend makes {frontend.n_features} features, the model "
                f"takes {config.n_features}"
            )
        if len(tokenizer) != config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} classes, the model "
                f"{config.vocab_size}"
            )
        frontend.load_state_dict(frontend_state)
        model = build(config)
    except (KeyError, TypeError, ValueError, RuntimeError, ArithmeticError) as err:
        raise CheckpointError(f"{path}: inconsistent asr checkpoint ({err})") from None
    if desc.get("sample_rate", frontend.sample_rate) != frontend.sample_rate:
        raise CheckpointError(
            f"{path}: inconsistent asr checkpoint (sample_rate "
            f"{desc['sample_rate']!r} but its frontend's is {frontend.sample_rate!r})"
        )
    frontend.eval()
    return Recognizer(frontend, model, tokenizer, desc).to(device)


def _check_shapes(described: dict[str, Tensor], weights: dict[str, Any]) -> None:
    """The weights hold exactly the tensors, of the shapes, the description asks for.

    Raises:
        ValueError: the first difference, named.
    """
    for name, tensor in described.items():
        got = weights.get(name)
        if not isinstance(got, Tensor):
            raise ValueError(f"the weights lack {name}")
        if tuple(got.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{name} is {tuple(got.shape)} in the weights, "
                f"{tuple(tensor.shape)} in the description"
            )
    extra = sorted(set(weights) - set(described))
    if extra:
        raise ValueError(f"the weights hold tensors the model lacks: {extra[:3]}")
