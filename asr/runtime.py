"""Running an exported model: onnxruntime for ``.onnx``, TorchScript for ``.pt``.

``asr export`` (:mod:`asr.export`) writes the acoustic model alone, features in,
log-probs out, with the checkpoint's self-description inside the file: in ONNX's
``metadata_props``, in a TorchScript archive's extra file ``asr.json``. Both hold the
same JSON (:data:`METADATA_KEY`): the description a checkpoint carries (format,
sample rate, tokenizer, frontend and model configuration) and the frontend's saved
state (the global feature statistics, when the frontend normalizes with them).

:func:`open_exported` reads such a file into that JSON and an :class:`ExportedModel`,
which has :class:`asr.model.DeepSpeech2`'s inference interface (``model(feats,
feat_lens) -> (log_probs, out_lens)``, ``output_lengths``, ``frame_stride``), so
:func:`asr.inference.load_model` builds the same :class:`asr.inference.Recognizer`
from it as from a checkpoint and everything downstream (batching, long files in
windows, decoders, outputs) is shared.

Neither format runs pickled Python: an ONNX file is a protobuf graph of operators,
and ``torch.jit.load`` rebuilds TorchScript objects and tensors only (its unpickler
admits no Python callables). A TorchScript archive does hold TorchScript code, which
its ``forward`` runs in torch's interpreter: take ``.pt`` files from people you
trust, as for any program (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from asr.model import DeepSpeech2, ModelConfig, count_parameters

__all__ = [
    "BACKENDS",
    "EXTRA_FILE",
    "METADATA_KEY",
    "ExportedModel",
    "ExportedModelError",
    "exported_format",
    "onnx_session",
    "probe",
    "read_exported",
    "state_from_json",
    "state_to_json",
]

# The metadata entry (ONNX) and extra file (TorchScript) holding the description.
METADATA_KEY = "asr"
EXTRA_FILE = "asr.json"
# The graph's interface; asr.export writes it, this module checks it.
INPUTS = ("feats", "feat_lens")
OUTPUTS = ("log_probs", "out_lens")
BACKENDS = ("torch", "onnxruntime", "torchscript")


class ExportedModelError(ValueError):
    """A file that is not a usable exported asr model; the message names it."""


def exported_format(path: str | os.PathLike[str]) -> str | None:
    """``"onnx"`` for a ``.onnx`` file, ``"torchscript"`` for a TorchScript archive,
    ``None`` otherwise (a checkpoint, or not ours: :func:`torch.load` decides).

    A TorchScript archive and a checkpoint written by ``torch.save`` are both zip
    files; only the archive has compiled code (``<name>/code/``).
    """
    if Path(path).suffix.lower() == ".onnx":
        return "onnx"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if any(n.split("/")[1:2] == ["code"] for n in names):
        return "torchscript"
    return None


def state_to_json(state: dict[str, Tensor]) -> dict[str, Any]:
    """A state dict of small tensors as plain JSON: ``{name: {dtype, shape, data}}``.

    float32 values go through Python floats, whose repr round-trips them exactly.
    """
    return {
        name: {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "data": t.detach().cpu().reshape(-1).tolist(),
        }
        for name, t in state.items()
    }


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


def state_from_json(obj: Any) -> dict[str, Tensor]:
    """The inverse of :func:`state_to_json`.

    Raises:
        ValueError: an entry that is not a dtype, a shape and that many numbers.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"the frontend state must be a dict, got {obj!r:.60}")
    out = {}
    for name, entry in obj.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPES:
            raise ValueError(f"frontend state {name!r} has no known dtype")
        shape, data = entry.get("shape"), entry.get("data")
        if not (
            isinstance(shape, list)
            and all(isinstance(n, int) and 0 <= n <= 1 << 20 for n in shape)
            and isinstance(data, list)
            and len(data) == int(np.prod(shape, dtype=np.int64))
            and all(isinstance(v, (int, float)) for v in data)
        ):
            raise ValueError(f"frontend state {name!r} is not {shape!r:.40} numbers")
        out[name] = torch.tensor(data, dtype=_DTYPES[entry["dtype"]]).reshape(shape)
    return out


class ExportedModel:
    """An exported acoustic model with :class:`asr.model.DeepSpeech2`'s inference
    interface: ``(feats (B, F, T), feat_lens (B,))`` -> ``(log_probs (T', B, V)
    float32, out_lens (B,) int64)``, in eval mode.

    Attributes:
        config: the model's hyper-parameters (from the file's description).
        backend: ``"onnxruntime"`` or ``"torchscript"``.
        runner: the onnxruntime session or the TorchScript module.
        n_parameters: parameters of the model it was exported from.
    """

    def __init__(
        self, config: ModelConfig, backend: str, runner: Any, device: torch.device
    ) -> None:
        self.config = config
        self.backend = backend
        self.runner = runner
        self._device = torch.device(device)
        with torch.device("meta"):
            self.n_parameters = count_parameters(DeepSpeech2(config))

    @property
    def device(self) -> torch.device:
        return self._device

    def output_lengths(self, lens: Tensor) -> Tensor:
        return self.config.output_lengths(lens)

    def frame_stride(self) -> int:
        return self.config.frame_stride()

    def eval(self) -> ExportedModel:
        return self

    def to(self, device: str | torch.device) -> ExportedModel:
        device = torch.device(device)
        if self.backend == "onnxruntime" and device.type != "cpu":
            raise ExportedModelError(
                f"an ONNX model runs on the CPU here (onnxruntime's CPU provider), "
                f"not on {device}"
            )
        if self.backend == "torchscript":
            self.runner.to(device)
        self._device = device
        return self

    def __call__(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        if self.backend == "torchscript":
            with torch.inference_mode():
                return self.runner(feats.float(), feat_lens.long())
        log_probs, out_lens = self.runner.run(
            list(OUTPUTS),
            {
                "feats": np.ascontiguousarray(feats.float().cpu().numpy()),
                "feat_lens": feat_lens.long().cpu().numpy(),
            },
        )
        return torch.from_numpy(log_probs), torch.from_numpy(out_lens)


def onnx_session(
    path: str | os.PathLike[str],
    threads: int | None = None,
    optimization: str = "all",
    spinning: bool = True,
) -> Any:
    """An onnxruntime CPU session for ``path``.

    Args:
        threads: intra-op threads; ``None``: torch's current setting, so ``asr
            transcribe --threads`` governs both backends.
        optimization: onnxruntime's graph optimization level: ``"disable"``,
            ``"basic"``, ``"extended"`` or ``"all"`` (measured in
            docs/benchmarks.md).
        spinning: whether idle intra-op threads spin waiting for work
            (onnxruntime's default) rather than sleep.

    Raises:
        ExportedModelError: the file is not a model onnxruntime can run.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads or torch.get_num_threads()
    # One graph, run operator after operator: a second pool would only compete with
    # the first for the same cores.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors are raised; warnings would go to stderr
    try:
        return ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime's own exception types, one per cause
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ExportedModelError(
            f"{path}: not an ONNX model onnxruntime can run ({reason})"
        ) from None


def read_exported(
    path: str | os.PathLike[str], kind: str, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Any]:
    """Open an exported model: its metadata (the JSON of :data:`METADATA_KEY`, not
    yet checked: :func:`asr.inference.load_model` checks it before anything is built
    from it) and the runner (an onnxruntime session, or a TorchScript module on
    ``device``).

    Args:
        kind: ``"onnx"`` or ``"torchscript"`` (:func:`exported_format`).

    Raises:
        ExportedModelError: unreadable, not ours, or a graph of another interface.
    """
    if kind == "onnx":
        if torch.device(device).type != "cpu":
            raise ExportedModelError(
                f"{path}: an ONNX model runs on the CPU here (onnxruntime's CPU "
                f"provider), not on {device}"
            )
        runner = onnx_session(path)
        raw = runner.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        inputs = tuple(i.name for i in runner.get_inputs())
        outputs = tuple(o.name for o in runner.get_outputs())
        if raw is not None and (inputs, outputs) != (INPUTS, OUTPUTS):
            raise ExportedModelError(
                f"{path}: the graph takes {inputs} and gives {outputs}, not "
                f"{INPUTS} -> {OUTPUTS}"
            )
    else:
        extra = {EXTRA_FILE: ""}
        try:
            runner = torch.jit.load(
                os.fspath(path), map_location=device, _extra_files=extra
            )
        except Exception as err:  # a torn archive, a foreign one: torch's own types
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise ExportedModelError(
                f"{path}: not a loadable TorchScript model ({reason})"
            ) from None
        raw = extra[EXTRA_FILE] or None
        runner.eval()
    if raw is None:
        raise ExportedModelError(
            f"{path}: not an asr model (no '{METADATA_KEY}' description in it; "
            "asr export writes one)"
        )
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportedModelError(
            f"{path}: its asr description is not JSON ({err})"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("description"), dict):
        raise ExportedModelError(f"{path}: its asr description holds no 'description'")
    return meta, runner


def probe(model: ExportedModel, n_features: int, vocab_size: int) -> None:
    """Run the model on a few frames of silence and check the shapes it gives:
    a graph that does not take the described features or give the described
    classes is refused at load time, not in the middle of a run.

    Raises:
        ValueError: the shapes differ from the description's, or the graph fails.
    """
    feats = torch.zeros(2, n_features, 16, device=model.device)
    lens = torch.tensor([16, 9], device=model.device)
    try:
        log_probs, out_lens = model(feats, lens)
    except Exception as err:  # onnxruntime's and TorchScript's own error types
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ValueError(
            f"the graph does not run on ({n_features} features, 16 frames): {reason}"
        ) from None
    expected = model.output_lengths(lens.cpu())
    if (
        tuple(log_probs.shape) != (int(expected.max()), 2, vocab_size)
        or out_lens.cpu().tolist() != expected.tolist()
    ):
        raise ValueError(
            f"the graph gives log-probs {tuple(log_probs.shape)} and lengths "
            f"{out_lens.tolist()} for 16 and 9 frames; the description says "
            f"({int(expected.max())}, 2, {vocab_size}) and {expected.tolist()}"
        )
