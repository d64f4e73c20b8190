"""Reading text from image files with a trained CRNN, and scoring it on a manifest.

A slim checkpoint (``asr ocr train``'s ``model.ckpt``) holds the model's settings,
the alphabet and the image geometry beside the weights; it is read with torch's
weights-only unpickler (a hostile file runs no code) and every field is checked.

One bad image in a batch -- not an image, empty, damaged, too large -- is reported
with its name and skipped; the others are still read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asr.decoding import greedy_decode
from asr.inference import CheckpointError
from asr.ocr.images import ImageError, read_image, read_manifest
from asr.ocr.model import CRNN, CRNNConfig
from asr.ocr.task import CHECKPOINT_FORMAT, collate, score
from asr.text import CharTokenizer, TextError

__all__ = ["OCRModel", "evaluate_ocr", "load_ocr_model", "recognize_images"]


@dataclass
class OCRModel:
    """A CRNN in eval mode with its tokenizer and image geometry."""

    model: nn.Module
    tokenizer: CharTokenizer
    height: int
    width: int | None
    device: torch.device

    @torch.inference_mode()
    def read(self, images: Sequence[np.ndarray]) -> list[str]:
        """Images as :func:`read_image` returns them -> their texts."""
        batch = collate([(img, [], "") for img in images])
        log_probs, out_lens = self.model(
            batch.images.to(self.device), batch.widths.to(self.device)
        )
        return [
            self.tokenizer.decode(ids)
            for ids in greedy_decode(log_probs, out_lens, self.tokenizer.blank)
        ]


def load_ocr_model(path: str | os.PathLike[str], device: str = "cpu") -> OCRModel:
    """Load ``asr ocr train``'s ``model.ckpt``.

    Raises:
        CheckpointError: not a readable file, not an OCR model, or a field out of
            range (the message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any failure means "not loadable"
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{p}: not a loadable checkpoint ({type(err).__name__}: {first[:200]})"
        ) from None
    desc = state.get("asr_ocr") if isinstance(state, dict) else None
    if not isinstance(desc, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(
            f"{p}: not an OCR model (asr ocr train's model.ckpt); a speech model "
            "goes to asr transcribe"
            if isinstance(state, dict) and "asr" in state
            else f"{p}: not an OCR model (asr ocr train's model.ckpt)"
        )
    if desc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{p}: OCR checkpoint format {desc.get('format')!r}; this version reads "
            f"{CHECKPOINT_FORMAT!r}"
        )
    try:
        tokenizer = CharTokenizer.from_dict(desc["tokenizer"])
        height, width = desc["height"], desc["width"]
        if not isinstance(height, int) or not 16 <= height <= 256:
            raise ValueError(f"height {height!r}")
        if width is not None and (
            not isinstance(width, int) or not 24 <= width <= 4096
        ):
            raise ValueError(f"width {width!r}")
        config = CRNNConfig.from_dict(desc["model"])
        if config.height != height or config.vocab_size != len(tokenizer):
            raise ValueError("the model's height or classes disagree with the data's")
        if config.hidden_size > 4096 or max(config.channels) > 4096:
            raise ValueError(f"implausible sizes {config}")
        model = CRNN(config)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, TextError) as err:
        raise CheckpointError(f"{p}: damaged OCR checkpoint ({err})") from None
    dev = torch.device(device)
    return OCRModel(model.eval().to(dev), tokenizer, height, width, dev)


def recognize_images(
    paths: Sequence[str | os.PathLike[str]],
    model: OCRModel,
    batch_size: int = 64,
) -> Iterator[tuple[Path, str | ImageError]]:
    """``(path, text)`` for each image in the order given, or ``(path, error)`` for
    one that cannot be read (:class:`ImageError`, naming it)."""
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[tuple[Path, str]]:
        texts = model.read([img for _, img in pending])
        yield from zip([p for p, _ in pending], texts, strict=True)
        pending.clear()

    for raw in paths:
        path = Path(raw)
        try:
            image = read_image(path, model.height, model.width)
        except ImageError as err:
            yield from flush() if pending else ()
            yield path, err
            continue
        pending.append((path, image))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


def evaluate_ocr(
    manifest: str | os.PathLike[str],
    model: OCRModel,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Sequence accuracy and CER of ``model`` on an OCR manifest.

    An unreadable image is listed under ``failed`` and scored as read as nothing
    (all its characters deleted), so that it cannot improve the score.

    Returns:
        :func:`asr.ocr.task.score`'s keys, plus ``failed`` (``[{"image", "error"}]``),
        ``seconds`` (wall time) and ``errors`` (up to 20 ``{"image", "reference",
        "hypothesis"}`` misread images).
    """
    start = time.perf_counter()
    samples = read_manifest(manifest)
    refs, hyps, failed, wrong = [], [], [], []
    results = recognize_images([s.image_filepath for s in samples], model, batch_size)
    for sample, (path, out) in zip(samples, results, strict=True):
        refs.append(sample.text)
        if isinstance(out, ImageError):
            failed.append({"image": str(path), "error": str(out)})
            hyps.append("")
        else:
            hyps.append(out)
            if out != sample.text and len(wrong) < 20:
                wrong.append(
                    {"image": str(path), "reference": sample.text, "hypothesis": out}
                )
    result = score(refs, hyps)
    result["failed"] = failed
    result["errors"] = wrong
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
