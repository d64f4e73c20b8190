"""asr.audio on real files written by libsndfile in every format it offers here."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import AudioError, AudioInfo, audio_info, load_audio


def sine(freq: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    """``(round(seconds * sample_rate),)`` float64 sine."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_frequency(x: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest bin of a Hann-windowed spectrum."""
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[np.argmax(spectrum)])


def write(path: Path, data: np.ndarray, sample_rate: int, fmt: str, subtype: str):
    """Write with soundfile, or skip the test if this libsndfile cannot."""
    try:
        sf.write(path, data, sample_rate, format=fmt, subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError) as e:
        pytest.skip(
            f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}: {e}"
        )
    return path


def assert_names_file(error: AudioError, path: Path, *words: str) -> None:
    message = str(error)
    assert error.path == str(path)
    assert message == f"{path}: {error.reason}"
    assert "\n" not in message
    for word in words:
        assert word in error.reason, (word, message)


# (format, subtype, extension, max abs error vs the original for the sample match)
FORMATS = [
    ("WAV", "PCM_U8", "wav", 1 / 128),
    ("WAV", "PCM_16", "wav", 1 / 32768),
    ("WAV", "PCM_24", "wav", 1 / 2**23),
    ("WAV", "FLOAT", "wav", 1e-7),
    ("FLAC", "PCM_16", "flac", 1 / 32768),
    ("FLAC", "PCM_24", "flac", 1 / 2**23),
    ("OGG", "VORBIS", "ogg", None),
    ("OGG", "OPUS", "opus", None),
    ("MP3", "MPEG_LAYER_III", "mp3", None),
]


@pytest.mark.parametrize(
    "fmt,subtype,ext,tolerance", FORMATS, ids=[f"{f[0]}-{f[1]}" for f in FORMATS]
)
def test_formats_load_as_mono_float32_with_frequency_kept(
    tmp_path: Path, fmt: str, subtype: str, ext: str, tolerance: float | None
) -> None:
    x = sine(440, 16000, 1.0)
    path = write(tmp_path / f"a.{ext}", x, 16000, fmt, subtype)
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (16000, 1)
    y = load_audio(path)
    assert y.dtype == torch.float32 and y.ndim == 1
    assert len(y) == info.frames
    assert abs(peak_frequency(y, 16000) - 440) <= 1.0
    if tolerance is not None:  # lossless: the samples themselves
        assert len(y) == 16000
        assert np.abs(y.numpy() - x).max() <= tolerance
    else:  # lossy: length within a codec frame, level within 1 dB
        assert abs(len(y) - 16000) <= 1152
        rms = float(y.pow(2).mean().sqrt())
        assert abs(20 * np.log10(rms / (0.5 / np.sqrt(2)))) < 1.0


def test_audio_info_reads_the_header(tmp_path: Path) -> None:
    path = tmp_path / "six.wav"
    sf.write(path, np.zeros((12000, 6)), 48000, subtype="PCM_16")
    info = audio_info(path)
    assert info == AudioInfo(str(path), 48000, 12000, 6, 0.25)
    assert audio_info(str(path)).path == str(path)


@pytest.mark.parametrize("file_rate", [8000, 22050, 48000])
def test_resampling_keeps_length_and_frequency(tmp_path: Path, file_rate: int) -> None:
    path = tmp_path / f"r{file_rate}.wav"
    sf.write(path, sine(1000, file_rate, 1.0), file_rate, subtype="FLOAT")
    y = load_audio(path, sample_rate=16000)
    assert len(y) == 16000
    assert abs(peak_frequency(y, 16000) - 1000) <= 1.0
    # soxr HQ keeps a mid-band sine's level and shape (no aliasing or ringing).
    core = y[1000:-1000].numpy()
    expected = sine(1000, 16000, 1.0)[1000:-1000]
    assert np.abs(core - expected).max() < 1e-3


def test_resampling_to_other_rates(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, sine(300, 16000, 0.5), 16000, subtype="PCM_16")
    assert len(load_audio(path, sample_rate=8000)) == 4000
    y = load_audio(path, sample_rate=48000)
    assert len(y) == 24000
    assert abs(peak_frequency(y, 48000) - 300) <= 2.0


def test_downsampling_removes_what_the_new_rate_cannot_hold(tmp_path: Path) -> None:
    # 7 kHz is above 8 kHz/2: it must be filtered out, not aliased to 1 kHz.
    path = tmp_path / "hi.wav"
    sf.write(path, sine(7000, 48000, 0.5), 48000, subtype="FLOAT")
    y = load_audio(path, sample_rate=8000)
    assert len(y) == 4000
    assert float(y[500:-500].abs().max()) < 1e-3


def test_native_rate_is_returned_unchanged(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 8000).astype(np.float32)
    path = tmp_path / "n.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    assert torch.equal(load_audio(path, sample_rate=8000), torch.from_numpy(x))


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (4000, 6)).astype(np.float32)
    path = tmp_path / "six.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    y = load_audio(path)
    np.testing.assert_allclose(y.numpy(), x.mean(axis=1), atol=1e-7)


def test_stereo_with_opposite_channels_cancels(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.25)
    path = tmp_path / "st.flac"
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="PCM_16")
    assert float(load_audio(path).abs().max()) <= 1 / 32768


def test_silence(tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(8000), 16000, subtype="PCM_16")
    y = load_audio(path)
    assert len(y) == 8000 and not y.any()
    assert len(load_audio(path, sample_rate=8000)) == 4000


def test_clipped_float_audio_is_clipped_to_unit_range(tmp_path: Path) -> None:
    x = 1.5 * sine(200, 16000, 0.5, amp=1.0)
    path = tmp_path / "loud.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    y = load_audio(path).numpy()
    assert y.max() == 1.0 and y.min() == -1.0
    inside = np.abs(x) < 1
    np.testing.assert_allclose(y[inside], x[inside], atol=1e-6)


def test_full_scale_square_stays_in_range_after_resampling(tmp_path: Path) -> None:
    # Ideal band-limiting of a full-scale square overshoots by ~9% (Gibbs).
    x = np.sign(sine(100, 48000, 0.5, amp=1.0))
    path = tmp_path / "square.wav"
    sf.write(path, x, 48000, subtype="PCM_16")
    y = load_audio(path)
    assert float(y.abs().max()) <= 1.0
    assert float(y.abs().max()) > 0.99


def test_offset_and_duration_read_that_segment(tmp_path: Path) -> None:
    x = (np.arange(16000) / 16000).astype(np.float32)  # sample i holds i/16000
    path = tmp_path / "ramp.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    y = load_audio(path, offset=0.25, duration=0.5)
    assert torch.equal(y, torch.from_numpy(x[4000:12000]))
    assert torch.equal(load_audio(path, offset=0.75), torch.from_numpy(x[12000:]))
    # A segment running past the end is cut at the end.
    assert len(load_audio(path, offset=0.9, duration=5.0)) == 1600


COMPRESSED = [
    ("FLAC", "PCM_16", "flac"),
    ("OGG", "VORBIS", "ogg"),
    ("MP3", "MPEG_LAYER_III", "mp3"),
]


@pytest.mark.parametrize("fmt,subtype,ext", COMPRESSED)
def test_offset_in_compressed_formats_matches_a_full_decode(
    tmp_path: Path, fmt: str, subtype: str, ext: str
) -> None:
    path = write(tmp_path / f"s.{ext}", sine(440, 16000, 2.0), 16000, fmt, subtype)
    full = load_audio(path)
    part = load_audio(path, offset=0.5, duration=0.25)
    assert len(part) == 4000
    # libsndfile's MP3 seek decodes garbage after a seek; we decode from the start.
    torch.testing.assert_close(part, full[8000:12000], atol=1e-5, rtol=0)


def test_offset_with_resampling(tmp_path: Path) -> None:
    path = tmp_path / "s48.wav"
    sf.write(path, sine(500, 48000, 1.0), 48000, subtype="FLOAT")
    y = load_audio(path, sample_rate=16000, offset=0.5, duration=0.25)
    assert len(y) == 4000
    assert abs(peak_frequency(y, 16000) - 500) <= 4.0


def test_espeak_speech(tmp_path: Path) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / "hello.wav"
    subprocess.run([espeak, "-w", str(path), "hello world"], check=True, timeout=30)
    info = audio_info(path)
    y = load_audio(path)
    assert len(y) == round(info.frames * 16000 / info.sample_rate)
    assert 0.5 < len(y) / 16000 < 3.0
    assert float(y.pow(2).mean().sqrt()) > 0.01  # speech, not silence
    assert float(y.abs().max()) <= 1.0


# --------------------------------------------------------------------------- errors


def test_error_str_and_attributes() -> None:
    e = AudioError(Path("/x/a.wav"), "bad\nthing")
    assert (e.path, e.reason, str(e)) == (
        "/x/a.wav",
        "bad thing",
        "/x/a.wav: bad thing",
    )
    again = pickle.loads(pickle.dumps(e))
    assert (again.path, again.reason) == (e.path, e.reason)


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_missing_file(tmp_path: Path, func) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "not found")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_directory(tmp_path: Path, func) -> None:
    path = tmp_path / "dir.wav"
    path.mkdir()
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "directory")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_empty_file(tmp_path: Path, func) -> None:
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "empty")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_zero_frames(tmp_path: Path, func) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0), 16000)
    assert path.stat().st_size > 0  # a header, no samples
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "no audio frames")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_text_file_renamed_wav(tmp_path: Path, func) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is a transcript, not audio\n" * 20)
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "not an audio file")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_cut_inside_the_header(tmp_path: Path, func) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, sine(440, 16000, 0.5), 16000, subtype="PCM_16")
    path = tmp_path / "cut.wav"
    path.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "unreadable audio header")


@pytest.mark.parametrize("func", [audio_info, load_audio])
def test_truncated_wav_data(tmp_path: Path, func) -> None:
    # libsndfile silently shortens such a file; we refuse it (a broken copy).
    good = tmp_path / "good.wav"
    sf.write(good, sine(440, 16000, 1.0), 16000, subtype="PCM_16")
    path = tmp_path / "trunc.wav"
    path.write_bytes(good.read_bytes()[:10000])
    with pytest.raises(AudioError) as info:
        func(path)
    assert_names_file(info.value, path, "truncated", "32000", "9956")


def test_truncated_flac_fails_mid_read(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 32000)
    sf.write(good, noise, 16000, subtype="PCM_16")
    path = tmp_path / "trunc.flac"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert audio_info(path).frames == 32000  # the header is intact
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert_names_file(info.value, path, "corrupt or truncated")


def test_corrupt_flac_fails_mid_read(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 32000)
    sf.write(good, noise, 16000, subtype="PCM_16")
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(1).bytes(4000)
    path = tmp_path / "corrupt.flac"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert_names_file(info.value, path, "corrupt or truncated")


def test_truncated_mp3(tmp_path: Path) -> None:
    good = write(
        tmp_path / "good.mp3", sine(440, 16000, 2.0), 16000, "MP3", "MPEG_LAYER_III"
    )
    path = tmp_path / "trunc.mp3"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert_names_file(info.value, path, "corrupt or truncated", "32000")


def test_nan_samples(tmp_path: Path) -> None:
    x = sine(440, 16000, 0.1)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert_names_file(info.value, path, "NaN")


@pytest.mark.parametrize("offset", [1.0, 2.5])
def test_offset_beyond_the_end(tmp_path: Path, offset: float) -> None:
    path = tmp_path / "one_second.wav"
    sf.write(path, sine(440, 16000, 1.0), 16000)
    with pytest.raises(AudioError) as info:
        load_audio(path, offset=offset)
    assert_names_file(info.value, path, "beyond the end", "1 s")


def test_zero_duration_segment(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, sine(440, 16000, 1.0), 16000)
    with pytest.raises(AudioError) as info:
        load_audio(path, offset=0.5, duration=0.0)
    assert_names_file(info.value, path, "no samples")


def test_caller_mistakes_are_value_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, sine(440, 16000, 0.1), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(path, sample_rate=0)
    with pytest.raises(ValueError, match="offset"):
        load_audio(path, offset=-1.0)
    with pytest.raises(ValueError, match="duration"):
        load_audio(path, duration=-0.5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.wav"
    sf.write(path, sine(440, 16000, 0.1), 16000)
    path.chmod(0)
    try:
        with pytest.raises(AudioError) as info:
            audio_info(path)
        assert_names_file(info.value, path, "cannot open")
    finally:
        path.chmod(0o644)
