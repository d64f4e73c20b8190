"""asr.inference: a checkpoint alone is enough to transcribe, and a crafted one that
loads safely (no pickled code) still cannot crash the loader: every field of its
self-description is checked, and one line names the field and the value."""

from __future__ import annotations

import copy

import pytest
import torch

from asr.inference import CheckpointError, load_model, save_model
from asr.task import ASRTask


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    """A tiny untrained model's slim checkpoint, as a dict and as a file."""
    torch.manual_seed(0)
    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    path = save_model(task, tmp_path_factory.mktemp("slim") / "model.ckpt")
    return path, torch.load(path, weights_only=True)


def crafted(tmp_path, ckpt, edit) -> str:
    ckpt = copy.deepcopy(ckpt)
    edit(ckpt["asr"])
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    return str(path)


def test_the_slim_checkpoint_loads_and_knows_its_rate(slim):
    path, _ = slim
    rec = load_model(path)
    assert rec.sample_rate == 16000 == rec.frontend.sample_rate
    assert rec.frame_seconds > 0


def set_key(*keys, value):
    def edit(desc):
        d = desc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (set_key("sample_rate", value="abc"), "sample_rate must be a whole number"),
        (set_key("sample_rate", value=0), "sample_rate must be a whole number"),
        (set_key("sample_rate", value=-16000), "sample_rate must be a whole number"),
        (set_key("sample_rate", value=10**9), "sample_rate must be a whole number"),
        (set_key("sample_rate", value=8000), "sample_rate 8000 but its frontend's"),
        (set_key("frontend", "sample_rate", value=0), "frontend.sample_rate"),
        (set_key("frontend", "hop_length", value=0), "frontend.hop_length"),
        (set_key("frontend", "n_fft", value=10**9), "frontend.n_fft"),
        (set_key("frontend", "n_mels", value=1.5), "frontend.n_mels"),
        (set_key("frontend", "eps", value=float("nan")), "frontend.eps"),
        (set_key("frontend", "kind", value="wavelet"), "unknown frontend kind"),
        (set_key("model", "hidden_size", value=10**9), "model.hidden_size"),
        (set_key("model", "rnn_layers", value=0), "model.rnn_layers"),
        (set_key("model", "dropout", value=2.0), "model.dropout"),
        (set_key("model", "conv", value=[]), "model.conv"),
        (set_key("model", "conv", value="x"), "model.conv"),
        (set_key("model", "bidirectional", value="yes"), "model.bidirectional"),
        (set_key("model", "rnn_type", value="rnn"), "rnn_type"),
        (set_key("model", "hidden_size", value=17), "in the description"),
        (set_key("model", "vocab_size", value=5), "in the description"),
        (set_key("tokenizer", value=[]), "tokenizer must be a dict"),
        (set_key("tokenizer", "vocab", value="abc"), "vocab"),
        (set_key("format", value=99), "format 99"),
    ],
)
def test_a_crafted_description_is_one_line_naming_the_field(
    slim, tmp_path, edit, named
):
    path, ckpt = slim
    bad = crafted(tmp_path, ckpt, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: ") and named in message, message
    assert "\n" not in message


def test_the_conv_layers_are_checked_one_by_one(slim, tmp_path):
    path, ckpt = slim

    def edit(desc):
        desc["model"]["conv"][0]["stride"] = [0, 1]

    with pytest.raises(CheckpointError, match=r"model\.conv\[0\]\.stride"):
        load_model(crafted(tmp_path, ckpt, edit))


def test_the_command_line_says_it_in_one_line(slim, tmp_path, capsys):
    from asr.cli import main

    path, ckpt = slim
    bad = crafted(tmp_path, ckpt, set_key("sample_rate", value=0))
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(16000, np.float32), 16000)
    assert main(["transcribe", str(wav), "--checkpoint", bad]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample_rate" in err[0], err
