"""``asr ocr train``: LightningCLI over :class:`OCRTask` and :class:`OCRDataModule`,
with the speech trainer's machinery: ``last.ckpt`` written atomically
(:class:`asr.train.LastCheckpoint`), the crash-safe resumable ``metrics.csv``
(:class:`asr.train.MetricsWriter`), progress lines without a terminal, Lightning's
messages once, and the training curves (:func:`asr.plots.plot_training_curves`).

A command of its own rather than ``asr train --config conf/ocr/...``: ``asr train``
is bound to the speech task's classes and to what is checked around them (audio
manifests validated before the start, the memory probe's longest utterances, the
sample rate linked from data to model, the export of a speech checkpoint); the OCR
task shares the loop, not those.

The budget is a number of optimizer steps (``trainer.max_steps``), which also sets
the length of the one-cycle schedule, so a run's result does not depend on how busy
the machine is; ``trainer.max_time`` may cap the wall time on top.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from asr.atomic import atomic_save
from asr.configs import expand_configs
from asr.ocr.task import OCRDataModule, OCRTask
from asr.plots import plot_training_curves
from asr.train import (
    MetricsHistory,
    ProgressLog,
    check_resume_checkpoint,
    configure_lightning_output,
    install_metrics_writer,
)

__all__ = ["run_ocr_training", "save_ocr_model"]

log = logging.getLogger(__name__)


def save_ocr_model(task: OCRTask, path: str | Path) -> Path:
    """Write the slim inference checkpoint (description + weights), atomically."""
    path = Path(path)
    atomic_save({"asr_ocr": task.describe(), "model": task.model.state_dict()}, path)
    return path


class StepTimer(L.Callback):
    """Wall time of the training steps alone (validation excluded) and of the whole
    fit, logged at the end: what a step budget costs on this machine."""

    def __init__(self) -> None:
        self.step_seconds = 0.0
        self.steps = 0
        self._t = 0.0
        self._fit = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.step_seconds += time.perf_counter() - self._t
        self.steps += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wall = time.perf_counter() - self._fit
        log.info(
            "training: %d steps in %.1f s of steps (%.3f s/step), %.1f s wall in fit "
            "(validation included), torch threads %d",
            self.steps,
            self.step_seconds,
            self.step_seconds / max(1, self.steps),
            wall,
            torch.get_num_threads(),
        )


class _OCRCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse)
        parser.add_argument(
            "--export",
            default=None,
            help="where to write the slim model (default: <log dir>/model.ckpt)",
        )
        parser.add_argument(
            "--threads", type=int, default=0, help="torch threads (0: torch's default)"
        )
        # One definition of what the model reads, in data:.
        for key in ("alphabet", "height", "width"):
            parser.link_arguments(f"data.{key}", f"model.{key}")

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (jsonargparse)
        self.config = parser.parse_args(args)
        ckpt = self.config.get("fit", self.config).get("ckpt_path")
        if ckpt and str(ckpt) not in ("last", "best", "hpc", "registry"):
            check_resume_checkpoint_ocr(ckpt)
        threads = self.config.get("fit", self.config).get("threads")
        if threads:
            torch.set_num_threads(int(threads))

    def before_fit(self) -> None:
        install_metrics_writer(self.trainer)
        callbacks = self.trainer.callbacks
        ckpt = self.config.get("fit", self.config).get("ckpt_path")
        if not any(isinstance(c, MetricsHistory) for c in callbacks):
            callbacks.append(MetricsHistory(ckpt))
        if not any(isinstance(c, ProgressLog) for c in callbacks):
            callbacks.append(ProgressLog())
        if not any(isinstance(c, StepTimer) for c in callbacks):
            callbacks.append(StepTimer())

    def after_fit(self) -> None:
        trainer, task = self.trainer, self.model
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.global_rank != 0:
            return
        # The one-cycle schedule ends at a learning rate near 0: the last weights
        # are the ones to keep (no checkpoint selection on the validation set,
        # which then stays an honest estimate).
        export = (
            self.config.get("fit", self.config).get("export") or out_dir / "model.ckpt"
        )
        log.info("model written to %s", save_ocr_model(task, export))
        metrics = out_dir / "metrics.csv"
        if metrics.is_file():
            png = plot_training_curves(
                metrics,
                out_dir / "training_curves.png",
                rates=(("val_seq_error", "sequence error"), ("val_cer", "CER")),
            )
            log.info("training curves: %s", png)


def check_resume_checkpoint_ocr(path: str | Path) -> None:
    """:func:`asr.train.check_resume_checkpoint`'s checks of a full Lightning
    checkpoint, here for one the OCR trainer wrote."""
    from asr.inference import CheckpointError

    try:
        check_resume_checkpoint(path)
    except CheckpointError as err:
        # the speech check requires the speech description; ours has asr_ocr
        if "no asr description" not in str(err):
            raise
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state.get("asr_ocr"), dict):
        raise CheckpointError(
            f"{path}: not a training checkpoint of asr ocr train (no asr_ocr "
            "description)"
        )


def run_ocr_training(argv: Sequence[str]) -> None:
    """``asr ocr train --config conf/ocr/captcha.yaml [--section.key value ...]``."""
    configure_lightning_output()
    _OCRCLI(
        OCRTask,
        OCRDataModule,
        args=["fit", *expand_configs(argv)],
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={"enable_progress_bar": sys.stderr.isatty()},
    )
