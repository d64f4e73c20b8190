"""``asr export``: a checkpoint -> a model that runs outside this package.

``model.onnx`` (ONNX opset :data:`OPSET`, for onnxruntime or any ONNX runtime; with
``int8=True`` its matrix products and convolutions dynamically quantized to 8 bits)
or ``model.pt`` (TorchScript, for libtorch in C++ or ``torch.jit.load``). Either
holds the acoustic model only, with dynamic batch and time axes::

    feats (B, F, T) float32, feat_lens (B,) int64
        -> log_probs (T', B, V) float32, out_lens (B,) int64

and the checkpoint's self-description in the file (:mod:`asr.runtime`): the
vocabulary, the frontend's configuration and saved state (global feature
statistics), the sample rate and the model's hyper-parameters, so the file alone
is enough to transcribe, as the checkpoint is.

The frontend stays outside the graph (docs/design.md, "Export", says why): a runtime
computes features as :mod:`asr.features` defines them, from the configuration in the
file.

Every export is checked before it is written: the exported model runs on a batch of
utterances of different lengths and another shape than the one traced, and must
give the checkpoint's log-probs to :data:`TOLERANCE` (the int8 model is compared
after the float one and its difference reported, not bounded).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from asr.atomic import WriteError, atomic_write_bytes
from asr.inference import Recognizer, load_model
from asr.model import DeepSpeech2
from asr.runtime import (
    EXTRA_FILE,
    INPUTS,
    METADATA_KEY,
    OUTPUTS,
    onnx_session,
    state_to_json,
)

__all__ = [
    "FORMATS",
    "OPSET",
    "TOLERANCE",
    "ExportError",
    "Exported",
    "export_model",
    "stream_onnx",
]

FORMATS = {".onnx": "onnx", ".pt": "torchscript"}
# Opset 17: onnxruntime has run it since 1.11; GRU/LSTM are unchanged since opset 14.
OPSET = 17
# The largest difference from the checkpoint's log-probs an export may have.
TOLERANCE = 1e-4


class ExportError(ValueError):
    """An export that cannot be made; the message names the file and why."""


@dataclass
class Exported:
    """What :func:`export_model` wrote.

    Attributes:
        path: the file.
        format: ``"onnx"`` or ``"torchscript"``.
        int8: whether the weights are quantized.
        bytes: the file's size.
        max_abs_diff: the largest difference from the checkpoint's log-probs on
            the check batch (valid frames).
        greedy_agree: the fraction of the check batch's valid frames whose best
            class is the checkpoint's.
        seconds: time taken.
    """

    path: Path
    format: str
    int8: bool
    bytes: int
    max_abs_diff: float
    greedy_agree: float
    seconds: float


def export_model(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    int8: bool = False,
    streaming: bool = False,
) -> Exported:
    """Export ``checkpoint`` to ``output`` (``.onnx`` or ``.pt``), atomically.

    ``streaming=True`` exports one step of a streaming model instead, its state as
    explicit inputs and outputs (:mod:`asr.export_stream`; ONNX only).

    Raises:
        ExportError: an unknown suffix, ``int8`` for TorchScript, or an export
            that does not reproduce the checkpoint.
        asr.inference.CheckpointError: the checkpoint cannot be loaded (a file that
            is not ours, a hostile pickle: nothing in it runs).
        asr.atomic.WriteError: ``output`` cannot be written.
    """
    t0 = time.perf_counter()
    output = Path(output)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ExportError(
            f"{output}: unknown export format {output.suffix!r}; name a .onnx "
            "(onnxruntime) or .pt (TorchScript) file"
        )
    if int8 and fmt != "onnx":
        raise ExportError(f"{output}: --int8 quantizes ONNX models only (.onnx)")
    if streaming and (fmt != "onnx" or int8):
        raise ExportError(f"{output}: --streaming writes float ONNX models (.onnx)")
    _check_destination(output)
    rec = load_model(checkpoint)
    if streaming:
        return _export_streaming(rec, output, t0)
    model = copy.deepcopy(rec.model)
    model.packed = False  # the padded form, which a graph can hold (asr.model)
    example = _batch(rec, [37, 21], seed=0)
    meta = json.dumps(
        {
            "description": rec.description,
            "frontend_state": state_to_json(rec.frontend.state_dict()),
            "interface": {"inputs": list(INPUTS), "outputs": list(OUTPUTS)},
            "int8": int8,
            "torch": torch.__version__,
        }
    )
    if fmt == "onnx":
        data = _onnx_bytes(model, example, meta, int8)
        run = _onnx_runner(data)
    else:
        data, run = _torchscript_bytes(model, example, meta)
    # Another batch size and length than the traced example, lengths all different:
    # a time or batch axis frozen at export, or padding reaching a valid frame in
    # either direction of a recurrent layer, shows here.
    check = _batch(rec, [83, 60, 9], seed=1)
    diff, agree = _compare(rec.model, run, check)
    if not int8 and not diff <= TOLERANCE:
        raise ExportError(
            f"{output}: the exported model's log-probs differ from the checkpoint's "
            f"by {diff:.3g} (more than {TOLERANCE:g}); nothing was written"
        )
    atomic_write_bytes(output, data)
    return Exported(output, fmt, int8, len(data), diff, agree, time.perf_counter() - t0)


def _check_destination(output: Path) -> None:
    """Refuse, before the minutes of an export, a destination whose nearest existing
    ancestor is not a writable directory (the write itself still reports anything
    else, a full disk, when it happens)."""
    parent = output.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise WriteError(output, f"cannot write: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(output, f"cannot write: permission denied in {parent}")


def _batch(rec: Recognizer, frames: list[int], seed: int) -> tuple[Tensor, Tensor]:
    """Normalized-feature-like noise ``(B, F, T)``, zero past each length."""
    g = torch.Generator().manual_seed(seed)
    T = max(frames)
    lens = torch.tensor(frames, dtype=torch.int64)
    feats = torch.randn(len(frames), rec.model.config.n_features, T, generator=g)
    return feats * (torch.arange(T)[None, None, :] < lens[:, None, None]), lens


def _compare(
    model: DeepSpeech2, run: Any, batch: tuple[Tensor, Tensor]
) -> tuple[float, float]:
    """Largest log-prob difference and greedy agreement over the valid frames."""
    with torch.inference_mode():
        ref, ref_lens = model(*batch)
    got, got_lens = run(*batch)
    if tuple(got.shape) != tuple(ref.shape) or not torch.equal(got_lens, ref_lens):
        return float("inf"), 0.0
    valid = torch.arange(ref.shape[0])[:, None] < ref_lens[None, :]  # (T', B)
    diff = (got - ref).abs().amax(-1)[valid]
    agree = (got.argmax(-1) == ref.argmax(-1))[valid].float().mean()
    return float(diff.max()), float(agree)


def _onnx_bytes(
    model: DeepSpeech2, example: tuple[Tensor, Tensor], meta: str, int8: bool
) -> bytes:
    """The model as an ONNX file (bytes), the description in its metadata.

    torch's TorchScript-based exporter (``dynamo=False``): it maps each recurrent
    layer to ONNX's GRU/LSTM operator with a dynamic time axis. The dynamo exporter
    of torch 2.9 specializes an RNN's time axis to the example's length, and fails on
    the padded form's direction-by-direction calls (docs/design.md, "Export").
    """
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python int it sees; the check batch of
        # export_model is what tells whether the graph took any shape as fixed.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "feats": {0: "batch", 2: "frames"},
                "feat_lens": {0: "batch"},
                "log_probs": {0: "out_frames", 1: "batch"},
                "out_lens": {0: "batch"},
            },
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
            onnx.save(proto, src)
            # The quantizer logs a line for every tensor it leaves in float (the
            # lengths, the masks): noise for a user, so the root logger is held
            # above warnings meanwhile.
            with warnings.catch_warnings(), _quiet_logging():
                warnings.simplefilter("ignore")
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            proto = onnx.load(dst)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta
    proto.doc_string = (
        "asr DeepSpeech2 acoustic model: feats (B, F, T) float32 normalized "
        "features, feat_lens (B,) int64 -> log_probs (T', B, V) float32, out_lens "
        f"(B,) int64. The metadata entry '{METADATA_KEY}' describes the frontend, "
        "vocabulary, sample rate and model."
    )
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _onnx_runner(data: bytes) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.onnx")
        path.write_bytes(data)
        session = onnx_session(path)

    def run(feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        lp, n = session.run(
            list(OUTPUTS), {"feats": feats.numpy(), "feat_lens": lens.numpy()}
        )
        return torch.from_numpy(np.asarray(lp)), torch.from_numpy(np.asarray(n))

    return run


def _torchscript_bytes(
    model: DeepSpeech2, example: tuple[Tensor, Tensor], meta: str
) -> tuple[bytes, Any]:
    """The model traced to TorchScript: the bytes, and the saved module loaded
    back (to check).

    Traced, not scripted: the padded form has no data-dependent control flow, and
    tracing keeps the model's Python (dataclass configs, optional layers) out of
    TorchScript's type system.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: meta})
    loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location="cpu")
    loaded.eval()

    def run(feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        with torch.inference_mode():
            return loaded(feats, lens)

    return buffer.getvalue(), run


# -- streaming -------------------------------------------------------------------------


def _export_streaming(rec: Recognizer, output: Path, t0: float) -> Exported:
    """One step of the streaming model as ONNX (see :mod:`asr.export_stream`),
    checked, stepped in uneven chunks, against the offline model before writing."""
    import onnx

    from asr.export_stream import StreamStep, initial_state, state_names

    try:
        step = StreamStep(rec.model).eval()
    except ValueError as err:
        raise ExportError(f"{output}: cannot stream this model: {err}") from None
    names = state_names(rec.model)
    state = initial_state(rec.model)
    example = (torch.randn(rec.model.config.n_features, 9), torch.tensor(False))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            (*example, *state),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["feats", "final", *[f"{n}_in" for n in names]],
            output_names=["log_probs", *[f"{n}_out" for n in names]],
            dynamic_axes={"feats": {1: "frames"}, "log_probs": {0: "out_frames"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(
        {
            "description": rec.description,
            "frontend_state": state_to_json(rec.frontend.state_dict()),
            "streaming": {
                "inputs": ["feats", "final"],
                "state": names,
                "state_shapes": [list(t.shape) for t in state],
                "frame_stride": rec.model.frame_stride(),
            },
            "torch": torch.__version__,
        }
    )
    proto.doc_string = (
        "asr streaming step: feats (F, n) normalized feature frames, final (bool), "
        "the previous step's *_out state as *_in (zeros at the start) -> log_probs "
        "(m, V) of the frames now complete, and the state."
    )
    data = proto.SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "s.onnx").write_bytes(data)
        session = onnx_session(Path(tmp, "s.onnx"))
    feats = torch.randn(rec.model.config.n_features, 131, generator=_gen(2))
    with torch.inference_mode():
        ref = rec.model(feats[None], torch.tensor([131]))[0][:, 0]
    got = torch.from_numpy(
        np.concatenate(stream_onnx(session, names, state, feats, [1, 5, 17, 40]))
    )
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    if not diff <= TOLERANCE:
        raise ExportError(
            f"{output}: the streaming graph's log-probs differ from the checkpoint's "
            f"by {diff:.3g} (more than {TOLERANCE:g}); nothing was written"
        )
    atomic_write_bytes(output, data)
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    return Exported(
        output, "onnx-streaming", False, len(data), diff, agree,
        time.perf_counter() - t0,
    )  # fmt: skip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stream_onnx(
    session: Any,
    names: list[str],
    state: list[Tensor],
    feats: Tensor,
    chunks: list[int],
) -> list[np.ndarray]:
    """Step a streaming graph over ``feats`` ``(F, T)`` in chunks of the given
    sizes (repeated), the last step final: each step's ``(m, V)`` log-probs."""
    values = [t.numpy() for t in state]
    out, start, k = [], 0, 0
    T = feats.shape[1]
    while True:
        n = chunks[k % len(chunks)]
        part = feats[:, start : start + n].numpy()
        start, k = start + n, k + 1
        feed = {"feats": np.ascontiguousarray(part), "final": np.array(start >= T)}
        feed.update({f"{n}_in": v for n, v in zip(names, values, strict=True)})
        lp, *values = session.run(None, feed)
        out.append(lp)
        if start >= T:
            return out
