"""The streaming export: one step of a unidirectional model as an ONNX graph with its
state as explicit inputs and outputs. Stepped chunk by chunk in onnxruntime, it gives
asr.streaming's log-probs (and so the offline model's) to 1e-4, however the stream
is cut."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.export import export_model, stream_onnx
from asr.export_stream import initial_state, state_names
from asr.inference import load_model, save_model
from asr.runtime import onnx_session
from asr.streaming import StreamingModel
from asr.task import ASRTask

TOL = 1e-4


@pytest.fixture(scope="module")
def streaming_export(tmp_path_factory):
    """A tiny random streaming model (two convolutions of time strides 3 and 1,
    global statistics) and its streaming ONNX export."""
    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [
                {"channels": 4, "kernel": [11, 5], "stride": [2, 3]},
                {"channels": 4, "kernel": [5, 3], "stride": [2, 1]},
            ],
            "rnn_layers": 2,
            "hidden_size": 16,
            "bidirectional": False,
            "lookahead": 3,
        },
        frontend={"kind": "logmel", "n_mels": 20, "normalize": "global"},
    )
    for m in task.model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    feats, lens = task.frontend.extract(
        0.1 * torch.randn(2, 8000), torch.tensor([8000] * 2)
    )
    task.frontend.fit_global_stats(feats, lens)
    task.eval()
    d = tmp_path_factory.mktemp("stream_export")
    ckpt = save_model(task, d / "model.ckpt")
    return ckpt, export_model(ckpt, d / "stream.onnx", streaming=True).path


def _streamed(model: StreamingModel, wave: np.ndarray, chunk: int) -> np.ndarray:
    state = model.new_state()
    parts = [
        model.step([state], [wave[a : a + chunk]])[0]
        for a in range(0, len(wave), chunk)
    ]
    parts += model.flush([state])
    return np.concatenate(parts)


def _onnx_steps(path, rec, wave: np.ndarray, chunks: list[int]) -> np.ndarray:
    session = onnx_session(path)
    feats, _ = rec.frontend(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    names, state = state_names(rec.model), initial_state(rec.model)
    return np.concatenate(stream_onnx(session, names, state, feats[0], chunks))


@pytest.mark.parametrize("chunks", [[1], [3], [16], [2, 7, 1, 30], [10_000]])
def test_stepping_the_graph_gives_the_streaming_models_log_probs(
    streaming_export, chunks
):
    ckpt, path = streaming_export
    rec = load_model(ckpt)
    wave = (0.1 * np.random.default_rng(0).standard_normal(13_456)).astype(np.float32)
    expected = _streamed(StreamingModel(rec), wave, 1600)  # 100 ms chunks of PCM
    got = _onnx_steps(path, rec, wave, chunks)
    assert got.shape == expected.shape and np.abs(got - expected).max() < TOL


def test_what_cannot_stream_is_one_line(tmp_path, capsys):
    from asr.cli import main

    torch.manual_seed(0)
    task = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    ckpt = save_model(task, tmp_path / "bi.ckpt")
    assert (
        main(["export", str(ckpt), "-o", str(tmp_path / "s.onnx"), "--streaming"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot stream" in err[0], err
    assert main(["export", str(ckpt), "-o", str(tmp_path / "s.pt"), "--streaming"]) == 1
    assert not list(tmp_path.glob("s.*"))


def test_the_streaming_graph_on_speech(
    streaming_checkpoint, espeak_manifests, tmp_path
):
    from asr.decoding import greedy_decode
    from asr.manifest import read_manifest

    path = export_model(streaming_checkpoint, tmp_path / "s.onnx", streaming=True).path
    rec = load_model(streaming_checkpoint)
    model = StreamingModel(rec)
    for u in read_manifest(espeak_manifests["dev"])[:3]:
        wave, _ = sf.read(u.audio_filepath, dtype="float32")
        expected = _streamed(model, wave, 1600)
        got = _onnx_steps(path, rec, wave, [10])  # 100 ms of feature frames a step
        assert got.shape == expected.shape and np.abs(got - expected).max() < TOL
        texts = [
            greedy_decode(torch.from_numpy(x)[:, None], torch.tensor([len(x)]), 0)
            for x in (got, expected)
        ]
        assert texts[0] == texts[1]
