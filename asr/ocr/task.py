"""Training a CRNN with CTC: the LightningModule and the LightningDataModule.

The same pieces as speech, where they fit: the CTC loss by name
(:func:`asr.ctc.resolve_ctc_loss`: ours or torch's), greedy decoding
(:func:`asr.decoding.greedy_decode`), the tokenizer (:class:`asr.text.CharTokenizer`
over the data set's alphabet) and the error counts (:func:`asr.metrics.char_errors`).

The data sets are small (a CAPTCHA is 3 kB at 32 x 96), so the data module decodes
every image once, in :meth:`OCRDataModule.setup`, and batches come from memory: on 2
CPU cores, decoding PNGs in every epoch would take time from the training steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from asr.ctc import resolve_ctc_loss
from asr.decoding import greedy_decode
from asr.metrics import ErrorCounts, char_errors
from asr.ocr.images import ImageError, read_image, read_manifest
from asr.ocr.model import CRNN, CRNNConfig, count_parameters
from asr.text import CharTokenizer, TextError

__all__ = [
    "CHECKPOINT_FORMAT",
    "OCRBatch",
    "OCRDataModule",
    "OCRTask",
    "collate",
    "make_tokenizer",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "asr-ocr-1"


def make_tokenizer(alphabet: str) -> CharTokenizer:
    """The blank (index 0), then the alphabet's characters in the order given."""
    return CharTokenizer(("<blank>", *alphabet))


class OCRBatch(NamedTuple):
    """Images padded to the batch's widest (padding 0), with their widths.

    ``images (B, 1, H, W)`` float in [0, 1], ink high; ``widths (B,)``; ``targets
    (B, S)`` label ids padded with 0; ``target_lens (B,)``; ``texts``: the B texts.
    """

    images: Tensor
    widths: Tensor
    targets: Tensor
    target_lens: Tensor
    texts: list[str]


def collate(items: Sequence[tuple[np.ndarray, list[int], str]]) -> OCRBatch:
    """``[(image (H, W_i) uint8, label ids, text), ...]`` -> :class:`OCRBatch`."""
    B = len(items)
    H = items[0][0].shape[0]
    W = max(img.shape[1] for img, _, _ in items)
    S = max(1, max(len(ids) for _, ids, _ in items))
    images = torch.zeros(B, 1, H, W, dtype=torch.uint8)
    targets = torch.zeros(B, S, dtype=torch.long)
    for i, (img, ids, _) in enumerate(items):
        images[i, 0, :, : img.shape[1]] = torch.from_numpy(img)
        targets[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return OCRBatch(
        images.float().div_(255),
        torch.tensor([img.shape[1] for img, _, _ in items]),
        targets,
        torch.tensor([len(ids) for _, ids, _ in items]),
        [text for _, _, text in items],
    )


class _Images(Dataset):
    def __init__(
        self, images: list[np.ndarray], ids: list[list[int]], texts: list[str]
    ):
        self.images, self.ids, self.texts = images, ids, texts

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[int], str]:
        return self.images[i], self.ids[i], self.texts[i]


class _EpochShuffle(Sampler[int]):
    """A permutation drawn from ``(seed, epoch)``: a resumed run sees the batches an
    uninterrupted one would have (Lightning calls ``set_epoch``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def load_images(
    manifest: str | Path, tokenizer: CharTokenizer, height: int, width: int | None
) -> _Images:
    """Every image of a manifest, read as the model sees it, with its label ids.

    Raises:
        ImageError: the manifest, an image or a text that cannot be used (the message
            names the file): training data are generated, so a bad one is a fault to
            fix, not to skip.
    """
    images, ids, texts = [], [], []
    for sample in read_manifest(manifest):
        images.append(read_image(sample.image_filepath, height, width))
        try:
            ids.append(tokenizer.encode(sample.text, normalize_text=False))
        except TextError as err:
            raise ImageError(f"{manifest}: {sample.image_filepath}: {err}") from None
        texts.append(sample.text)
    return _Images(images, ids, texts)


class OCRDataModule(L.LightningDataModule):
    """Training and validation images from OCR manifests (:func:`read_manifest`).

    Args:
        train_manifest: the training set's ``manifest.jsonl``.
        val_manifest: the validation set's.
        alphabet: the characters the texts use (the model's classes after the blank).
        height: image height in pixels, as the model reads it.
        width: a fixed width (CAPTCHAs), or None to keep each image's aspect ratio.
        batch_size: images per training step.
        val_batch_size: images per validation batch.
        seed: the training order's seed (a permutation per epoch).
    """

    def __init__(
        self,
        train_manifest: str,
        val_manifest: str,
        alphabet: str,
        height: int = 32,
        width: int | None = None,
        batch_size: int = 64,
        val_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = make_tokenizer(alphabet)
        self.train_set: _Images | None = None
        self.val_set: _Images | None = None

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and self.train_set is None:
            self.train_set = load_images(
                hp.train_manifest, self.tokenizer, hp.height, hp.width
            )
            log.info("%s: %d images", hp.train_manifest, len(self.train_set))
        if self.val_set is None:
            self.val_set = load_images(
                hp.val_manifest, self.tokenizer, hp.height, hp.width
            )
            log.info("%s: %d images", hp.val_manifest, len(self.val_set))

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup('fit') first"
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            sampler=_EpochShuffle(len(self.train_set), self.hparams.seed),
            collate_fn=collate,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() first"
        return DataLoader(
            self.val_set, batch_size=self.hparams.val_batch_size, collate_fn=collate
        )


class OCRTask(L.LightningModule):
    """Train a :class:`CRNN` with CTC.

    Args:
        alphabet: the characters (linked to ``data.alphabet``).
        height: image height (linked to ``data.height``).
        width: fixed image width or None (linked to ``data.width``).
        model: :class:`CRNNConfig` settings besides height and vocabulary.
        lr: the peak learning rate of the one-cycle schedule (Smith & Topin, 2017):
            a rise over ``pct_start`` of the steps, then annealing to near 0 at the
            last step; a step budget fixes the schedule's length.
        pct_start: the share of the steps spent rising.
        weight_decay: AdamW's decoupled weight decay.
        ctc_impl: ``"asr"`` (ours) or ``"torch"``: the CTC loss implementation.
        seed: dropout is drawn from ``(seed, step)`` (a resumed run takes the same
            steps).
    """

    def __init__(
        self,
        alphabet: str,
        height: int = 32,
        width: int | None = None,
        model: dict[str, Any] | None = None,
        lr: float = 3e-3,
        pct_start: float = 0.15,
        weight_decay: float = 1e-2,
        ctc_impl: str = "asr",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = make_tokenizer(alphabet)
        if width is not None and width < 4 * 6:
            raise ValueError(f"width {width} gives too few output frames for CTC")
        self.config = CRNNConfig.from_dict(
            {**(model or {}), "height": height, "vocab_size": len(self.tokenizer)}
        )
        self.model = CRNN(self.config)
        self.ctc_loss = resolve_ctc_loss(ctc_impl)
        self._refs: list[str] = []
        self._hyps: list[str] = []

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """``(images (B, 1, H, W), widths (B,))`` -> ``(log_probs (T, B, V),
        out_lens (B,))``."""
        return self.model(images, widths)

    def _loss(self, batch: OCRBatch) -> tuple[Tensor, Tensor, Tensor]:
        log_probs, out_lens = self.model(batch.images, batch.widths)
        loss = self.ctc_loss(
            log_probs,
            batch.targets,
            out_lens,
            batch.target_lens,
            blank=self.tokenizer.blank,
            reduction="mean",
            zero_infinity=True,
        )
        return loss, log_probs, out_lens

    def on_train_batch_start(self, batch: OCRBatch, batch_idx: int) -> None:
        torch.manual_seed(self.hparams.seed * 1_000_003 + self.global_step)

    def training_step(self, batch: OCRBatch, batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch.texts))
        return loss

    def validation_step(self, batch: OCRBatch, batch_idx: int) -> None:
        loss, log_probs, out_lens = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch.texts))
        for ids in greedy_decode(log_probs, out_lens, self.tokenizer.blank):
            self._hyps.append(self.tokenizer.decode(ids))
        self._refs.extend(batch.texts)

    def on_validation_epoch_end(self) -> None:
        scores = score(self._refs, self._hyps)
        self._refs, self._hyps = [], []
        self.log("val_seq_error", 1 - scores["sequence_accuracy"], prog_bar=True)
        self.log("val_cer", scores["cer"], prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.parameters():
            (no_decay if p.dim() < 2 else decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=hp.lr,
        )
        total = max(2, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hp.lr, total_steps=total, pct_start=hp.pct_start
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_fit_start(self) -> None:
        self.print(f"CRNN: {count_parameters(self.model):,} parameters")

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild the model for inference, as plain data."""
        return {
            "format": CHECKPOINT_FORMAT,
            "tokenizer": self.tokenizer.to_dict(),
            "height": self.hparams.height,
            "width": self.hparams.width,
            "model": self.config.to_dict(),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["asr_ocr"] = self.describe()


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Whole-sequence accuracy and CER (with S/D/I) of hypotheses against references.

    Returns:
        ``{"images", "correct", "sequence_accuracy", "cer", "substitutions",
        "deletions", "insertions", "characters"}``; the rates are 0 for no images.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references, {len(hypotheses)} hypotheses")
    chars = ErrorCounts()
    correct = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        chars += char_errors(ref, hyp)
        correct += ref == hyp
    n = len(references)
    return {
        "images": n,
        "correct": correct,
        "sequence_accuracy": correct / n if n else 0.0,
        "cer": chars.rate if chars.reference_length else 0.0,
        "substitutions": chars.substitutions,
        "deletions": chars.deletions,
        "insertions": chars.insertions,
        "characters": chars.reference_length,
    }
