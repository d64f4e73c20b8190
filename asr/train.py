"""``asr train``: LightningCLI over :class:`ASRTask` and :class:`ASRDataModule`.

Every YAML key is a constructor argument (``model:``, ``data:``, ``trainer:``). After
fitting, the best checkpoint (lowest validation WER) is exported as the slim
``model.ckpt`` beside the logs, and the training curves are drawn to
``training_curves.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from asr.atomic import atomic_save, atomic_write_text
from asr.configs import expand_configs
from asr.datamodule import ASRDataModule
from asr.inference import save_model
from asr.plots import plot_training_curves
from asr.probe import MemoryProbe
from asr.task import ASRTask

__all__ = [
    "LastCheckpoint",
    "MetricsWriter",
    "ProgressLog",
    "check_resume_checkpoint",
    "check_resume_matches",
    "fallback_precision",
    "run_training",
]

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` at the end of every epoch (and after every validation
    within an epoch), atomically.

    Lightning's ModelCheckpoint refreshes its "last" only when it also saved a
    top-k checkpoint, so an epoch that did not improve would be lost to a crash. This
    writes it through :func:`asr.atomic.atomic_save`: a kill at any moment leaves
    either the old or the new checkpoint, never a torn file. A failed write (a full
    disk) removes the temporary file, keeps the previous ``last.ckpt`` and stops
    training with a :class:`asr.atomic.WriteError` that names the file and the cause.

    It runs after every ModelCheckpoint, so the state it saves knows the best
    checkpoint the epoch just wrote: a run resumed from it compares the coming
    epochs with the true best (one epoch stale, it would take the deleted previous
    best for the best and leave this one behind).

    Args:
        dirpath: where to write; default ``<log dir>/checkpoints``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.metrics_rows: int | None = None

    def state_dict(self) -> dict:
        # how many rows metrics.csv held when the checkpoint was taken: what a run
        # resumed from it keeps (see MetricsWriter)
        return {"metrics_rows": self.metrics_rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.metrics_rows = state_dict.get("metrics_rows")

    def _path(self, trainer: L.Trainer) -> Path:
        base = self.dirpath or os.path.join(
            trainer.log_dir or trainer.default_root_dir, "checkpoints"
        )
        return Path(base) / self.filename

    def setup(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str
    ) -> None:
        # Lightning runs checkpoint callbacks last, in the configured order: move
        # this one behind the others whatever that order was.
        callbacks = trainer.callbacks
        if callbacks and callbacks[-1] is not self and self in callbacks:
            callbacks.remove(self)
            callbacks.append(self)

    def on_train_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        self._save(trainer)

    def on_validation_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        # a validation in the middle of an epoch; the one that ends it is
        # followed by on_train_epoch_end
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if trainer.fit_loop.epoch_loop._num_ready_batches_reached():
            return
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = self._path(trainer)
        rank0 = trainer.is_global_zero
        # The metrics logged so far go to the disk first: a run resumed from this
        # checkpoint keeps them (see MetricsWriter) and logs only what follows.
        for logger in trainer.loggers:
            logger.save()
        self.metrics_rows = _csv_rows(trainer) if rank0 else None
        # Every rank builds the state (strategies may gather it); rank 0 writes it
        # through asr.atomic. The full state (optimizer, loops, callbacks), for
        # exact resumption. (Trainer.save_checkpoint would write it in place.)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        if rank0:
            # a run killed while writing left its temporary file (asr.atomic names
            # them .NAME.PID.RANDOM.tmp); nobody else writes this file
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            atomic_save(checkpoint, path)
        trainer.strategy.barrier("last_checkpoint")


class MetricsHistory(L.Callback):
    """Starts the :class:`MetricsWriter` of the run's CSV loggers at the start of
    fit, keeping the history up to the checkpoint the run resumes from.

    Not earlier: only then has Lightning resolved ``--ckpt_path`` (an alias such as
    ``last`` names a file only once the checkpoint callbacks know their directory),
    and nothing has been logged yet (the hyper-parameters come just after
    ``on_fit_start``). ``ckpt_path`` is the configured file, for a strategy that
    resolves it only later (FSDP, DeepSpeed).
    """

    def __init__(self, ckpt_path: str | os.PathLike | None = None) -> None:
        self.ckpt_path = ckpt_path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ckpt = trainer.ckpt_path or self.ckpt_path
        end = metrics_history_end(ckpt) if ckpt is not None else None
        for logger in trainer.loggers:
            if isinstance(logger._experiment, MetricsWriter):
                logger._experiment.start(end)


class ProgressLog(L.Callback):
    """Lines in the log for a run without a terminal (nohup, CI, a batch system),
    where Lightning's progress bar is off: every ``every_seconds`` the epoch's step,
    the loss, the speed in multiples of real time and the time to the epoch's end;
    after every validation its loss, WER and CER (also with the bar); at the end, the
    run's wall time and overall speed, validation included. Rank 0 only.
    """

    def __init__(self, every_seconds: float = 60.0) -> None:
        self.every_seconds = every_seconds
        self._start = self._last = 0.0
        self._audio = 0.0
        self._first: int | None = None  # the epoch's first batch here (resumed: later)
        self._fit_start = 0.0
        self._fit_audio = 0.0  # seconds of training audio, all ranks, this process
        self._epochs = 0  # training epochs ended in this process

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.monotonic()
        self._fit_audio = 0.0
        self._epochs = 0

    def on_train_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        self._epochs += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self._fit_audio:
            return
        wall = time.monotonic() - self._fit_start
        minutes, seconds = divmod(round(wall), 60)
        log.info(
            "training: %d epoch%s in %d min %02d s, %.1f h of audio, %.0fx real time "
            "(validation included)",
            self._epochs,
            "" if self._epochs == 1 else "s",
            minutes,
            seconds,
            self._fit_audio / 3600,
            self._fit_audio / wall,
        )

    def _epoch(self, trainer: L.Trainer) -> str:
        # max_epochs is -1 when a step budget alone ends training
        total = f"/{trainer.max_epochs}" if (trainer.max_epochs or 0) > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{total}"

    def on_train_epoch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        self._start = self._last = time.monotonic()
        self._audio = 0.0
        self._first = None

    def on_train_batch_end(  # noqa: PLR0913 (Lightning's signature)
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        if self._first is None:
            self._first = batch_idx
            if not self._start:
                self._start = self._last = time.monotonic()
        lens = getattr(batch, "wave_lens", None)
        rate = getattr(pl_module.hparams, "sample_rate", None)
        if lens is not None and rate:
            seconds = float(lens.sum()) / rate * trainer.world_size
            self._audio += seconds
            self._fit_audio += seconds
        now = time.monotonic()
        if (
            trainer.progress_bar_callback is not None
            or not trainer.is_global_zero
            or now - self._last < self.every_seconds
        ):
            return
        self._last = now
        done, total = batch_idx + 1, trainer.num_training_batches
        elapsed = now - self._start
        of_total = f"/{total:,}" if isinstance(total, int) and total > 0 else ""
        parts = [f"step {done:,}{of_total}"]
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.3f}")
        if self._audio and elapsed > 0:
            parts.append(f"{self._audio / elapsed:.0f}x real time")
        if isinstance(total, int) and total > done:
            left = elapsed / (batch_idx + 1 - self._first) * (total - done)
            parts.append(f"epoch ends in {_duration(left)}")
        log.info("%s: %s", self._epoch(trainer), ", ".join(parts))

    def on_validation_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [
            f"{label} {float(metrics[key]) * scale:.{digits}f}{unit}"
            for key, label, scale, digits, unit in (
                ("val_loss", "loss", 1, 3, ""),
                ("val_wer", "WER", 100, 1, "%"),
                ("val_cer", "CER", 100, 1, "%"),
            )
            if key in metrics
        ]
        if parts:
            log.info("%s: validation %s", self._epoch(trainer), ", ".join(parts))
        # further validation sets (val_wer/dev-other ...): one line each
        others = sorted(
            {k.split("/", 1)[1] for k in metrics if k.startswith("val_wer/")}
        )
        for name in others:
            wer, cer = metrics[f"val_wer/{name}"], metrics.get(f"val_cer/{name}")
            extra = "" if cer is None else f", CER {100 * float(cer):.1f}%"
            log.info(
                "%s: validation on %s: WER %.1f%%%s",
                self._epoch(trainer),
                name,
                100 * float(wer),
                extra,
            )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fallback_precision(
    precision: str, cuda: bool, bf16_supported: bool
) -> tuple[str, str | None]:
    """The precision to train in, and why it is not the one asked for (or None).

    ``bf16-mixed`` on a CUDA GPU without bfloat16 (before Ampere: V100, T4) becomes
    ``16-mixed``, which Lightning pairs with a gradient scaler: fp16 without a
    scaler would lose the small gradients of the recurrent layers to underflow.
    """
    if cuda and precision.startswith("bf16") and not bf16_supported:
        return "16-mixed", (
            f"precision {precision}: this GPU has no bfloat16 "
            f"({torch.cuda.get_device_name() if torch.cuda.is_available() else 'cuda'}"
            "); training in 16-mixed with a gradient scaler instead"
        )
    return precision, None


class _TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse)
        parser.add_argument(
            "--export",
            default=None,
            help="where to write the slim model (default: <log dir>/model.ckpt)",
        )
        parser.link_arguments("data.sample_rate", "model.sample_rate")

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (jsonargparse)
        # Lightning's own version warns whenever sys.argv holds arguments besides
        # `args` -- always so under `asr train`, which passes them on explicitly.
        self.config = parser.parse_args(args)
        # Lightning reads --ckpt_path right after parsing (its hyper-parameters
        # override the model's): check the file first, for one clear error.
        ckpt = self.config.get("fit", self.config).get("ckpt_path")
        if ckpt and str(ckpt) not in _LIGHTNING_CKPT_ALIASES:
            check_resume_checkpoint(ckpt)
        if ckpt:  # the checkpoint directory holds the run's checkpoints, of course
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty"
            )

    def before_instantiate_classes(self) -> None:
        trainer = self.config.get("fit", self.config).get("trainer")
        if trainer is None:
            return
        cuda = torch.cuda.is_available() and str(trainer.get("accelerator")) in (
            "gpu",
            "cuda",
            "auto",
        )
        precision, why = fallback_precision(
            str(trainer.get("precision")),
            cuda,
            cuda and torch.cuda.is_bf16_supported(),
        )
        if why:
            log.warning("%s", why)
            trainer["precision"] = precision

    def before_fit(self) -> None:
        ckpt = self.config.get("fit", self.config).get("ckpt_path")
        if not ckpt or str(ckpt) in _LIGHTNING_CKPT_ALIASES:
            ckpt = None
        else:
            check_resume_matches(ckpt, self.model)
        install_metrics_writer(self.trainer)
        callbacks = self.trainer.callbacks
        if not any(isinstance(c, MetricsHistory) for c in callbacks):
            callbacks.append(MetricsHistory(ckpt))
        if not any(isinstance(c, ProgressLog) for c in callbacks):
            callbacks.append(ProgressLog())
        if not any(isinstance(c, MemoryProbe) for c in callbacks):
            callbacks.append(MemoryProbe())  # on CUDA: the largest batch first

    def after_fit(self) -> None:
        trainer, task = self.trainer, self.model
        # trainer.log_dir broadcasts from rank 0 under DDP: a collective, so every
        # rank must ask for it before the others leave (else rank 0 waits on a
        # closed connection).
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.global_rank != 0:
            return
        best = next(
            (
                c.best_model_path
                for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint)
            ),
            "",
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


# ckpt_path values Lightning resolves itself rather than as a file name
_LIGHTNING_CKPT_ALIASES = frozenset({"last", "best", "hpc", "registry"})

_RESUME_KEYS = ("state_dict", "loops", "optimizer_states")


def check_resume_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError`, naming ``path``, unless it is a full Lightning
    checkpoint that training can resume from.

    Lightning would otherwise fail deep inside ``fit`` with a traceback: an unpickling
    error for a damaged or hostile file, a ``KeyError`` for the slim exported
    ``model.ckpt``. The file is read with torch's weights-only unpickler, so a hostile
    one runs no code here either (Lightning reads it the same way again), and
    memory-mapped: only its small pickled structure is read, not the tensors.
    """
    from asr.inference import CheckpointError

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if not zipfile.is_zipfile(p):  # what torch.save writes; a cut file is not one
        raise CheckpointError(
            f"{p}: not a loadable training checkpoint (not a torch.save archive)"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 -- any failure means "cannot resume"
        reason = _load_failure_reason(err)
        raise CheckpointError(
            f"{p}: not a loadable training checkpoint "
            f"({type(err).__name__}{': ' + reason if reason else ''})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: not a training checkpoint (no state dictionary)")
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing:
        if "asr" in state and "model" in state:
            raise CheckpointError(
                f"{p}: an exported model (weights only), not a training checkpoint; "
                "resume from the run's logs/checkpoints/last.ckpt"
            )
        raise CheckpointError(
            f"{p}: not a training checkpoint (no {', '.join(missing)})"
        )
    if not isinstance(state.get("asr"), dict):
        raise CheckpointError(
            f"{p}: a Lightning checkpoint of another program (no asr description); "
            "asr train resumes its own runs' last.ckpt"
        )


def check_resume_matches(path: str | os.PathLike, task: ASRTask) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint at ``path`` was made for
    the model ``task`` builds: the same description (frontend, model, vocabulary)
    and the same tensors, so that resuming cannot fail inside Lightning.

    The differing settings are named, e.g. ``model.hidden_size: 256 in the
    checkpoint, 320 here``.
    """
    from asr.inference import CheckpointError

    p = Path(path)
    state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    theirs, ours = state["asr"], task.describe()
    differ = []
    for section in ("frontend", "model", "tokenizer"):
        a, b = theirs.get(section) or {}, ours.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                differ.append(
                    f"{section}.{key}: {a.get(key)!r} in the checkpoint, "
                    f"{b.get(key)!r} here"
                )
    if differ:
        shown = "; ".join(differ[:4]) + ("; ..." if len(differ) > 4 else "")
        raise CheckpointError(
            f"{p}: made for another model than this configuration ({shown})"
        )
    weights = state.get("state_dict") or {}
    expected = task.state_dict()
    for name, tensor in expected.items():
        got = weights.get(name)
        if got is None or tuple(got.shape) != tuple(tensor.shape):
            shape = "missing" if got is None else tuple(got.shape)
            raise CheckpointError(
                f"{p}: cannot resume: {name} is {shape} in the checkpoint, "
                f"{tuple(tensor.shape)} here"
            )


def _csv_rows(trainer: L.Trainer) -> int | None:
    """The rows written to the first CSV logger's metrics.csv, if it writes
    through a :class:`MetricsWriter` (as under ``asr train``); else None."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            writer = logger._experiment
            return writer.rows if isinstance(writer, MetricsWriter) else None
    return None


class HistoryEnd(NamedTuple):
    """Where the metrics history of a run resumed from a checkpoint ends.

    ``rows``: how many rows metrics.csv held when :class:`LastCheckpoint` took the
    checkpoint (None for another checkpoint). ``step``: the step the resumed run
    logs first; rows logged with an earlier step belong to the history too (the
    epoch-end metrics Lightning logs just after an end-of-epoch checkpoint, with
    the epoch's last step, which the resumed run does not log again).
    """

    rows: int | None
    step: int


def metrics_history_end(path: str | os.PathLike) -> HistoryEnd | None:
    """:class:`HistoryEnd` of training checkpoint ``path``, or None if unknown."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    try:
        loop = state["loops"]["fit_loop"]["epoch_loop.state_dict"]
        step = int(loop["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        return None
    rows = None
    for key, value in (state.get("callbacks") or {}).items():
        if key.startswith("LastCheckpoint") and isinstance(value, dict):
            if isinstance(value.get("metrics_rows"), int):
                rows = value["metrics_rows"]
    return HistoryEnd(rows, step)


class MetricsWriter(ExperimentWriter):
    """Lightning's CSV writer (``metrics.csv``), safe against a crash and resumable.

    Lightning's own rewrites the whole file in place whenever a new metric appears
    (a new column): a kill at that moment leaves an empty file, the run's whole
    history gone. This one writes the new file beside it and renames it over.

    For a run resumed in the log directory it left (:meth:`start` is given what
    :func:`metrics_history_end` says about the checkpoint), Lightning's deletes the
    ``metrics.csv`` it finds there, and with it the curves of every epoch before
    the checkpoint. This one keeps the rows logged up to the checkpoint and drops
    those logged after it (the resumed run trains, and logs, those steps again),
    then appends. A new run (no ``end``) starts a new file, as Lightning's does.

    With ``defer=True`` it leaves the file alone until :meth:`start` says where the
    run resumes from: Lightning creates the writer before it has resolved
    ``--ckpt_path`` (``last`` is a file only once the checkpoint callbacks are set
    up), but nothing is logged before ``on_fit_start``.
    """

    def __init__(self, log_dir: str, defer: bool = False) -> None:
        self.end: HistoryEnd | None = None
        self.kept = self.dropped = self.rows = 0
        self.started = not defer
        super().__init__(log_dir)
        self.rows = self.kept  # in the file, besides the header

    def start(self, end: HistoryEnd | None) -> None:
        """Keep the history up to ``end`` (None: start a new file), once."""
        if self.started:
            return
        self.end, self.started = end, True
        self._check_log_dir_exists()
        self.rows = self.kept

    def save(self) -> None:
        if not self.started:  # written to outside fit: a new run's file
            self.start(None)
        pending = len(self.metrics)
        super().save()
        self.rows += pending

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._write(fieldnames, rows)

    def _write(self, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, out.getvalue())

    def _check_log_dir_exists(self) -> None:  # called by __init__
        if not self.started:
            return
        path = Path(self.metrics_file_path)
        if self.end is None:
            # A new run. Lightning's warns whenever the directory holds anything --
            # here always: its config.yaml is written by now.
            if path.is_file():
                log.warning(
                    "%s: from an earlier run in this directory, replaced "
                    "(to continue that run, resume it with --ckpt_path)",
                    path,
                )
                path.unlink()
            return
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        n = 0 if self.end.rows is None else self.end.rows
        kept = rows[:n] + [r for r in rows[n:] if _row_step(r) < self.end.step]
        self.kept, self.dropped = len(kept), len(rows) - len(kept)
        if self.dropped:
            self._write(fields, kept)
        self.metrics_keys = fields  # the header Lightning's save() appends under
        log.info(
            "%s: resuming after its %d rows logged before the checkpoint%s",
            path,
            self.kept,
            f" (dropped {self.dropped} logged after it)" if self.dropped else "",
        )


def _row_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


def install_metrics_writer(trainer: L.Trainer) -> None:
    """Give the trainer's CSV loggers a :class:`MetricsWriter`, deferred: at the start
    of fit, :class:`MetricsHistory` tells it the checkpoint the run resumes from.
    Rank 0 only, before fit: Lightning would create its own writer during setup,
    one that deletes the history."""
    if rank_zero_only.rank != 0:
        return
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        if logger._experiment is not None:
            if not isinstance(logger._experiment, MetricsWriter):
                log.warning(
                    "%s: written before training started; a resumed run may lose "
                    "the metrics logged before its checkpoint",
                    logger.log_dir,
                )
            continue
        os.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = MetricsWriter(logger.log_dir, defer=True)


def _load_failure_reason(err: Exception) -> str:
    """The informative line of a ``torch.load`` failure: for a refused global, the
    weights-only unpickler's own reason (not torch's advice to load unsafely)."""
    text = str(err).strip()
    marker = "WeightsUnpickler error: "
    if marker in text:
        reason = text.split(marker, 1)[1].splitlines()[0]
        return "refused by the weights-only unpickler: " + reason.split(" Please")[0]
    return text.splitlines()[0] if text else ""


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it.

    Every training step allocates and frees the same large activation buffers (the
    convolution outputs are megabytes each). glibc hands blocks above its mmap
    threshold back to the kernel on free and trims the top of the heap, so the next
    step page-faults all of them in again: ~35,000 minor page faults per step of the
    demo model. Raising the mmap threshold to its maximum (32 MiB) and the trim
    threshold to 1 GiB makes steps reuse their memory (a few hundred faults): 3-4 %
    faster training on 2 cores (tools/bench_rnn.py). Returns whether it applied
    (glibc only; elsewhere, and on tcmalloc, which the ``asr`` command prefers, a
    no-op). Kept memory is also what makes glibc's heap grow with batches of
    changing shapes (asr/malloc.py).
    """
    import ctypes
    import ctypes.util

    from asr.malloc import allocator

    if not sys.platform.startswith("linux") or allocator() != "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(
        mallopt(m_mmap_threshold, 32 << 20)
    )


class _DropAdvert(logging.Filter):
    """Lightning's tip to install its cloud logger says nothing about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def configure_lightning_output() -> None:
    """Print each of Lightning's messages once, as ours are printed.

    ``lightning`` gives its logger a console handler of its own ("INFO: ...") and
    still propagates to the root logger, so once the root logger has a handler (the
    ``asr`` command sets one up) every message came out twice. With a root handler,
    Lightning's own is removed; without one (a library caller), it stays. Its
    warning that the model summary cannot size a bf16-mixed model (it sizes it in
    float32, which is what the checkpoint holds) is dropped too.
    """
    warnings.filterwarnings(
        "ignore", message=r"Precision .* is not supported by the model summary"
    )
    if logging.getLogger().handlers:
        light = logging.getLogger("lightning")
        for handler in list(light.handlers):
            if type(handler) is logging.StreamHandler:
                light.removeHandler(handler)
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvert) for f in logger.filters):
            logger.addFilter(_DropAdvert())


def run_training(argv: Sequence[str]) -> None:
    """``asr train [--config FILE] [--section.key value ...] [--ckpt_path LAST]``;
    a config that names its base (``# base: FILE``) is read over that base."""
    from asr.malloc import allocator

    kept = keep_freed_memory()
    if allocator() == "tcmalloc":
        log.info("memory allocator: tcmalloc")
    else:
        log.info(
            "memory allocator: glibc malloc%s (tcmalloc is faster and smaller: "
            "Debian's libtcmalloc-minimal4)",
            ", freed memory kept" if kept else "",
        )
    configure_lightning_output()
    _TrainCLI(
        ASRTask,
        ASRDataModule,
        args=["fit", *expand_configs(argv)],
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        # a progress bar on a terminal; in a log file, ProgressLog's lines
        trainer_defaults={"enable_progress_bar": sys.stderr.isatty()},
    )
