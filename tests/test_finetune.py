"""Fine-tuning (asr.finetune, ASRTask.init_from): what a run takes from a checkpoint,
what it refuses, frozen layers, and end to end a fine-tuning run under `asr train`
that starts a new optimizer and still resumes with --ckpt_path."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from asr.cli import main
from asr.configs import ConfigError
from asr.inference import CheckpointError, load_model, save_model
from asr.task import ASRTask

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model_preset": "tiny", "frontend": {"kind": "logmel", "n_mels": 40}}


@pytest.fixture
def slim(tmp_path) -> Path:
    """A tiny model with weights that are not a fresh model's, as model.ckpt."""
    torch.manual_seed(1)
    task = ASRTask(**TINY, model={"rnn_layers": 2})
    with torch.no_grad():
        for p in task.parameters():
            p.add_(torch.randn_like(p))
        task.model.rnn_norms[1].running_mean.add_(0.5)
    return save_model(task, tmp_path / "model.ckpt")


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_slim_checkpoint_gives_frontend_vocabulary_architecture_and_weights(slim):
    source = load_model(slim)
    task = ASRTask(init_from=str(slim))  # the config's preset (small) is not used
    assert task.model.config == source.model.config
    assert task.frontend.config() == source.frontend.config()
    assert task.tokenizer == source.tokenizer
    assert same_state(task.model, source.model)
    assert task.describe()["model"] == source.description["model"]
    # frontend keys that agree with the checkpoint are accepted
    ASRTask(init_from=str(slim), frontend={"kind": "logmel", "n_mels": 40})


def test_a_lightning_checkpoint_is_read_for_its_weights_alone(slim, tmp_path):
    source = ASRTask(init_from=str(slim))
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": source.state_dict(),
            "asr": source.describe(),
            "optimizer_states": [{"state": {0: {"step": torch.tensor(500.0)}}}],
            "loops": {},
            "global_step": 500,
        },
        path,
    )
    task = ASRTask(init_from=str(path))
    assert same_state(task.model, source.model)


def test_a_config_that_contradicts_the_checkpoints_frontend_is_refused(slim):
    with pytest.raises(CheckpointError) as info:
        ASRTask(init_from=str(slim), frontend={"kind": "logmel", "n_mels": 64})
    message = str(info.value)
    assert str(slim) in message
    assert "frontend.n_mels: 40 in the checkpoint, 64 in the config" in message
    with pytest.raises(CheckpointError) as info:
        ASRTask(
            init_from=str(slim),
            sample_rate=8000,
            frontend={"kind": "spectrogram", "sample_rate": 8000},
        )
    message = str(info.value)
    assert "sample_rate: 16000 in the checkpoint, 8000 in the config" in message
    assert "frontend.kind: 'logmel' in the checkpoint, 'spectrogram'" in message


def test_another_architecture_is_refused_listing_the_parameters(slim):
    with pytest.raises(CheckpointError) as info:
        ASRTask(init_from=str(slim), model={"hidden_size": 24, "rnn_layers": 3})
    message = str(info.value)
    assert "another architecture" in message
    assert "(model.hidden_size: 16 -> 24; model.rnn_layers: 2 -> 3)" in message
    assert "38 parameters do not fit" in message
    assert "fc.weight (29, 16) -> (29, 24), " in message
    assert "rnns.2.weight_ih_l0 absent -> (72, 24)" in message
    assert "\n" not in message


def test_a_new_vocabulary_keeps_the_rows_of_shared_characters(slim):
    source = load_model(slim)
    vocab = ["<blank>", " ", "a", "b", "é", "1"]
    task = ASRTask(init_from=str(slim), vocab=vocab)
    new, old = task.model.fc.weight.detach(), source.model.fc.weight.detach()
    assert new.shape == (6, old.shape[1])
    for i, c in enumerate(vocab[:4]):
        assert torch.equal(new[i], old[source.tokenizer.vocab.index(c)]), c
    for row in new[4:]:  # a fresh model's rows, not copies
        assert row.abs().sum() > 0
        assert not any(torch.equal(row, r) for r in old)
    fc = {"fc.weight"}
    theirs = {k: v for k, v in source.model.state_dict().items() if k not in fc}
    ours = {k: v for k, v in task.model.state_dict().items() if k not in fc}
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert task.describe()["tokenizer"]["vocab"] == vocab


def test_frozen_layers_hold_their_weights_and_statistics(slim):
    torch.manual_seed(0)
    task = ASRTask(init_from=str(slim), freeze=["convs", "conv_norms", "rnns.0"])
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainable = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    task.train()
    waves, lens = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    for _ in range(3):
        log_probs, out_lens = task(waves, lens)
        loss = -log_probs.max(-1).values.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.model.state_dict()
    held = ("convs.", "conv_norms.", "rnns.0.")
    for name, value in before.items():
        moved = not torch.equal(value, after[name])
        if name.startswith(held):
            assert not moved, f"{name} moved"
        elif name.endswith(("weight", "running_mean")) and "lookahead" not in name:
            assert moved, f"{name} did not move"
    with pytest.raises(ConfigError, match=r"'convolutions' is no layer.*convs"):
        ASRTask(init_from=str(slim), freeze=["convolutions"])


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_a_missing_or_hostile_init_from_is_one_line_and_runs_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"asr": _Exploit()}))
    config = str(ROOT / "conf" / "finetune.yaml")
    for path, problem in (
        (evil, "not a loadable"),
        (tmp_path / "gone.ckpt", "no such"),
    ):
        code = main(["train", "--config", config, "--model.init_from", str(path)])
        err = capsys.readouterr().err.strip()
        assert code == 1, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"asr train: error: model.init_from: {path}: {problem}")
    assert not (tmp_path / "PWNED").exists()


def _train(manifests, out: Path, *extra: str) -> Path:
    from asr.train import run_training

    toy = ROOT / "conf" / "synthetic" / "toy.yaml"
    run_training(
        [
            "--config", str(toy),
            "--data.train_manifest", str(manifests["train"]),
            "--data.val_manifest", str(manifests["dev"]),
            "--trainer.default_root_dir", str(out),
            "--trainer.logger.init_args.save_dir", str(out),
            "--trainer.enable_progress_bar", "false",
            "--data.speed_perturb", "null",
            *extra,
        ]
    )  # fmt: skip
    return out / "logs"


def _adam_steps(ckpt: dict) -> set[float]:
    return {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}


def test_finetuning_under_asr_train_starts_a_new_run_and_resumes(
    espeak_manifests, tmp_path
):
    """From a Lightning last.ckpt: the weights are taken (the frozen convolution
    still holds them after training), the step count and the optimizer start from
    zero, the exported model loads; --ckpt_path resumes the fine-tuning run."""
    scratch = _train(espeak_manifests, tmp_path / "scratch")
    source = torch.load(scratch / "checkpoints" / "last.ckpt", weights_only=True)
    steps = source["global_step"]
    assert steps > 0
    tune = tmp_path / "tune"
    init = ["--model.init_from", str(scratch / "checkpoints" / "last.ckpt")]
    freeze = ["--model.freeze", "[convs, conv_norms]"]
    _train(espeak_manifests, tune, *init, *freeze, "--model.lr", "0.001")
    last = tune / "logs" / "checkpoints" / "last.ckpt"
    tuned = torch.load(last, weights_only=True)
    assert tuned["global_step"] == steps  # one epoch of the same data: a new count
    assert _adam_steps(tuned) == {float(steps)}  # a new optimizer, not the old one's
    conv = "model.convs.0.weight"
    assert torch.equal(tuned["state_dict"][conv], source["state_dict"][conv])
    rnn = "model.rnns.0.weight_ih_l0"
    assert not torch.equal(tuned["state_dict"][rnn], source["state_dict"][rnn])
    assert load_model(tune / "logs" / "model.ckpt").model.config.hidden_size > 0
    # an interrupted fine-tuning run resumes from its own last.ckpt
    _train(
        espeak_manifests, tune, *init, *freeze, "--model.lr", "0.001",
        "--trainer.max_epochs", "2", "--ckpt_path", str(last),
    )  # fmt: skip
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 2 * steps
    assert _adam_steps(resumed) == {float(2 * steps)}
    assert torch.equal(resumed["state_dict"][conv], source["state_dict"][conv])
