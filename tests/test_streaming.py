"""asr.streaming: a stream's log-probs equal the offline forward pass whatever the
chunking, streams batched together equal each alone, a stream's state stays the
same size however long it runs; sessions decode segments as ``asr transcribe``
decodes files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr.inference import save_model
from asr.streaming import Session, StreamingError, StreamingModel, run_batch
from asr.task import ASRTask

SR = 16000


def tiny_task(normalize: str = "global") -> ASRTask:
    """An untrained unidirectional model with random batch-norm statistics (so no
    layer is the identity) and a lookahead; the geometry of the streaming recipe's
    convolutions (time kernels 5 and 3, strides 3 and 1)."""
    torch.manual_seed(0)
    task = ASRTask(
        model_preset="tiny",
        model={
            "conv": [
                {"channels": 4, "kernel": [11, 5], "stride": [2, 3]},
                {"channels": 4, "kernel": [11, 3], "stride": [2, 1]},
            ],
            "rnn_layers": 2,
            "hidden_size": 32,
            "bidirectional": False,
            "lookahead": 3,
        },
        frontend={"kind": "logmel", "n_mels": 40, "normalize": normalize},
    )
    with torch.no_grad():
        for m in task.model.modules():
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return task.eval()


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as `asr stream` runs: on a shared machine a second
    thread per small operation costs more than it gives."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Four seconds of generated speech, with a pause, at 16 kHz."""
    from conftest import speak

    from asr.audio import load_audio

    root = tmp_path_factory.mktemp("speech")
    speak("the quick brown fox jumps over the lazy dog", "en-us", root / "a.wav")
    speak("she sells sea shells", "en-gb", root / "b.wav")
    a, b = (load_audio(root / f).numpy() for f in ("a.wav", "b.wav"))
    pause = np.random.default_rng(0).normal(0, 1e-3, SR // 2).astype(np.float32)
    return np.concatenate([a, pause, b])


@pytest.fixture(scope="module")
def model(speech, tmp_path_factory) -> StreamingModel:
    task = tiny_task()
    w = torch.from_numpy(speech)
    task.frontend.fit_global_stats(
        *task.frontend.extract(w[None], torch.tensor([len(w)]))
    )
    path = save_model(task, tmp_path_factory.mktemp("tiny") / "model.ckpt")
    return StreamingModel.load(path)


def offline(model: StreamingModel, wave: np.ndarray) -> np.ndarray:
    lp, _ = model.recognizer.log_probs(
        torch.from_numpy(wave)[None], torch.tensor([len(wave)])
    )
    return lp[:, 0].numpy()


def streamed(model: StreamingModel, wave: np.ndarray, sizes) -> np.ndarray:
    """``wave`` pushed in chunks of ``sizes`` samples (cycled), then flushed."""
    state = model.new_state()
    out, i, k = [], 0, 0
    while i < len(wave):
        n = sizes[k % len(sizes)]
        out.append(model.step([state], [wave[i : i + n]])[0])
        i, k = i + n, k + 1
    out.append(model.flush([state])[0])
    return np.concatenate(out)


@pytest.mark.parametrize("ms", [10, 100, 370, 1000])
def test_chunks_give_the_offline_log_probs(model, speech, ms):
    want = offline(model, speech)
    got = streamed(model, speech, [SR * ms // 1000])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_uneven_and_empty_chunks_give_the_offline_log_probs(model, speech):
    want = offline(model, speech)
    got = streamed(model, speech, [0, 1, 7, 159, 161, 0, 3333, 2, 16001])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 300, 479, 480, 481, 1000, 5001])
def test_short_streams_end_like_the_offline_pass(model, speech, n):
    """Around the lengths where the reflected head and tail overlap (n_fft // 2 =
    256 samples) and the frames and strides begin."""
    wave = speech[4000 : 4000 + n]
    want = offline(model, wave)
    for size in (1, 160, n) if n < 1000 else (7, 160, n):
        np.testing.assert_allclose(
            streamed(model, wave, [size]), want, atol=1e-4, rtol=0
        )


def test_a_stream_without_audio_emits_nothing(model):
    state = model.new_state()
    assert model.step([state], [np.zeros(0, np.float32)])[0].shape == (0, 29)
    assert model.flush([state])[0].shape == (0, 29)


def test_frames_come_as_soon_as_their_audio_is_in(model, speech):
    """Output frame u is emitted once the audio up to its time plus the latency
    has arrived, not later (the latency is what the stages need, no more)."""
    want = offline(model, speech)
    state = model.new_state()
    step = 160
    for i in range(0, len(speech) - step, step):
        model.step([state], [speech[i : i + step]])
        seen = (i + step) / SR
        # frames whose last needed sample (u * frame + latency) is in
        due = int(np.floor((seen - model.latency_seconds) / model.frame_seconds)) + 1
        assert state.emitted == max(0, min(due, len(want))), (i, state.emitted, due)


def test_latency_counts_window_convolutions_and_lookahead(model):
    # 200 samples of window right of the frame centre (a 400-sample window in a
    # 512-point FFT), 2 frames of conv 1 (kernel 5), 1 frame of conv 2 (kernel 3)
    # at stride 3, 3 lookahead frames at 30 ms: 12.5 + 20 + 30 + 90 ms
    assert model.latency_seconds == pytest.approx(0.1525)
    assert model.frame_seconds == pytest.approx(0.03)


def test_a_batch_of_streams_gives_each_streams_own_result(model, speech):
    """Streams of different lengths and chunk sizes, started and ended at
    different times, stepped together: each gets what it gets alone."""
    waves = [speech, speech[5000:40000], speech[:3000], speech[1234:]]
    sizes = [160, 1600, 5920, 16000]
    want = [offline(model, w) for w in waves]
    states = [model.new_state() for _ in waves]
    pos = [0] * len(waves)
    got: list[list[np.ndarray]] = [[] for _ in waves]
    live = [0, 1, 2]  # the last stream starts later
    rounds = 0
    while live:
        rounds += 1
        if rounds == 5:
            live.append(3)
        chunks = []
        for b in live:
            chunks.append(waves[b][pos[b] : pos[b] + sizes[b]])
            pos[b] += sizes[b]
        out = model.step([states[b] for b in live], chunks)
        for b, lp in zip(live, out, strict=True):
            got[b].append(lp)
        ended = [b for b in live if pos[b] >= len(waves[b])]
        if ended:
            out = model.flush([states[b] for b in ended])
            for b, lp in zip(ended, out, strict=True):
                got[b].append(lp)
            live = [b for b in live if b not in ended]
    for b in range(len(waves)):
        np.testing.assert_allclose(np.concatenate(got[b]), want[b], atol=1e-4, rtol=0)


def test_a_streams_state_does_not_grow(model, speech):
    """A minute of audio in 100 ms chunks: after the first second the state's
    size stays within the range of its first ten seconds (it varies with where
    the chunks fall on the frame grid)."""
    state = model.new_state()
    size = SR // 10
    sizes = []
    for k in range(600):
        i = (k * size) % (len(speech) - size)
        model.step([state], [speech[i : i + size]])
        sizes.append(state.nbytes())
    assert state.emitted > 1950
    assert max(sizes[10:]) == max(sizes[10:100]), (min(sizes[10:]), max(sizes[10:]))


def test_checkpoints_that_cannot_stream_are_refused(tmp_path):
    bi = ASRTask(model_preset="tiny", frontend={"kind": "logmel", "n_mels": 20})
    save_model(bi, tmp_path / "bi.ckpt")
    with pytest.raises(StreamingError, match="bi.ckpt: a bidirectional model"):
        StreamingModel.load(tmp_path / "bi.ckpt")
    save_model(tiny_task("utterance"), tmp_path / "utt.ckpt")
    with pytest.raises(StreamingError, match="utt.ckpt: features normalised per"):
        StreamingModel.load(tmp_path / "utt.ckpt")
    save_model(tiny_task(), tmp_path / "unfitted.ckpt")
    with pytest.raises(StreamingError, match="no global feature statistics"):
        StreamingModel.load(tmp_path / "unfitted.ckpt")


def test_a_stream_cannot_be_fed_after_its_end(model, speech):
    session = Session(model)
    session.accept(speech[:4000])
    session.finish()
    with pytest.raises(StreamingError, match="after its end"):
        session.accept(speech[:100])
    with pytest.raises(StreamingError, match="already finished"):
        session.finish()


def test_sessions_of_different_models_are_not_batched(model, speech, tmp_path):
    task = tiny_task()
    task.frontend.fit_global_stats(
        *task.frontend.extract(torch.from_numpy(speech)[None], torch.tensor([1000]))
    )
    other = StreamingModel.load(save_model(task, tmp_path / "m.ckpt"))
    with pytest.raises(ValueError, match="one StreamingModel"):
        run_batch([Session(model), Session(other)], [speech[:10], speech[:10]])


# -- sessions, on a model that knows some words (slow: it trains) ----------------------


def sessions_events(model: StreamingModel, wave: np.ndarray, ms: int, **kw) -> list:
    session = Session(model, **kw)
    size = SR * ms // 1000
    events = []
    for i in range(0, len(wave), size):
        events += session.accept(wave[i : i + size])
    return events + session.finish()


@pytest.fixture(scope="module")
def trained(streaming_checkpoint) -> StreamingModel:
    return StreamingModel.load(streaming_checkpoint)


@pytest.fixture(scope="module")
def train_waves(espeak_manifests) -> list[np.ndarray]:
    from asr.audio import load_audio
    from asr.manifest import read_manifest

    utts = read_manifest(espeak_manifests["train"])
    return [load_audio(u.audio_filepath).numpy() for u in utts[:6]]


def test_a_session_finalizes_what_greedy_decoding_of_the_file_gives(
    trained, train_waves
):
    from asr.decoding import GreedyDecoder

    greedy = GreedyDecoder(trained.labels)
    texts = []
    for wave in train_waves:
        want = greedy.decode(offline(trained, wave), trained.frame_seconds)
        want = want.shifted(0.0, len(wave) / SR)
        events = sessions_events(trained, wave, 100)
        finals = [e for e in events if e["type"] == "final"]
        assert " ".join(e["text"] for e in finals) == want.text
        words = [w for e in finals for w in e["words"]]
        assert words == [
            {"word": w.text, "start": w.start, "end": w.end, "confidence": w.confidence}
            for w in want.words
        ]
        partials = [e for e in events if e["type"] == "partial"]
        assert len(partials) >= len(wave) / (SR // 10) - 3  # one a chunk
        assert all(p["start"] <= p["end"] <= len(wave) / SR for p in partials)
        texts.append(want.text)
    # the model knows words: most of the sentences come out right
    from conftest import SENTENCES

    assert sum(t in SENTENCES for t in texts) >= 3, texts


def test_a_pause_ends_a_segment(trained, train_waves):
    """Two sentences with 1.5 s of faint noise between: two finals, each with its
    own words and times from the start of the stream; the partial after the first
    final starts empty."""
    a, b = train_waves[0], train_waves[3]
    pause = np.random.default_rng(1).normal(0, 3e-4, SR * 3 // 2).astype(np.float32)
    wave = np.concatenate([a, pause, b])
    events = sessions_events(trained, wave, 100, endpoint_seconds=0.8)
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 2, finals
    first, second = finals
    assert first["end"] <= len(a) / SR + 0.1
    assert second["start"] >= (len(a) + len(pause)) / SR - 0.1
    at = events.index(first)
    assert events[at + 1]["type"] == "partial"
    assert events[at + 1]["text"] == ""
    # the segments decode like the two sentences alone
    alone = [sessions_events(trained, w, 100) for w in (a, b)]
    assert [f["text"] for f in finals] == [
        " ".join(e["text"] for e in ev if e["type"] == "final") for ev in alone
    ]
