"""The training configurations: one base per recipe, the others small deltas over it.

A delta's first line names its base (``# base: demo.yaml``, relative to the delta's
directory); ``asr train --config DELTA`` reads the base first, and LightningCLI lets
the later file override the earlier one. Each delta holds only
keys whose value differs from the base's, and base + delta is a configuration
LightningCLI accepts, with the facts below."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
BASES = {"synthetic": "demo.yaml", "librispeech": "ds2_1gpu.yaml"}
DELTAS = {
    "synthetic": ["large", "xl", "toy", "streaming"],
    "librispeech": ["ds2_paper"],
}
# Dict arguments (ASRTask's model and frontend): a later config replaces such a dict
# whole, so a delta that changes one of their keys gives them all.
WHOLE = {("model", "model"), ("model", "frontend")}


def base_of(config: Path) -> Path | None:
    """The file a delta's first line names (``# base: FILE``), or None."""
    first = config.read_text(encoding="utf-8").split("\n", 1)[0]
    found = re.match(r"# base: *(\S+)", first)
    return config.parent / found.group(1) if found else None


def leaves(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """``{key path: value}`` for every leaf of a YAML mapping (a list, and a dict
    argument of :data:`WHOLE`, is a leaf)."""
    if not isinstance(tree, dict) or prefix in WHOLE:
        return {prefix: tree}
    out: dict[tuple, Any] = {}
    for key, value in tree.items():
        out.update(leaves(value, (*prefix, key)))
    return out


def lookup(tree: Any, path: tuple) -> Any:
    """The value at ``path`` in a YAML mapping, or a sentinel when it is absent."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return "<absent>"
        tree = tree[key]
    return tree


def resolved(config: Path, capsys) -> dict[str, Any]:
    """The whole configuration LightningCLI makes of ``config`` and its base."""
    from asr.train import run_training

    with pytest.raises(SystemExit) as done:
        run_training(["--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_one_base_per_recipe_and_every_other_config_names_it():
    for recipe, base in BASES.items():
        for config in sorted((CONF / recipe).glob("*.yaml")):
            if config.name == base:
                assert base_of(config) is None, f"{config}: the base has no base"
            else:
                assert base_of(config) == CONF / recipe / base, (
                    f"{config}: its first line should be '# base: {base}'"
                )


@pytest.mark.parametrize(
    "recipe,name", [(r, n) for r, names in DELTAS.items() for n in names]
)
def test_a_delta_holds_only_what_differs_from_its_base(recipe, name):
    delta_path = CONF / recipe / f"{name}.yaml"
    base = yaml.safe_load(base_of(delta_path).read_text(encoding="utf-8"))
    delta = yaml.safe_load(delta_path.read_text(encoding="utf-8"))
    same = [
        ".".join(path)
        for path, value in leaves(delta).items()
        if lookup(base, path) == value
    ]
    assert not same, f"{delta_path.name} repeats the base's value of {same}"
    assert len(delta_path.read_text().splitlines()) < 40, "a delta should be small"


def test_asr_train_reads_a_delta_over_its_base(tmp_path):
    """asr train puts the bases a config names before it, once each."""
    from asr.configs import config_bases, expand_configs

    large = CONF / "synthetic" / "large.yaml"
    assert [p.resolve() for p in config_bases(large)] == [
        (CONF / "synthetic" / "demo.yaml").resolve(),
        large.resolve(),
    ]
    demo = str(CONF / "synthetic" / "demo.yaml")
    given = ["--config", demo, f"--config={large}", "--trainer.max_epochs", "1"]
    assert expand_configs(given) == [
        "--config", demo, "--config", str(large), "--trainer.max_epochs", "1",
    ]  # fmt: skip
    (tmp_path / "a.yaml").write_text("# base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("# base: a.yaml\n")
    with pytest.raises(ValueError, match="name each other as bases"):
        config_bases(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("# base: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml.*base of"):
        config_bases(tmp_path / "c.yaml")


@pytest.mark.parametrize("name", ["demo", "large", "xl", "toy"])
def test_synthetic_configs_resolve(name, capsys):
    config = resolved(CONF / "synthetic" / f"{name}.yaml", capsys)
    trainer, model, data = config["trainer"], config["model"], config["data"]
    assert trainer["default_root_dir"] == f"exp/{name}"
    assert trainer["logger"]["init_args"]["save_dir"] == f"exp/{name}"
    assert [c["class_path"].rsplit(".", 1)[1] for c in trainer["callbacks"]] == [
        "ModelCheckpoint",
        "LastCheckpoint",
        "LearningRateMonitor",
    ]
    assert trainer["accelerator"] == "cpu"
    assert trainer["use_distributed_sampler"] is False
    assert model["ctc_impl"] == "asr" and model["phone_loss_weight"] == 1.0
    assert data["train_manifest"] == "data/synthetic/train.jsonl"
    assert data["val_manifest"] == "data/synthetic/dev.jsonl"
    if name == "toy":
        assert model["model_preset"] == "tiny" and model["model"] is None
        assert trainer["max_epochs"] == 1 and trainer["precision"] == "32-true"
        assert model["spec_augment"] and data["speed_perturb"] == [0.9, 1.0, 1.1]
        assert model["phone_layer"] == -1 and data["skip_invalid"] is False
    else:  # the demo's model: 33 output frames per second, 3 x 256 GRU
        assert trainer["max_epochs"] == {"demo": 3, "large": 4, "xl": 3}[name]
        assert trainer["precision"] == "bf16-mixed"
        assert model["model_preset"] == "small" and model["spec_augment"] is None
        strides = [c["stride"][1] for c in model["model"]["conv"]]
        assert strides == [3, 1] and model["model"]["hidden_size"] == 256
        assert model["phone_layer"] == 1 and data["skip_invalid"] is True
        assert data["max_batch_seconds"] == 60 and data["speed_perturb"] is None


def test_the_streaming_config_is_the_demo_made_causal(capsys):
    """Unidirectional GRU layers with a lookahead, global feature statistics, the
    demo's model otherwise; 152.5 ms algorithmic latency (its comments say why)."""
    from asr.model import DeepSpeech2, ModelConfig
    from asr.task import ASRTask

    config = resolved(CONF / "synthetic" / "streaming.yaml", capsys)
    demo = resolved(CONF / "synthetic" / "demo.yaml", capsys)
    assert config["trainer"]["default_root_dir"] == "exp/streaming"
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "exp/streaming"
    assert config["data"] == demo["data"]
    model, frontend = config["model"]["model"], config["model"]["frontend"]
    assert model["bidirectional"] is False and model["lookahead"] == 3
    assert frontend == {**demo["model"]["frontend"], "normalize": "global"}
    changed = {k for k in model if model[k] != demo["model"]["model"].get(k)}
    assert changed == {"conv", "bidirectional", "lookahead"}
    task = ASRTask(**{k: v for k, v in config["model"].items()})
    assert isinstance(task.model, DeepSpeech2)
    assert isinstance(task.model.config, ModelConfig)
    assert task.model.lookahead is not None and task.frontend.normalize == "global"
    assert [c.kernel[1] for c in task.model.config.conv] == [5, 3]


@pytest.mark.parametrize("name", ["ds2_1gpu", "ds2_paper"])
def test_librispeech_configs_resolve(name, capsys):
    config = resolved(CONF / "librispeech" / f"{name}.yaml", capsys)
    trainer, model, data = config["trainer"], config["model"], config["data"]
    assert trainer["precision"] == "bf16-mixed" and trainer["strategy"] == "ddp"
    assert trainer["use_distributed_sampler"] is False
    assert trainer["sync_batchnorm"] is False
    assert model["frontend"]["kind"] == "spectrogram"
    assert data["train_manifest"] == "data/librispeech/train-960.jsonl"
    assert data["val_manifest"] == [
        "data/librispeech/dev-clean.jsonl",
        "data/librispeech/dev-other.jsonl",
    ]
    # deepspeech.pytorch's 400 on a loss summed over 64 utterances of ~180 characters
    assert trainer["gradient_clip_val"] == pytest.approx(400 / (64 * 180), rel=0.01)
    # The effective batch: per GPU x GPUs x accumulation (the paper's on 8 GPUs; its
    # config uses every GPU there is).
    gpus = 8 if trainer["devices"] == -1 else trainer["devices"]
    batch = data["max_batch_size"] * gpus * trainer["accumulate_grad_batches"]
    if name == "ds2_1gpu":  # deepspeech.pytorch V3
        assert model["model_preset"] == "librispeech" and batch == 64
        assert model["spec_augment"]["freq_width"] == 27
        assert trainer["max_epochs"] == 16 and config["seed_everything"] == 123456
    else:  # the DeepSpeech2 paper
        assert model["model_preset"] == "paper" and batch == 512
        assert trainer["devices"] == -1
        assert model["spec_augment"] is None and trainer["max_epochs"] == 20
