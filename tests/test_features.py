"""Frontends against librosa on real speech, padding independence, normalisation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr.features import (
    MFCC,
    Frontend,
    LogMel,
    LogSpectrogram,
    build_frontend,
)

SR = 16000
EPS = 1e-10
KINDS = ("spectrogram", "logmel", "mfcc")


def _synthetic_speech(sample_rate: int, seconds: float = 2.0) -> np.ndarray:
    """A speech-like stand-in: gliding harmonics, a syllable-rate envelope, noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t)  # Hz
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    wave = 0.1 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def _native_speech(tmp_dir: Path) -> tuple[np.ndarray, int]:
    """A sentence from espeak-ng at its own sampling rate, else a synthetic signal."""
    if shutil.which("espeak-ng"):
        path = tmp_dir / "speech.wav"
        text = "The quick brown fox jumps over the lazy dog, said the recognizer."
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        wave, sample_rate = sf.read(path, dtype="float32", always_2d=True)
        return wave.mean(axis=1), sample_rate
    return _synthetic_speech(22050), 22050


def _loud_crop(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut inside the voiced region so both ends are loud (edge padding matters)."""
    hop = sample_rate // 100
    rms = librosa.feature.rms(y=wave, frame_length=2 * hop, hop_length=hop)[0]
    loud = np.flatnonzero(rms > 0.3 * rms.max())
    return wave[(loud[0] + 1) * hop + 37 : loud[-1] * hop - 53]


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """(float32 speech with loud ends, its sampling rate) as produced by the TTS."""
    wave, sample_rate = _native_speech(tmp_path_factory.mktemp("speech"))
    return _loud_crop(wave, sample_rate), sample_rate


@pytest.fixture(scope="module")
def speech(native: tuple[np.ndarray, int]) -> np.ndarray:
    """The same speech at 16 kHz, float32, ends loud."""
    wave, sample_rate = native
    out = AF.resample(torch.from_numpy(wave), sample_rate, SR).numpy()
    return _loud_crop(out, SR)


def _alone(fe: Frontend, wave: np.ndarray) -> tuple[np.ndarray, int]:
    feats, feat_lens = fe(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
    return feats[0].numpy(), int(feat_lens[0])


def _librosa_power(wave: np.ndarray, fe: Frontend, pad_mode: str = "reflect"):
    spec = librosa.stft(
        wave.astype(np.float64),
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        win_length=fe.win_length,
        window="hann",
        center=True,
        pad_mode=pad_mode,
    )
    return np.abs(spec) ** 2


def _librosa_log_mel(wave: np.ndarray, fe: LogMel) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wave.astype(np.float64),
        sr=fe.sample_rate,
        n_fft=fe.n_fft,
        hop_length=fe.hop_length,
        win_length=fe.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=fe.n_mels,
        htk=False,
        norm="slaney",
    )
    return np.log(mel + EPS)


# -- parity with librosa --------------------------------------------------------------


def _check_log_spectrogram(fe: LogSpectrogram, wave: np.ndarray) -> None:
    ours, n_frames = _alone(fe, wave)
    power = _librosa_power(wave, fe)
    ref = np.log(power + EPS)
    assert ours.shape == ref.shape and n_frames == ref.shape[1]
    err = np.abs(ours - ref)
    # float32 rounding of a loud frame's FFT is ~1e-7 of its peak: bins far below
    # the peak carry relatively more of it. Within 60 dB the logs agree to 2e-4.
    near_peak = power > 1e-6 * power.max(axis=0, keepdims=True)
    assert err[near_peak].max() < 1e-3, err[near_peak].max()
    assert err.max() < 0.05, err.max()
    assert err.mean() < 1e-4, err.mean()
    # The same data would expose zero padding at the edges (not reflection).
    zero_padded = np.log(_librosa_power(wave, fe, pad_mode="constant") + EPS)
    assert np.abs(ours - zero_padded)[:, [0, -1]].max() > 0.1


def test_log_spectrogram_matches_librosa(speech: np.ndarray) -> None:
    fe = LogSpectrogram(normalize="none")
    assert (fe.n_fft, fe.win_length, fe.hop_length, fe.n_features) == (
        320,
        320,
        160,
        161,
    )
    _check_log_spectrogram(fe, speech)


def test_odd_n_fft_matches_librosa(native: tuple[np.ndarray, int]) -> None:
    wave, sample_rate = native
    fe = LogSpectrogram(sample_rate=sample_rate, normalize="none")
    if sample_rate == 22050:
        assert (fe.n_fft, fe.hop_length) == (441, 220)
    _check_log_spectrogram(fe, wave)


def test_log_mel_matches_librosa(speech: np.ndarray) -> None:
    fe = LogMel(normalize="none")
    assert (fe.n_fft, fe.win_length, fe.hop_length, fe.n_features) == (
        512,
        400,
        160,
        80,
    )
    mel_fb = librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, htk=False, norm="slaney")
    np.testing.assert_allclose(fe.mel_fb.numpy(), mel_fb, rtol=1e-4, atol=1e-7)
    ours, n_frames = _alone(fe, speech)
    ref = _librosa_log_mel(speech, fe)
    assert ours.shape == ref.shape and n_frames == ref.shape[1]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
    assert np.abs(ours - ref).mean() < 1e-4


def test_htk_mel_matches_librosa(speech: np.ndarray) -> None:
    fe = LogMel(n_mels=40, f_min=20.0, f_max=7600.0, mel_scale="htk", mel_norm=None)
    mel_fb = librosa.filters.mel(
        sr=SR, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0, htk=True, norm=None
    )
    np.testing.assert_allclose(fe.mel_fb.numpy(), mel_fb, rtol=1e-4, atol=1e-5)


def test_mfcc_matches_librosa(speech: np.ndarray) -> None:
    fe = MFCC(normalize="none")
    assert fe.n_features == 40 and fe.n_mels == 80
    ours, _ = _alone(fe, speech)
    ref = librosa.feature.mfcc(
        S=_librosa_log_mel(speech, fe), n_mfcc=40, dct_type=2, norm="ortho", lifter=0
    )
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.filterwarnings("ignore:n_fft=320 is too large:UserWarning")
@pytest.mark.parametrize("n", [1, 2, 100, 159, 160, 161, 319, 321])
def test_short_utterances_match_librosa(speech: np.ndarray, n: int) -> None:
    """Reflection longer than the signal repeats periodically, like numpy.pad."""
    fe = LogSpectrogram(normalize="none")
    wave = speech[1000 : 1000 + n]
    ours, n_frames = _alone(fe, wave)
    power = _librosa_power(wave, fe)
    assert n_frames == power.shape[1] == 1 + n // 160
    near_peak = power >= 1e-6 * power.max(axis=0, keepdims=True)
    err = np.abs(ours - np.log(power + EPS))[near_peak]
    assert err.max() < 1e-3, err.max()


# -- batches: lengths, padding, zeros -------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normalize", ["utterance", "none"])
def test_padded_batch_equals_each_alone(
    speech: np.ndarray, kind: str, normalize: str
) -> None:
    fe = build_frontend(kind=kind, normalize=normalize)
    lengths = [speech.size, 12345, 4000, 321, 160, 100, 1]
    N = speech.size + 777
    g = torch.Generator().manual_seed(0)
    # Garbage padding: must not reach any valid frame.
    waves = 0.5 * torch.randn(len(lengths), N, generator=g)
    for b, n in enumerate(lengths):
        start = 811 * b
        waves[b, :n] = torch.from_numpy(speech[start : start + n])
    wave_lens = torch.tensor(lengths)
    feats, feat_lens = fe(waves, wave_lens)

    assert feats.dtype == torch.float32 and feat_lens.dtype == torch.int64
    assert feats.shape == (len(lengths), fe.n_features, fe.frames(N))
    assert feat_lens.tolist() == [1 + n // fe.hop_length for n in lengths]
    assert torch.equal(feat_lens, fe.frames(wave_lens))
    for b, n in enumerate(lengths):
        alone, n_frames = _alone(fe, waves[b, :n].numpy())
        assert n_frames == feat_lens[b]
        np.testing.assert_allclose(
            feats[b, :, :n_frames].numpy(), alone, rtol=1e-5, atol=2e-5
        )
        assert torch.all(feats[b, :, n_frames:] == 0)
    assert torch.isfinite(feats).all()


def test_frames() -> None:
    fe = LogSpectrogram()
    assert [fe.frames(n) for n in (0, 1, 159, 160, 161, 16000)] == [1, 1, 1, 2, 2, 101]
    lens = torch.tensor([0, 159, 160, 16000])
    assert fe.frames(lens).tolist() == [1, 1, 2, 101]
    odd = LogSpectrogram(win_length=321, hop_length=100)  # centred STFT, odd n_fft
    for n in (321, 400, 401, 1000):
        spec = librosa.stft(np.ones(n), n_fft=321, hop_length=100, center=True)
        assert odd.frames(n) == spec.shape[1]


def test_empty_utterance_and_empty_batch() -> None:
    fe = LogMel()
    feats, feat_lens = fe(torch.randn(2, 800), torch.tensor([0, 800]))
    assert feat_lens.tolist() == [1, 6]
    assert torch.all(feats[0] == 0) and torch.isfinite(feats).all()
    feats, feat_lens = fe(torch.zeros(0, 800), torch.zeros(0, dtype=torch.int64))
    assert feats.shape == (0, 80, 6) and feat_lens.shape == (0,)
    feats, feat_lens = fe(torch.zeros(1, 0), torch.zeros(1, dtype=torch.int64))
    assert feats.shape == (1, 80, 1) and feat_lens.tolist() == [1]


def test_bad_inputs_raise() -> None:
    fe = LogSpectrogram()
    with pytest.raises(ValueError, match="exceed"):
        fe(torch.zeros(2, 100), torch.tensor([100, 101]))
    with pytest.raises(ValueError, match="negative"):
        fe(torch.zeros(2, 100), torch.tensor([100, -1]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        fe(torch.zeros(100), torch.tensor([100]))
    with pytest.raises(ValueError, match="wave_lens"):
        fe(torch.zeros(2, 100), torch.tensor([100]))
    with pytest.raises(ValueError, match="normalize"):
        LogSpectrogram(normalize="batch")
    with pytest.raises(ValueError, match="win_length"):
        LogSpectrogram(win_length=400, n_fft=320)
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCC(n_mfcc=81)


# -- normalisation --------------------------------------------------------------------


def _batch(speech: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    N = speech.size
    lengths = [N, N * 2 // 3, N // 3]
    waves = torch.zeros(len(lengths), N)
    for b, n in enumerate(lengths):
        waves[b, :n] = torch.from_numpy(speech[N - n :])
    return waves, torch.tensor(lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_utterance_normalization(speech: np.ndarray, kind: str) -> None:
    fe = build_frontend(kind=kind)  # normalize="utterance" by default
    assert fe.normalize == "utterance"
    feats, feat_lens = fe(*_batch(speech))
    for b, n in enumerate(feat_lens.tolist()):
        valid = feats[b, :, :n].double()
        torch.testing.assert_close(
            valid.mean(-1), torch.zeros(fe.n_features).double(), atol=1e-5, rtol=0
        )
        std = valid.std(-1, correction=0)
        torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)
        assert torch.all(feats[b, :, n:] == 0)


def test_constant_input_normalizes_to_zero() -> None:
    feats, _ = LogMel()(torch.zeros(1, 4000), torch.tensor([4000]))
    assert torch.all(feats == 0)


def _pooled(feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
    """``(F, sum(feat_lens))`` valid frames of a batch, side by side."""
    return torch.cat(
        [f[:, :n] for f, n in zip(feats, feat_lens.tolist(), strict=True)], dim=1
    )


@pytest.mark.parametrize("kind", KINDS)
def test_global_normalization(speech: np.ndarray, kind: str) -> None:
    waves, wave_lens = _batch(speech)
    fe = build_frontend(kind=kind, normalize="global")
    raw = build_frontend(kind=kind, normalize="none")
    # Before any statistics, the identity.
    torch.testing.assert_close(fe(waves, wave_lens), raw(waves, wave_lens))

    feats, feat_lens = fe.extract(waves, wave_lens)
    fe.fit_global_stats(feats, feat_lens)
    assert int(fe.global_count) == int(feat_lens.sum())
    normalized, _ = fe(waves, wave_lens)
    for b, n in enumerate(feat_lens.tolist()):
        assert torch.all(normalized[b, :, n:] == 0)
    pooled = _pooled(normalized, feat_lens).double()
    torch.testing.assert_close(
        pooled.mean(-1), torch.zeros_like(pooled[:, 0]), atol=1e-4, rtol=0
    )
    std = pooled.std(-1, correction=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)

    # Batch by batch equals all at once.
    running = build_frontend(kind=kind, normalize="global")
    running.accumulate_global_stats(feats[:1], feat_lens[:1])
    running.accumulate_global_stats(feats[1:], feat_lens[1:])
    for name in ("global_mean", "global_std", "global_count"):
        torch.testing.assert_close(getattr(running, name), getattr(fe, name))

    # The statistics travel in the state_dict; the rest is rebuilt from config().
    state = fe.state_dict()
    assert set(state) == {"global_mean", "global_var", "global_std", "global_count"}
    rebuilt = build_frontend(json.loads(json.dumps(fe.config())))
    rebuilt.load_state_dict(state)
    torch.testing.assert_close(rebuilt(waves, wave_lens), fe(waves, wave_lens))

    with pytest.raises(RuntimeError, match="global"):
        raw.fit_global_stats(feats, feat_lens)


# -- configuration, devices, precision ------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"kind": "spectrogram", "sample_rate": 8000, "normalize": "none"},
        {"kind": "logmel", "n_mels": 64, "f_max": 7600.0, "mel_scale": "htk"},
        {"kind": "mfcc", "n_mfcc": 13, "n_mels": 40, "mel_norm": None},
    ],
)
def test_config_round_trip(speech: np.ndarray, kwargs: dict) -> None:
    fe = build_frontend(**kwargs)
    config = json.loads(json.dumps(fe.config()))
    assert config["kind"] == kwargs.get("kind", "spectrogram")
    for key, value in kwargs.items():
        assert config[key] == value
    rebuilt = build_frontend(config)
    assert type(rebuilt) is type(fe) and rebuilt.config() == fe.config()
    waves, wave_lens = _batch(speech[:6000])
    torch.testing.assert_close(rebuilt(waves, wave_lens), fe(waves, wave_lens))
    # Keyword arguments override the dict.
    assert build_frontend(config, normalize="global").normalize == "global"


def test_build_frontend_errors() -> None:
    with pytest.raises(ValueError, match="unknown frontend kind"):
        build_frontend(kind="wav2vec")
    with pytest.raises(TypeError):
        build_frontend(kind="spectrogram", n_mels=80)
    assert isinstance(build_frontend(), LogSpectrogram)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_under_autocast_and_dtype_casts(speech: np.ndarray, kind: str) -> None:
    fe = build_frontend(kind=kind, normalize="none")
    waves, wave_lens = _batch(speech[:8000])
    expected, _ = fe(waves, wave_lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = fe(waves, wave_lens)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected)
    # A whole-model cast (model.half(), bf16-true) moves buffers but keeps float32.
    fe.to(torch.bfloat16)
    assert all(b.dtype in (torch.float32, torch.int64) for b in fe.buffers())
    torch.testing.assert_close(fe(waves, wave_lens)[0], expected, rtol=0, atol=0)


def test_buffers_move_with_module() -> None:
    fe = MFCC()
    assert {"window", "mel_fb", "dct"} <= dict(fe.named_buffers()).keys()
    assert fe.state_dict() == {}  # derived buffers are rebuilt from config()
    assert not any(True for _ in fe.parameters())
    meta = fe.to("meta")
    assert all(b.device.type == "meta" for b in meta.buffers())
