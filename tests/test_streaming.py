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


def test_the_streaming_recipe_looks_152_5_ms_ahead(speech):
    """conf/synthetic/streaming.yaml's latency, as its comments add it up."""
    from pathlib import Path

    import yaml

    from asr.inference import Recognizer

    conf = Path(__file__).resolve().parent.parent / "conf/synthetic/streaming.yaml"
    task = ASRTask(model_preset="small", **yaml.safe_load(conf.read_text())["model"])
    w = torch.from_numpy(speech[:SR])
    task.frontend.fit_global_stats(*task.frontend.extract(w[None], torch.tensor([SR])))
    task.eval()
    recognizer = Recognizer(task.frontend, task.model, task.tokenizer, task.describe())
    assert StreamingModel(recognizer).latency_seconds == pytest.approx(0.1525)


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


class Scripted:
    """A stand-in for :class:`StreamingModel` whose frames are given: class ``c``
    at probability ~1 for each character of a script (``_`` blank, ``|`` space),
    ``per_chunk`` frames a chunk; for the Session's own logic."""

    labels = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
    sample_rate = SR
    frame_seconds = 0.03

    def __init__(self, script: str, per_chunk: int) -> None:
        ids = [
            0 if c == "_" else self.labels.index(" " if c == "|" else c) for c in script
        ]
        lp = np.full((len(ids), len(self.labels)), -20.0, np.float32)
        lp[np.arange(len(ids)), ids] = -1e-6
        self.frames, self.per_chunk, self.at = lp, per_chunk, 0

    def new_state(self):
        from types import SimpleNamespace

        return SimpleNamespace(received=0)

    def step(self, states, chunks):
        (state,), (chunk,) = states, chunks
        state.received += len(chunk)
        out = self.frames[self.at : self.at + self.per_chunk]
        self.at += len(out)
        return [out]

    def flush(self, states):
        out = self.frames[self.at :]
        self.at = len(self.frames)
        return [out]


def scripted_events(script: str, per_chunk: int = 3, **kw) -> list[dict]:
    model = Scripted(script, per_chunk)
    session = Session(model, **kw)
    events = []
    # 90 ms of audio a chunk: the frames' own duration, so times are not clamped
    while model.at < len(model.frames):
        events += session.accept(np.zeros(1440 * per_chunk // 3, np.float32))
    return events + session.finish()


def test_a_pause_ends_a_segment():
    """0.8 s of blank or space after speech ends a segment (27 frames of 30 ms);
    a shorter pause does not; the segment's final has its words, timed from the
    start of the stream; the partial after it starts empty."""
    script = "__hi|_there" + "_" * 10 + "|you" + "_" * 30 + "again" + "_" * 5
    events = scripted_events(script, endpoint_seconds=0.8)
    finals = [e for e in events if e["type"] == "final"]
    assert [f["text"] for f in finals] == ["hi there you", "again"]
    assert [w["word"] for w in finals[0]["words"]] == ["hi", "there", "you"]
    assert finals[0]["start"] == pytest.approx(0.06)  # frame 2
    assert finals[1]["start"] == pytest.approx(0.03 * script.index("again"))
    assert finals[1]["end"] == pytest.approx(0.03 * (script.index("again") + 5))
    assert all(w["confidence"] == pytest.approx(1.0) for w in finals[0]["words"])
    at = events.index(finals[0])
    assert events[at + 1] == {
        "type": "partial",
        "text": "",
        "start": events[at + 1]["end"],
        "end": events[at + 1]["end"],
    }
    partials = [e for e in events if e["type"] == "partial"]
    assert len(partials) == -(-len(script) // 3)  # one a chunk
    assert partials[3]["text"] == "hi there"  # 12 frames in
    assert partials[3]["start"] == pytest.approx(0.06)


def test_a_segment_without_a_pause_is_cut_at_its_last_gap():
    """Speech longer than max_segment_seconds is finalized at its last non-speech
    frame, so a session's memory stays bounded and no word is cut."""
    script = "abc|" * 30  # 120 frames, 3.6 s, never 0.8 s of silence
    events = scripted_events(script, max_segment_seconds=1.0, endpoint_seconds=0.5)
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 4
    assert " ".join(f["text"] for f in finals) == " ".join(["abc"] * 30)
    assert all(len(f["words"]) <= 9 for f in finals)


def test_training_fits_global_statistics_over_the_training_audio(espeak_manifests):
    """ASRTask.fit_global_stats (what training runs before its first step) gives
    the statistics of all the chosen utterances' frames, batch by batch; with a
    budget of seconds it takes utterances evenly across the manifest."""
    from asr.audio import load_audio
    from asr.manifest import read_manifest

    utts = read_manifest(espeak_manifests["train"])
    task = tiny_task()
    task.fit_global_stats(utts, batch=5)
    whole = tiny_task()
    feats = [
        whole.frontend.extract(w[None], torch.tensor([len(w)]))
        for w in (load_audio(u.audio_filepath) for u in utts)
    ]
    frames = torch.cat([f[0][0] for f in feats], -1)  # (F, all frames)
    whole.frontend.fit_global_stats(frames[None], torch.tensor([frames.shape[-1]]))
    for name in ("global_mean", "global_std", "global_count"):
        a, b = getattr(task.frontend, name), getattr(whole.frontend, name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    total = sum(u.duration for u in utts)
    task.fit_global_stats(utts, seconds=total / 3)
    every_third = sum(int(f[1][0]) for f in feats[::3])
    assert int(task.frontend.global_count) == every_third
