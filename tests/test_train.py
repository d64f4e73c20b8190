"""`asr train` end to end on real (generated) speech: checkpoints, the exported model,
the curves, exact resumption, and `asr evaluate` on the result."""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from asr.cli import main
from asr.evaluate import evaluate_manifest
from asr.inference import CheckpointError, load_model
from asr.train import configure_lightning_output, run_training

ROOT = Path(__file__).resolve().parent.parent
# toy.yaml is a delta over demo.yaml (its first line): both, the base first.
TOY = ROOT / "conf" / "synthetic" / "toy.yaml"
TOY_CONFIG = ["--config", str(TOY.parent / "demo.yaml"), "--config", str(TOY)]


def train_args(manifests, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        *TOY_CONFIG,
        "--data.train_manifest",
        str(manifests["train"]),
        "--data.val_manifest",
        str(manifests["dev"]),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def train(manifests, out: Path, epochs: int, *extra: str) -> Path:
    run_training(train_args(manifests, out, epochs, *extra))
    return out / "logs"


@pytest.fixture(scope="module")
def trained(espeak_manifests, tmp_path_factory) -> Path:
    return train(espeak_manifests, tmp_path_factory.mktemp("run"), 2)


def test_training_leaves_checkpoints_model_and_curves(trained):
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert list((trained / "checkpoints").glob("best-*.ckpt"))
    assert (trained / "model.ckpt").is_file()
    assert (trained / "training_curves.png").stat().st_size > 5000
    metrics = (trained / "metrics.csv").read_text()
    for key in ("train_loss", "val_loss", "val_wer", "val_cer"):
        assert key in metrics


def test_progress_lines_without_a_terminal(espeak_manifests, tmp_path, caplog):
    """With the progress bar off (as it is by default without a terminal), the log
    says where the epoch is, how fast it goes and what each validation measured."""
    caplog.set_level(logging.INFO, logger="asr.train")
    extra = ["--trainer.callbacks+=asr.train.ProgressLog"]
    extra += ["--trainer.callbacks.every_seconds", "0"]  # a line per step
    train(espeak_manifests, tmp_path, 2, *extra)
    lines = [r.getMessage() for r in caplog.records if r.name == "asr.train"]
    steps = [m for m in lines if ": step " in m]
    first = re.match(r"epoch 1/2: step 1/(\d+), loss ", steps[0])
    assert first, steps
    assert "x real time, epoch ends in " in steps[0]
    n = int(first.group(1))  # batches per epoch: the same in both
    assert len(steps) == 2 * n, steps
    assert steps[-1].startswith(f"epoch 2/2: step {n}/{n}, loss "), steps
    vals = [m for m in lines if ": validation " in m]
    assert len(vals) == 2 and vals[1].startswith("epoch 2/2: validation loss "), vals
    assert "%, CER " in vals[1] and vals[1].endswith("%")
    # at the end, the whole run: its epochs, wall time, hours of audio and speed
    ends = [m for m in lines if m.startswith("training: ")]
    assert len(ends) == 1, lines
    pattern = r"training: 2 epochs in \d+ min \d\d s, \d+\.\d h of audio, "
    pattern += r"\d+x real time \(validation included\)"
    assert re.fullmatch(pattern, ends[0]), ends


def test_checkpoints_are_self_describing(trained):
    for path in (trained / "model.ckpt", trained / "checkpoints" / "last.ckpt"):
        rec = load_model(path)
        assert rec.sample_rate == 16000
        assert len(rec.tokenizer) == 29
        assert rec.description["frontend"]["kind"] == "logmel"
        waves = torch.zeros(2, 16000)
        texts = rec.transcribe_batch(waves, torch.tensor([16000, 8000]))
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("moment", ["first checkpoint", "mid-epoch step", "writing"])
def test_killed_run_resumes_to_the_same_weights(
    espeak_manifests, trained, tmp_path, moment
):
    """SIGKILL a training run in a subprocess -- as soon as the first last.ckpt
    exists (from outside, at whatever point the run has reached), right after an
    optimizer step in the middle of the second epoch, or while that epoch's
    last.ckpt is being written (half of it on the disk) -- then resume from
    last.ckpt (named, or as `--ckpt_path last`) and compare with `trained`, which
    was never interrupted: the same weights, bit for bit."""
    last = tmp_path / "logs" / "checkpoints" / "last.ckpt"
    args = train_args(espeak_manifests, tmp_path, 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    # every row on the disk as soon as it is logged, those after the checkpoint too
    args += ["--trainer.logger.init_args.flush_logs_every_n_steps", "1"]
    if moment != "first checkpoint":
        how = "step" if moment == "mid-epoch step" else "writing"
        args += ["--trainer.callbacks+=kill_probe.KillAt"]
        args += ["--trainer.callbacks.moment", how]
    proc = subprocess.Popen(
        [sys.executable, "-m", "asr", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    if moment == "first checkpoint":
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)["epoch"]
    assert killed_at < 1, "the run finished before it could be interrupted"
    if moment != "writing":  # (there the next epoch's best may have replaced it)
        # last.ckpt knows the best checkpoint its epoch wrote
        best = best_checkpoint_state(tmp_path / "logs")["best_model_path"]
        assert best and Path(best).is_file(), best
    if moment == "writing":  # the torn file is the temporary one, not last.ckpt
        (torn,) = last.parent.glob(".last.ckpt.*.tmp")
        assert 0 < torn.stat().st_size < last.stat().st_size
        load_model(last)
    # Resume from the file, or (once) by Lightning's alias, which it resolves to
    # last.ckpt only once fit has started.
    resume = "last" if moment == "mid-epoch step" else str(last)
    resumed = train(espeak_manifests, tmp_path, 2, "--ckpt_path", resume)
    if moment == "writing":  # the next write cleared the dead run's temporary file
        assert not list(last.parent.glob(".last.ckpt.*.tmp"))
    a = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # The metrics history survives the crash: the rows logged up to the checkpoint
    # are kept, those logged after it dropped (and logged again), so metrics.csv
    # is the uninterrupted run's. Killed as soon as the first last.ckpt appears,
    # the run may not have logged its epoch's seconds of audio yet (Lightning logs
    # epoch-end metrics after the checkpoint; the resumed run does not again).
    partial = moment == "first checkpoint"
    assert metrics_rows(resumed, partial) == metrics_rows(trained, partial)
    # and the same best checkpoint, the one exported
    a, b = best_checkpoint_state(trained), best_checkpoint_state(resumed)
    assert Path(a["best_model_path"]).name == Path(b["best_model_path"]).name
    assert a["best_model_score"] == b["best_model_score"]
    names = [
        sorted(p.name for p in (d / "checkpoints").glob("best-*"))
        for d in (trained, resumed)
    ]
    assert names[0] == names[1] and len(names[0]) == 1
    a, b = (
        torch.load(d / "model.ckpt", weights_only=True)["model"]
        for d in (trained, resumed)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def best_checkpoint_state(logs: Path) -> dict:
    """The ModelCheckpoint state saved in a run's last.ckpt."""
    callbacks = torch.load(logs / "checkpoints" / "last.ckpt", weights_only=True)[
        "callbacks"
    ]
    (state,) = (v for k, v in callbacks.items() if k.startswith("ModelCheckpoint"))
    return state


def metrics_rows(logs: Path, without_audio: bool = False) -> list[dict[str, str]]:
    """metrics.csv's rows, without the seconds of audio per epoch if asked."""
    with open(logs / "metrics.csv", newline="") as f:
        rows = [
            {k: v for k, v in row.items() if k != "batch_seconds" or not without_audio}
            for row in csv.DictReader(f)
        ]
    rows = [
        r for r in rows if any(v for k, v in r.items() if k not in ("step", "epoch"))
    ]
    assert any(r["val_wer"] for r in rows) and any(r["train_loss"] for r in rows)
    return rows


def test_evaluate_command(trained, espeak_manifests, capsys):
    code = main(
        [
            "evaluate",
            str(espeak_manifests["dev"]),
            "--checkpoint",
            str(trained / "model.ckpt"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("wer", "cer", "substitutions", "deletions", "insertions", "words"):
        assert key in result
    assert result["utterances"] == 6 and result["words"] == 29
    direct = evaluate_manifest(espeak_manifests["dev"], trained / "model.ckpt")
    assert direct["wer"] == result["wer"]
    errors = result["substitutions"] + result["deletions"] + result["insertions"]
    assert result["wer"] == pytest.approx(errors / result["words"])


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_checkpoints_that_run_code_or_are_not_ours_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"asr": _Exploit()}))
    with pytest.raises(CheckpointError, match="evil.ckpt: not a loadable"):
        load_model(evil)
    assert not (tmp_path / "PWNED").exists()
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.ckpt: not an asr checkpoint"):
        load_model(other)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint"):
        load_model(tmp_path / "missing.ckpt")


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "x.jsonl"), "--checkpoint", "nope.ckpt"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "nope.ckpt" in err


# -- numerical faults -------------------------------------------------------------


class _Fault(L.Callback):
    """Make training step ``at`` non-finite and record the state around it.

    ``how``: ``"nan_audio"`` puts NaN into one waveform of the batch (features, the
    loss and every gradient turn NaN; batch norm's running statistics too);
    ``"inf_loss"`` / ``"nan_loss"`` make the CTC loss infinite / NaN for that step.
    """

    def __init__(self, at: int, how: str) -> None:
        self.at, self.how = at, how
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self._ctc = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step != self.at:
            return
        self.before = {k: v.clone() for k, v in module.state_dict().items()}
        if self.how == "nan_audio":
            batch.waves[0, : batch.wave_lens[0] // 2] = float("nan")
        else:
            factor = float("inf") if self.how == "inf_loss" else float("nan")
            self._ctc = module.ctc_loss
            module.ctc_loss = lambda *a, **k: self._ctc(*a, **k) * factor

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step != self.at + 1:
            return
        if self._ctc is not None:
            module.ctc_loss = self._ctc
        self.after = {k: v.clone() for k, v in module.state_dict().items()}


def fit_steps(
    manifests,
    callback,
    steps: int = 5,
    precision: str = "32-true",
    batch_size=4,
    epochs: int | None = None,
    max_batch_seconds: float = 20,
):
    """Train the tiny model for ``steps`` steps, or ``epochs`` epochs if given."""
    from asr.datamodule import ASRDataModule
    from asr.task import ASRTask

    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny", frontend={"kind": "logmel", "n_mels": 40}, lr=3e-3
    )
    data = ASRDataModule(
        train_manifest=str(manifests["train"]),
        val_manifest=str(manifests["dev"]),
        max_batch_seconds=max_batch_seconds,
        max_batch_size=batch_size,
        num_workers=0,
    )
    trainer = L.Trainer(
        max_steps=-1 if epochs else steps,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        precision=precision,
        gradient_clip_val=5.0,  # clipping runs after the check: it must not hide it
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[callback],
    )
    trainer.fit(task, datamodule=data)
    return task, trainer


class _SeenIds(L.Callback):
    def __init__(self) -> None:
        self.epochs: dict[int, list[str]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).extend(batch.ids)


def test_every_epoch_trains_on_every_utterance(espeak_manifests):
    """Lightning fixes the epoch's length from the first len(): the batch sampler
    keeps it in every epoch, so no epoch stops short of its last batches."""
    from asr.manifest import read_manifest

    seen = _SeenIds()
    # 8 batches sorted; the old sampler made 9 in epochs 1 and 3
    fit_steps(espeak_manifests, seen, epochs=4, max_batch_seconds=4)
    ids = sorted(u.id for u in read_manifest(espeak_manifests["train"]))
    assert sorted(seen.epochs) == [0, 1, 2, 3]
    for epoch, got in seen.epochs.items():
        assert sorted(got) == ids, epoch


@pytest.mark.parametrize(
    "how,precision",
    [
        ("nan_audio", "32-true"),
        ("inf_loss", "32-true"),
        ("nan_loss", "32-true"),
        ("nan_audio", "bf16-mixed"),
    ],
)
def test_a_non_finite_step_is_skipped_and_training_goes_on(
    espeak_manifests, caplog, how, precision
):
    fault = _Fault(at=2, how=how)
    with caplog.at_level(logging.WARNING, logger="asr.task"):
        task, trainer = fit_steps(espeak_manifests, fault, precision=precision)
    assert trainer.global_step == 5
    # The faulty step left every weight and batch-norm statistic as it was ...
    assert fault.before and fault.after
    for name, value in fault.before.items():
        assert torch.equal(fault.after[name], value), name
    # ... and training went on from there, with finite weights.
    final = task.state_dict()
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert any(not torch.equal(final[k], fault.after[k]) for k in final)
    assert task.skipped_steps == 1
    assert float(trainer.callback_metrics["skipped_steps"]) == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if "non-finite" in r.message]
    assert warning.startswith("step 2: non-finite gradients (batch: ")
    assert "the step is skipped and the weights are unchanged" in warning


def test_an_infeasible_utterance_is_named_once_and_costs_nothing(
    espeak_manifests, caplog
):
    from asr.data import SpeechDataset, collate
    from asr.manifest import read_manifest
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 40})
    utts = read_manifest(espeak_manifests["train"])[:2]
    utts[1] = dataclasses.replace(utts[1], text="a" * 400, id="too-long-text")
    data = SpeechDataset(utts, task.tokenizer)
    batch = collate([data[i] for i in range(2)])
    with caplog.at_level(logging.WARNING, logger="asr.task"):
        for _ in range(2):
            loss, _, _ = task._loss(batch)
            assert torch.isfinite(loss)
            loss.backward()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("utterance too-long-text: ")
    assert "transcript needs 799" in warnings[0]  # 400 labels + 399 repeats
    assert all(
        torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None
    )


# -- failed writes ------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_torch_save(monkeypatch) -> None:
    """torch.save writes half of the checkpoint, then the disk is full."""
    real = torch.save

    def half(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(data[: len(data) // 2])
        else:
            f.write(data[: len(data) // 2])
        raise _enospc()

    monkeypatch.setattr(torch, "save", half)


def _half_disk_write(monkeypatch) -> None:
    """The disk fills up after half of the bytes of a file."""
    import asr.atomic

    def half(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))
        raise _enospc()

    monkeypatch.setattr(asr.atomic, "_write_all", half)


def assert_disk_full(error: BaseException, path: Path) -> None:
    message = str(error)
    assert message.startswith(f"{path}: cannot write: the disk is full"), message
    assert "previous version of it is unchanged" in message and "\n" not in message


@pytest.mark.slow  # trains a model for a few steps
@pytest.mark.parametrize("failure", ["torch.save", "disk write"])
def test_a_failed_last_ckpt_write_keeps_the_previous_one(
    tmp_path, monkeypatch, failure
):
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asr.atomic import WriteError
    from asr.train import LastCheckpoint

    callback = LastCheckpoint(dirpath=str(tmp_path))
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    model = BoringModel()
    trainer.fit(model)
    last = tmp_path / "last.ckpt"
    before = last.read_bytes()
    if failure == "torch.save":
        _half_torch_save(monkeypatch)
    else:  # half of the file reaches the disk, then ENOSPC
        _half_disk_write(monkeypatch)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a different checkpoint to write
    with pytest.raises(WriteError) as info:
        callback.on_train_epoch_end(trainer, model)
    assert_disk_full(info.value, last)
    assert last.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 2


@pytest.mark.slow  # trains a model for a few steps
@pytest.mark.parametrize("order", ["listed after", "listed before"])
def test_last_ckpt_knows_the_best_checkpoint_its_epoch_wrote(tmp_path, order):
    """last.ckpt is written after ModelCheckpoint has saved (and deleted) its best
    checkpoints, whatever the order the callbacks were given in: a run resumed from
    it knows which file is the best (a stale state names a deleted file)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from asr.train import LastCheckpoint

    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=1)
    last = LastCheckpoint()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[best, last] if order == "listed after" else [last, best],
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    state = best_checkpoint_state(tmp_path)
    assert Path(state["best_model_path"]).name == "epoch=1-step=4.ckpt"
    assert Path(state["best_model_path"]).is_file()


@pytest.mark.slow  # trains a model for a few steps
def test_metrics_csv_survives_a_crash_while_a_column_is_added(tmp_path, monkeypatch):
    """Lightning's CSV writer rewrites metrics.csv in place when a new metric
    appears; a crash in the middle left an empty file. Ours keeps the old one."""
    from asr.train import MetricsWriter

    writer = MetricsWriter(str(tmp_path))
    writer.log_metrics({"train_loss": 2.0}, step=0)
    writer.save()
    before = (tmp_path / "metrics.csv").read_text()
    writer.log_metrics({"train_loss": 1.5, "val_wer": 0.9}, step=1)

    def crash(self, rows):
        raise KeyboardInterrupt  # the process dies while the file is being written

    monkeypatch.setattr(csv.DictWriter, "writerows", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.save()
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.slow  # trains a model for a few steps
@pytest.mark.parametrize("rows", [2, None])
def test_a_resumed_run_keeps_the_metrics_logged_before_its_checkpoint(tmp_path, rows):
    """The checkpoint came after two rows (LastCheckpoint counts them; another
    checkpoint has only its step, 2); then the epoch's val_wer was logged with its
    last step, 1, then two steps of the next epoch, which the resumed run redoes."""
    from asr.train import HistoryEnd, MetricsWriter

    csv_text = "step,train_loss,val_wer\n0,3.0,\n1,2.0,\n1,,0.9\n2,1.5,\n3,1.2,\n"
    (tmp_path / "metrics.csv").write_text(csv_text)
    # created before Lightning knows the checkpoint (it may be `last`): hands off
    writer = MetricsWriter(str(tmp_path), defer=True)
    assert (tmp_path / "metrics.csv").read_text() == csv_text
    writer.start(HistoryEnd(rows, 2))  # at the start of fit
    assert (writer.kept, writer.dropped) == (3, 2)
    writer.log_metrics({"train_loss": 1.4}, step=2)
    writer.log_metrics({"train_loss": 1.1, "lr": 0.1}, step=3)  # a new column
    writer.save()
    with open(tmp_path / "metrics.csv", newline="") as f:
        got = [
            (r["step"], r["train_loss"], r["val_wer"], r["lr"])
            for r in csv.DictReader(f)
        ]
    assert got == [
        ("0", "3.0", "", ""),
        ("1", "2.0", "", ""),
        ("1", "", "0.9", ""),
        ("2", "1.4", "", ""),
        ("3", "1.1", "", "0.1"),
    ]
    (tmp_path / "config.yaml").write_text("")  # as LightningCLI leaves it
    writer = MetricsWriter(str(tmp_path), defer=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not Lightning's "directory not empty"
        writer.start(None)  # a new run in the same directory starts afresh
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize("failure", ["torch.save", "disk write"])
def test_a_failed_model_export_keeps_the_previous_model(tmp_path, monkeypatch, failure):
    from asr.atomic import WriteError
    from asr.inference import save_model
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 40})
    path = save_model(task, tmp_path / "model.ckpt")
    before = path.read_bytes()
    (_half_torch_save if failure == "torch.save" else _half_disk_write)(monkeypatch)
    with pytest.raises(WriteError) as info:
        save_model(task, path)
    assert_disk_full(info.value, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.ckpt"]
    monkeypatch.undo()
    assert load_model(path).sample_rate == 16000
    # The command line reports it in one line.
    from asr.cli import _user_errors

    assert isinstance(info.value, _user_errors())


# -- untrusted checkpoints ------------------------------------------------------------


def _asr_layouts() -> dict[str, dict]:
    """A slim and a Lightning checkpoint of a real task, to plant an exploit in."""
    from asr.task import ASRTask

    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 40})
    slim = {
        "asr": task.describe(),
        "frontend": task.frontend.state_dict(),
        "model": task.model.state_dict(),
    }
    lightning = {
        "epoch": 0,
        "global_step": 1,
        "state_dict": task.state_dict(),
        "asr": task.describe(),
        "optimizer_states": [],
    }
    return {"slim": slim, "lightning": lightning}


@pytest.mark.parametrize("layout", ["slim", "lightning"])
@pytest.mark.parametrize("where", ["top", "inside"])
def test_checkpoint_files_never_run_code(tmp_path, monkeypatch, layout, where):
    """torch.save'd (zip) checkpoints of both layouts with an object whose unpickling
    would run code, at the top level or deep inside: refused, nothing runs."""
    monkeypatch.chdir(tmp_path)
    state = _asr_layouts()[layout]
    if where == "top":
        state["callbacks"] = _Exploit()
    else:
        state["asr"]["frontend"] = {"kind": _Exploit()}
    evil = tmp_path / f"{layout}.ckpt"
    torch.save(state, evil)
    with pytest.raises(CheckpointError, match=f"{layout}.ckpt: not a loadable"):
        load_model(evil)
    assert not (tmp_path / "PWNED").exists()


def test_resuming_from_a_hostile_checkpoint_runs_no_code(
    espeak_manifests, tmp_path, monkeypatch
):
    """`asr train --ckpt_path` loads through Lightning, with torch's weights-only
    unpickler (Lightning passes weights_only=None: torch >= 2.6 defaults to True)."""
    monkeypatch.chdir(tmp_path)
    state = _asr_layouts()["lightning"]
    state["loops"] = _Exploit()
    evil = tmp_path / "last.ckpt"
    torch.save(state, evil)
    with pytest.raises(
        CheckpointError,
        match="last.ckpt: not a loadable training checkpoint "
        r"\(UnpicklingError: refused by the weights-only unpickler: Unsupported "
        "global: GLOBAL (builtins.)?exec",
    ):
        train(espeak_manifests, tmp_path / "run", 1, "--ckpt_path", str(evil))
    assert not (tmp_path / "PWNED").exists()
    # Lightning's own load is weights-only too, should the check ever be bypassed
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(evil, weights_only=None)
    assert not (tmp_path / "PWNED").exists()


def test_resuming_from_what_is_not_a_training_checkpoint_is_one_clear_error(
    espeak_manifests, trained, tmp_path, capsys, monkeypatch
):
    """`asr train --ckpt_path` names the file and the problem on one line, before
    any training starts, instead of Lightning's traceback from deep inside fit."""
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint\n")
    cut = tmp_path / "cut.ckpt"
    data = (trained / "checkpoints" / "last.ckpt").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.ckpt"  # another program's Lightning checkpoint
    torch.save(
        {
            "state_dict": {"layer.weight": torch.zeros(2, 2)},
            "loops": {},
            "optimizer_states": [],
            "hyper_parameters": {"lr": 0.1, "hidden": 32},
        },
        foreign,
    )
    cases = {
        foreign: "foreign.ckpt: a Lightning checkpoint of another program (no asr "
        "description); asr train resumes its own runs' last.ckpt",
        tmp_path / "missing.ckpt": "missing.ckpt: no such checkpoint file",
        junk: "junk.ckpt: not a loadable training checkpoint",
        cut: "cut.ckpt: not a loadable training checkpoint",
        trained / "model.ckpt": "model.ckpt: an exported model (weights only), not a "
        "training checkpoint; resume from the run's logs/checkpoints/last.ckpt",
    }
    for i, (path, message) in enumerate(cases.items()):
        out = tmp_path / f"run{i}"
        argv = train_args(espeak_manifests, out, 1, "--ckpt_path", str(path))
        # as from the `asr` script: Lightning's "args and sys.argv" warning is noise
        monkeypatch.setattr(sys, "argv", ["asr", "train", *argv])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["train", *argv]) == 1
        assert not [w for w in caught if "args parameter" in str(w.message)]
        err = capsys.readouterr().err
        assert f"asr train: error: {path.parent}/{message}" in err, err
        assert "Traceback" not in err
        assert not (out / "logs" / "checkpoints").exists()  # nothing trained


def test_a_batch_whose_files_all_fail_to_decode_is_skipped(
    espeak_manifests, tmp_path, caplog
):
    """A FLAC cut in half passes the manifest check (its header is intact) and fails
    only when decoded: with one utterance per batch its batch is empty, and training
    goes on past it, naming the file."""
    from asr.manifest import read_manifest, write_manifest

    good = read_manifest(espeak_manifests["train"])[:2]
    data = Path(good[0].audio_filepath).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    bad = dataclasses.replace(good[0], audio_filepath=str(cut), id="cut")
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [*good, bad])
    manifests = {"train": manifest, "dev": espeak_manifests["dev"]}
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        task, trainer = fit_steps(manifests, L.Callback(), steps=3, batch_size=1)
    assert trainer.global_step == 3 and task.skipped_steps == 0
    assert f"skipping unreadable audio {cut}: corrupt or truncated" in caplog.text
    # our warning names the file; Lightning's generic one about None is not added
    assert not [x for x in w if "returned `None`" in str(x.message)]


def test_frame_phone_labels_follow_the_frame_centres():
    from asr.task import frame_phone_labels

    # frames every 40 ms, centred on 0, 0.04, 0.08, ...
    phones = torch.tensor(
        [
            [[5.0, 0.05, 0.13], [7.0, 0.13, 0.19], [0.0, 0.0, 0.0]],
            [[9.0, 0.00, 0.30], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        ]
    )
    labels = frame_phone_labels(
        phones, torch.tensor([2, -1]), torch.tensor([7, 3]), 0.04
    )
    # before the first phone and after the last: silence (0); past the length: -100
    assert labels[0].tolist() == [0, 0, 5, 5, 7, 0, 0]
    # an utterance without phones is ignored entirely
    assert labels[1].tolist() == [-100] * 7


@pytest.mark.slow
def test_the_phone_head_learns_from_real_alignments_and_stays_out_of_the_model(
    tmp_path,
):
    """Frame phone targets from the generator's alignments train an auxiliary head
    on a middle recurrent layer; the exported model is the plain DeepSpeech2."""
    from asr.data import SpeechDataset, collate
    from asr.inference import save_model
    from asr.manifest import librispeech_manifest
    from asr.synthetic.corpus import generate_corpus
    from asr.task import ASRTask

    corpus = tmp_path / "corpus"
    generate_corpus(
        corpus,
        hours=12 / 3600,
        utts_per_speaker=2,
        dev_voices=1,
        test_voices=1,
        eval_fraction=0.1,
        max_words=8,
        progress=lambda msg: None,
    )
    utts = librispeech_manifest(corpus / "train")
    assert utts and all(u.phones_filepath for u in utts)
    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={"rnn_layers": 2, "hidden_size": 32},
        frontend={"kind": "logmel", "n_mels": 40},
        phone_loss_weight=1.0,
        phone_layer=0,
    )
    batch = collate([SpeechDataset(utts, task.tokenizer)[i] for i in range(len(utts))])
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2)
    task.train()
    phone_losses = []
    task.log = lambda name, value, **kw: (  # type: ignore[method-assign]
        phone_losses.append(float(value.detach()))
        if name == "train_phone_loss"
        else None
    )
    for _ in range(30):
        opt.zero_grad()
        loss, _, _ = task._loss(batch)
        loss.backward()
        assert task.phone_head.weight.grad.abs().sum() > 0
        opt.step()
    assert phone_losses[-1] < 0.7 * phone_losses[0], phone_losses
    # validation and inference do not need phones; the export has no phone head
    task.eval()
    loss, _, _ = task._loss(batch._replace(phones=None, phone_lens=None))
    assert torch.isfinite(loss)
    path = save_model(task, tmp_path / "model.ckpt")
    assert not any("phone" in k for k in load_model(path).model.state_dict())


def test_lightning_output_quieted():
    """The model summary's bf16 warning and Lightning's cloud-logger tip are dropped;
    other warnings and messages are not."""
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            configure_lightning_output()
            rank_zero_warn(
                "Precision bf16-mixed is not supported by the model summary.  "
                "Estimated model size in MB will not be accurate."
            )
            rank_zero_warn("something else")
            rank_zero_info("💡 Tip: try installing [litlogger](https://pypi.org/)")
            rank_zero_info("GPU available: False")
    finally:
        logger.removeHandler(handler)
    assert [str(w.message) for w in caught] == ["something else"]
    assert [r.getMessage() for r in records] == ["GPU available: False"]


@pytest.mark.parametrize(
    ("precision", "cuda", "bf16", "expected"),
    [
        ("bf16-mixed", True, False, "16-mixed"),  # V100, T4: no bfloat16
        ("bf16-mixed", True, True, "bf16-mixed"),
        ("bf16-mixed", False, False, "bf16-mixed"),  # the CPU has its own bf16 path
        ("32-true", True, False, "32-true"),
    ],
)
def test_bf16_falls_back_to_16_mixed_on_gpus_without_bfloat16(
    precision, cuda, bf16, expected
):
    from asr.train import fallback_precision

    got, why = fallback_precision(precision, cuda, bf16)
    assert got == expected
    assert (why is not None) == (got != precision)
    if why:
        assert "no bfloat16" in why and "16-mixed with a gradient scaler" in why


def test_several_validation_sets_are_scored_apart(espeak_manifests, tmp_path, caplog):
    """LibriSpeech validates on dev-clean and dev-other: the first is val_wer (which
    picks the best checkpoint), the other val_wer/<name>, each in the log."""
    from asr.manifest import read_manifest, write_manifest

    other = tmp_path / "dev-other.jsonl"
    write_manifest(other, read_manifest(espeak_manifests["dev"]))
    sets = f"[{espeak_manifests['dev']},{other}]"
    with caplog.at_level(logging.INFO, logger="asr.train"):
        logs = train(espeak_manifests, tmp_path, 1, "--data.val_manifest", sets)
    header = (logs / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_wer", "val_cer", "val_loss"} <= set(header)
    assert {"val_wer/dev-other", "val_cer/dev-other", "val_loss/dev-other"} <= set(
        header
    )
    assert "validation on dev-other: WER" in caplog.text
