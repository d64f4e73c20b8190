"""asr.export and asr.runtime: an exported model (ONNX run by onnxruntime, TorchScript)
gives the checkpoint's log-probs to 1e-4 for any batch and length, carries its own
description, and every bad input is one line naming the file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.atomic import WriteError
from asr.export import ExportError, export_model
from asr.inference import load_model, save_model
from asr.model import DeepSpeech2, ModelConfig
from asr.runtime import METADATA_KEY
from asr.task import ASRTask

TOL = 1e-4


def _randomize_norms(model: torch.nn.Module) -> None:
    """Batch-norm statistics far from the identity, so that a norm skipped or
    misplaced by an export shows in the outputs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)


def _checkpoint(path, bidirectional=True, normalize="utterance", rnn_type="gru"):
    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [{"channels": 4, "kernel": [11, 11], "stride": [2, 2]}],
            "rnn_layers": 2,
            "hidden_size": 24,
            "bidirectional": bidirectional,
            "lookahead": 3,
            "rnn_type": rnn_type,
        },
        frontend={"kind": "logmel", "n_mels": 20, "normalize": normalize},
    )
    _randomize_norms(task.model)
    if normalize == "global":
        feats, lens = task.frontend.extract(
            torch.randn(3, 8000), torch.tensor([8000] * 3)
        )
        task.frontend.fit_global_stats(feats, lens)
    task.eval()
    return save_model(task, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("export") / "model.ckpt")


@pytest.fixture(scope="module")
def exported(ckpt):
    """``{".onnx": Exported, ".pt": Exported}`` of :func:`ckpt`."""
    return {s: export_model(ckpt, ckpt.parent / f"m{s}") for s in (".onnx", ".pt")}


def _waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    waves = 0.1 * torch.randn(len(lengths), max(lengths), generator=g)
    lens = torch.tensor(lengths)
    return waves * (torch.arange(max(lengths))[None] < lens[:, None]), lens


def _max_diff(a, b):
    (lp_a, n_a), (lp_b, n_b) = a, b
    assert lp_a.shape == lp_b.shape and torch.equal(n_a, n_b), (lp_a.shape, lp_b.shape)
    return max(
        float((lp_a[:n, i] - lp_b[:n, i]).abs().max()) for i, n in enumerate(n_a)
    )


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_padded_recurrent_form_equals_the_packed_one(bidirectional, rnn_type):
    # The backward direction of a bidirectional layer run on the padded batch as it
    # is would start in the padding: lengths all different make that visible.
    torch.manual_seed(0)
    config = ModelConfig(
        n_features=20,
        conv=({"channels": 4, "kernel": [11, 11], "stride": [2, 2]},),
        rnn_type=rnn_type,
        rnn_layers=2,
        hidden_size=16,
        bidirectional=bidirectional,
        lookahead=2,
    )
    model = DeepSpeech2(config).eval()
    _randomize_norms(model)
    lens = torch.tensor([70, 41, 9, 70])
    feats = torch.randn(4, 20, 70) * (torch.arange(70) < lens[:, None, None])
    with torch.inference_mode():
        packed = model(feats, lens)
        model.packed = False
        padded = model(feats, lens)
    assert _max_diff(packed, padded) < 1e-5


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_an_export_gives_the_checkpoints_log_probs_for_any_batch(
    ckpt, exported, suffix
):
    out = exported[suffix]
    assert out.max_abs_diff < TOL and out.greedy_agree == 1.0
    ref, exported = load_model(ckpt), load_model(out.path)
    assert exported.backend == ("onnxruntime" if suffix == ".onnx" else "torchscript")
    assert exported.n_parameters == ref.n_parameters
    assert exported.description == ref.description
    # batch sizes and lengths other than those traced, one utterance alone
    for lengths in ([16000, 9000, 3200], [40000], [4000, 4000, 12345, 800, 20000]):
        waves, lens = _waves(lengths)
        assert (
            _max_diff(ref.log_probs(waves, lens), exported.log_probs(waves, lens)) < TOL
        )
        assert ref.transcribe_batch(waves, lens) == exported.transcribe_batch(
            waves, lens
        )


@pytest.mark.parametrize("bidirectional, suffix", [(False, ".onnx"), (True, ".pt")])
def test_global_statistics_and_unidirectional_models_travel(
    tmp_path, bidirectional, suffix
):
    path = _checkpoint(tmp_path / "g.ckpt", bidirectional, normalize="global")
    ref = load_model(path)
    exported = load_model(export_model(path, tmp_path / f"g{suffix}").path)
    for name, value in ref.frontend.state_dict().items():
        assert torch.equal(exported.frontend.state_dict()[name], value), name
    waves, lens = _waves([12000, 7000])
    assert _max_diff(ref.log_probs(waves, lens), exported.log_probs(waves, lens)) < TOL


def test_the_onnx_file_describes_itself(ckpt, exported):
    import onnx

    path = exported[".onnx"].path
    proto = onnx.load(path)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    desc = load_model(ckpt).description
    assert meta["description"] == json.loads(json.dumps(desc))
    assert meta["description"]["sample_rate"] == 16000
    shapes = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in proto.graph.input
    }
    assert shapes == {"feats": ["batch", 20, "frames"], "feat_lens": ["batch"]}


def test_int8_stays_close_to_the_float_model(ckpt):
    out = export_model(ckpt, ckpt.parent / "q.onnx", int8=True)
    assert out.int8 and out.greedy_agree > 0.9, out
    waves, lens = _waves([16000, 8000])
    ref, q = load_model(ckpt), load_model(out.path)
    assert 0 < _max_diff(ref.log_probs(waves, lens), q.log_probs(waves, lens)) < 0.5


# -- bad input ------------------------------------------------------------------------


class _Hostile:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/asr-export-hostile-ran",))


def _one_line(capsys, *names):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in names), err
    return err[0]


def test_exporting_what_is_not_our_checkpoint_is_one_line(tmp_path, capsys):
    from asr.cli import main

    marker = "/tmp/asr-export-hostile-ran"
    hostile = tmp_path / "hostile.ckpt"
    hostile.write_bytes(pickle.dumps({"asr": _Hostile()}))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad in (hostile, junk, foreign, tmp_path / "missing.ckpt"):
        out = tmp_path / "out.onnx"
        assert main(["export", str(bad), "-o", str(out)]) == 1
        _one_line(capsys, str(bad))
        assert not out.exists()
    import os

    assert not os.path.exists(marker), "the pickle's code ran"


def test_bad_destinations_are_one_line_and_leave_nothing(ckpt, tmp_path, capsys):
    from asr.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        (blocker / "model.onnx", "not a directory"),  # a parent that is a file
        (blocker / "sub" / "model.onnx", "not a directory"),
        (tmp_path / "model.h5", "unknown export format"),
    ]
    for dest, why in cases:
        assert main(["export", str(ckpt), "-o", str(dest)]) == 1
        _one_line(capsys, str(dest), why)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "m.pt"), "--int8"]) == 1
    _one_line(capsys, "m.pt", "ONNX")
    with pytest.raises(WriteError):
        export_model(ckpt, blocker / "m.pt")
    with pytest.raises(ExportError):
        export_model(ckpt, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_corrupt_or_foreign_exported_files_are_one_line(exported, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from asr.cli import main

    good_onnx, good_pt = exported[".onnx"].path, exported[".pt"].path
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good_onnx.read_bytes()[:5000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not protobuf" * 50)
    torn_pt = tmp_path / "torn.pt"
    torn_pt.write_bytes(good_pt.read_bytes()[:3000])
    # a valid ONNX graph that is not ours: no description
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(
        helper.make_model(
            helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"])],
                "g",
                [x],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            )
        ),
        foreign,
    )
    # ours, with a description that contradicts the graph (vocabulary size)
    proto = onnx.load(good_onnx)
    meta = json.loads(proto.metadata_props[0].value)
    meta["description"]["tokenizer"]["vocab"] = meta["description"]["tokenizer"][
        "vocab"
    ][:10]
    meta["description"]["model"]["vocab_size"] = 10
    proto.metadata_props[0].value = json.dumps(meta)
    lying = tmp_path / "lying.onnx"
    onnx.save(proto, lying)

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    for bad, why in [
        (truncated, "not an ONNX model"),
        (garbage, "not an ONNX model"),
        (torn_pt, "not a loadable asr checkpoint"),
        (foreign, "no 'asr' description"),
        (lying, "the graph gives log-probs"),
    ]:
        assert main(["transcribe", str(wav), "--checkpoint", str(bad)]) == 1
        _one_line(capsys, str(bad), why)


# -- end to end, on generated speech -------------------------------------------------


@pytest.fixture(scope="module")
def fitted_exports(fitted_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("fitted_exports")
    return {
        s: export_model(fitted_checkpoint, d / f"m{s}").path for s in (".onnx", ".pt")
    }


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_exported_posteriors_match_on_speech_batched_and_in_windows(
    fitted_checkpoint, fitted_exports, espeak_manifests, suffix
):
    from asr.decoding import greedy_decode
    from asr.manifest import read_manifest
    from asr.posteriors import PosteriorRunner, manifest_sources

    utts = read_manifest(espeak_manifests["train"]) + read_manifest(
        espeak_manifests["dev"]
    )
    sources = manifest_sources(utts)
    ref, exp = load_model(fitted_checkpoint), load_model(fitted_exports[suffix])

    def posteriors(rec, **kw):
        runner = PosteriorRunner(rec, batch_seconds=6.0, **kw)
        out = {p.index: p.log_probs for batch in runner.run(sources) for p in batch}
        assert all(lp is not None for lp in out.values())
        return [out[i] for i in range(len(sources))]

    # batched (several files of different lengths per batch), and in windows of
    # 1 s (every file longer: the windowed path, its joins and file statistics)
    for kw in ({}, {"window_seconds": 1.0, "overlap_seconds": 0.3}):
        a, b = posteriors(ref, **kw), posteriors(exp, **kw)
        for x, y in zip(a, b, strict=True):
            assert x.shape == y.shape and np.abs(x - y).max() < TOL
            tx, ty = (
                greedy_decode(torch.from_numpy(z)[:, None], torch.tensor([len(z)]), 0)
                for z in (x, y)
            )
            assert tx == ty


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_asr_transcribe_and_evaluate_take_an_exported_model(
    fitted_checkpoint, fitted_exports, espeak_manifests, suffix, tmp_path, capsys
):
    from asr.cli import main

    def run(*args):
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    manifest = str(espeak_manifests["train"])
    texts = [
        run("transcribe", manifest, "--checkpoint", str(ckpt))
        for ckpt in (fitted_checkpoint, fitted_exports[suffix])
    ]
    assert texts[0] == texts[1] and len(texts[0].splitlines()) == 18
    scores = [
        json.loads(
            run(
                "evaluate",
                manifest,
                "--checkpoint",
                str(ckpt),
                "--json",
                "--no-report",
                "--bootstrap",
                "10",
            )  # fmt: skip
        )
        for ckpt in (fitted_checkpoint, fitted_exports[suffix])
    ]
    for key in ("wer", "cer"):
        assert scores[0][key] == scores[1][key], (key, scores)
