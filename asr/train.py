"""``asr train``: LightningCLI over :class:`ASRTask` and :class:`ASRDataModule`.

Every YAML key is a constructor argument (``model:``, ``data:``, ``trainer:``). After
fitting, the best checkpoint (lowest validation WER) is exported as the slim
``model.ckpt`` beside the logs, and the training curves are drawn to
``training_curves.png``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

from asr.datamodule import ASRDataModule
from asr.inference import save_model
from asr.task import ASRTask

__all__ = ["plot_training_curves", "run_training"]

log = logging.getLogger(__name__)


class _TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse)
        parser.add_argument(
            "--export",
            default=None,
            help="where to write the slim model (default: <log dir>/model.ckpt)",
        )
        parser.link_arguments("data.sample_rate", "model.sample_rate")

    def after_fit(self) -> None:
        trainer, task = self.trainer, self.model
        if trainer.global_rank != 0:
            return
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)
        best = (
            trainer.checkpoint_callback.best_model_path
            if trainer.checkpoint_callback
            else ""
        )
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)
            task.load_state_dict(state["state_dict"])
            log.info("best checkpoint: %s", best)
        export = (
            self.config.get("fit", self.config).get("export") or out_dir / "model.ckpt"
        )
        path = save_model(task, export)
        log.info("model written to %s", path)
        metrics = out_dir / "metrics.csv"
        if metrics.is_file():
            png = plot_training_curves(metrics, out_dir / "training_curves.png")
            log.info("training curves: %s", png)


def run_training(argv: Sequence[str]) -> None:
    """``asr train [--config FILE] [--section.key value ...] [--ckpt_path LAST]``."""
    _TrainCLI(
        ASRTask,
        ASRDataModule,
        args=["fit", *argv],
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def plot_training_curves(metrics_csv: Path, png: Path) -> Path:
    """Loss per step, validation loss and error rates per epoch, from CSVLogger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key in ("step", "epoch") or not value:
                    continue
                x = (
                    float(row["step"])
                    if key.endswith("_step") or key == "train_loss"
                    else float(row["epoch"])
                )
                series.setdefault(key, []).append((x, float(value)))
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "train_loss_step"):
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            ax_loss.plot(xs, ys, lw=0.8, label="train (per step)")
            break
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("CTC loss")
    ax_loss.set_yscale("log")
    if "val_loss" in series:
        ax2 = ax_loss.twiny()
        xs, ys = zip(*series["val_loss"], strict=True)
        ax2.plot(xs, ys, "o-", color="C1", label="validation (per epoch)")
        ax2.set_xlabel("epoch")
        ax2.legend(loc="upper right")
    ax_loss.legend(loc="upper left")
    for key, label in (("val_wer", "WER"), ("val_cer", "CER")):
        if key in series:
            xs, ys = zip(*series[key], strict=True)
            ax_err.plot(xs, [100 * y for y in ys], "o-", label=f"validation {label}")
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("%")
    ax_err.set_ylim(bottom=0)
    ax_err.grid(alpha=0.3)
    ax_err.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
