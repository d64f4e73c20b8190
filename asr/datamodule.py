"""LightningDataModule: manifests -> validated utterances -> bounded batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from asr.data import DurationBatchSampler, SpeechDataset, collate
from asr.manifest import Utterance, validate_manifest
from asr.text import CharTokenizer

__all__ = ["ASRDataModule", "InvalidDataError"]

log = logging.getLogger(__name__)


class InvalidDataError(ValueError):
    """A manifest holds lines or utterances that cannot be trained on, and skipping
    is off (or nothing usable is left)."""


class ASRDataModule(L.LightningDataModule):
    """Train / validation / test manifests, validated before training.

    Args:
        train_manifest, val_manifest, test_manifest: JSON Lines manifests;
            ``val_manifest`` may be a list (LibriSpeech's dev-clean and dev-other):
            each is scored on its own, the first one is ``val_wer`` (what the best
            checkpoint is chosen by), the others ``val_wer/<name>``.
        sample_rate: audio is resampled to this rate (the model's).
        max_batch_seconds: padded seconds of audio per batch (per device).
        max_batch_size: utterances per batch at most.
        num_workers: data-loading processes.
        speed_perturb: factors for training-time speed perturbation (empty: off).
        sortagrad: first epoch from the shortest batch to the longest (DS2 3.1).
        skip_invalid: leave out (and report, with file names and line numbers) the
            lines and utterances that cannot be trained on: malformed manifest lines,
            missing or unreadable audio, empty text, characters outside the
            vocabulary, audio too short for its transcript after the model's
            subsampling, utterances longer than ``max_duration``, duplicate ids.
            When False (the default) any of them stops training before it starts,
            with the full report (``asr validate MANIFEST --checkpoint ...`` prints
            the same report without training).
        check_audio: open every audio header during validation (slow on huge sets).
        max_duration: the longest utterance trained on, in seconds; default
            ``max_batch_seconds`` (a longer one could not fit a batch's budget).
            A longer one is a problem of the manifest (see ``skip_invalid``).
        max_utterance_seconds: deepspeech.pytorch's cap (15 s in its LibriSpeech
            recipe): training utterances longer than this are left out, counted
            in the log, not reported as problems; they are what needs the most
            memory (asr.probe). Validation and test sets are kept whole.
        seed: batch order and speed perturbation derive from it (and the epoch).
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: list[str] | str | None = None,
        test_manifest: str | None = None,
        sample_rate: int = 16000,
        max_batch_seconds: float = 120.0,
        max_batch_size: int = 64,
        num_workers: int = 1,
        speed_perturb: list[float] | None = None,
        sortagrad: bool = True,
        skip_invalid: bool = False,
        check_audio: bool = True,
        max_duration: float | None = None,
        max_utterance_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = CharTokenizer()
        self.output_frames: Callable[[float], int] | None = None
        self._sets: dict[str, list[Utterance]] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        trainer = getattr(self, "trainer", None)
        module = trainer.lightning_module if trainer is not None else None
        if module is not None and hasattr(module, "output_frames"):
            self.output_frames = module.output_frames
            self.tokenizer = module.tokenizer
        wanted = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            None: ["train", "val", "test"],
        }.get(stage, ["train", "val", "test"])
        for split in wanted:
            paths = getattr(hp, f"{split}_manifest")
            if paths is None or split in self._sets:
                continue
            if isinstance(paths, str):
                self._sets[split] = self._load(split, paths)
            else:  # several validation sets, each kept apart
                for i, path in enumerate(paths):
                    name = split if i == 0 else f"{split}/{self.set_name(path)}"
                    self._sets[name] = self._load(split, path)

    @property
    def train_utterances(self) -> list[Utterance]:
        """The training set's usable utterances (after :meth:`setup`)."""
        return self._sets.get("train", [])

    @property
    def val_names(self) -> list[str]:
        """The validation sets' metric prefixes: ``val``, then ``val/<name>``."""
        return [k for k in self._sets if k == "val" or k.startswith("val/")]

    @staticmethod
    def set_name(path: str) -> str:
        """A manifest's name in metrics: its file name without ``.jsonl``."""
        name = os.path.basename(str(path))
        return name[: -len(".jsonl")] if name.endswith(".jsonl") else name

    def _load(self, split: str, path: str) -> list[Utterance]:
        hp = self.hparams
        report = validate_manifest(
            path,
            self.tokenizer,
            output_frames=self.output_frames,
            check_audio=hp.check_audio,
            max_duration=hp.max_duration or hp.max_batch_seconds,
        )
        hours = sum(u.duration for u in report.kept) / 3600
        log.info(
            "%s: %s: %d utterances, %d kept (%.2f h)",
            split,
            path,
            report.total,
            len(report.kept),
            hours,
        )
        if not report.ok:
            message = f"{path}: {report.summary()}"
            if not hp.skip_invalid:
                raise InvalidDataError(
                    f"{message}\n`asr validate {path}` lists every problem with its "
                    "line; fix them, or set data.skip_invalid: true to train without "
                    "these utterances"
                )
            log.warning("%s\nleft out (data.skip_invalid is true)", message)
        kept = report.kept
        cap = hp.max_utterance_seconds
        if split == "train" and cap is not None:
            longer = [u for u in kept if u.duration > cap]
            if longer:
                kept = [u for u in kept if u.duration <= cap]
                log.info(
                    "%s: %d utterances longer than data.max_utterance_seconds (%g s) "
                    "left out (%.2f h)",
                    path,
                    len(longer),
                    cap,
                    sum(u.duration for u in longer) / 3600,
                )
        if not kept:
            raise InvalidDataError(f"{path}: no usable utterance in the {split} set")
        return kept

    def _loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        utts = self._sets[split]  # a set: "train", "val", "val/dev-other", "test"
        factors = hp.speed_perturb if train else None
        dataset = SpeechDataset(utts, self.tokenizer, hp.sample_rate, factors, hp.seed)
        world, rank = 1, 0
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            world, rank = trainer.world_size, trainer.global_rank
        sampler = DurationBatchSampler(
            [u.duration for u in utts],
            max_batch_seconds=hp.max_batch_seconds,
            max_batch_size=hp.max_batch_size,
            shuffle=train,
            sortagrad=hp.sortagrad,
            seed=hp.seed,
            num_replicas=world,
            rank=rank,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(name, train=False) for name in self.val_names]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
